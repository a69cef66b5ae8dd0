#!/usr/bin/env bash
# Starts the services the tests use: PostgreSQL on loopback (the fleet sink).
# Prometheus is started by the tests themselves on a free loopback port.
set -euo pipefail
ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | grep -q online; then
  pg_ctlcluster "$ver" main start || { pg_createcluster "$ver" main && pg_ctlcluster "$ver" main start; }
fi
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='agent'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"CREATE ROLE agent LOGIN PASSWORD 'agent'\""
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='cgroup_agent_test'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"CREATE DATABASE cgroup_agent_test OWNER agent\""
echo "postgresql: postgresql://agent:agent@127.0.0.1:5432/cgroup_agent_test"
