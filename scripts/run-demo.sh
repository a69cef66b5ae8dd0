#!/usr/bin/env bash
# Run the agent: set up, start agentd on the embedded default config (state in
# ./state, its own cgroup root), launch a small demo container under limits and
# say what to try next. Run from a root shell (no sudo needed), from anywhere:
#
#     scripts/run-demo.sh            (SKIP_SETUP=1 skips scripts/setup.sh)
#     scripts/run-demo.sh --down     undo it: every container, agentd, the launcher,
#                                    their cgroups and sockets go; ./state keeps the log
#
# Running it again keeps what runs: the agentd already answering, the running
# `demo` container (started again if it had stopped), and the log (appended to).
#
# On a host that lacks a controller (a hybrid host: cgroup2 without cpu/memory/
# io/pids), the demo runs with the limits the host can enforce and says which it
# skipped and why; agentd never pretends a limit was applied.
# Environment: STATE_DIR (default ./state), METRICS_LISTEN (127.0.0.1:9101),
# CGROUP_ROOT (default: cgroup-agent-demo below the cgroup2 mount).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "run-demo: run as root (agentd creates cgroups and namespaces)" >&2
  exit 1
fi
case "${1:-}" in
  ""|--down) ;;
  *) echo "run-demo: unknown argument '$1'; use no argument (start) or --down (undo)" >&2; exit 2 ;;
esac

export PATH="$PWD/.venv/bin:$PATH"   # agentd, agentctl and python3 from scripts/setup.sh
STATE=$(realpath -m "${STATE_DIR:-$PWD/state}")
SOCK=$STATE/agent.sock
METRICS=${METRICS_LISTEN:-127.0.0.1:9101}
export AGENT_SOCKET=$SOCK

cgroup_root() {  # the demo's cgroup root: $CGROUP_ROOT, else the one recorded at start, else the default
  if [ -n "${CGROUP_ROOT:-}" ]; then echo "$CGROUP_ROOT"; return; fi
  if [ -s "$STATE/demo.cgroup-root" ]; then cat "$STATE/demo.cgroup-root"; return; fi
  local mount
  mount=$(python3 -c 'from runtime.cgroupfs import find_mount; print(find_mount())' 2>/dev/null) || mount=""
  [ -n "$mount" ] && echo "$mount/cgroup-agent-demo"
}

procs_of() {  # pids in cgroup $1 and below
  [ -d "$1" ] && find "$1" -name cgroup.procs -exec cat {} + 2>/dev/null || true
}

down() {
  local root
  root=$(cgroup_root)
  echo "== taking the demo down (state $STATE, cgroup root ${root:-none})"
  if agentctl ps >/dev/null 2>&1; then
    for name in $(agentctl ps -a -q); do
      agentctl rm -f "$name" >/dev/null && echo "   removed container $name"
    done
  fi
  local pids=""
  if [ -s "$STATE/agentd.pid" ] && tr '\0' ' ' < "/proc/$(cat "$STATE/agentd.pid")/cmdline" 2>/dev/null | grep -q agentd; then
    pids=$(cat "$STATE/agentd.pid")   # (a pid file of a dead agentd may name someone else now)
  fi
  [ -n "$root" ] && pids="$pids $(procs_of "$root/agentd") $(procs_of "$root/launcher")"
  pids=$(printf "%s\n" $pids | sort -un | tr "\n" " " | sed "s/ *$//")
  if [ -n "$pids" ]; then
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 1 300); do
      local alive=""
      for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
      [ -z "$alive" ] && break
      sleep 0.1
    done
    echo "   stopped agentd and the launcher ($pids)"
  fi
  if [ -n "$root" ] && [ -d "$root" ]; then
    # whatever is left (containers of a crashed agentd): cgroup.kill, then remove the cgroups
    if [ -n "$(procs_of "$root")" ]; then
      echo 1 > "$root/cgroup.kill" 2>/dev/null || for p in $(procs_of "$root"); do kill -KILL "$p" 2>/dev/null || true; done
      for _ in $(seq 1 100); do [ -z "$(procs_of "$root")" ] && break; sleep 0.1; done
    fi
    find "$root" -depth -mindepth 1 -type d -exec rmdir {} + 2>/dev/null || true
    rmdir "$root" 2>/dev/null || true
    if [ -d "$root" ]; then
      echo "run-demo: could not remove $root (still populated?)" >&2
      exit 1
    fi
    echo "   removed cgroup $root"
  fi
  rm -f "$SOCK" "$STATE/launcher.sock" "$STATE/agentd.pid" "$STATE/demo.cgroup-root"
  echo "   removed the sockets; $STATE keeps the log and the records (rm -rf it to forget them)"
}

