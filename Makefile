# Developer commands, shared with CI. `make help` lists them.
.PHONY: help run test quiet-road lint typecheck unit integration stack-up stack-down stack-status bench grafana clean

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

quiet-road:  ## The 17-minute night-road test in wall-clock time (marked slow; not in make test)
	@scripts/bootstrap && .venv/bin/pytest -p no:cacheprovider -m slow tests/integration/test_quiet_roads.py

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
