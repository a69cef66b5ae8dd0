#!/usr/bin/env bash
# Builds what tests/host/test_systemd_unit.py boots under systemd-nspawn, once
# (cached; delete the directory to rebuild; not under /var/cache, which the
# VM tier's guest overlays with an empty tmpfs):
#   $CACHE/rootfs-bookworm  a Debian 12 root from Debian's packages (mmdebstrap):
#                           systemd as init, dbus, python3 with venv, curl
#   $CACHE/wheelhouse       wheels of the agent's dependencies: the booted root
#                           has no network and no package index
# Run as root by scripts/setup.sh; needs mmdebstrap (APT_PACKAGES there).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${CGROUP_AGENT_TEST_CACHE:-/var/lib/cgroup-agent-test}
PYTHON=${PYTHON:-python3}
mkdir -p "$CACHE"
if [ ! -d "$CACHE/rootfs-bookworm" ]; then
  rm -rf "$CACHE/rootfs-bookworm.tmp"
  mmdebstrap --quiet --variant=minbase --format=directory \
    --include=systemd,systemd-sysv,dbus,python3,python3-venv,iproute2,procps,curl \
    bookworm "$CACHE/rootfs-bookworm.tmp" http://deb.debian.org/debian
  mv "$CACHE/rootfs-bookworm.tmp" "$CACHE/rootfs-bookworm"
fi
if [ ! -d "$CACHE/wheelhouse" ]; then
  rm -rf "$CACHE/wheelhouse.tmp"
  "$PYTHON" -m pip wheel -q --disable-pip-version-check -w "$CACHE/wheelhouse.tmp" .
  mv "$CACHE/wheelhouse.tmp" "$CACHE/wheelhouse"
fi
