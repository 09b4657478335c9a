#!/usr/bin/env bash
# The Patroni part of a cycle with check_patroni (PyPI), one process per service, for one DB node.
# Usage: check_patroni.sh NODE_NUMBER [CHECK_PATRONI]. The cluster services ask every member.
n=${1:?node number}
cp=${2:-check_patroni}
node="http://127.0.0.1$n:8008"
all="http://127.0.0.11:8008,http://127.0.0.12:8008,http://127.0.0.13:8008"
run() { local out rc; out=$("$cp" "$@" 2>&1); rc=$?; out=${out%%$'\n'*}; echo "$rc ${out:0:100}"; }
run -e "$node" node_is_alive
run -e "$node" node_is_pending_restart
run -e "$all" cluster_has_leader
run -e "$all" cluster_has_replica
run -e "$all" cluster_node_count
run -e "$all" cluster_is_in_maintenance

