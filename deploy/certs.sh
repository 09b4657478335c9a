#!/usr/bin/env bash
# Makes a test CA, a collector server certificate (localhost, 127.0.0.1) and one client
# certificate per node, valid for that node of its cluster (subjectAltName DNS:NODE.CLUSTER, and
# DNS:NODE for the lab's other uses) — what the collector checks against the node and cluster an
# agent names in its Hello: a node's certificate cannot speak for another node, nor join another
# cluster. `--cluster NAME` sets the cluster of the node certificates after it (default demo). `--server NAME SAN` adds a server
# certificate (serverAuth, and clientAuth for etcd's gateway) NAME.crt/NAME.key for SAN (e.g. `IP:127.0.0.11,DNS:node1`), as the
# lab's TLS profile needs for etcd, Patroni's REST API and PostgreSQL.
#
#   deploy/certs.sh DIR [--server NAME SAN]... [--cluster NAME] NODE...
#   e.g. deploy/certs.sh /etc/vigie/certs --cluster main node1 node2 node3 haproxy
#        deploy/certs.sh /tmp/lab/certs --server node1-server IP:127.0.0.11,DNS:node1 node1
#
# For tests and labs; in production, issue the same shapes from your own PKI.
set -euo pipefail
out=${1:?usage: certs.sh DIR [--server NAME SAN]... NODE...}
shift
servers=()
nodes=()
cluster=demo
while [ $# -gt 0 ]; do
  case "$1" in
    --server)
      [ $# -ge 3 ] || { echo "certs.sh: --server needs NAME and SAN" >&2; exit 64; }
      servers+=("$2" "$3")
      shift 3 ;;
    --cluster)
      [ $# -ge 2 ] || { echo "certs.sh: --cluster needs NAME" >&2; exit 64; }
      cluster=$2
      shift 2 ;;
    *) nodes+=("$1|$cluster"); shift ;;
  esac
done
if ! command -v openssl >/dev/null; then
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssl >/dev/null
fi
mkdir -p "$out"
cd "$out"
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt \
  -days 3650 -subj "/CN=vigie test CA" 2>/dev/null

issue() {
  local name=$1 san=$2 usage=$3 ext
  ext=$(mktemp)
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n' \
    "$san" "$usage" >"$ext"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$name.key" -out "$name.csr" \
    -subj "/CN=$name" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$name.crt" \
    -days 825 -extfile "$ext" 2>/dev/null
  rm -f "$name.csr" "$ext"
}

issue collector "DNS:localhost,IP:127.0.0.1" serverAuth
for ((i = 0; i < ${#servers[@]}; i += 2)); do
  # clientAuth too: etcd 3.4's gRPC gateway presents the server certificate to etcd itself.
  issue "${servers[i]}" "${servers[i + 1]}" serverAuth,clientAuth
done
for entry in "${nodes[@]}"; do
  node=${entry%|*} of=${entry#*|}
  issue "$node" "DNS:$node.$of,DNS:$node" clientAuth
done
echo "certs: CA, collector, $((${#servers[@]} / 2)) server and ${#nodes[@]} node certificates in $out" >&2
