#!/usr/bin/env bash
# Installs everything the agent and its tests need on a fresh Debian 12 machine
# (run as root): Debian packages, then the project and its test tools in a
# virtual environment at ./.venv (Debian's own python3 is "externally managed"
# and refuses pip installs). Idempotent: a second run installs nothing new.
# Afterwards: PATH=$PWD/.venv/bin:$PATH gives agentd, agentctl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  qemu-system-x86 linux-image-amd64   # vm tier: a real kernel with full cgroup v2
  prometheus                          # metrics tests scrape a real agentd
  postgresql                          # billing fleet sink tests
  runc crun                           # launch benchmarks against peers
  busybox-static                      # tiny rootfs for container tests
  docker-registry skopeo umoci        # image tests: a real OCI registry, images built and pushed
  openssl                             # image tests: a registry CA, TLS certificates, token JWTs signed
  gcc libc6-dev                       # the C reader used as a benchmark floor
  util-linux iproute2 procps e2fsprogs
  python3 python3-venv               # the virtual environment below
  zsh                                 # the zsh completion script is checked by zsh itself
  openssh-server openssh-client       # agentctl --host ssh:// against an sshd the test starts on 127.0.0.1
  nftables iperf3 curl                # bridge networks: NAT/ports/egress rules (nft -j), network bench, port tests
  criu                                # checkpoint/restore (agent/checkpoint/); its check passes in the VM tier
  mmdebstrap systemd-container        # a Debian 12 root booted by systemd-nspawn: the unit under a real systemd
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

VENV=${VENV:-$PWD/.venv}
if [ ! -x "$VENV/bin/python3" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
fi
"$VENV/bin/python3" -m pip install -q --disable-pip-version-check -e ".[test,postgres]" virtme-ng
# cached; tests/host/test_systemd_unit.py (without it that test skips, saying why)
PYTHON="$VENV/bin/python3" bash scripts/systemd-rootfs.sh ||
  echo "setup: the Debian root for the systemd test was not built; tests/host/test_systemd_unit.py will skip" >&2
