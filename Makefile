# vigilflow: `make demo` and `make test` work on a fresh machine (they bootstrap .venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench-campus clean

$(STAMP): pyproject.toml
	@bash scripts/bootstrap-system.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vigil demo $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# The campus figures (README): ROOT is a campus benchmark folder, see README "Results".
bench-campus: $(STAMP)
	$(BIN)/python bench/campus_cflow.py --root $(ROOT) --out runs/campus

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
