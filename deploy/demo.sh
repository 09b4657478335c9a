#!/usr/bin/env bash
# The vigie demo: installs what it needs, brings up the lab cluster and shows its state.
#   deploy/demo.sh        start (idempotent)
#   deploy/demo.sh stop   stop everything the demo started
# The collector and agents join the demo as they land (issues 3 and 4); today it runs the lab.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "$0")/.."

case "${1:-start}" in
  start)
    deploy/install-deps.sh
    cargo build --workspace --release --locked
    deploy/lab/lab.sh up
    deploy/lab/lab.sh status
    cat <<TXT

Try a fault and watch it:   deploy/lab/lab.sh fault kill-primary-patroni; deploy/lab/lab.sh status
Put it right again:         deploy/lab/lab.sh repair
Stop the demo:              deploy/demo.sh stop
TXT
    ;;
  stop) deploy/lab/lab.sh down ;;
  *) echo "usage: $0 [start|stop]" >&2; exit 64 ;;
esac
