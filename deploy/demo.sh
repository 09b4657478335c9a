#!/usr/bin/env bash
# The vigie demo: installs what it needs, builds, brings up the lab cluster, starts the collector
# and the four lab agents, and shows the verdict.
#   deploy/demo.sh        start (idempotent)
#   deploy/demo.sh stop   stop everything the demo started (by recorded pids), then the lab
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "$0")/.."
run=${VIGIE_DEMO_DIR:-/tmp/vigie-demo}
bin=target/release
agents=(node1 node2 node3 haproxy)

alive() { [ -n "${1:-}" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$2"; }

start_daemon() { # NAME PATTERN CMD...
  local name=$1 pattern=$2
  shift 2
  if alive "$(cat "$run/$name.pid" 2>/dev/null)" "$pattern"; then return 0; fi
  setsid "$@" </dev/null >>"$run/$name.log" 2>&1 &
  echo $! >"$run/$name.pid"
}

stop_daemon() { # NAME PATTERN
  local pid i
  pid=$(cat "$run/$1.pid" 2>/dev/null) || return 0
  if alive "$pid" "$2"; then
    kill -TERM "$pid"
    for ((i = 0; i < 50; i++)); do alive "$pid" "$2" || break; sleep 0.1; done
    if alive "$pid" "$2"; then kill -KILL "$pid"; fi
  fi
  rm -f "$run/$1.pid"
}

case "${1:-start}" in
  start)
    deploy/install-deps.sh
    cargo build --release --locked -p vigie-agent -p vigie-collector
    deploy/lab/lab.sh up
    mkdir -p "$run"
    start_daemon collector deploy/lab/collector.toml "$bin/vigie-collector" --config deploy/lab/collector.toml
    for a in "${agents[@]}"; do
      start_daemon "agent-$a" "agent-$a.toml" "$bin/vigie-agent" --config "deploy/lab/agent-$a.toml"
    done
    # Wait (bounded) for every agent to have reported and the first verdict to settle.
    deadline=$((SECONDS + 60))
    until "$bin/vigie" status demo --format json 2>/dev/null |
      grep -q '"verdict": "healthy"'; do
      if ((SECONDS > deadline)); then
        echo "demo: no healthy verdict after 60s; here is what vigie sees:" >&2
        break
      fi
      sleep 0.5
    done
    "$bin/vigie" status demo || true
    cat <<TXT
API:     curl -s http://127.0.0.1:9700/api/v1/clusters/demo    (also /api/v1/clusters, /api/v1/events, /healthz)
CLI:     $bin/vigie status demo
Logs:    $run/*.log

Try a fault and watch the verdict:   deploy/lab/lab.sh fault kill-primary-pg; $bin/vigie status demo
Put the lab right again:             deploy/lab/lab.sh repair
Stop the demo:                       deploy/demo.sh stop
TXT
    ;;
  stop)
    for a in "${agents[@]}"; do stop_daemon "agent-$a" "agent-$a.toml"; done
    stop_daemon collector deploy/lab/collector.toml
    rm -rf "$run"
    deploy/lab/lab.sh down
    ;;
  *) echo "usage: $0 [start|stop]" >&2; exit 64 ;;
esac
