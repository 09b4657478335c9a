#!/usr/bin/env bash
# One supervision cycle of the procedure (../shared/seed/supervision-patroni.md) as operators run
# it today: every probe a separate Nagios plugin process, for one DB node (etcd, Patroni,
# PostgreSQL, system) and the HAProxy host. Usage: plugins.sh NODE_NUMBER (1-3 on the lab).
# Prints one line per probe and never stops at a failing one, as a scheduler would.
n=${1:?node number}
ip=127.0.0.1$n
p=/usr/lib/nagios/plugins
lab=${VIGIE_LAB_DIR:-/tmp/vigie-lab}
export PGPASSWORD; PGPASSWORD=$(cat "$lab/monitor.password")
export PGCONNECT_TIMEOUT=2
sql() { psql -h "$ip" -U vigie_monitor -d postgres -XAtqc "$1"; }
run() { local out rc; out=$("$@" 2>&1); rc=$?; out=${out%%$'\n'*}; echo "$rc ${out:0:100}"; }
# HAProxy
run $p/check_tcp -H 127.0.0.10 -p 5000 -t 2
run $p/check_tcp -H 127.0.0.10 -p 5001 -t 2
run $p/check_procs -c 1: -C haproxy -a "$lab/haproxy.cfg"
# etcd
run $p/check_tcp -H "$ip" -p 2379 -t 2
run $p/check_tcp -H "$ip" -p 2380 -t 2
run $p/check_procs -c 1: -C etcd -a "--name etcd$n"
# Patroni
run $p/check_tcp -H "$ip" -p 8008 -t 2
run $p/check_http -I "$ip" -p 8008 -u /health -t 2
run $p/check_http -I "$ip" -p 8008 -u /cluster -t 2
run $p/check_procs -c 1: -a "$lab/node$n/patroni.yml"
# PostgreSQL: the standard probes (CPU, disk, locks; monitoring-plugins has no memory plugin)…
run $p/check_load -w 4,3,2 -c 8,6,4
run $p/check_disk -w 20% -c 10% -p "$lab"
run $p/check_pgactivity -s locks -h "$ip" -U vigie_monitor -d postgres -w 100 -c 200
# …and the SQL probes, one psql each.
run sql "select count(*) from pg_stat_wal_receiver"
run sql "select pg_is_in_recovery()"
run sql "select count(*) from pg_stat_replication"
run sql "select pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn(), pg_last_xact_replay_timestamp()"

