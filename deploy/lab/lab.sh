#!/usr/bin/env bash
# vigie lab: a real PostgreSQL HA cluster (3 etcd + 3 Patroni/PostgreSQL 15 + HAProxy) on loopback,
# from Debian's packages, with faults on demand. See deploy/lab/README.md.
#
#   lab.sh install | up | down | repair | status | env | ready | leader | fault NAME [NODE]
#
# Environment:
#   VIGIE_LAB_DIR      state directory (default /tmp/vigie-lab); everything the lab writes is there
#   VIGIE_LAB_PROFILE  timing profile read by `up`: `default` (Patroni's: ttl 30, loop_wait 10,
#                      retry_timeout 10) or `fast` (ttl 10, loop_wait 2, retry_timeout 4)
#   VIGIE_LAB_TLS      `1` at `up`: the TLS profile — Patroni REST and etcd client URLs on https
#                      with client certificates required, PostgreSQL with ssl=on and a hostssl-only
#                      line for the monitoring role, certificates from deploy/certs.sh in
#                      $VIGIE_LAB_DIR/certs, agent configs in $VIGIE_LAB_DIR/agent-*.toml
#
# Processes are started with setsid and their pids recorded under $VIGIE_LAB_DIR/run; they are only
# ever signalled by those pids (PostgreSQL's postmaster by the pid in its own postmaster.pid).
set -euo pipefail

BASE=${VIGIE_LAB_DIR:-/tmp/vigie-lab}
RUN=$BASE/run
CERTS=$BASE/certs
PG_BIN=/usr/lib/postgresql/15/bin
NODES=(1 2 3)
HAPROXY_ADDR=127.0.0.10
RW_PORT=5000
RO_PORT=5001
STATS_PORT=7000
SCOPE=demo
# Lab credentials: the lab is local and throw-away; production secrets never look like this.
SUPERUSER_PASSWORD=lab-postgres
REPLICATION_PASSWORD=lab-replicator
MONITOR_USER=vigie_monitor
MONITOR_PASSWORD=lab-vigie-monitor
# An application role (no privilege) for the saturate-connections fault.
APP_USER=lab_app
APP_PASSWORD=lab-app
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PSQL_TIMEOUT=5

log() { printf 'lab: %s\n' "$*" >&2; }
die() { printf 'lab: error: %s\n' "$*" >&2; exit 1; }

node_ip() { echo "127.0.0.1$1"; }
node_dir() { echo "$BASE/node$1"; }

# ---------------------------------------------------------------------------------------------
# Installation