if [ "${1:-}" = --down ]; then
  down
  exit 0
fi

if [ "${SKIP_SETUP:-0}" != 1 ]; then
  echo "== setting up (scripts/setup.sh)"
  bash scripts/setup.sh
fi
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
  ROOT=$(cgroup_root)
  [ -n "$ROOT" ] || { echo "run-demo: no cgroup2 mount found" >&2; exit 1; }
  echo "$ROOT" > "$STATE/demo.cgroup-root"
  echo "== starting agentd (state in $STATE, log in $STATE/agentd.log, cgroups in $ROOT)"
  nohup agentd --state-dir "$STATE" --socket "$SOCK" --metrics-listen "$METRICS" --cgroup-root "$ROOT" \
    >>"$STATE/agentd.log" 2>&1 </dev/null &
  echo $! > "$STATE/agentd.pid"
  for _ in $(seq 1 300); do
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

# The demo: a little CPU work every second, under limits. The limits the host
# cannot enforce are refused all at once (each controller with its reason);
# they are dropped and reported. A demo container that exists is kept.
limits=(--memory 64M --cpus 0.5 --cpu-weight 50 --pids 64 --io-weight 50)
skipped=()
reasons=()
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
state=$(agentctl inspect --format '{{.State}}' demo 2>/dev/null || true)
if [ -n "$state" ]; then
  if [ "$state" = running ] || [ "$state" = paused ] || [ "$state" = restarting ]; then
    echo "== keeping the demo container 'demo' ($state)"
  else
    echo "== starting the existing demo container 'demo' again"
    agentctl start demo >/dev/null
  fi
  held=$(agentctl limit demo | tr '\n' ' ')
  limits=()
else
  for _ in 1 2; do
    if out=$(agentctl run -d --name demo "${limits[@]+"${limits[@]}"}" -- \
        sh -c 'while :; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 1; done' 2>&1); then
      break
    fi
    ctls=$(printf '%s\n' "$out" | grep -oE '(cpu|memory|io|pids|cpuset) controller is [^;]*' || true)
    if [ -z "$ctls" ]; then
      echo "run-demo: could not start the demo container: $out" >&2
      exit 1
    fi
    while IFS= read -r ctl; do
      reasons+=("$ctl")
      drop_controller "${ctl%% *}"
    done <<< "$ctls"
  done
fi

echo
echo "== demo container 'demo' is running"
agentctl ps
if [ -n "${held:-}" ]; then
  echo "   limits held: $held"
elif [ ${#limits[@]} -gt 0 ]; then echo "   limits applied: ${limits[*]}"; else echo "   limits applied: none"; fi
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
echo "   agentctl pause demo; agentctl unpause demo"
echo "   agentctl logs --tail 5 demo; agentctl inspect demo"
echo "   agentctl run --rm -- sh -c 'echo hello from a container'"
if [ -n "$metrics_err" ]; then
  echo "   metrics: not served ($metrics_err); set METRICS_LISTEN=127.0.0.1:PORT"
else
  echo "   curl -s http://$METRICS/metrics | grep ^container_   # Prometheus metrics"
fi
echo "   kill \$(cat $STATE/agentd.pid)   # stop agentd alone (containers keep running; it re-adopts them on start)"
echo "   $0 --down   # undo the demo: containers, agentd, launcher, cgroups, sockets"
