#!/usr/bin/env bash
# Runs every test tier on a fresh Debian 12 machine, as root:
#   unit (pure), host (this kernel's cgroup2 hierarchy), vm (full cgroup v2 in qemu).
# Installs what the tests need first. Exits non-zero when any tier fails.
set -uo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh || { echo "setup failed"; exit 1; }
bash scripts/services.sh || { echo "services failed"; exit 1; }
export PATH="$PWD/.venv/bin:$PATH"   # python3, agentd, agentctl, vng from scripts/setup.sh
export CGROUP_AGENT_TEST_PG="postgresql://agent:agent@127.0.0.1:5432/cgroup_agent_test"

status=0
echo "=== tier: unit ==="; python3 -m pytest -q -p no:cacheprovider tests/unit || status=1
echo "=== tier: host ==="; python3 -m pytest -q -p no:cacheprovider tests/host || status=1
echo "=== tier: vm ===";   python3 tests/vm/run.py || status=1
exit $status
