#!/usr/bin/env bash
# Detection time per scenario: runs the scenario suite (tests/tests/scenarios.rs, on the real lab)
# RUNS times (default 3) at agent intervals of 1 s and 5 s, then tabulates the times each run
# appended (median, max) beside HAProxy's and Patroni's own reaction in the same runs.
# The two-minute quiet scenario is skipped: it measures no detection. Takes about 20 minutes.
# Run it on an otherwise idle machine: sustained load is a real RESOURCE_PRESSURE finding.
source "$(dirname "$0")/common.sh"
runs=${1:-3}
out="$root/target/bench-detection.jsonl"
rm -f "$out"
cargo test -p vigie-tests --test scenarios --locked --no-run
for interval in 1s 5s; do
  for run in $(seq "$runs"); do
    echo "detection: interval $interval, run $run of $runs" >&2
    VIGIE_SCENARIO_INTERVAL=$interval VIGIE_SCENARIO_TIMES=$out \
      cargo test -p vigie-tests --test scenarios --locked -- --skip s01 --test-threads 1 \
      || echo "detection: some scenarios failed at $interval (run $run): they are missing from the table" >&2
  done
done
bench_build -p vigie-bench
target/release/vigie-bench detection "$out" --command "bench/detection.sh $runs"
