# make test: create or reuse the local virtualenv, install the project with its test extras,
# run the linters (ruff, mypy) and the test suite (pytest, against the loopback sandbox).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

MELTANO_VENV ?= .venv-meltano
MELTANO := $(MELTANO_VENV)/bin/meltano
export MELTANO_SEND_ANONYMOUS_USAGE_STATS := false
export MELTANO_CLI_DISABLE_VERSION_CHECK := true

.PHONY: install meltano airflow lint typecheck pytest test soak demo clean readme meltano-yml \
	hub-definitions bench airflow-plan airflow-pools close-month

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(BIN)/.installed

# Meltano in its own virtualenv; it installs the taps (pip_url: -e .) and targets with uv.
$(MELTANO_VENV)/.installed: meltano.yml pyproject.toml
	$(PYTHON) -m venv $(MELTANO_VENV)
	$(MELTANO_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'meltano[postgres]==4.4.1' uv
	$(MELTANO) install
	touch $@

meltano: $(MELTANO_VENV)/.installed

# Airflow 3 in its own virtualenv (with PostgreSQL support for its metadata database), to test the
# DAG file (orchestrate/dags) on a real scheduler.
AIRFLOW_VENV ?= .venv-airflow
$(AIRFLOW_VENV)/.installed: $(MELTANO_VENV)/.installed
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(MELTANO_VENV)/bin/uv pip install --quiet --python $(AIRFLOW_VENV)/bin/python 'apache-airflow[postgres]==3.3.2'
	touch $@

airflow: $(AIRFLOW_VENV)/.installed

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# Two processes, one per core: the tests that run Meltano or Airflow in the project folder share
# one of them (xdist_group "meltano-project"), the others spread over both.
PYTEST_WORKERS ?= 2
pytest: install meltano airflow
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup

test: lint typecheck pytest

# The 1,000,000-record soak per tap (tests marked `soak`, left out of every other run); figures in
# build/reliability/soak-1000000.json and at the end of the output.
soak: install
	$(BIN)/pytest -m soak

demo: install meltano
	bash scripts/demo.sh

clean:
	rm -rf $(VENV) $(MELTANO_VENV) $(AIRFLOW_VENV) .meltano output .pytest_cache .mypy_cache .ruff_cache *.egg-info

# make bench: the benchmark harness (issue 7), not part of make test. It measures each tap against
# pre-built sandbox pages and writes docs/benchmarks.{json,md,png}; run it on a quiet machine.
# Options go in BENCH_ARGS, e.g. make bench BENCH_ARGS='--sizes 10000 --repeats 1 --out build/bench'
# (python -m bench --help lists them).
BENCH_ARGS ?=
bench: install
	BENCH_ARGS="$(BENCH_ARGS)" $(BIN)/python -m bench $(BENCH_ARGS)

readme: install
	$(BIN)/python -m tests.readme_tables --write

# The extractors of meltano.yml and the Meltano Hub definitions (hub/extractors/) come from one
# generator (tests/meltano_settings.py): either target rewrites both.
meltano-yml hub-definitions: install
	$(BIN)/python -m tests.meltano_settings --write

# The schedules, jobs and plugin types the Airflow DAG file reads, as Meltano resolves them.
airflow-plan: install meltano
	$(BIN)/python -m tests.airflow_plan --write

# The Airflow pools the DAGs use (one writer per DuckDB file, the vendors' limits), for
# `airflow pools import build/airflow-pools.json`.
airflow-pools: airflow
	mkdir -p build
	$(AIRFLOW_VENV)/bin/python orchestrate/dags/meltano_schedules.py pools > build/airflow-pools.json

# Close (issue) an invoice month: build the models, then record the month's invoice lines, and the
# adjustments pending for earlier closed months, in the ledger. From then on invoice_lines shows the
# month as issued and later data for it goes to invoice_adjustments. MONTH=YYYY-MM; DBT=dbt-postgres
# for the PostgreSQL warehouse; MELTANO_ENVIRONMENT as for the runs.
DBT ?= dbt-duckdb
close-month:
	@test -n "$(MONTH)" || { echo "usage: make close-month MONTH=YYYY-MM [DBT=dbt-postgres]"; exit 2; }
	@test -x $(MELTANO) || { echo "run make meltano first"; exit 2; }
	$(MELTANO) invoke $(DBT):build
	$(MELTANO) invoke $(DBT) run-operation close_month --args '{month: "$(MONTH)"}'
