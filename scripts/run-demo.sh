#!/usr/bin/env bash
# Run the agent: set up, start agentd on the embedded default config (state in
# ./state, cgroup root found automatically), launch a small demo container under
# limits and say what to try next. Run as root from anywhere:
#
#     sudo scripts/run-demo.sh            (SKIP_SETUP=1 skips scripts/setup.sh)
#
# On a host that lacks a controller (a hybrid host: cgroup2 without cpu/memory/
# io/pids), the demo runs with the limits the host can enforce and says which it
# skipped and why; agentd never pretends a limit was applied.
# Environment: STATE_DIR (default ./state), METRICS_LISTEN (127.0.0.1:9101).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "run-demo: run as root (agentd creates cgroups and namespaces)" >&2
  exit 1
fi
if [ "${SKIP_SETUP:-0}" != 1 ]; then
  echo "== setting up (scripts/setup.sh)"
  bash scripts/setup.sh
fi

export PATH="$PWD/.venv/bin:$PATH"   # agentd, agentctl and python3 from scripts/setup.sh
STATE=$(realpath -m "${STATE_DIR:-$PWD/state}")
SOCK=$STATE/agent.sock
METRICS=${METRICS_LISTEN:-127.0.0.1:9101}
export AGENT_SOCKET=$SOCK
mkdir -p "$STATE"

logfield() {  # logfield EVENT FIELD: FIELD of the last EVENT in agentd.log
  python3 - "$STATE/agentd.log" "$1" "$2" <<'EOF'
import json, sys
path, event, field = sys.argv[1:]
val = ""
for line in open(path, errors="replace"):
    try:
        d = json.loads(line)
    except ValueError:
        continue
    if d.get("event") == event:
        v = d.get(field, "")
        val = " ".join(map(str, v)) if isinstance(v, list) else str(v)
print(val)
EOF
}

if agentctl ps >/dev/null 2>&1; then
  echo "== agentd is already running on $SOCK"
else
  echo "== starting agentd (state in $STATE, log in $STATE/agentd.log)"
  : > "$STATE/agentd.log"
  nohup agentd --state-dir "$STATE" --socket "$SOCK" --metrics-listen "$METRICS" \
    >>"$STATE/agentd.log" 2>&1 </dev/null &
  echo $! > "$STATE/agentd.pid"
  for _ in $(seq 1 200); do
    agentctl ps >/dev/null 2>&1 && break
    if ! kill -0 "$(cat "$STATE/agentd.pid")" 2>/dev/null; then
      echo "run-demo: agentd did not start; its log:" >&2
      tail -n 20 "$STATE/agentd.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  agentctl ps >/dev/null 2>&1 || { echo "run-demo: agentd is not answering on $SOCK" >&2; exit 1; }
fi

if [ -s "$STATE/agentd.log" ]; then
  root=$(logfield cgroup.layout root)
  why=$(logfield cgroup.layout chosen)
  have=$(logfield cgroup.layout controllers)
  [ -n "$root" ] && echo "   cgroup root: $root ($why)"
  echo "   controllers for containers: ${have:-none}"
fi

# The demo: a little CPU work every second, under limits. Each limit the host
# cannot enforce is dropped (agentd refuses it with the reason) and reported.
agentctl rm -f demo >/dev/null 2>&1 || true
limits=(--memory 64M --cpus 0.5 --cpu-weight 50 --pids 64 --io-weight 50)
skipped=()
drop_controller() {  # remove the flags that need controller $1 from limits
  local keep=() i=0
  while [ $i -lt ${#limits[@]} ]; do
    local flag=${limits[$i]} val=${limits[$((i + 1))]} need=""
    case $flag in
      --memory*) need=memory ;; --cpus|--cpu-weight) need=cpu ;; --pids) need=pids ;;
      --io-weight|--io-max) need=io ;; --cpuset) need=cpuset ;;
    esac
    if [ "$need" = "$1" ]; then skipped+=("$flag $val"); else keep+=("$flag" "$val"); fi
    i=$((i + 2))
  done
  limits=("${keep[@]+"${keep[@]}"}")
}
reasons=()
for _ in 1 2 3 4 5 6; do
  if out=$(agentctl run -d --name demo "${limits[@]+"${limits[@]}"}" -- \
      sh -c 'while :; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 1; done' 2>&1); then
    break
  fi
  ctl=$(printf '%s\n' "$out" | grep -oE '(cpu|memory|io|pids|cpuset) controller is[^"]*' | head -n1 || true)
  if [ -z "$ctl" ]; then
    echo "run-demo: could not start the demo container: $out" >&2
    exit 1
  fi
  reasons+=("$ctl")
  drop_controller "${ctl%% *}"
done

echo
echo "== demo container 'demo' is running"
agentctl ps
if [ ${#limits[@]} -gt 0 ]; then echo "   limits applied: ${limits[*]}"; else echo "   limits applied: none"; fi
if [ ${#skipped[@]} -gt 0 ]; then
  echo "   limits skipped on this host: ${skipped[*]}"
  for r in "${reasons[@]}"; do echo "     because the $r"; done
  echo "   (freeze/thaw, cgroup.kill, cpu.stat, pressure and accounting still work)"
fi

metrics_err=$(logfield metrics.unavailable error)
echo
echo "== try next"
echo "   export AGENT_SOCKET=$SOCK PATH=$PWD/.venv/bin:\$PATH"
echo "   agentctl ps                       # containers"
echo "   agentctl stats demo               # live CPU, memory, IO, pids (--no-stream for one shot)"
if [ ${#skipped[@]} -gt 0 ]; then
  echo "   agentctl limit demo --cpus 1      # change limits live; here refused with the reason above"
else
  echo "   agentctl limit demo --cpus 1      # change limits live (read back from the kernel)"
fi
echo "   agentctl freeze demo; agentctl thaw demo"
echo "   agentctl logs -f demo; agentctl inspect demo"
echo "   agentctl run --rm -- sh -c 'echo hello from a container'"
if [ -n "$metrics_err" ]; then
  echo "   metrics: not served ($metrics_err); set METRICS_LISTEN=127.0.0.1:PORT"
else
  echo "   curl -s http://$METRICS/metrics | grep ^container_   # Prometheus metrics"
fi
echo "   kill \$(cat $STATE/agentd.pid)   # stop agentd (containers keep running; it re-adopts them on start)"
