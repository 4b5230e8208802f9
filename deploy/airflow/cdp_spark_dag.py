"""Airflow DAGs for cdp-spark: the daily incremental run and the weekly model retraining.

Every task is one ``spark-submit <project>/jobs/<stage>.py --conf-dir <project>/conf --env <env>`` through
the Apache Spark provider's SparkSubmitOperator; the Spark master, deploy mode and spark-submit binary
come from the Airflow Connection (``spark_default`` unless the Variable ``cdp_spark_conn_id`` names
another). Every stage is idempotent, so a retry or a rerun of a day changes nothing already written.

Airflow Variables (all optional):
  cdp_spark_project_dir   the checkout on the Airflow workers, with jobs/ and conf/   (/opt/cdp-spark)
  cdp_spark_env           the environment overlay conf/env/<env>.yaml                 (cluster)
  cdp_spark_py_files      the zipped library shipped to the executors       (<project_dir>/dist/cdp_spark.zip)
  cdp_spark_packages      Maven coordinates of the JVM packages                      (Delta + GraphFrames)
  cdp_spark_repositories  extra Maven repositories for those packages, comma-separated (none)
  cdp_spark_conn_id       the Spark Connection                                        (spark_default)
The variables conf/env/<env>.yaml reads (CDP_LAKEHOUSE_ROOT ...) must be set on the Airflow workers;
``erase`` reads the request files dropped into privacy.requests (default: <lakehouse root>/_requests/erasure).

This file does not import cdp_spark (Airflow workers need not have it); tests/test_workflows.py checks
that the stage lists below follow cdp_spark.pipeline.PIPELINE.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Variable, chain

# Erasure first, so the day's requests are applied (and their people suppressed) before new data flows in;
# maintenance last, so erased rows leave the tables' history within the retention.
DAILY_STAGES = ("erase", "ingest", "standardize", "resolve", "profiles", "score", "segment", "activate", "maintain")
WEEKLY_STAGES = ("train",)
# The stages whose CLI takes --as-of: they compute "as of" the run's logical date, so a rerun of a past
# day reproduces that day.
AS_OF_STAGES = frozenset({"profiles", "train", "score", "segment", "activate"})

DEFAULT_PACKAGES = "io.delta:delta-spark_4.1_2.13:4.4.0,io.graphframes:graphframes-spark4_2.13:0.11.0"
PROJECT_DIR = "{{ var.value.get('cdp_spark_project_dir', '/opt/cdp-spark') }}"
ENV = "{{ var.value.get('cdp_spark_env', 'cluster') }}"
PY_FILES = (
    "{{ var.value.get('cdp_spark_py_files', '') or "
    "(var.value.get('cdp_spark_project_dir', '/opt/cdp-spark') ~ '/dist/cdp_spark.zip') }}"
)
PACKAGES = "{{ var.value.get('cdp_spark_packages', '" + DEFAULT_PACKAGES + "') }}"

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "cdp-spark",
    "retries": 2,
    "retry_delay": timedelta(minutes=10),
}


class CdpSparkSubmitOperator(SparkSubmitOperator):
    """SparkSubmitOperator whose Connection and Maven repositories come from Airflow Variables at run time.

    ``conn_id`` and ``repositories`` are not template fields of SparkSubmitOperator, and reading Variables
    at the top of a DAG file costs a metadata lookup on every parse: read them when the task runs.
    """

    def execute(self, context: Any) -> None:
        self._conn_id = Variable.get("cdp_spark_conn_id", default="spark_default")
        self._repositories = Variable.get("cdp_spark_repositories", default="") or None
        super().execute(context)


def stage_task(stage: str) -> CdpSparkSubmitOperator:
    """One pipeline stage as a spark-submit of jobs/<stage>.py."""
    as_of = ["--as-of", "{{ ds }}"] if stage in AS_OF_STAGES else []
    return CdpSparkSubmitOperator(
        task_id=stage,
        name=f"cdp-spark-{stage}",
        application=f"{PROJECT_DIR}/jobs/{stage}.py",
        application_args=["--conf-dir", f"{PROJECT_DIR}/conf", "--env", ENV, *as_of],
        py_files=PY_FILES,
        packages=PACKAGES,
    )


with DAG(
    dag_id="cdp_spark_daily",
    description="cdp-spark daily run: " + " -> ".join(DAILY_STAGES),
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,  # stages read what the previous run wrote: runs must not overlap
    default_args=DEFAULT_ARGS,
    tags=["cdp-spark"],
) as daily:
    chain(*[stage_task(stage) for stage in DAILY_STAGES])

with DAG(
    dag_id="cdp_spark_weekly_train",
    description="cdp-spark weekly retraining of the churn and CLV models",
    schedule="@weekly",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["cdp-spark"],
) as weekly_train:
    chain(*[stage_task(stage) for stage in WEEKLY_STAGES])
