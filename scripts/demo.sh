#!/usr/bin/env bash
# make demo: start the sandbox APIs, run the three taps into DuckDB and the dbt invoice layer with
# `meltano run`, print what was read and the invoice lines per vendor and month, draw
# output/billing-summary.png, stop the sandbox. Run it again: it is incremental (Meltano keeps state).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p output
export MELTANO_SEND_ANONYMOUS_USAGE_STATS=false MELTANO_CLI_DISABLE_VERSION_CHECK=true
export MELTANO_ENVIRONMENT=sandbox
export DEMO_START_DATE="${DEMO_START_DATE:-$(date -u -d '45 days ago' +%Y-%m-%d)}"
MELTANO=.venv-meltano/bin/meltano

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
.venv/bin/billing-sandbox luminai --port 8801 --live-days 60 --events 60000 > output/sandbox-luminai.log 2>&1 &
pids+=($!)
.venv/bin/billing-sandbox kore --port 8802 --live-days 60 --conversations 6000 --page-cap 1000 > output/sandbox-kore.log 2>&1 &
pids+=($!)
.venv/bin/billing-sandbox evovoice --port 8803 --live-days 60 > output/sandbox-evovoice.log 2>&1 &
pids+=($!)
for log in output/sandbox-luminai.log output/sandbox-kore.log output/sandbox-evovoice.log; do
  for _ in $(seq 1 100); do grep -q '"url"' "$log" 2>/dev/null && break; sleep 0.2; done
  grep -q '"url"' "$log" || { echo "sandbox did not start: $log"; cat "$log"; exit 1; }
done

before=()
if [ -f output/landed-rows.csv ]; then cp output/landed-rows.csv output/landed-rows.before.csv; before=(--before output/landed-rows.before.csv); fi
started=$(date +%s.%N)
"$MELTANO" run tap-luminai target-duckdb tap-kore-billing target-duckdb tap-evovoice target-duckdb \
  dbt-duckdb:build > output/meltano-run.log 2>&1 || { tail -40 output/meltano-run.log; exit 1; }
elapsed=$(echo "$(date +%s.%N) - $started" | bc)
echo "meltano run of the three taps and dbt build: ${elapsed%????????} s (log: output/meltano-run.log)"
"$MELTANO" invoke dbt-duckdb run-operation export_invoice_csv --args "{directory: '$PWD/output'}" \
  > output/dbt-export.log 2>&1 || { tail -20 output/dbt-export.log; exit 1; }
.venv/bin/python scripts/demo_summary.py output --log output/meltano-run.log "${before[@]}"
