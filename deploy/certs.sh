#!/usr/bin/env bash
# Makes a test CA, a collector server certificate (localhost, 127.0.0.1) and one client
# certificate per node, valid for that node's name (subjectAltName DNS:NODE) — what the collector
# checks against the node an agent names in its Hello.
#
#   deploy/certs.sh DIR NODE...      e.g. deploy/certs.sh /etc/vigie/certs node1 node2 node3 haproxy
#
# For tests and labs; in production, issue the same shapes from your own PKI.
set -euo pipefail
out=${1:?usage: certs.sh DIR NODE...}
shift
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
for node in "$@"; do
  issue "$node" "DNS:$node" clientAuth
done
echo "certs: CA, collector and ${*:-no} node certificates in $out" >&2
