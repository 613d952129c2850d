# likeflow: `make run` (stack + worker + demo feed) and `make test` (everything, on real Kafka
# and Redis that it starts itself). Every process is started with its PID recorded and stopped
# by that PID.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_DIR := .run
WORKER_PID := $(RUN_DIR)/worker.pid
WORKER_LOG := $(RUN_DIR)/worker.log

.PHONY: help docs chaos secrets venv stack-up stack-down stack-clean stack-status topics worker worker-start \
        worker-stop demo run bench bench-quick test test-unit test-integration test-tools lint typecheck status clean \
        audit-deps

help:
	@echo "make run          stack up, topics, worker in the background, demo feed in the foreground"
	@echo "make docs         regenerate docs/settings.md and schemas/ (from the settings and event classes)"
	@echo "make test         lint, type check, unit and integration tests (starts Kafka and Redis)"
	@echo "make chaos        the long fault tests (kill -9, storms, zombies, broker and Redis loss; ~1 h)"
	@echo "make stack-up     start local Kafka (KRaft) and Redis;  make stack-down / stack-clean"
	@echo "make worker-stop  stop the background worker started by make run"
	@echo "make audit-deps   pip-audit of the pinned dependencies (release step; needs its vulnerability service)"

$(BIN)/likeflow: pyproject.toml constraints.txt
	@test -d $(VENV) || { echo "[venv] creating $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); }
	@echo "[venv] installing likeflow and pinned dependencies (constraints.txt)"
	@$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

venv: $(BIN)/likeflow

# Local secrets (git-ignored, mode 600): the user-id pseudonym key. Production mounts its own
# and points LIKEFLOW_USER_KEY_FILE at it (docs/privacy.md).
USER_KEY := $(RUN_DIR)/secrets/user-key
$(USER_KEY):
	@mkdir -p $(RUN_DIR)/secrets && chmod 700 $(RUN_DIR)/secrets
	@umask 077 && $(PYTHON) -c "import secrets; print(secrets.token_urlsafe(48))" > $@
	@echo "[secrets] created a local pseudonym key in $@"

secrets: $(USER_KEY)

stack-up:
	@scripts/stack.sh up

stack-down: worker-stop
	@scripts/stack.sh down

stack-clean: worker-stop
	@scripts/stack.sh clean
	@rm -rf $(RUN_DIR)/worker-data

stack-status:
	@scripts/stack.sh status

topics: venv stack-up
	@$(BIN)/likeflow topics

worker: venv stack-up secrets
	$(BIN)/likeflow worker

worker-start: venv stack-up secrets
	@scripts/worker.sh start

worker-stop:
	@scripts/worker.sh stop

demo: venv
	$(BIN)/likeflow demo

status: venv
	@$(BIN)/likeflow status

run: venv secrets stack-up topics worker-start
	@echo
	@echo "likeflow is running:"
	@echo "  worker   pid $$(cat $(WORKER_PID)), log $(WORKER_LOG), health http://127.0.0.1:6066/health, metrics /metrics"
	@echo "  prompts  topic order-prompts; Redis key likeflow:v1:prompts:<user_id> (ZREVRANGE ... 0 0)"
	@echo "  bad input topic likeflow-dlq (reason in header likeflow.dlq.reason)"
	@echo "  stop     Ctrl-C stops the demo feed; 'make worker-stop' the worker; 'make stack-down' Kafka and Redis"
	@echo
	@$(BIN)/likeflow demo

# Generated files (tests check they are current): docs/settings.md from config/settings.py and
# config/docs.py, schemas/*.json from the event classes (streams/schemas.py).
docs: venv
	@$(BIN)/python -m config.docs > docs/settings.md
	@$(BIN)/python -m streams.schemas schemas >/dev/null

lint: venv
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .

typecheck: venv
	@$(BIN)/mypy

test-unit: venv
	@$(BIN)/pytest -m "not integration and not chaos" -q

test-tools:
	@scripts/stack.sh tools

test-integration: venv secrets stack-up test-tools
	@$(BIN)/pytest -m integration -q

test: venv secrets stack-up test-tools
	@echo "[test] lint and type check"
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy
	@echo "[test] unit and integration tests (real Kafka and Redis from 'make stack-up')"
	@$(BIN)/pytest -m "not chaos"

# Known vulnerabilities in the pinned dependencies (constraints.txt). Not part of `make test`: its
# vulnerability service (PyPI's JSON API or OSV) does not answer everywhere; exit 2 says so.
AUDIT_SERVICE ?= pypi
audit-deps: venv
	@scripts/audit-deps.sh $(AUDIT_SERVICE)

# The long fault tests (200k likes per case, kill -9, poison); the short variants run in `make test`.
chaos: venv secrets stack-up
	@$(BIN)/pytest -m chaos -s -q

BENCH_VENV := .venv-bench

$(BENCH_VENV)/bin/python: bench/requirements.txt
	@test -d $(BENCH_VENV) || $(PYTHON) -m venv $(BENCH_VENV)
	@echo "[bench] installing the baselines (quixstreams, confluent-kafka) and matplotlib"
	@$(BENCH_VENV)/bin/pip install -q --disable-pip-version-check -r bench/requirements.txt
	@touch $@

bench: venv secrets stack-up $(BENCH_VENV)/bin/python
	@$(BENCH_VENV)/bin/python -m bench.run

bench-quick: venv secrets stack-up $(BENCH_VENV)/bin/python
	@$(BENCH_VENV)/bin/python -m bench.run --quick

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
