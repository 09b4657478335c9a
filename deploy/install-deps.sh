#!/usr/bin/env bash
# Installs everything vigie's demo and tests need on a Debian 12 machine: the lab's daemons from
# Debian's packages (etcd, Patroni, PostgreSQL 15, HAProxy) and a Rust toolchain when cargo is
# missing. Safe to run again: it only installs what is absent.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
here=$(cd "$(dirname "$0")" && pwd)

"$here/lab/lab.sh" install

# The test suite also runs the real Prometheus (scraping /metrics) and Alertmanager, and steps a
# test process's wall clock with libfaketime.
missing=()
[ -x /usr/bin/prometheus ] || missing+=(prometheus)
[ -x /usr/bin/prometheus-alertmanager ] || missing+=(prometheus-alertmanager)
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || missing+=(faketime)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]} (for the tests)" >&2
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "install-deps: no cargo, installing Rust with rustup" >&2
  apt_missing=()
  command -v curl >/dev/null || apt_missing+=(curl)
  command -v cc >/dev/null || apt_missing+=(build-essential)
  if [ ${#apt_missing[@]} -gt 0 ]; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${apt_missing[@]}" >/dev/null
  fi
  curl -fsSL https://sh.rustup.rs | sh -s -- -y --profile minimal --component rustfmt,clippy
fi
