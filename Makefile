# The README's two commands: `make demo` (the federated demo on the embedded default) and `make test`.
# Both install what they need into .venv first, from uv.lock, with a uv bootstrapped into .tools.
PYTHON ?= python3.11
UV_VERSION := 0.13.9
VENV := .venv
UV := .tools/bin/uv
SYNCED := $(VENV)/.carefed-synced

.PHONY: install demo test lint typecheck fabric test-system-deps mutation

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

$(SYNCED): pyproject.toml uv.lock | $(UV)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --locked --python $(PYTHON)
	touch $@

install: $(SYNCED)

demo: install
	$(VENV)/bin/carefed demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

# PostgreSQL (the API's PostgreSQL tests start a throw-away server) and Chromium (the browser tests), from apt.
test-system-deps:
	scripts/test-system-deps.sh

# Two workers, one test file each at a time: most of the suite waits on Flower, Fabric and subprocesses, so two
# workers nearly halve the wall time on a 2-core machine (fresh clone, quiet machine: 28 min 32 s on one worker
# for 1,047 tests; 18 min 24 s on two for 1,075, using 1,373 CPU-seconds, i.e. 1.25 cores on average).
test: lint typecheck test-system-deps
	$(VENV)/bin/pytest -n 2 --dist loadfile

# Fabric v3.1.5 binaries for `carefed fabric up` (Go >= 1.26.4 and a Go proxy serving github.com/hyperledger/*).
# Not part of `test`: this project's Go proxy refuses those modules, see docs/fabric.md.
fabric: install
	$(VENV)/bin/carefed fabric install

# Mutation testing (mutmut, [tool.mutmut] in pyproject.toml) of the audit-bundle writer/verifier and the ledger
# contracts against their tests, on the embedded ledger. CPU heavy (~4,000 mutants; 1-2 h on two cores), so not
# part of `test` nor CI. Narrow it with MUTANTS, e.g. `make mutation MUTANTS='compliance.bundle*'`; results are
# kept in mutants/ and only changed code is re-run. Survivors: `.venv/bin/mutmut results`, `mutmut show NAME`.
MUTANTS ?=
mutation: install
	CAREFED_CONTRACT_BACKENDS=embedded nice -n 10 $(VENV)/bin/mutmut run --max-children 2 $(MUTANTS)
	$(VENV)/bin/mutmut export-cicd-stats
	cat mutants/mutmut-cicd-stats.json
