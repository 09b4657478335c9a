#!/usr/bin/env bash
# Runs every cargo-fuzz target (or those named) for SECONDS each, one after the other, and prints
# one line per target: executions, and whether it crashed (the crash input is then kept in
# fuzz/artifacts/TARGET/ and the run fails). Installs cargo-fuzz and the nightly toolchain when
# missing. `.ci/run` calls it with 30 s; fuzz/README.md records longer runs.
#   fuzz/run.sh SECONDS [TARGET...]
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "$0")"
seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
[ ${#targets[@]} -gt 0 ] || { echo "fuzz: no target found" >&2; exit 1; }
# Optimised, with debug assertions and overflow checks (-a): an overflow is a finding too.
cargo +nightly fuzz build -O -a
failed=0
for t in "${targets[@]}"; do
  log=$(mktemp)
  if cargo +nightly fuzz run -O -a "$t" -- -max_total_time="$seconds" >"$log" 2>&1; then
    runs=$(grep -Eo 'Done [0-9]+ runs' "$log" | tail -1 | grep -Eo '[0-9]+' || echo "?")
    echo "fuzz: $t: $runs executions in ${seconds}s, no crash"
  else
    failed=1
    echo "fuzz: $t: CRASHED (input in fuzz/artifacts/$t/):"
    grep -E "panicked|ERROR|SUMMARY|Test unit written|error" "$log" | head -5 || true
  fi
  rm -f "$log"
done
exit $failed
