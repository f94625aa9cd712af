# Developer commands, shared with CI. `make help` lists them.
.PHONY: help run test quiet-road soak lint typecheck unit integration fuzz stack-up stack-down stack-status bench grafana clean

help:  ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

run:  ## Main job: stack + worker + simulated Thurrock sensors + live view (Ctrl-C stops all)
	@scripts/run

test:  ## Everything CI runs: set-up, ruff, mypy, unit and integration tests
	@scripts/test

unit:  ## Unit tests and the packages' doctests (no servers)
	@scripts/bootstrap && .venv/bin/pytest -p no:cacheprovider tests/unit thurrock_streams sensors_sim

integration:  ## Integration tests only (starts the stack on test ports)
	@scripts/bootstrap && .venv/bin/pytest -p no:cacheprovider tests/integration

quiet-road:  ## The 20-minute night-road test in wall-clock time (marked slow; not in make test)
	@scripts/bootstrap && .venv/bin/pytest -p no:cacheprovider -rP -m slow tests/integration/test_quiet_roads.py

soak:  ## 20 kill -9/restart cycles of one of two workers during a backlog (THURROCK_SOAK_CYCLES; marked slow; not in make test)
	@scripts/bootstrap && .venv/bin/pytest -p no:cacheprovider -m slow tests/integration/test_soak.py

FUZZ_MESSAGES ?= 1000000
FUZZ_SEED ?= 20261201
fuzz:  ## Fuzz decode and the processor: 10^6 hostile messages (FUZZ_MESSAGES=, FUZZ_SEED=)
	@scripts/bootstrap && FUZZ_MESSAGES=$(FUZZ_MESSAGES) FUZZ_SEED=$(FUZZ_SEED) \
		.venv/bin/pytest -p no:cacheprovider --timeout=0 -v --durations=0 tests/unit/test_fuzz.py

lint:  ## ruff
	@scripts/bootstrap && .venv/bin/ruff check .

typecheck:  ## mypy
	@scripts/bootstrap && .venv/bin/mypy

stack-up:  ## Start the local stack (Tansu on 9092, VictoriaMetrics on 8428)
	@scripts/bootstrap && .venv/bin/thurrock-streams stack up

stack-down:  ## Stop the local stack
	@scripts/bootstrap && .venv/bin/thurrock-streams stack down

stack-status:  ## Is the local stack healthy?
	@scripts/bootstrap && .venv/bin/thurrock-streams stack status

bench:  ## Throughput benchmark on its own stack (ports 39192/38528); prints the BENCH line
	@bench/run

grafana:  ## Rewrite deploy/grafana/dashboards/*.json from scripts/grafana_dashboards.py
	@scripts/bootstrap && .venv/bin/python scripts/grafana_dashboards.py

clean:  ## Remove the virtualenv, stack data and caches
	rm -rf .venv .stack .stack-test .pytest_cache .mypy_cache .ruff_cache .hypothesis
