#!/usr/bin/env bash
# Cost of one supervision cycle of a DB node + the HAProxy host on the lab: vigie-agent (steady
# state at 1 s and 5 s, cold --once runs) beside the procedure as Nagios plugins and check_patroni.
# Takes about 15 minutes with the defaults; flags go to `vigie-bench agent-cost` (e.g. --window 1m).
source "$(dirname "$0")/common.sh"
missing=()
[ -x /usr/lib/nagios/plugins/check_tcp ] || missing+=(monitoring-plugins-basic)
[ -x /usr/lib/nagios/plugins/check_http ] || missing+=(monitoring-plugins-standard)
[ -x /usr/lib/nagios/plugins/check_pgactivity ] || missing+=(check-pgactivity)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
venv="$root/target/bench-venv"
if [ ! -x "$venv/bin/check_patroni" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q check_patroni
fi
bench_build -p vigie-agent -p vigie-bench
target/release/vigie-bench agent-cost --check-patroni "$venv/bin/check_patroni" "$@"
