# Two commands for a newcomer:  `make demo` (set up + run the whole pipeline on generated sample data)
# and `make test` (set up + lint + run the test suite). Everything installs into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY_DIRS := $(wildcard cdp_spark jobs tests benchmarks deploy)

.PHONY: setup demo test lint format benchmark benchmark-peer clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	# CDNOW, the reference data set of the CLV tests, ships inside this (unmaintained) package: data only, no deps.
	$(BIN)/pip install --quiet --no-deps lifetimes==0.11.3
	touch $@

demo: setup
	$(BIN)/cdp-spark generate
	$(BIN)/cdp-spark run
	$(BIN)/cdp-spark evaluate

lint: setup
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)

# Test files are spread over TEST_WORKERS processes (pytest-xdist), each with its own local[2] SparkSession:
# most of a small-data test is driver latency, so two JVMs keep both cores busy. A file stays on one worker
# (its module fixtures are built once). Files start in the order tests/conftest.py gives (the longest first);
# pytest-xdist would otherwise start the files with the most tests first.
TEST_WORKERS ?= 2

test: lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

format: setup
	$(BIN)/ruff format $(PY_DIRS)
	$(BIN)/ruff check --fix $(PY_DIRS)

benchmark: setup
	$(BIN)/python benchmarks/run.py

# Splink (the peer) runs in its own virtualenv, built by benchmarks/peer_splink_venv.sh on first use.
benchmark-peer: setup
	$(BIN)/python benchmarks/peer_splink.py

clean:
	rm -rf data lakehouse mlruns.db mlartifacts reports spark-warehouse metastore_db derby.log
