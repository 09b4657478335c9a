#!/usr/bin/env bash
# Collector scale: simulated agents (clusters of 3 DB nodes + 1 HAProxy host replaying batches
# recorded on the lab) streaming one batch per second over real gRPC on loopback, first to
# vigie-collector, then to a bare tonic server; fleet sizes grow until the collector no longer
# keeps verdicts fresh. Needs no lab. Flags go to `vigie-bench collector-scale`.
bench_needs_lab=no
source "$(dirname "$0")/common.sh"
# Two sockets per simulated agent (both ends live in this machine), and some to spare.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
bench_build -p vigie-collector -p vigie-bench
target/release/vigie-bench collector-scale "$@"
