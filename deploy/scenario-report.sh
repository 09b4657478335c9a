#!/usr/bin/env bash
# Turns the scenario suite's figures (target/scenario-times.jsonl, written by
# `cargo test -p vigie-tests --test scenarios`) into a Markdown table.
set -euo pipefail
file=${1:-${VIGIE_SCENARIO_TIMES:-$(dirname "$0")/../target/scenario-times.jsonl}}
command -v jq >/dev/null || { echo "scenario-report: needs jq" >&2; exit 1; }
echo "| scenario | agent interval | lab profile | detected after | healthy again after repair | notes |"
echo "|---|---|---|---|---|---|"
jq -r '"| \(.scenario) | \(.interval_s)s | \(.profile) | \(.detected_s // "-")s | \(.recovered_s // "-")s | \(.notes | join("; ")) |"' "$file"
