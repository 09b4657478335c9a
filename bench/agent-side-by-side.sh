#!/usr/bin/env bash
# The agent of this checkout and the agent of an earlier build, side by side on the lab at the
# same time (a DB node's and the HAProxy host's, each against `vigie-bench sink`), for a window:
# CPU per cycle from every thread's schedstat, context switches, RSS. Both see the same load, so
# the noise of a shared machine hits both alike.
#   bench/agent-side-by-side.sh OLD_AGENT_BIN OLD_CONFIG_DIR [WINDOW_S] [NODE]
# e.g. bench/agent-side-by-side.sh ../.bench-baseline/target/release/vigie-agent \
#        ../.bench-baseline/533db42/deploy/lab 180 node2
source "$(dirname "$0")/common.sh"
old_bin=$1 old_cfg=$2 window=${3:-180} node=${4:-node2}
bench_build -p vigie-agent -p vigie-bench
was_down=
[ -e "$lab_dir/profile" ] || was_down=1
"$root/deploy/lab/lab.sh" ready >/dev/null 2>&1 || "$root/deploy/lab/lab.sh" up
run=$(mktemp -d)
pids=()
# Stops what this script started (by pid), and the lab if it was down when the script began.
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$run"
  [ -z "$was_down" ] || "$root/deploy/lab/lab.sh" down
}
trap cleanup EXIT
target/release/vigie-bench sink --listen 127.0.0.1:9797 >"$run/sink.log" 2>&1 &
pids+=($!)
sleep 1
kill -0 "${pids[0]}" 2>/dev/null || { echo "agent-side-by-side: the sink did not start: $(cat "$run/sink.log")" >&2; exit 1; }
start() { # name bin config
  local env=(VIGIE_AGENT__INTERVAL=1s VIGIE_AGENT__TIMEOUT=800ms VIGIE_AGENT__COLLECTOR__URL=http://127.0.0.1:9797)
  [ "$1" = "${1%haproxy}" ] && env+=(VIGIE_AGENT__POSTGRES__STATEMENT_TIMEOUT=500ms)
  env "${env[@]}" "$2" --config "$3" >/dev/null 2>&1 &
  pids+=($!)
  echo $! >"$run/$1.pid"
}
start old-$node "$old_bin" "$old_cfg/agent-$node.toml"
start new-$node target/release/vigie-agent deploy/lab/agent-$node.toml
start old-haproxy "$old_bin" "$old_cfg/agent-haproxy.toml"
start new-haproxy target/release/vigie-agent deploy/lab/agent-haproxy.toml
sleep 10 # past start-up: connections opened, first cycles done
# ns of CPU and context switches of every thread of pid $1, now.
# An agent that died makes the run fail rather than print a figure.
sample() {
  kill -0 "$1" 2>/dev/null || { echo "agent-side-by-side: agent pid $1 is gone" >&2; exit 1; }
  local ns=0 cs=0 t ran c
  for t in /proc/$1/task/*; do
    read -r ran _ <"$t/schedstat" 2>/dev/null || continue
    c=$(awk '/^(non)?voluntary_ctxt_switches/ {s+=$2} END {print s+0}' "$t/status" 2>/dev/null || echo 0)
    ns=$((ns + ran)) cs=$((cs + c))
  done
  echo "$ns $cs"
}
declare -A ns0 cs0
for a in old-$node new-$node old-haproxy new-haproxy; do
  read -r n c < <(sample "$(cat "$run/$a.pid")")
  ns0["$a"]=$n cs0["$a"]=$c
done
sleep "$window"
echo "| agent | window (cycles at 1 s) | CPU / cycle | context switches / cycle | RSS | threads |"
echo "|---|---|---|---|---|---|"
for a in old-$node new-$node old-haproxy new-haproxy; do
  p=$(cat "$run/$a.pid")
  read -r ns cs < <(sample "$p")
  rss=$(awk '/^VmRSS/ {print $2}' /proc/$p/status)
  thr=$(awk '/^Threads/ {print $2}' /proc/$p/status)
  awk -v a="$a" -v n="$window" -v d=$((ns - ns0[$a])) -v c=$((cs - cs0[$a])) -v r="$rss" -v t="$thr" \
    'BEGIN { printf "| %s | %d s | %.2f ms | %.1f | %.1f MiB | %d |\n", a, n, d / n / 1e6, c / n, r / 1024, t }'
done
