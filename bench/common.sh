# Sourced by the bench scripts: installs what the benchmarks need, builds release binaries, and
# takes the lab down at exit when the script found it down.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
"$root/deploy/install-deps.sh"
lab_dir=${VIGIE_LAB_DIR:-/tmp/vigie-lab}
if [ ! -e "$lab_dir/profile" ]; then
  trap '"$root/deploy/lab/lab.sh" down' EXIT
fi
export VIGIE_LAB_PROFILE=${VIGIE_LAB_PROFILE:-fast}
# Benchmarks compare release builds.
bench_build() { cargo build --release --locked "$@"; }