ensure_packages() {
  local missing=()
  [ -x /usr/bin/etcd ] || missing+=(etcd-server)
  [ -x /usr/bin/etcdctl ] || missing+=(etcd-client)
  [ -x /usr/bin/patroni ] || missing+=(patroni)
  [ -x "$PG_BIN/postgres" ] || missing+=(postgresql-15)
  [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
  /usr/bin/python3 -c 'import psycopg2' 2>/dev/null || missing+=(python3-psycopg2)
  command -v curl >/dev/null || missing+=(curl)
  command -v jq >/dev/null || missing+=(jq)
  command -v psql >/dev/null || missing+=(postgresql-client-15)
  command -v setpriv >/dev/null || missing+=(util-linux)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing packages (${missing[*]}); run as root to install them"
  log "installing ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# Process bookkeeping

# alive PID PATTERN: the pid runs (not a zombie) and its command line contains PATTERN, so a
# recycled pid is never mistaken for ours.
alive() {
  local pid=$1 pattern=$2 state
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  state=$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ "$state" != Z ] && [ "$state" != X ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern"
}

pidfile() { echo "$RUN/$1.pid"; }
recorded_pid() { cat "$(pidfile "$1")" 2>/dev/null || true; }

# running NAME PATTERN: the component NAME started by the lab is alive.
running() { alive "$(recorded_pid "$1")" "$2"; }

# stop_pid PID PATTERN GRACE_SECONDS: SIGCONT (a frozen process cannot act on SIGTERM), SIGTERM,
# then SIGKILL after the grace period; returns once the process is gone.
stop_pid() {
  local pid=$1 pattern=$2 grace=$3 i
  alive "$pid" "$pattern" || return 0
  kill -CONT "$pid" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    alive "$pid" "$pattern" || return 0
    sleep 0.1
  done
  log "pid $pid did not stop within ${grace}s, killing it"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    alive "$pid" "$pattern" || return 0
    sleep 0.1
  done
  die "pid $pid survived SIGKILL"
}

# spawn NAME LOGFILE CMD...: start CMD in its own session and record its pid. setsid and setpriv
# exec in place, so the recorded pid is the daemon's own.
spawn() {
  local name=$1 logfile=$2
  shift 2
  setsid "$@" </dev/null >>"$logfile" 2>&1 &
  echo $! >"$(pidfile "$name")"
}

# wait_for DESCRIPTION SECONDS CMD...: poll CMD until it succeeds, or fail after SECONDS.
wait_for() {
  local what=$1 seconds=$2 deadline
  shift 2
  deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${seconds}s waiting for $what"
    sleep 0.2
  done
}

# ---------------------------------------------------------------------------------------------
# Configuration

profile() { cat "$BASE/profile" 2>/dev/null || echo "${VIGIE_LAB_PROFILE:-default}"; }

# The transport, recorded at `up` in $BASE/transport: `tls` (VIGIE_LAB_TLS=1) or `plain`.
transport() {
  cat "$BASE/transport" 2>/dev/null && return 0
  if [ "${VIGIE_LAB_TLS:-0}" = 1 ]; then echo tls; else echo plain; fi
}
tls_on() { [ "$(transport)" = tls ]; }
scheme() { if tls_on; then echo https; else echo http; fi; }

# lab_curl ARGS...: curl with the lab's CA and its own client certificate on the TLS profile
# (Patroni and etcd require one there).
lab_curl() {
  if tls_on; then
    curl --cacert "$CERTS/ca.crt" --cert "$CERTS/lab.crt" --key "$CERTS/lab.key" "$@"
  else
    curl "$@"
  fi
}

# TLS profile: a CA, one server certificate per node (etcd, Patroni REST, PostgreSQL; valid for
# the node's address), one client certificate per agent and for Patroni's own calls, and one for
# the lab script. Readable by postgres (Patroni, PostgreSQL); etcd and HAProxy run as root.
write_certs() {
  local n args=()
  for n in "${NODES[@]}"; do args+=(--server "node$n-server" "IP:$(node_ip "$n"),DNS:node$n"); done
  "$HERE/../certs.sh" "$CERTS" "${args[@]}" node1 node2 node3 haproxy lab 2>/dev/null
  cat "$CERTS/haproxy.crt" "$CERTS/haproxy.key" >"$CERTS/haproxy.pem"
  chown -R postgres:postgres "$CERTS"
  chmod 700 "$CERTS"
  chmod 600 "$CERTS"/*
}

# haproxy_listen NAME PORT CHECK_PATH [EXTRA]: a proxy on HAProxy's address routing to every node
# whose Patroni answers CHECK_PATH with 200.
haproxy_listen() {
  local name=$1 port=$2 check=$3 extra=${4:-} n
  {
    echo
    echo "listen $name"
    echo "    bind $HAPROXY_ADDR:$port"
    [ -n "$extra" ] && echo "    $extra"
    echo "    option httpchk OPTIONS $check"
    echo "    http-check expect status 200"
    echo "    default-server inter 1s fall 2 rise 2 on-marked-down shutdown-sessions"
    for n in "${NODES[@]}"; do
      echo "    server node$n $(node_ip "$n"):5432 maxconn 100 check port 8008$(tls_on && echo " check-ssl verify required ca-file $CERTS/ca.crt crt $CERTS/haproxy.pem")"
    done
  } >>"$BASE/haproxy.cfg"
}

write_configs() {
  local prof=${VIGIE_LAB_PROFILE:-default} ttl loop_wait retry_timeout n
  case "$prof" in
    default) ttl=30 loop_wait=10 retry_timeout=10 ;;
    fast) ttl=10 loop_wait=2 retry_timeout=4 ;;
    *) die "VIGIE_LAB_PROFILE must be 'default' or 'fast', not '$prof'" ;;
  esac
  mkdir -p "$BASE" "$RUN"
  chmod 755 "$BASE"
  echo "$prof" >"$BASE/profile"
  transport >"$BASE/transport.new" && mv "$BASE/transport.new" "$BASE/transport"
  if tls_on; then write_certs; fi
  printf '%s\n' "$MONITOR_PASSWORD" >"$BASE/monitor.password"
  chmod 644 "$BASE/monitor.password"

  local cluster="" hosts=""
  for n in "${NODES[@]}"; do
    cluster+="${cluster:+,}etcd$n=http://$(node_ip "$n"):2380"
    hosts+="${hosts:+,}$(node_ip "$n"):2379"
  done
  echo "$cluster" >"$BASE/etcd-initial-cluster"

  for n in "${NODES[@]}"; do
    local dir ip
    dir=$(node_dir "$n")
    ip=$(node_ip "$n")
    mkdir -p "$dir/bin" "$dir/archive" "$BASE/etcd$n"
    chmod 700 "$BASE/etcd$n"
    # Patroni starts PostgreSQL through this bin_dir. `postgres` is a wrapper that refuses to
    # start while the stop-pg fault holds, so Patroni cannot restart the stopped instance; every
    # other tool is a plain link to Debian's binaries.
    local tool
    for tool in "$PG_BIN"/*; do
      ln -sfn "$tool" "$dir/bin/$(basename "$tool")"
    done
    rm -f "$dir/bin/postgres"
    cat >"$dir/bin/postgres" <<EOF
#!/bin/sh
if [ -e "$dir/pg-blocked" ] && [ "\$1" != "--version" ] && [ "\$1" != "-V" ]; then
  echo "vigie lab: PostgreSQL start refused: fault stop-pg holds on node$n" >&2
  date +%s >>"$dir/pg-refused"
  exit 1
fi
exec $PG_BIN/postgres "\$@"
EOF
    chmod 755 "$dir/bin/postgres"
    local restapi_tls="" etcd_tls="" ctl="" pg_ssl="" hba_ssl=""
    if tls_on; then
      restapi_tls="
  certfile: $CERTS/node$n-server.crt
  keyfile: $CERTS/node$n-server.key
  cafile: $CERTS/ca.crt
  verify_client: required"
      etcd_tls="
  protocol: https
  cacert: $CERTS/ca.crt
  cert: $CERTS/node$n.crt
  key: $CERTS/node$n.key"
      # Patroni's own REST calls (to other members, patronictl) present the node's certificate.
      ctl="ctl:
  cacert: $CERTS/ca.crt
  certfile: $CERTS/node$n.crt
  keyfile: $CERTS/node$n.key"
      pg_ssl="
    ssl: \"on\"
    ssl_cert_file: $CERTS/node$n-server.crt
    ssl_key_file: $CERTS/node$n-server.key"
      # The monitoring role may log in over TLS only (a hostssl-only pg_hba, as in production).
      hba_ssl="
    - hostssl all $MONITOR_USER 127.0.0.0/8 scram-sha-256
    - hostnossl all $MONITOR_USER 127.0.0.0/8 reject"
    fi
    cat >"$dir/patroni.yml" <<EOF
scope: $SCOPE
namespace: /service/
name: node$n
log:
  level: INFO
restapi:
  listen: $ip:8008
  connect_address: $ip:8008$restapi_tls
$ctl
etcd3:
  hosts: $hosts$etcd_tls
bootstrap:
  dcs:
    ttl: $ttl
    loop_wait: $loop_wait
    retry_timeout: $retry_timeout
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        max_connections: 50
        # Archived to the node's own directory (next to its data directory: the archiver runs
        # in it). Copied then renamed, so that a segment copied twice (an archiver restarted
        # after its copy) is no failure.
        archive_mode: "on"
        archive_command: "cp %p ../archive/%f.part && mv ../archive/%f.part ../archive/%f"
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
    - data-checksums
postgresql:
  # Patroni owns the whole pg_hba.conf (bootstrap.pg_hba would only append to initdb's trust
  # lines). Replicas connect from 127.0.0.1, the kernel's source address on lo.
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.0/8 scram-sha-256$hba_ssl
    - host all all 127.0.0.0/8 scram-sha-256
  listen: $ip:5432
  connect_address: $ip:5432
  data_dir: $dir/data
  bin_dir: $dir/bin
  pgpass: $dir/pgpass
  # A new replica's base backup starts with an immediate checkpoint, not a spread one that can
  # take minutes after heavy writes.
  basebackup:
    - checkpoint: fast
  authentication:
    superuser:
      username: postgres
      password: $SUPERUSER_PASSWORD
    replication:
      username: replicator
      password: $REPLICATION_PASSWORD
  parameters:
    unix_socket_directories: $dir
    shared_buffers: 32MB
    logging_collector: "off"$pg_ssl
tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false
EOF
    chown -R postgres:postgres "$dir"
    chmod 700 "$dir"
  done

  cat >"$BASE/haproxy.cfg" <<EOF
global
    maxconn 200
    stats socket $BASE/haproxy.sock mode 600 level admin
    stats timeout 10s

defaults
    mode tcp
    log global
    retries 2
    timeout connect 4s
    timeout client 30m
    timeout server 30m
    timeout check 2s

listen stats
    mode http
    bind $HAPROXY_ADDR:$STATS_PORT
    stats enable
    stats uri /
    stats refresh 5s

EOF
  haproxy_listen "${SCOPE}_rw" "$RW_PORT" /primary
  haproxy_listen "${SCOPE}_ro" "$RO_PORT" /replica "balance roundrobin"
  if tls_on; then write_tls_agent_configs; fi
}

# TLS profile: the lab's agent configs (deploy/lab/agent-*.toml with https URLs, the CA and each
# agent's client certificate, PostgreSQL with sslmode = verify-full). Processes are matched on
# this lab's own paths, so a second lab on the machine (another network namespace, same pid
# namespace) is never mistaken for this one.
write_tls_agent_configs() {
  local n ip
  for n in "${NODES[@]}"; do
    ip=$(node_ip "$n")
    cat >"$BASE/agent-node$n.toml" <<EOF
# vigie-agent on lab node$n, TLS profile (written by deploy/lab/lab.sh).
node = "node$n"
cluster = "$SCOPE"
interval = "5s"
timeout = "2s"

[patroni]
url = "https://$ip:8008"
process = { executable = "patroni", cmdline_contains = "$(patroni_pattern "$n")" }
ca = "$CERTS/ca.crt"
cert = "$CERTS/node$n.crt"
key = "$CERTS/node$n.key"

[postgres]
host = "$ip"
port = 5432
user = "$MONITOR_USER"
password_file = "$BASE/monitor.password"
statement_timeout = "1s"
sslmode = "verify-full"
sslrootcert = "$CERTS/ca.crt"

[etcd]
client_url = "https://$ip:2379"
peer_address = "$ip:2380"
process = { executable = "/usr/bin/etcd", cmdline_contains = "--data-dir $BASE/etcd$n" }
ca = "$CERTS/ca.crt"
cert = "$CERTS/node$n.crt"
key = "$CERTS/node$n.key"

[collector]
url = "http://127.0.0.1:9701"
plaintext = true
EOF
  done
  cat >"$BASE/agent-haproxy.toml" <<EOF
# vigie-agent on the lab's HAProxy host, TLS profile (written by deploy/lab/lab.sh).
node = "haproxy"
cluster = "$SCOPE"
interval = "5s"
timeout = "2s"

[haproxy]
stats_socket = "$BASE/haproxy.sock"
process = { executable = "/usr/sbin/haproxy", cmdline_contains = "$BASE/haproxy.cfg" }

[[haproxy.applications]]
name = "$SCOPE"
rw = "$HAPROXY_ADDR:$RW_PORT"
ro = "$HAPROXY_ADDR:$RO_PORT"

[collector]
url = "http://127.0.0.1:9701"
plaintext = true
EOF
}

# ---------------------------------------------------------------------------------------------
# Components

etcd_pattern() { echo "--name etcd$1"; }
patroni_pattern() { echo "$(node_dir "$1")/patroni.yml"; }
haproxy_pattern() { echo "$BASE/haproxy.cfg"; }

start_etcd() {
  local n=$1 ip
  ip=$(node_ip "$n")
  running "etcd$n" "$(etcd_pattern "$n")" && return 0
  local tls=()
  if tls_on; then
    tls=(--cert-file "$CERTS/node$n-server.crt" --key-file "$CERTS/node$n-server.key"
      --client-cert-auth --trusted-ca-file "$CERTS/ca.crt")
  fi
  spawn "etcd$n" "$BASE/etcd$n.log" /usr/bin/etcd --name "etcd$n" --data-dir "$BASE/etcd$n" \
    --listen-client-urls "$(scheme)://$ip:2379" --advertise-client-urls "$(scheme)://$ip:2379" "${tls[@]}" \
    --listen-peer-urls "http://$ip:2380" --initial-advertise-peer-urls "http://$ip:2380" \
    --initial-cluster "$(cat "$BASE/etcd-initial-cluster")" --initial-cluster-state new \
    --initial-cluster-token vigie-lab --heartbeat-interval 100 --election-timeout 1000
}

stop_etcd() { stop_pid "$(recorded_pid "etcd$1")" "$(etcd_pattern "$1")" 3; }

etcd_healthy() { lab_curl -fsS -m 2 "$(scheme)://$(node_ip "$1"):2379/health" | grep -q '"health":"true"'; }

start_patroni() {
  local n=$1
  running "patroni$n" "$(patroni_pattern "$n")" && return 0
  spawn "patroni$n" "$BASE/patroni$n.log" setpriv --reuid=postgres --regid=postgres --init-groups \
    --reset-env /usr/bin/patroni "$(patroni_pattern "$n")"
}

stop_patroni() {
  # Patroni stops its PostgreSQL on SIGTERM; a leader hands over first.
  stop_pid "$(recorded_pid "patroni$1")" "$(patroni_pattern "$1")" 30
}

start_haproxy() {
  running haproxy "$(haproxy_pattern)" && return 0
  /usr/sbin/haproxy -c -q -f "$BASE/haproxy.cfg" || die "invalid $BASE/haproxy.cfg"
  spawn haproxy "$BASE/haproxy.log" /usr/sbin/haproxy -db -f "$BASE/haproxy.cfg"
}

stop_haproxy() { stop_pid "$(recorded_pid haproxy)" "$(haproxy_pattern)" 5; }

# postmaster_pid N: the running postmaster of node N, from its own postmaster.pid.
postmaster_pid() {
  local dir pid
  dir=$(node_dir "$1")
  pid=$(head -n1 "$dir/data/postmaster.pid" 2>/dev/null) || return 1
  alive "$pid" postgres || return 1
  [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$dir/data" ] || return 1
  echo "$pid"
}

# instance_pids N: the postmaster of node N and all its children (backends, walsender, …).
instance_pids() {
  local pm
  pm=$(postmaster_pid "$1") || return 1
  echo "$pm"
  ps -o pid= --ppid "$pm" | tr -d ' '
}

# ---------------------------------------------------------------------------------------------
# Cluster queries

patroni_get() { lab_curl -fsS -m 3 "$(scheme)://$(node_ip "$1"):8008/$2"; }

# cluster_json: /cluster from the first Patroni that answers.
cluster_json() {
  local n
  for n in "${NODES[@]}"; do
    patroni_get "$n" cluster 2>/dev/null && return 0
  done
  return 1
}

# leader_node: the node number of the current leader, from Patroni's /cluster.
leader_node() {
  local name
  name=$(cluster_json | jq -r '.members[] | select(.role == "leader") | .name' | head -n1)
  [ -n "$name" ] || return 1
  echo "${name#node}"
}

# sync_node: the node number of Patroni's (first) synchronous standby, from /cluster.
sync_node() {
  local name
  name=$(cluster_json | jq -r '.members[] | select(.role == "sync_standby") | .name' | head -n1)
  [ -n "$name" ] || return 1
  echo "${name#node}"
}

# resolve_node ARG: a node number; `leader` means the current leader, `sync` Patroni's
# synchronous standby.
resolve_node() {
  case "${1:-}" in
    1 | 2 | 3) echo "$1" ;;
    leader) leader_node || die "no leader right now" ;;
    sync) sync_node || die "no synchronous standby right now" ;;
    "") die "this fault needs a node: 1, 2, 3, leader or sync" ;;
    *) die "unknown node '$1': expected 1, 2, 3, leader or sync" ;;
  esac
}

# psql_node N SQL: run SQL as the superuser on node N through its Unix socket.
psql_node() {
  PGOPTIONS="-c client_min_messages=warning" PGCONNECT_TIMEOUT=$PSQL_TIMEOUT setpriv --reuid=postgres --regid=postgres --init-groups \
    "$PG_BIN/psql" -h "$(node_dir "$1")" -p 5432 -U postgres -d postgres -XAtq -v ON_ERROR_STOP=1 -c "$2"
}

# psql_rw SQL: run SQL as the monitoring role through HAProxy's RW port.
psql_rw() {
  PGPASSWORD=$MONITOR_PASSWORD PGCONNECT_TIMEOUT=$PSQL_TIMEOUT \
    psql -h "$HAPROXY_ADDR" -p "$RW_PORT" -U "$MONITOR_USER" -d postgres -XAtq -c "$1"
}

streaming_replicas() { psql_node "$1" "select count(*) from pg_stat_replication where state = 'streaming'"; }

# cluster_ready: one leader, every other node streaming from it, and HAProxy RW reaching it.
cluster_ready() {
  local leader count addr
  leader=$(leader_node) || return 1
  count=$(streaming_replicas "$leader") || return 1
  [ "$count" = $((${#NODES[@]} - 1)) ] || return 1
  addr=$(psql_rw "select inet_server_addr()::text || ' ' || pg_is_in_recovery()::text") || return 1
  [ "$addr" = "$(node_ip "$leader")/32 false" ]
}

ensure_monitor_role() {
  local leader
  leader=$(leader_node) || die "no leader to create the monitoring role on"
  psql_node "$leader" "DO \$\$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$MONITOR_USER') THEN
        CREATE ROLE $MONITOR_USER LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '$MONITOR_PASSWORD';
      END IF;
      GRANT pg_monitor TO $MONITOR_USER;
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$APP_USER') THEN
        CREATE ROLE $APP_USER LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '$APP_PASSWORD';
      END IF;
    END \$\$;" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# Commands

check_addresses_free() {
  # A lab started from another directory, or a foreign service, would make ours fail obscurely.
  local ip port
  for ip in $HAPROXY_ADDR 127.0.0.11 127.0.0.12 127.0.0.13; do
    for port in 2379 2380 8008 5432 $RW_PORT $RO_PORT $STATS_PORT; do
      if (exec 3<>"/dev/tcp/$ip/$port") 2>/dev/null; then
        die "$ip:$port is already in use by something this lab ($BASE) did not start"
      fi
    done
  done
}

cmd_up() {
  local n started=$SECONDS
  ensure_packages
  if [ -f "$BASE/profile" ]; then
    if [ -n "${VIGIE_LAB_PROFILE:-}" ] && [ "$VIGIE_LAB_PROFILE" != "$(profile)" ]; then
      log "the lab in $BASE runs profile '$(profile)'; VIGIE_LAB_PROFILE=$VIGIE_LAB_PROFILE is ignored until 'down'"
    fi
    local want=plain
    [ "${VIGIE_LAB_TLS:-}" = 1 ] && want=tls
    if [ -n "${VIGIE_LAB_TLS:-}" ] && [ "$want" != "$(transport)" ]; then
      log "the lab in $BASE runs transport '$(transport)'; VIGIE_LAB_TLS=$VIGIE_LAB_TLS is ignored until 'down'"
    fi
  else
    check_addresses_free
    write_configs
    log "profile $(profile), transport $(transport), state in $BASE"
  fi
  for n in "${NODES[@]}"; do start_etcd "$n"; done
  for n in "${NODES[@]}"; do wait_for "etcd$n health" 60 etcd_healthy "$n"; done
  for n in "${NODES[@]}"; do start_patroni "$n"; done
  start_haproxy
  wait_for "a leader" 120 leader_node
  ensure_monitor_role
  wait_for "a leader with $((${#NODES[@]} - 1)) streaming replicas, reached through HAProxy RW" 180 cluster_ready
  log "up in $((SECONDS - started))s: leader node$(leader_node), RW $HAPROXY_ADDR:$RW_PORT, RO $HAPROXY_ADDR:$RO_PORT"
}

cmd_down() {
  local n pid
  [ -d "$BASE" ] || { log "nothing to stop: no lab in $BASE"; return 0; }
  # Frozen processes cannot act on SIGTERM: thaw every instance first.
  for n in "${NODES[@]}"; do
    for pid in $(instance_pids "$n" 2>/dev/null); do kill -CONT "$pid" 2>/dev/null || true; done
    rm -f "$(node_dir "$n")/pg-blocked"
  done
  stop_haproxy
  for n in "${NODES[@]}"; do
    if [ -e "$(pidfile "hold$n")" ]; then fault_release_connections "$n"; fi
    if [ -e "$(pidfile "snapshot$n")" ]; then fault_release_snapshot "$n"; fi
  done
  for n in "${NODES[@]}"; do
    pid=$(recorded_pid "patroni$n")
    if alive "$pid" "$(patroni_pattern "$n")"; then kill -CONT "$pid"; kill -TERM "$pid"; fi
  done
  for n in "${NODES[@]}"; do stop_patroni "$n"; done
  # A postmaster left behind (its Patroni was killed): stop it by the pid it recorded.
  for n in "${NODES[@]}"; do
    if pid=$(postmaster_pid "$n"); then stop_pid "$pid" postgres 15; fi
  done
  for n in "${NODES[@]}"; do
    pid=$(recorded_pid "etcd$n")
    if alive "$pid" "$(etcd_pattern "$n")"; then kill -CONT "$pid"; kill -TERM "$pid"; fi
  done
  for n in "${NODES[@]}"; do stop_etcd "$n"; done
  for n in "${NODES[@]}"; do
    if mountpoint -q "$(walfs_dir "$n")"; then umount "$(walfs_dir "$n")"; fi
  done
  rm -rf "$BASE"
  log "down: every lab process stopped, $BASE removed"
}

# repair: undo every fault (thaw, unblock, resume replay, leave maintenance mode), restart what is
# stopped, and wait until the cluster is ready again. Does nothing to a healthy lab.
cmd_repair() {
  local n pid
  require_lab
  for n in "${NODES[@]}"; do
    for pid in $(instance_pids "$n" 2>/dev/null); do kill -CONT "$pid" 2>/dev/null || true; done
    rm -f "$(node_dir "$n")/pg-blocked" "$(node_dir "$n")/pg-refused" "$RUN/replay-paused$n" \
      "$RUN/walsender-frozen$n"
    pid=$(recorded_pid "etcd$n")
    if alive "$pid" "$(etcd_pattern "$n")"; then kill -CONT "$pid"; fi
    if [ -e "$RUN/misrouted$n" ] && running haproxy "$(haproxy_pattern)"; then fault_unmisroute_rw "$n"; fi
    if [ -e "$(pidfile "hold$n")" ]; then fault_release_connections "$n"; fi
    if [ -e "$(pidfile "snapshot$n")" ]; then fault_release_snapshot "$n"; fi
  done
  for n in "${NODES[@]}"; do reinit_promoted "$n"; done
  for n in "${NODES[@]}"; do
    if [ -e "$RUN/walfs$n" ]; then fault_restore_wal_fs "$n"; fi
  done
  cmd_up
  if [ "$(cluster_json | jq -r '.pause // false')" = true ]; then fault_pause resume; fi
  for n in "${NODES[@]}"; do
    if [ -e "$RUN/archive-failing$n" ]; then fault_repair_archiving "$n"; fi
  done
  if [ -e "$RUN/forgotten-slot" ]; then fault_drop_forgotten_slot; fi
  if [ -e "$RUN/sync-mode" ]; then fault_sync_mode off; fi
}

cmd_status() {
  [ -f "$BASE/profile" ] || { echo "no lab in $BASE"; return 3; }
  local n json
  echo "lab $BASE, profile $(profile), transport $(transport)"
  echo
  if json=$(cluster_json 2>/dev/null); then
    echo "Patroni cluster '$SCOPE'$(jq -r 'if .pause then " (maintenance mode: paused)" else "" end' <<<"$json"):"
    jq -r '.members[] | [.name, .host, .role, .state, "tl=\(.timeline // "-")", "lag=\(.lag // "-")"] | @tsv' \
      <<<"$json" | column -t | sed 's/^/  /'
  else
    echo "Patroni: no member answers /cluster ($(scheme))"
  fi
  echo
  echo "etcd:"
  for n in "${NODES[@]}"; do
    if etcd_healthy "$n" 2>/dev/null; then
      echo "  etcd$n $(scheme)://$(node_ip "$n"):2379 healthy"
    elif running "etcd$n" "$(etcd_pattern "$n")"; then
      echo "  etcd$n $(node_ip "$n"):2379 running, unhealthy"
    else
      echo "  etcd$n $(node_ip "$n"):2379 down"
    fi
  done
  echo
  echo "HAProxy $HAPROXY_ADDR (RW :$RW_PORT, RO :$RO_PORT, stats http://$HAPROXY_ADDR:$STATS_PORT/):"
  if csv=$(curl -fsS -m 2 "http://$HAPROXY_ADDR:$STATS_PORT/;csv" 2>/dev/null); then
    awk -F, '$1 ~ /_(rw|ro)$/ && $2 != "FRONTEND" && $2 != "BACKEND" { printf "  %s/%s %s %s\n", $1, $2, $18, $37 }' <<<"$csv"
  else
    echo "  down"
  fi
}

# Shell-sourceable facts about the running lab, for tests and tools.
cmd_env() {
  cat <<EOF
VIGIE_LAB_DIR=$BASE
VIGIE_LAB_PROFILE=$(profile)
VIGIE_LAB_TLS=$(tls_on && echo 1 || echo 0)
VIGIE_LAB_SCHEME=$(scheme)
VIGIE_LAB_CERTS=$CERTS
VIGIE_LAB_SCOPE=$SCOPE
VIGIE_LAB_HAPROXY=$HAPROXY_ADDR
VIGIE_LAB_RW_PORT=$RW_PORT
VIGIE_LAB_RO_PORT=$RO_PORT
VIGIE_LAB_STATS_URL=http://$HAPROXY_ADDR:$STATS_PORT/
VIGIE_LAB_HAPROXY_SOCKET=$BASE/haproxy.sock
VIGIE_LAB_MONITOR_USER=$MONITOR_USER
VIGIE_LAB_MONITOR_PASSWORD_FILE=$BASE/monitor.password
VIGIE_LAB_SUPERUSER_PASSWORD=$SUPERUSER_PASSWORD
EOF
}

require_lab() { [ -f "$BASE/profile" ] || die "no lab in $BASE: run '$0 up' first"; }

fault_stop_pg() {
  local n=$1 dir pm
  dir=$(node_dir "$n")
  touch "$dir/pg-blocked"
  if pm=$(postmaster_pid "$n"); then
    setpriv --reuid=postgres --regid=postgres --init-groups "$dir/bin/pg_ctl" -D "$dir/data" \
      stop -m fast -w -t 30 >/dev/null || die "pg_ctl stop failed on node$n"
  fi
  log "node$n: PostgreSQL stopped; Patroni cannot restart it until 'fault start-pg $n'"
}

fault_start_pg() {
  local n=$1
  rm -f "$(node_dir "$n")/pg-blocked" "$(node_dir "$n")/pg-refused"
  start_patroni "$n"
  wait_for "PostgreSQL on node$n" 120 postmaster_pid "$n"
  log "node$n: PostgreSQL may start again (Patroni restarts it within a loop)"
}

fault_freeze() {
  local n=$1 scope=$2 pm pid
  pm=$(postmaster_pid "$n") || die "node$n: PostgreSQL is not running"
  kill -STOP "$pm"
  if [ "$scope" = all ]; then
    # Stopped first, the postmaster forks no new children while we freeze the existing ones.
    for pid in $(ps -o pid= --ppid "$pm"); do kill -STOP "$pid" 2>/dev/null || true; done
  fi
}

fault_thaw() {
  local n=$1 pm pid
  pm=$(postmaster_pid "$n") || die "node$n: PostgreSQL is not running"
  for pid in $(ps -o pid= --ppid "$pm"); do kill -CONT "$pid" 2>/dev/null || true; done
  kill -CONT "$pm"
}

# startup_pid N: the recovery (startup) process of node N's instance.
startup_pid() {
  local pm pid
  pm=$(postmaster_pid "$1") || return 1
  for pid in $(ps -o pid= --ppid "$pm"); do
    if alive "$pid" "startup"; then echo "$pid"; return 0; fi
  done
  return 1
}

# Patroni (PostgreSQL 14+) calls pg_wal_replay_resume() at its next loop after a
# pg_wal_replay_pause() unless the whole cluster is in maintenance mode, so the lab holds replay by
# freezing the replica's startup (recovery) process: WAL keeps arriving, nothing is replayed.
fault_pause_replay() {
  local n=$1 leader pid
  leader=$(leader_node) || die "no leader right now"
  [ "$n" != "$leader" ] || die "node$n is the leader: replay can only be paused on a replica"
  pid=$(startup_pid "$n") || die "node$n has no recovery process"
  kill -STOP "$pid"
  echo "$pid" >"$RUN/replay-paused$n"
  log "node$n: WAL replay held (startup process $pid stopped), WAL still received"
}

fault_resume_replay() {
  local n=$1 pid
  pid=$(cat "$RUN/replay-paused$n" 2>/dev/null) || { log "node$n: replay was not paused"; return 0; }
  if alive "$pid" startup; then kill -CONT "$pid"; fi
  rm -f "$RUN/replay-paused$n"
  log "node$n: WAL replay resumed"
}

# haproxy_cmd CMD: one command on HAProxy's admin socket (python3 is there for Patroni).
haproxy_cmd() {
  python3 - "$BASE/haproxy.sock" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
out = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    out += chunk
sys.stdout.write(out.decode())
PY
}

# A copy-paste error in a server's `check addr`: HAProxy checks node N's RW server against the
# leader's Patroni, so the check passes and writes are sent to node N (a replica) as well.
fault_misroute_rw() {
  local n=$1 leader out
  leader=$(leader_node) || die "no leader right now"
  [ "$n" != "$leader" ] || die "node$n is the leader: misroute a replica"
  out=$(haproxy_cmd "set server ${SCOPE}_rw/node$n check-addr $(node_ip "$leader")")
  [ -z "${out//[[:space:]]/}" ] || die "HAProxy refused: $out"
  echo "$n" >"$RUN/misrouted$n"
  wait_for "HAProxy RW sending writes to node$n" 30 rw_status_is "$n" UP
  log "node$n: HAProxy's RW check of it now asks the leader node$leader's Patroni: writes reach node$n too"
}

# rw_status_is N STATUS: HAProxy's RW server for node N has that status.
rw_status_is() {
  haproxy_cmd "show stat" | awk -F, -v p="${SCOPE}_rw" -v s="node$1" '$1 == p && $2 == s { print $18 }' |
    grep -q "^$2"
}

fault_unmisroute_rw() {
  local n=$1 leader
  haproxy_cmd "set server ${SCOPE}_rw/node$n check-addr $(node_ip "$n")" >/dev/null
  rm -f "$RUN/misrouted$n"
  leader=$(leader_node) || true
  if [ "$n" != "$leader" ]; then wait_for "HAProxy RW no longer sending writes to node$n" 30 rw_status_is "$n" DOWN; fi
  log "node$n: HAProxy's RW check of it asks its own Patroni again"
}

# The walsender serving node N's stream on the leader hangs (SIGSTOP): the TCP session stays up,
# the replica receives nothing, the primary keeps committing.
fault_freeze_walsender() {
  local n=$1 leader pm pid
  leader=$(leader_node) || die "no leader right now"
  [ "$n" != "$leader" ] || die "node$n is the leader: freeze the walsender of a replica"
  pm=$(postmaster_pid "$leader") || die "node$leader: PostgreSQL is not running"
  pid=$(psql_node "$leader" "select pid from pg_stat_replication where application_name = 'node$n'") ||
    die "cannot read pg_stat_replication on node$leader"
  [ -n "$pid" ] || die "node$leader has no walsender for node$n"
  [ "$(ps -o ppid= -p "$pid" | tr -d ' ')" = "$pm" ] || die "pid $pid is not a child of node$leader's postmaster"
  kill -STOP "$pid"
  echo "$pid" >"$RUN/walsender-frozen$n"
  log "node$n: its walsender on node$leader (pid $pid) stopped; the stream stalls, the session stays up"
}

fault_thaw_walsender() {
  local n=$1 pid
  pid=$(cat "$RUN/walsender-frozen$n" 2>/dev/null) || { log "node$n: no frozen walsender"; return 0; }
  if alive "$pid" walsender; then kill -CONT "$pid"; fi
  rm -f "$RUN/walsender-frozen$n"
  log "node$n: walsender resumed"
}

# An operator's mistake: `pg_ctl promote` on replica N (e.g. during maintenance mode, when Patroni
# does not step in): two writable primaries, Patroni's leader unchanged.
fault_promote() {
  local n=$1 leader dir
  leader=$(leader_node) || die "no leader right now"
  [ "$n" != "$leader" ] || die "node$n is the leader already"
  dir=$(node_dir "$n")
  setpriv --reuid=postgres --regid=postgres --init-groups "$dir/bin/pg_ctl" -D "$dir/data" promote -w -t 30 >/dev/null ||
    die "pg_ctl promote failed on node$n"
  echo "$n" >"$RUN/promoted$n"
  # The fault is in place once this node's Patroni has looked at it: in maintenance mode it goes on
  # "as primary without lock"; outside it (or if Patroni finds a pg_rewind pending) it demotes.
  wait_for "node$n's Patroni to call it primary" 30 patroni_role_is "$n" master primary
  log "node$n: promoted by hand (node$leader is still Patroni's leader)"
}

# After `promote N` the node is on a timeline of its own. Patroni demotes it once the cluster is
# resumed, and 3.0.2 may then leave it unable to follow ("highest timeline N of the primary is
# behind recovery timeline N+1") while /cluster shows it running: rebuild it from the leader, and
# wait until the rebuild has started and the cluster is ready again.
member_state() { cluster_json | jq -r --arg m "node$1" '.members[] | select(.name == $m) | .state'; }
member_state_is_not() { [ "$(member_state "$1")" != "$2" ]; }
member_is_running_replica() {
  [ "$(cluster_json | jq -r --arg m "node$1" '.members[] | select(.name == $m) | "\(.role) \(.state)"')" = "replica running" ]
}

request_reinit() {
  member_state_is_not "$1" running && return 0
  lab_curl -fsS -m 30 -XPOST "$(scheme)://$(node_ip "$1"):8008/reinitialize" -H 'Content-Type: application/json' \
    -d '{"force": true}' >/dev/null 2>&1 || true
  sleep 1
  member_state_is_not "$1" running
}

reinit_promoted() {
  local n=$1
  [ -e "$RUN/promoted$n" ] || return 0
  if [ "$(cluster_json | jq -r '.pause // false')" = true ]; then fault_pause resume; fi
  wait_for "Patroni to demote node$n" 60 member_is_running_replica "$n"
  # One rebuild: ask again only while none has started (a second one would race the first).
  wait_for "node$n's rebuild to start" 90 request_reinit "$n"
  rm -f "$RUN/promoted$n"
  wait_for "node$n rebuilt and streaming again" 180 cluster_ready
  log "node$n: reinitialized from the leader"
}

# saturate-connections N: an application uses up node N's connection slots (max_connections
# minus the superuser reserve): new logins of ordinary roles are refused, the sessions already
# open (the agent's, Patroni's superuser one) keep working.
holder_pattern() { echo "hold-connections.py $(node_ip "$1")"; }
holder_says() { grep -q "^holding" "$BASE/hold$1.log" 2>/dev/null; }
fault_saturate_connections() {
  local n=$1
  running "hold$n" "$(holder_pattern "$n")" && die "node$n: connections are held already"
  : >"$BASE/hold$n.log"
  spawn "hold$n" "$BASE/hold$n.log" /usr/bin/python3 "$HERE/hold-connections.py" "$(node_ip "$n")" 5432 \
    "$APP_USER" "$APP_PASSWORD"
  holder_up() { holder_says "$1" || ! running "hold$1" "$(holder_pattern "$1")"; }
  wait_for "node$n's connection slots used up" 60 holder_up "$n"
  holder_says "$n" || die "node$n: $(cat "$BASE/hold$n.log")"
  log "node$n: $(cat "$BASE/hold$n.log")"
}

fault_release_connections() {
  local n=$1
  stop_pid "$(recorded_pid "hold$n")" "$(holder_pattern "$n")" 10
  rm -f "$(pidfile "hold$n")"
  log "node$n: application connections released"
}

# forgotten-slot / drop-forgotten-slot: a permanent physical slot in Patroni's configuration
# that nothing consumes (a decommissioned standby, a backup tool that is gone): Patroni creates
# it reserving WAL from now, and every segment written since stays in pg_wal.
FORGOTTEN_SLOT=lab_forgotten
slot_on_leader() {
  local leader
  leader=$(leader_node) || return 1
  [ "$(psql_node "$leader" "select count(*) from pg_replication_slots where slot_name = '$FORGOTTEN_SLOT' and restart_lsn is not null")" = "$1" ]
}
patch_config() {
  local leader
  leader=$(leader_node) || die "no leader right now"
  lab_curl -fsS -m 10 -XPATCH "$(scheme)://$(node_ip "$leader"):8008/config" \
    -H 'Content-Type: application/json' -d "$1" >/dev/null || die "Patroni refused PATCH /config $1"
}
fault_forgotten_slot() {
  patch_config "{\"slots\": {\"$FORGOTTEN_SLOT\": {\"type\": \"physical\"}}}"
  : >"$RUN/forgotten-slot"
  wait_for "slot $FORGOTTEN_SLOT on the leader" 60 slot_on_leader 1
  log "slot $FORGOTTEN_SLOT: created by Patroni on node$(leader_node), consumed by nobody"
}
fault_drop_forgotten_slot() {
  patch_config '{"slots": null}'
  wait_for "slot $FORGOTTEN_SLOT dropped on the leader" 60 slot_on_leader 0
  rm -f "$RUN/forgotten-slot"
  log "slot $FORGOTTEN_SLOT: removed from Patroni's configuration and dropped"
}

# sync-mode on|strict|off: Patroni's synchronous_mode (and synchronous_mode_strict), set in its
# dynamic configuration as `patronictl edit-config` does. `on` and `strict` return once
# PostgreSQL on the leader waits for a streaming sync standby and /cluster names it; `off` once
# synchronous_standby_names is empty again.
sync_standby_ready() {
  local leader count
  leader=$(leader_node) || return 1
  count=$(psql_node "$leader" "select count(*) from pg_stat_replication where state = 'streaming' and sync_state = 'sync'") || return 1
  [ "$count" -ge 1 ] && [ -n "$(sync_node)" ]
}
sync_off_applied() {
  local leader names
  leader=$(leader_node) || return 1
  names=$(psql_node "$leader" "show synchronous_standby_names") || return 1
  [ -z "$names" ] && ! sync_node >/dev/null
}
fault_sync_mode() {
  case "${1:-}" in
    on | strict)
      local strict=false
      [ "$1" = strict ] && strict=true
      patch_config "{\"synchronous_mode\": true, \"synchronous_mode_strict\": $strict}"
      : >"$RUN/sync-mode"
      wait_for "a synchronous standby" 60 sync_standby_ready
      log "synchronous_mode on$([ "$strict" = true ] && echo " (strict)"): node$(sync_node) is the sync standby"
      ;;
    off)
      patch_config '{"synchronous_mode": false, "synchronous_mode_strict": false}'
      wait_for "asynchronous replication" 60 sync_off_applied
      rm -f "$RUN/sync-mode"
      log "synchronous_mode off"
      ;;
    *) die "sync-mode needs on, strict or off" ;;
  esac
}

# small-wal-fs N [MIB] / restore-wal-fs N: node N's pg_wal moves to a tmpfs of MIB (default 256)
# mounted at nodeN/walfs — a WAL volume of its own, small enough to fill — and back into the data
# directory. The move is done in maintenance mode with N's PostgreSQL stopped; on `resume` Patroni
# starts it again in place, as after a crash (the leader stays the leader).
walfs_dir() { echo "$(node_dir "$1")/walfs"; }
pg_ctl_stop() {
  local n=$1
  postmaster_pid "$n" >/dev/null || return 0
  setpriv --reuid=postgres --regid=postgres --init-groups "$(node_dir "$n")/bin/pg_ctl" \
    -D "$(node_dir "$n")/data" stop -m fast -w -t 60 >/dev/null || die "pg_ctl stop failed on node$n"
}
postgres_back() { [ "$(psql_node "$1" "select 1" 2>/dev/null)" = 1 ]; }
fault_small_wal_fs() {
  local n=$1 mib=${2:-256} fs data
  fs=$(walfs_dir "$n") data=$(node_dir "$n")/data
  [ -e "$RUN/walfs$n" ] && die "node$n: pg_wal is on a small filesystem already"
  local used
  used=$(du -sm "$data/pg_wal" | cut -f1)
  [ "$used" -lt "$mib" ] || die "node$n: pg_wal holds $used MiB already, more than a $mib MiB volume"
  fault_pause pause
  pg_ctl_stop "$n"
  mkdir -p "$fs"
  mount -t tmpfs -o "size=${mib}m,mode=0700" "vigie-lab-walfs$n" "$fs" || die "cannot mount a tmpfs on $fs"
  : >"$RUN/walfs$n"
  chown postgres:postgres "$fs"
  cp -a "$data/pg_wal" "$fs/pg_wal"
  # Never a moment without pg_wal: the copy is linked in before the original goes.
  mv "$data/pg_wal" "$data/pg_wal.moved"
  ln -s "$fs/pg_wal" "$data/pg_wal"
  chown -h postgres:postgres "$data/pg_wal"
  rm -rf "$data/pg_wal.moved"
  fault_pause resume
  wait_for "PostgreSQL on node$n, restarted by Patroni" 120 postgres_back "$n"
  wait_for "the cluster ready" 120 cluster_ready
  log "node$n: pg_wal on a $mib MiB tmpfs ($fs): $(df -h --output=avail "$fs" | tail -n1 | tr -d ' ') free"
}
fault_restore_wal_fs() {
  local n=$1 fs data
  fs=$(walfs_dir "$n") data=$(node_dir "$n")/data
  [ -e "$RUN/walfs$n" ] || { log "node$n: pg_wal is in the data directory"; return 0; }
  # Paused first, so that Patroni cannot start a PostgreSQL stopped by a full volume while its WAL
  # is half copied (with no Patroni up, none can); a running one is stopped for the copy.
  local paused=
  if cluster_json >/dev/null 2>&1; then fault_pause pause; paused=1; fi
  pg_ctl_stop "$n"
  if [ -L "$data/pg_wal" ]; then
    rm "$data/pg_wal"
    cp -a "$fs/pg_wal" "$data/pg_wal"
  elif [ ! -e "$data/pg_wal" ] && [ -d "$data/pg_wal.moved" ]; then
    mv "$data/pg_wal.moved" "$data/pg_wal"
  fi
  umount "$fs"
  rm -f "$RUN/walfs$n"
  if [ -n "$paused" ]; then fault_pause resume; fi
  if running "patroni$n" "$(patroni_pattern "$n")"; then
    wait_for "PostgreSQL on node$n, restarted by Patroni" 120 postgres_back "$n"
    wait_for "the cluster ready" 120 cluster_ready
  fi
  log "node$n: pg_wal back in the data directory"
}

# switch-wal N [COUNT]: N completes COUNT WAL segments (a write, then pg_switch_wal()), as a busy
# primary does: what a slot retains or the archiver must archive grows by 16 MiB each.
fault_switch_wal() {
  local n=$1 count=${2:-1} i
  psql_node "$n" "create table if not exists lab_wal (at timestamptz)" >/dev/null
  for ((i = 0; i < count; i++)); do
    psql_node "$n" "insert into lab_wal values (now())" >/dev/null
    psql_node "$n" "select pg_switch_wal()" >/dev/null
  done
  log "node$n: $count WAL segment(s) completed"
}

# fail-archiving N / repair-archiving N: N's archive directory refuses writes (a full or
# read-only archive volume): archive_command fails on every segment, which piles up in pg_wal.
archiver_failing() { [ "$(psql_node "$1" "select coalesce(last_failed_time > last_archived_time, last_failed_time is not null) from pg_stat_archiver")" = "$2" ]; }
fault_fail_archiving() {
  local n=$1
  chmod 0500 "$(node_dir "$n")/archive"
  : >"$RUN/archive-failing$n"
  fault_switch_wal "$n" 1
  wait_for "node$n's archive_command to fail" 60 archiver_failing "$n" t
  log "node$n: archive_command failing (archive directory read-only)"
}
fault_repair_archiving() {
  local n=$1
  chmod 0700 "$(node_dir "$n")/archive"
  rm -f "$RUN/archive-failing$n"
  if running "patroni$n" "$(patroni_pattern "$n")" && [ "$(psql_node "$n" "select not pg_is_in_recovery()" 2>/dev/null)" = t ]; then
    fault_switch_wal "$n" 1
    wait_for "node$n's archiver to succeed again" 90 archiver_failing "$n" f
  fi
  log "node$n: archive directory writable again"
}

# hold-snapshot N / release-snapshot N: an application's session on N opens a transaction,
# reads, and stays idle in it (a connection pool that lost track of it): its snapshot holds
# the xmin horizon until it ends.
snapshot_pattern() { echo "hold-snapshot.py $(node_ip "$1")"; }
fault_hold_snapshot() {
  local n=$1
  running "snapshot$n" "$(snapshot_pattern "$n")" && die "node$n: a snapshot is held already"
  : >"$BASE/snapshot$n.log"
  spawn "snapshot$n" "$BASE/snapshot$n.log" /usr/bin/python3 "$HERE/hold-snapshot.py" "$(node_ip "$n")" 5432 \
    "$APP_USER" "$APP_PASSWORD"
  snapshot_up() { grep -q "^holding" "$BASE/snapshot$1.log" 2>/dev/null || ! running "snapshot$1" "$(snapshot_pattern "$1")"; }
  wait_for "node$n's snapshot held" 30 snapshot_up "$n"
  grep -q "^holding" "$BASE/snapshot$n.log" || die "node$n: $(cat "$BASE/snapshot$n.log")"
  log "node$n: $(cat "$BASE/snapshot$n.log")"
}
fault_release_snapshot() {
  local n=$1
  stop_pid "$(recorded_pid "snapshot$n")" "$(snapshot_pattern "$n")" 10
  rm -f "$(pidfile "snapshot$n")"
  log "node$n: the idle transaction ended"
}

# freeze-etcd N / thaw-etcd N: etcd member N stops answering (SIGSTOP), as in a long disk stall.
fault_freeze_etcd() {
  local n=$1 pid
  pid=$(recorded_pid "etcd$n")
  alive "$pid" "$(etcd_pattern "$n")" || die "etcd$n is not running"
  kill -STOP "$pid"
  log "etcd$n: frozen (SIGSTOP)"
}

fault_thaw_etcd() {
  local n=$1 pid
  pid=$(recorded_pid "etcd$n")
  if alive "$pid" "$(etcd_pattern "$n")"; then kill -CONT "$pid"; fi
  wait_for "etcd$n health" 30 etcd_healthy "$n"
  log "etcd$n: thawed"
}

fault_switchover() {
  local leader new
  leader=$(leader_node) || die "no leader to switch over from"
  patroni_get "$leader" cluster >/dev/null
  lab_curl -fsS -m 30 -XPOST "$(scheme)://$(node_ip "$leader"):8008/switchover" \
    -H 'Content-Type: application/json' -d "{\"leader\":\"node$leader\"}" >/dev/null ||
    die "Patroni refused the switchover"
  new_leader_other_than() { new=$(leader_node) && [ "$new" != "$1" ]; }
  wait_for "a new leader" 60 new_leader_other_than "$leader"
  wait_for "HAProxy RW on the new leader" 60 cluster_ready
  log "switchover: node$leader -> node$(leader_node)"
}

# failover N: Patroni's manual failover to candidate N (`patronictl failover --candidate`): unlike
# a switchover, any healthy member may be named, and it is done even without the leader's consent.
fault_failover() {
  local n=$1 leader
  leader=$(leader_node) || die "no leader to fail over from"
  [ "$n" != "$leader" ] || die "node$n is the leader already"
  lab_curl -fsS -m 30 -XPOST "$(scheme)://$(node_ip "$leader"):8008/failover" \
    -H 'Content-Type: application/json' -d "{\"candidate\":\"node$n\"}" >/dev/null ||
    die "Patroni refused the failover to node$n"
  leader_is() { [ "$(leader_node)" = "$1" ]; }
  wait_for "node$n to lead" 60 leader_is "$n"
  wait_for "HAProxy RW on the new leader" 60 cluster_ready
  log "failover: node$leader -> node$n"
}

fault_pause() {
  local mode=$1 leader n
  # Any member takes the change to the DCS; the leader's first (none while its PostgreSQL is down
  # in maintenance mode).
  leader=$(leader_node) || for n in "${NODES[@]}"; do
    if patroni_get "$n" patroni >/dev/null 2>&1; then leader=$n; break; fi
  done
  [ -n "$leader" ] || die "no Patroni answers"
  local want=true
  [ "$mode" = resume ] && want=false
  lab_curl -fsS -m 10 -XPATCH "$(scheme)://$(node_ip "$leader"):8008/config" \
    -H 'Content-Type: application/json' -d "{\"pause\": $want}" >/dev/null
  paused_is() { [ "$(cluster_json | jq -r '.pause // false')" = "$1" ]; }
  wait_for "pause=$want in /cluster" 60 paused_is "$want"
  # /cluster reads the DCS; each Patroni acts on the pause only from its next HA cycle (up to
  # loop_wait later). Until every running member's own /patroni says so, a member can still act
  # as if unpaused (e.g. demote a replica promoted by hand a moment later).
  local n
  for n in "${NODES[@]}"; do
    running "patroni$n" "$(patroni_pattern "$n")" || continue
    wait_for "node$n's Patroni to apply pause=$want" 60 member_paused_is "$n" "$want"
  done
}
# patroni_role_is N ROLE...: node N's own /patroni gives one of these roles.
patroni_role_is() {
  local n=$1 role
  shift
  role=$(patroni_get "$n" patroni | jq -r '.role // ""') || return 1
  for r in "$@"; do [ "$role" = "$r" ] && return 0; done
  return 1
}
member_paused_is() { [ "$(patroni_get "$1" patroni | jq -r '.pause // false')" = "$2" ]; }

cmd_fault() {
  local name=${1:-} arg=${2:-} n leader
  require_lab
  case "$name" in
    kill-primary-pg)
      leader=$(leader_node) || die "no leader right now"
      kill -KILL "$(postmaster_pid "$leader")"
      log "node$leader: postmaster SIGKILLed" ;;
    kill-primary-patroni)
      leader=$(leader_node) || die "no leader right now"
      kill -KILL "$(recorded_pid "patroni$leader")"
      log "node$leader: Patroni SIGKILLed (its PostgreSQL keeps running, unmanaged)" ;;
    stop-pg) fault_stop_pg "$(resolve_node "$arg")" ;;
    start-pg) fault_start_pg "$(resolve_node "$arg")" ;;
    stop-patroni) stop_patroni "$(resolve_node "$arg")" ;;
    start-patroni) start_patroni "$(resolve_node "$arg")" ;;
    stop-etcd) n=$(resolve_node "$arg"); stop_etcd "$n" ;;
    start-etcd) n=$(resolve_node "$arg"); start_etcd "$n"; wait_for "etcd$n health" 30 etcd_healthy "$n" ;;
    freeze-pg) fault_freeze "$(resolve_node "$arg")" all ;;
    thaw-pg | thaw-postmaster) fault_thaw "$(resolve_node "$arg")" ;;
    freeze-postmaster) fault_freeze "$(resolve_node "$arg")" postmaster ;;
    stop-haproxy) stop_haproxy ;;
    start-haproxy) start_haproxy ;;
    misroute-rw) fault_misroute_rw "$(resolve_node "$arg")" ;;
    unmisroute-rw) fault_unmisroute_rw "$(resolve_node "$arg")" ;;
    freeze-walsender) fault_freeze_walsender "$(resolve_node "$arg")" ;;
    thaw-walsender) fault_thaw_walsender "$(resolve_node "$arg")" ;;
    freeze-etcd) fault_freeze_etcd "$(resolve_node "$arg")" ;;
    promote) fault_promote "$(resolve_node "$arg")" ;;
    thaw-etcd) fault_thaw_etcd "$(resolve_node "$arg")" ;;
    saturate-connections) fault_saturate_connections "$(resolve_node "$arg")" ;;
    release-connections) fault_release_connections "$(resolve_node "$arg")" ;;
    forgotten-slot) fault_forgotten_slot ;;
    drop-forgotten-slot) fault_drop_forgotten_slot ;;
    switch-wal) fault_switch_wal "$(resolve_node "$arg")" "${3:-1}" ;;
    small-wal-fs) fault_small_wal_fs "$(resolve_node "$arg")" "${3:-256}" ;;
    restore-wal-fs) fault_restore_wal_fs "$(resolve_node "$arg")" ;;
    sync-mode) fault_sync_mode "$arg" ;;
    fail-archiving) fault_fail_archiving "$(resolve_node "$arg")" ;;
    repair-archiving) fault_repair_archiving "$(resolve_node "$arg")" ;;
    hold-snapshot) fault_hold_snapshot "$(resolve_node "$arg")" ;;
    release-snapshot) fault_release_snapshot "$(resolve_node "$arg")" ;;
    switchover) fault_switchover ;;
    failover) fault_failover "$(resolve_node "$arg")" ;;
    pause) fault_pause pause ;;
    resume) fault_pause resume ;;
    pause-replay) fault_pause_replay "$(resolve_node "$arg")" ;;
    resume-replay) fault_resume_replay "$(resolve_node "$arg")" ;;
    *) die "unknown fault '$name' (see deploy/lab/README.md)" ;;
  esac
}

case "${1:-}" in
  install) ensure_packages ;;
  up) cmd_up ;;
  down) cmd_down ;;
  repair) cmd_repair ;;
  status) cmd_status ;;
  env) cmd_env ;;
  ready) require_lab; cluster_ready ;;
  leader) require_lab; leader_node ;;
  fault) shift; cmd_fault "$@" ;;
  *) echo "usage: $0 install | up | down | repair | status | env | ready | leader | fault NAME [NODE]" >&2; exit 64 ;;
esac
