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
kore_sandbox() {  # LOG [OPTION...]
  local log=$1; shift
  .venv/bin/billing-sandbox kore --port 8802 --live-days 60 --conversations 6000 --page-cap 1000 --llm-page-cap 1000 "$@" > "$log" 2>&1 &
  pids+=($!)
}
kore_sandbox output/sandbox-kore.log
.venv/bin/billing-sandbox evovoice --port 8803 --live-days 60 > output/sandbox-evovoice.log 2>&1 &
pids+=($!)
wait_for() {
  for log in "$@"; do
    for _ in $(seq 1 100); do grep -q '"url"' "$log" 2>/dev/null && break; sleep 0.2; done
    grep -q '"url"' "$log" || { echo "sandbox did not start: $log"; cat "$log"; exit 1; }
  done
}
wait_for output/sandbox-luminai.log output/sandbox-kore.log output/sandbox-evovoice.log

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

# The reconciliation finds a discrepancy: the Kore.ai sandbox, restarted, counts three sessions
# more for one bot yesterday than it serves; the next run of the tap (its lookback re-reads
# yesterday) and dbt build show the difference (and dbt's test kore_reconciliation_differences warns).
kill "${pids[1]}" 2>/dev/null || true; wait "${pids[1]}" 2>/dev/null || true
yesterday=$(date -u -d 'yesterday' +%Y-%m-%d)
kore_sandbox output/sandbox-kore-discrepancy.log --summary-offset "st-1a2b3c4d-0001:${yesterday}:3"
wait_for output/sandbox-kore-discrepancy.log
echo
echo "The Kore.ai sandbox now counts 3 more sessions for st-1a2b3c4d-0001 on ${yesterday}:"
"$MELTANO" run tap-kore-billing target-duckdb dbt-duckdb:build > output/meltano-reconcile.log 2>&1 \
  || { tail -40 output/meltano-reconcile.log; exit 1; }
"$MELTANO" invoke dbt-duckdb run-operation export_invoice_csv --args "{directory: '$PWD/output'}" \
  > output/dbt-export.log 2>&1 || { tail -20 output/dbt-export.log; exit 1; }
.venv/bin/python scripts/demo_summary.py output --reconciliation-only
