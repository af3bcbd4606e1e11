# Mercato: `make run` starts the embedded platform, `make test` runs lint and every test.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Installs come from the locks (exact versions, hashes checked): runtime in requirements.lock,
# runtime + the `dev` extra in requirements-dev.lock; `make lock` regenerates both after a change
# to pyproject.toml, and tests/unit/test_requirements_lock.py fails until it has been run.
LOCK := requirements-dev.lock
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | cksum | cut -d' ' -f1)
# --allow-unsafe and --all-build-deps: pip and setuptools are pinned and hashed too, so the
# editable install below builds with the locked setuptools, nothing fetched unchecked.
COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes \
	--allow-unsafe --all-build-deps --strip-extras --no-emit-index-url --no-emit-find-links

.PHONY: install lock run demo test test-fast lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	@rm -f $(VENV)/.installed-*
	@touch $@

# Versions already in a lock are kept while pyproject.toml allows them (pip-compile prefers the
# output file's pins); `make lock UPGRADE=--upgrade` moves everything to the newest allowed.
lock:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/pip-compile || $(BIN)/pip install --quiet "pip-tools>=7.4"
	$(COMPILE) $(UPGRADE) --output-file requirements.lock pyproject.toml
	$(COMPILE) $(UPGRADE) --extra dev --output-file requirements-dev.lock pyproject.toml

run: install
	$(BIN)/mercato run

demo: install
	$(BIN)/mercato run --demo

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

# Three passes: the parallel run; the black-box contract suite against `mercato run`, then the
# dev cluster (one target at a time, each started once); last, alone, the tests that restart a
# shared service (RabbitMQ, Redis).
test: lint
	$(BIN)/python -m pytest -n 2 --dist loadfile -q -p no:cacheprovider -m "not disruptive and not contract"
	$(BIN)/python -m pytest tests/contract -q -p no:cacheprovider -m "contract and not disruptive"
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "disruptive and not contract"

test-fast: install
	$(BIN)/python -m pytest tests/unit -q

# Benchmarks print figures next to their baselines; they never fail on time.
bench: install
	$(BIN)/python bench/events.py
	$(BIN)/python bench/events_kafka.py
	$(BIN)/python bench/identity.py
	$(BIN)/python bench/saga.py
	$(BIN)/python bench/catalog.py
	$(BIN)/python bench/export.py
	$(BIN)/python bench/cluster.py
	$(BIN)/python bench/console.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
