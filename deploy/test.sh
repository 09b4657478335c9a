#!/usr/bin/env bash
# The whole vigie test suite: unit tests, and integration tests against the real lab cluster
# (deploy/lab/lab.sh), which the tests bring up themselves with the fast timing profile.
# A lab this script found down is taken down again at the end. Ends with one summary line.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "$0")/.."

deploy/install-deps.sh
export VIGIE_LAB_PROFILE=${VIGIE_LAB_PROFILE:-fast}
lab_dir=${VIGIE_LAB_DIR:-/tmp/vigie-lab}
started_lab=0
if [ ! -e "$lab_dir/profile" ]; then
  started_lab=1
  trap 'deploy/lab/lab.sh down' EXIT
fi
log=$(mktemp)
rc=0
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log" || rc=$?
if [ "$started_lab" = 1 ]; then
  trap - EXIT
  deploy/lab/lab.sh down
fi
# Sum every test binary's "test result:" line into one, so the last line speaks for the suite.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$rc"
