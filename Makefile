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

help: ## this list (every target, from the `##` comments in the Makefile)
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/\1\t\2/' | \
		awk -F'\t' '{ printf "  make %-17s %s\n", $$1, $$2 }'

$(BIN)/likeflow: pyproject.toml constraints.txt
	@test -d $(VENV) || { echo "[venv] creating $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); }
	@echo "[venv] installing likeflow and pinned dependencies (constraints.txt)"
	@$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

venv: $(BIN)/likeflow ## create .venv and install likeflow with the pinned dependencies (constraints.txt)

# Local secrets (git-ignored, mode 600): the user-id pseudonym key. Production mounts its own
# and points LIKEFLOW_USER_KEY_FILE at it (docs/privacy.md).
USER_KEY := $(RUN_DIR)/secrets/user-key
$(USER_KEY):
	@mkdir -p $(RUN_DIR)/secrets && chmod 700 $(RUN_DIR)/secrets
	@umask 077 && $(PYTHON) -c "import secrets; print(secrets.token_urlsafe(48))" > $@
	@echo "[secrets] created a local pseudonym key in $@"

# The audit log's Ed25519 signing key: a 32-byte seed as 64 hex digits (docs/audit.md).
AUDIT_KEY := $(RUN_DIR)/secrets/audit-signing-key
$(AUDIT_KEY):
	@mkdir -p $(RUN_DIR)/secrets && chmod 700 $(RUN_DIR)/secrets
	@umask 077 && $(PYTHON) -c "import secrets; print(secrets.token_hex(32))" > $@
	@echo "[secrets] created a local audit signing key in $@"

secrets: $(USER_KEY) $(AUDIT_KEY) ## create the local pseudonym and audit signing keys (.run/secrets/, mode 600)

stack-up: ## start local Kafka (KRaft) and Redis on loopback, PIDs in .stack/
	@scripts/stack.sh up

stack-down: worker-stop ## stop the background worker, Kafka and Redis (by their PIDs)
	@scripts/stack.sh down

stack-clean: worker-stop ## stack-down, then delete their data
	@scripts/stack.sh clean
	@rm -rf $(RUN_DIR)/worker-data

stack-status: ## what runs of the stack, with PIDs and ports
	@scripts/stack.sh status

topics: venv stack-up ## create or check the topics (likeflow topics)
	@$(BIN)/likeflow topics

worker: venv stack-up secrets ## run a worker in the foreground
	$(BIN)/likeflow worker

worker-start: venv stack-up secrets ## run a worker in the background (log .run/worker.log)
	@scripts/worker.sh start

worker-stop: ## stop the background worker
	@scripts/worker.sh stop

demo: venv ## publish the demo catalogue and a like feed
	$(BIN)/likeflow demo

status: venv ## live terminal view of the worker (likeflow status)
	@$(BIN)/likeflow status

run: venv secrets stack-up topics worker-start ## stack up, topics, worker in the background, demo feed in the foreground
	@echo
	@echo "likeflow is running:"
	@echo "  worker   pid $$(cat $(WORKER_PID)), log $(WORKER_LOG), health http://127.0.0.1:6066/health, metrics /metrics"
	@echo "  prompts  topic order-prompts; Redis key likeflow:v2:prompts:{<pseudonym>} (ZREVRANGE ... 0 0; likeflow pseudonym <user_id>)"
	@echo "  bad input topic likeflow-dlq (reason in header likeflow.dlq.reason)"
	@echo "  stop     Ctrl-C stops the demo feed; 'make worker-stop' the worker; 'make stack-down' Kafka and Redis"
	@echo
	@$(BIN)/likeflow demo

# Generated files (tests check they are current): docs/settings.md from config/settings.py and
# config/docs.py, schemas/*.json from the event classes (streams/schemas.py).
docs: venv ## regenerate docs/settings.md and schemas/ (from the settings and event classes)
	@$(BIN)/python -m config.docs > docs/settings.md
	@$(BIN)/python -m streams.schemas schemas >/dev/null

lint: venv ## ruff check and ruff format --check
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .

typecheck: venv ## mypy (strict) over the package and the tests
	@$(BIN)/mypy

test-unit: venv ## unit tests only (milliseconds each, no services)
	@$(BIN)/pytest -m "not integration and not chaos" -q

test-tools: ## install prometheus and promtool (Debian package) for the observability tests
	@scripts/stack.sh tools

test-integration: venv secrets stack-up test-tools ## integration tests only (starts Kafka and Redis)
	@$(BIN)/pytest -m integration -q

test: venv secrets stack-up test-tools ## lint, type check, unit and integration tests (starts Kafka and Redis)
	@echo "[test] lint and type check"
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy
	@echo "[test] unit and integration tests (real Kafka and Redis from 'make stack-up')"
	@$(BIN)/pytest -m "not chaos"

# Known vulnerabilities in the pinned dependencies (constraints.txt). Not part of `make test`: its
# vulnerability service (PyPI's JSON API or OSV) does not answer everywhere; exit 2 says so.
AUDIT_SERVICE ?= pypi
audit-deps: venv ## pip-audit of the pinned dependencies (release step; needs its vulnerability service)
	@scripts/audit-deps.sh $(AUDIT_SERVICE)

# The long fault tests (200k likes per case, kill -9, poison); the short variants run in `make test`.
chaos: venv secrets stack-up ## the long fault tests (kill -9, storms, zombies, broker and Redis loss; ~1 h)
	@$(BIN)/pytest -m chaos -s -q

BENCH_VENV := .venv-bench

$(BENCH_VENV)/bin/python: bench/requirements.txt
	@test -d $(BENCH_VENV) || $(PYTHON) -m venv $(BENCH_VENV)
	@echo "[bench] installing the baselines (quixstreams, confluent-kafka) and matplotlib"
	@$(BENCH_VENV)/bin/pip install -q --disable-pip-version-check -r bench/requirements.txt
	@touch $@

bench: venv secrets stack-up $(BENCH_VENV)/bin/python ## the full benchmark beside raw consumers and the Quix peer (bench/README.md)
	@$(BENCH_VENV)/bin/python -m bench.run

bench-quick: venv secrets stack-up $(BENCH_VENV)/bin/python ## the quick benchmark (~10 min)
	@$(BENCH_VENV)/bin/python -m bench.run --quick

clean: ## delete the virtual environments and tool caches
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
