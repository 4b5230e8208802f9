#!/usr/bin/env bash
# The Airflow DAG tests (tests/test_workflows.py) in their own virtualenv, .venv-airflow: Airflow is too
# heavy for the main venv and pins its own dependencies. The venv is rebuilt only when the pins change.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv-airflow
CONSTRAINTS=deploy/airflow/constraints-py3.11.txt
REQUIREMENTS=(apache-airflow==3.3.2 apache-airflow-providers-apache-spark==6.3.4 pytest==9.2.0 pyyaml==6.0.4)
STAMP="$VENV/.installed-$( (cat "$CONSTRAINTS"; echo "${REQUIREMENTS[*]}") | sha256sum | cut -c1-16)"

if [ ! -f "$STAMP" ]; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  echo '*' > "$VENV/.gitignore"   # keep the venv out of git without touching the repo's .gitignore
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet -c "$CONSTRAINTS" "${REQUIREMENTS[@]}"
  touch "$STAMP"
fi

# A throwaway Airflow home: its config and SQLite file, never ~/airflow.
AIRFLOW_HOME="$(mktemp -d)"
trap 'rm -rf "$AIRFLOW_HOME"' EXIT
export AIRFLOW_HOME
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db"

# --noconftest: tests/conftest.py starts Spark, which this venv does not have; the CI skip guard is loaded
# on its own (tests/ci_skips.py): here Airflow is installed, so nothing may skip.
PYTHONPATH=tests "$VENV/bin/pytest" tests/test_workflows.py -q -p no:cacheprovider --noconftest -p ci_skips
