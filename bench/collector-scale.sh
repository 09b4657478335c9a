#!/usr/bin/env bash
# Collector scale: simulated agents (clusters of 3 DB nodes + 1 HAProxy host replaying batches
# recorded on the lab) streaming one batch per second over real gRPC on loopback, first to
# vigie-collector, then to a bare tonic server; fleet sizes grow until the collector no longer
# keeps verdicts fresh. Needs no lab. Flags go to `vigie-bench collector-scale`.
#
# --baseline REV also measures the collector of commit REV, in the same run: REV is checked out in
# a git worktree outside the repository ($VIGIE_BENCH_BASELINE_DIR/<sha>, default
# ../.bench-baseline beside the checkout) and built there with its own target directory (kept for
# the next run); REV's own vigie-bench drives it (it speaks REV's wire format, replays REV's
# fixture, and its bare server is REV's tonic), then this checkout's drives this checkout's, with
# the same flags; `vigie-bench collector-compare` prints both side by side and writes them into
# bench/README.md. The raw outputs stay in $VIGIE_BENCH_BASELINE_DIR/results.
bench_needs_lab=no
source "$(dirname "$0")/common.sh"

usage() {
  echo "usage: bench/collector-scale.sh [--baseline REV] [vigie-bench collector-scale flags]" >&2
  echo "collector-scale: $1" >&2
  exit 64
}
baseline=
per_build=
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --baseline) [ $# -ge 2 ] || usage "--baseline needs a revision"; baseline=$2; shift 2 ;;
    --baseline=*) baseline=${1#--baseline=}; shift ;;
    --collector | --collector=* | --fixture | --fixture=* | --out | --out=* | --perf | --perf=*)
      per_build=${1%%=*}; args+=("$1"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done

if [ -n "$baseline" ]; then
  [ -z "$per_build" ] || usage "$per_build is per build: the script sets it for each build with --baseline"
  rev=$(git rev-parse --verify --quiet "$baseline^{commit}") || usage "no commit $baseline"
  short=$(git rev-parse --short "$rev")
  git cat-file -e "$rev:bench/src/scale.rs" 2>/dev/null || usage "$baseline has no collector-scale benchmark"
fi

# Two sockets per simulated agent (both ends live in this machine), and some to spare.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
bench_build -p vigie-collector -p vigie-bench
bin=${CARGO_TARGET_DIR:-target}/release
case $bin in /*) ;; *) bin=$root/$bin ;; esac
if [ -z "$baseline" ]; then
  "$bin/vigie-bench" collector-scale "${args[@]}"
  exit
fi

base=${VIGIE_BENCH_BASELINE_DIR:-$(dirname "$root")/.bench-baseline}
mkdir -p "$base"
base=$(cd "$base" && pwd)
case $base/ in "$root"/*) usage "the baseline directory $base is inside the repository" ;; esac
tree=$base/$short
if [ -e "$tree/.git" ]; then
  # Reused: back to REV, without what its last run wrote into its bench/README.md.
  git -C "$tree" checkout --quiet --force --detach "$rev"
else
  # --force: also when a worktree once registered there was deleted without `git worktree remove`.
  git worktree add --force --detach "$tree" "$rev"
fi
echo "collector-scale: building $short in $tree" >&2
(cd "$tree" && CARGO_TARGET_DIR=$base/target cargo build --release --locked -p vigie-collector -p vigie-bench)
old=$base/target/release

results=$base/results
mkdir -p "$results"
rm -f "$results"/before.* "$results"/after.*
old_args=(--collector "$old/vigie-collector" --fixture "$tree/bench/fixtures/lab-batches.json")
echo "collector-scale: before, $short (its own vigie-bench)" >&2
if grep -qw -e --out <<<"$("$old/vigie-bench" collector-scale --help)"; then
  before=$results/before.json
  "$old/vigie-bench" collector-scale "${old_args[@]}" --out "$before" "${args[@]}"
else
  # Older than --out: what it prints is its Markdown section.
  before=$results/before.md
  "$old/vigie-bench" collector-scale "${old_args[@]}" "${args[@]}" | tee "$before"
fi
echo "collector-scale: after, $(git rev-parse --short HEAD) (this checkout)" >&2
after=$results/after.json
"$bin/vigie-bench" collector-scale --out "$after" "${args[@]}"
"$bin/vigie-bench" collector-compare --before "$before" --after "$after" \
  --command "bench/collector-scale.sh --baseline $baseline${args[*]:+ ${args[*]}}"
