#!/usr/bin/env bash
# The whole vigie test suite: unit tests, and integration tests against the real lab cluster
# (deploy/lab/lab.sh), which the tests bring up themselves with the fast timing profile.
# A lab this script found down is taken down again at the end.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "$0")/.."

deploy/install-deps.sh
export VIGIE_LAB_PROFILE=${VIGIE_LAB_PROFILE:-fast}
lab_dir=${VIGIE_LAB_DIR:-/tmp/vigie-lab}
if [ ! -e "$lab_dir/profile" ]; then
  trap 'deploy/lab/lab.sh down' EXIT
fi
cargo test --workspace --locked "$@"
