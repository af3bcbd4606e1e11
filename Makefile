# Mercato: `make run` starts the embedded platform, `make test` runs lint and every test.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install run demo test test-fast lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

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
	$(BIN)/python bench/identity.py
	$(BIN)/python bench/saga.py
	$(BIN)/python bench/catalog.py
	$(BIN)/python bench/export.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
