#!/usr/bin/env bash
# The Splink peer benchmark's own virtualenv, .venv-splink (benchmarks/peer_splink.py runs its Splink
# engines there): Splink is a peer we measure against, never a dependency of cdp-spark, so it stays out of
# pyproject.toml and the main .venv. Splink 4 (not 5), its DuckDB, and the product's pyspark for Splink's
# Spark backend. The venv is rebuilt only when the pins change (the stamp file names their hash).
#
#   bash benchmarks/peer_splink_venv.sh      # prints the venv's python when it is ready
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv-splink
# pandas/pyarrow/numpy as in the product (pandas <3: see STACK.md); sqlglot pinned because Splink 4 only
# asks for >=17.6 and sqlglot changes its SQL generation between majors.
REQUIREMENTS=(
  splink==4.0.17
  duckdb==1.4.4
  sqlglot==27.29.0
  pyspark==4.1.4
  pandas==2.3.3
  pyarrow==25.0.1
  numpy==2.4.6
)
STAMP="$VENV/.installed-$(echo "${REQUIREMENTS[*]}" | sha256sum | cut -c1-16)"

if [ ! -f "$STAMP" ]; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  echo '*' > "$VENV/.gitignore"   # keep the venv out of git without touching the repo's .gitignore
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet "${REQUIREMENTS[@]}"
  touch "$STAMP"
fi
echo "$VENV/bin/python"
