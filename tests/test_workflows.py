"""The scheduled workflows run the pipeline's stages, in the pipeline's order, with the right arguments.

The Databricks bundle tests need only PyYAML. The Airflow tests need Airflow and its Spark provider, too
heavy for the main venv: they are skipped there and run by ``.ci/workflows.sh`` in ``.venv-airflow``,
which has no pyspark. So this file imports nothing from cdp_spark: it reads the few constants it checks
against (``PIPELINE``, the package coordinates) from the source with ``ast``.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "deploy" / "databricks"
DAG_FOLDER = REPO / "deploy" / "airflow"

# Around the pipeline's daily stages: erasure first (requests applied before new data flows in), maintenance
# last (erased rows leave the tables' history within the retention).
PRIVACY_FIRST, PRIVACY_LAST = ["erase"], ["maintain"]
DAILY = [*PRIVACY_FIRST, "ingest", "standardize", "resolve", "profiles", "score", "segment", "activate", *PRIVACY_LAST]
WEEKLY = ["train"]
AS_OF_STAGES = {"profiles", "score", "segment", "activate", "train"}


def source_constant(module: str, name: str):
    """The literal value assigned to ``name`` at the top of ``cdp_spark/<module>.py``."""
    tree = ast.parse((REPO / "cdp_spark" / f"{module}.py").read_text(encoding="utf-8"))
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"cdp_spark/{module}.py assigns no {name}")


PIPELINE = source_constant("pipeline", "PIPELINE")
PACKAGES = ",".join([source_constant("session", "DELTA_PACKAGE"), source_constant("session", "GRAPHFRAMES_PACKAGE")])


def test_the_workflows_cover_the_pipeline_in_its_order():
    position = {stage: i for i, stage in enumerate(PIPELINE)}
    pipeline_daily = DAILY[len(PRIVACY_FIRST) : len(DAILY) - len(PRIVACY_LAST)]
    assert [s for s in pipeline_daily if s in position] == pipeline_daily, "a daily stage is not in PIPELINE"
    assert sorted(pipeline_daily, key=position.get) == pipeline_daily, "the daily order is not the pipeline order"
    assert sorted(pipeline_daily + WEEKLY, key=position.get) == PIPELINE, "a pipeline stage is in neither workflow"
    assert all((REPO / "jobs" / f"{stage}.py").is_file() for stage in PRIVACY_FIRST + PRIVACY_LAST)


# --------------------------------------------------------------------------------------------
# Databricks asset bundle
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle() -> dict:
    config = yaml.safe_load((BUNDLE / "databricks.yml").read_text(encoding="utf-8"))
    jobs = {}
    for pattern in config["include"]:
        for path in sorted(BUNDLE.glob(pattern)):
            for key, job in yaml.safe_load(path.read_text(encoding="utf-8"))["resources"]["jobs"].items():
                jobs[key] = {**job, "_file": path}
    return {**config, "jobs": jobs}


def task_chain(job: dict) -> list[str]:
    """The task keys of a job in dependency order; fails unless the tasks form one straight chain."""
    upstream = {t["task_key"]: [d["task_key"] for d in t.get("depends_on", [])] for t in job["tasks"]}
    assert all(len(deps) <= 1 for deps in upstream.values()), f"not a chain: {upstream}"
    (first,) = [key for key, deps in upstream.items() if not deps]
    chain = [first]
    while nxt := [key for key, deps in upstream.items() if deps == [chain[-1]]]:
        assert len(nxt) == 1, f"{chain[-1]} has several downstream tasks: {nxt}"
        chain.append(nxt[0])
    assert len(chain) == len(upstream), f"tasks outside the chain: {set(upstream) - set(chain)}"
    return chain


@pytest.mark.parametrize(("job_key", "stages"), [("cdp_spark_daily", DAILY), ("cdp_spark_weekly_train", WEEKLY)])
def test_bundle_jobs_chain_the_stages_in_pipeline_order(bundle, job_key, stages):
    assert set(bundle["jobs"]) == {"cdp_spark_daily", "cdp_spark_weekly_train"}
    assert task_chain(bundle["jobs"][job_key]) == stages


@pytest.mark.parametrize("job_key", ["cdp_spark_daily", "cdp_spark_weekly_train"])
def test_bundle_tasks_run_the_stage_job_files_with_their_arguments(bundle, job_key):
    job = bundle["jobs"][job_key]
    for task in job["tasks"]:
        stage, python_task = task["task_key"], task["spark_python_task"]
        # Bundle paths are relative to the file that names them.
        python_file = (job["_file"].parent / python_task["python_file"]).resolve()
        assert python_file == REPO / "jobs" / f"{stage}.py" and python_file.is_file()
        as_of = ["--as-of", "{{job.start_time.iso_date}}"] if stage in AS_OF_STAGES else []
        assert python_task["parameters"] == [
            "--conf-dir",
            "${workspace.file_path}/conf",
            "--env",
            "${var.cdp_env}",
            *as_of,
        ]
        assert task["job_cluster_key"] in {c["job_cluster_key"] for c in job["job_clusters"]}
        assert task["max_retries"] >= 1
        assert {"maven": {"coordinates": source_constant("session", "GRAPHFRAMES_PACKAGE")}} in task["libraries"]
        wheels = [(job["_file"].parent / lib["whl"]).parent.resolve() for lib in task["libraries"] if "whl" in lib]
        assert wheels == [REPO / "dist"], "the task does not install the cdp_spark wheel the bundle builds"


def test_bundle_ships_the_project_and_runs_one_at_a_time(bundle):
    assert [(BUNDLE / p).resolve() for p in bundle["sync"]["paths"]] == [REPO]
    artifact = bundle["artifacts"]["cdp_spark"]
    assert (BUNDLE / artifact["path"]).resolve() == REPO and "--wheel-dir dist" in artifact["build"]
    env = bundle["variables"]["cdp_env"]["default"]
    assert (REPO / "conf" / "env" / f"{env}.yaml").is_file(), f"the jobs run with --env {env}: no conf/env/{env}.yaml"
    for job in bundle["jobs"].values():
        assert job["max_concurrent_runs"] == 1
        assert job["schedule"]["timezone_id"] == "UTC"
        cluster_env = job["job_clusters"][0]["new_cluster"]["spark_env_vars"]
        # conf/env/cluster.yaml reads these; an unset one is a config error at the first stage.
        assert {
            "CDP_LAKEHOUSE_ROOT",
            "CDP_CHECKPOINT_DIR",
            "CDP_LANDING_PATH",
            "CDP_REPORTS_DIR",
            "MLFLOW_TRACKING_URI",
        } <= set(cluster_env)
    assert bundle["jobs"]["cdp_spark_daily"]["schedule"]["quartz_cron_expression"] == "${var.daily_cron}"
    assert bundle["jobs"]["cdp_spark_weekly_train"]["schedule"]["quartz_cron_expression"] == "${var.weekly_cron}"


# --------------------------------------------------------------------------------------------
# Airflow (run by .ci/workflows.sh in .venv-airflow; skipped where Airflow is not installed)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory) -> Iterator[Path]:
    """A throwaway AIRFLOW_HOME (unless .ci/workflows.sh gave one), set before Airflow is first imported."""
    with pytest.MonkeyPatch.context() as env:
        if "AIRFLOW_HOME" not in os.environ:
            env.setenv("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow_home")))
        env.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        pytest.importorskip("airflow.providers.apache.spark.operators.spark_submit", reason="Airflow is not installed")
        yield Path(os.environ["AIRFLOW_HOME"])


@pytest.fixture
def dags(airflow_home) -> dict:
    """The DAGs of deploy/airflow, loaded afresh (rendering templates changes the tasks in place)."""
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(DAG_FOLDER))
    assert bag.import_errors == {}
    return bag.dags


def test_dag_folder_has_the_two_workflows(dags):
    assert set(dags) == {"cdp_spark_daily", "cdp_spark_weekly_train"}
    assert dags["cdp_spark_daily"].schedule == "@daily"
    assert dags["cdp_spark_weekly_train"].schedule == "@weekly"
    for dag in dags.values():
        assert dag.max_active_runs == 1
        assert dag.catchup is False
        assert all(task.retries == 2 for task in dag.tasks)


@pytest.mark.parametrize(("dag_id", "stages"), [("cdp_spark_daily", DAILY), ("cdp_spark_weekly_train", WEEKLY)])
def test_dag_task_graph_is_the_pipeline_chain(dags, dag_id, stages):
    dag = dags[dag_id]
    assert sorted(dag.task_ids) == sorted(stages)
    for i, stage in enumerate(stages):
        task = dag.get_task(stage)
        assert task.upstream_task_ids == set(stages[i - 1 : i]), stage
        assert task.downstream_task_ids == set(stages[i + 1 : i + 2]), stage
        assert task.application.endswith(f"/jobs/{stage}.py")
        as_of = ["--as-of", "{{ ds }}"] if stage in AS_OF_STAGES else []
        assert task.application_args[4:] == as_of, stage


SPARK_LOOPBACK = '{"conn_type": "spark", "host": "spark://127.0.0.1", "port": 7077}'
SPARK_YARN = '{"conn_type": "spark", "host": "yarn", "extra": {"deploy-mode": "client"}}'


@pytest.mark.parametrize(
    ("dag_id", "stage", "variables", "command"),
    [
        # Airflow Variables unset: the defaults.
        ("cdp_spark_daily", "ingest", {}, [
            "spark-submit", "--master", "yarn", "--py-files", "/opt/cdp-spark/dist/cdp_spark.zip",
            "--packages", PACKAGES, "--name", "cdp-spark-ingest", "--deploy-mode", "client",
            "/opt/cdp-spark/jobs/ingest.py", "--conf-dir", "/opt/cdp-spark/conf", "--env", "cluster",
        ]),
        # Every Variable set; the stage takes the run's logical date as its as-of date.
        ("cdp_spark_daily", "profiles", {
            "cdp_spark_project_dir": "/srv/cdp", "cdp_spark_env": "prod", "cdp_spark_py_files": "/srv/cdp.zip",
            "cdp_spark_packages": "g:a:1", "cdp_spark_repositories": "https://mirror/maven2",
            "cdp_spark_conn_id": "spark_loopback",
        }, [
            "spark-submit", "--master", "spark://127.0.0.1:7077", "--py-files", "/srv/cdp.zip",
            "--packages", "g:a:1", "--repositories", "https://mirror/maven2", "--name", "cdp-spark-profiles",
            "/srv/cdp/jobs/profiles.py", "--conf-dir", "/srv/cdp/conf", "--env", "prod", "--as-of", "2026-03-04",
        ]),
        ("cdp_spark_weekly_train", "train", {"cdp_spark_project_dir": "/srv/cdp"}, [
            "spark-submit", "--master", "yarn", "--py-files", "/srv/cdp/dist/cdp_spark.zip",
            "--packages", PACKAGES, "--name", "cdp-spark-train", "--deploy-mode", "client",
            "/srv/cdp/jobs/train.py", "--conf-dir", "/srv/cdp/conf", "--env", "cluster", "--as-of", "2026-03-04",
        ]),
    ],
)  # fmt: skip
def test_task_submits_the_stage_job(dags, monkeypatch, dag_id, stage, variables, command):
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
    from airflow.sdk.execution_time.context import VariableAccessor

    # Variables and Connections from the environment: Airflow's own secrets backend, no metadata database.
    for name, value in variables.items():
        monkeypatch.setenv(f"AIRFLOW_VAR_{name.upper()}", value)
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", SPARK_YARN)
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_LOOPBACK", SPARK_LOOPBACK)
    submitted: list[list[str]] = []
    # Stop at the command line the worker would run; the spark-submit itself is tests/test_cluster.py's.
    monkeypatch.setattr(
        SparkSubmitHook,
        "submit",
        lambda hook, application="", **_: submitted.append(hook._build_spark_submit_command(application)),
    )
    task = dags[dag_id].get_task(stage)
    context = {
        "ds": "2026-03-04",
        "var": {"value": VariableAccessor(deserialize_json=False), "json": VariableAccessor(deserialize_json=True)},
    }
    task.render_template_fields(context)
    task.execute(context)
    assert submitted == [command]
