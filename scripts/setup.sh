#!/usr/bin/env bash
# Installs everything the agent and its tests need on a fresh Debian 12 machine
# (run as root). Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  qemu-system-x86 linux-image-amd64   # vm tier: a real kernel with full cgroup v2
  prometheus                          # metrics tests scrape a real agentd
  postgresql                          # billing fleet sink tests
  runc crun                           # launch benchmarks against peers
  busybox-static                      # tiny rootfs for container tests
  gcc libc6-dev                       # the C reader used as a benchmark floor
  util-linux iproute2 procps e2fsprogs
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

PY=${PYTHON:-python3}
"$PY" -m pip install -q --disable-pip-version-check -e ".[test,postgres]" virtme-ng
