# Sourced by the bench scripts: installs what the benchmarks need, builds release binaries, and
# takes the lab down at exit when the script found it down. A script that needs no lab sets
# `bench_needs_lab=no` before sourcing this: then only cargo is needed (installed when missing)
# and the lab is left alone.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
if [ "${bench_needs_lab:-yes}" != no ] || ! command -v cargo >/dev/null; then
  "$root/deploy/install-deps.sh"
fi
if [ "${bench_needs_lab:-yes}" != no ]; then
  lab_dir=${VIGIE_LAB_DIR:-/tmp/vigie-lab}
  if [ ! -e "$lab_dir/profile" ]; then
    trap '"$root/deploy/lab/lab.sh" down' EXIT
  fi
  export VIGIE_LAB_PROFILE=${VIGIE_LAB_PROFILE:-fast}
fi
# Benchmarks compare release builds.
bench_build() { cargo build --release --locked "$@"; }
