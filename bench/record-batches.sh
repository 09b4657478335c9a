#!/usr/bin/env bash
# Records bench/fixtures/lab-batches.json: one cycle of each lab agent (`vigie-agent --once
# --format json`, the real probes against the real lab) once every probe is ok. The collector
# benchmark replays these batches, and the verdict's table tests build their healthy cluster from
# them: re-record after changing what a probe reports.
source "$(dirname "$0")/common.sh"
cargo build --locked -p vigie-agent
deploy/lab/lab.sh up
out=$(mktemp -d)
deadline=$((SECONDS + 180))
for n in node1 node2 node3 haproxy; do
  # --once exits 0 only when every probe is ok (the Nagios convention).
  until target/debug/vigie-agent --config "deploy/lab/agent-$n.toml" --once --format json \
    >"$out/$n.json" 2>"$out/$n.err"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "record-batches: $n is not all ok after 180 s:" >&2
      cat "$out/$n.json" "$out/$n.err" >&2
      exit 1
    fi
    sleep 1
  done
done
python3 - "$out" bench/fixtures/lab-batches.json <<'PY'
import json, sys
src, dst = sys.argv[1], sys.argv[2]
doc = {"components": {}, "results": {}}
for n in ["node1", "node2", "node3", "haproxy"]:
    run = json.load(open(f"{src}/{n}.json"))
    doc["components"][n] = run["components"]
    doc["results"][n] = run["results"]
json.dump(doc, open(dst, "w"), indent=2, sort_keys=True)
open(dst, "a").write("\n")
PY
rm -rf "$out"
echo "recorded bench/fixtures/lab-batches.json"
