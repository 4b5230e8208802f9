"""`cdp-spark run` end to end on a small generated sample, then the notebooks on its lakehouse.

The pipeline runs once, in this process, on tiny sample data in a temp folder (``pipeline``). A second run on the
same sample is made to fail in a middle stage and then resumed: it must end with the same tables. The notebooks
find the first lakehouse through their parameters (``CDP_NOTEBOOK_ROOT`` and ``CDP_NOTEBOOK_SET``, the same
``--set`` overrides the pipeline ran with), so what a data scientist opens after ``make demo`` is what CI
executes, the three in one kernel (one JVM), each from an empty namespace.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

import mlflow
import nbformat
import pytest
import yaml
from conftest import TEST_SPARK, TINY_DATA_CONF
from delta.tables import DeltaTable
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cdp_spark import tables
from cdp_spark.cli import EXIT_CONFIG, EXIT_FAILED, main
from cdp_spark.gold import job as gold_job
from cdp_spark.identity.rules import load_identity
from cdp_spark.ml.config import load_models
from cdp_spark.privacy.erase import delta_tables

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
pytestmark = [pytest.mark.slow, pytest.mark.integration]
NOTEBOOKS = ["01_profiles_and_identity.ipynb", "02_models.ipynb", "03_segments.ipynb"]
PEOPLE, DAYS = 300, 2
# Each kernel starts its own local Spark next to the test session's: as small as the test session, and tuned
# for tiny data like it.
KERNEL_SPARK = [
    "spark.master=local[2]",
    "spark.driver_memory=1g",
    f"spark.shuffle_partitions={TEST_SPARK.shuffle_partitions}",
    "spark.conf=" + json.dumps(TINY_DATA_CONF),
]


@dataclass(frozen=True)
class Run:
    """One pipeline's folder and the ``--set`` overrides that point every stage at it."""

    work: Path
    overrides: list[str]

    @property
    def root(self) -> str:
        return str(self.work / "lakehouse")

    @property
    def sets(self) -> list[str]:
        return [arg for o in self.overrides for arg in ("--set", o)]

    def cli(self, *args: str) -> int:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(REPO)  # conf/ is read from the repository, like the CLI run from its root
            patch.delenv("MLFLOW_TRACKING_URI", raising=False)
            return main([*self.sets, *args])


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """Generated sample data, and a models.yaml with one churn training snapshot instead of four (the tests
    need a trained model, not a good one); every run of this module reads both."""
    work = tmp_path_factory.mktemp("sample")
    models = yaml.safe_load((REPO / "conf" / "models.yaml").read_text(encoding="utf-8"))
    models["churn"]["n_snapshots"] = 1
    (work / "models.yaml").write_text(yaml.safe_dump(models), encoding="utf-8")
    generator = Run(work, [f"landing={work / 'sample'}"])
    assert generator.cli("generate", "--people", str(PEOPLE), "--days", str(DAYS)) == 0
    return work


def new_run(work: Path, sample: Path) -> Run:
    return Run(
        work,
        [
            f"files.models={sample / 'models.yaml'}",
            f"lakehouse.root={work / 'lakehouse'}",
            f"landing={sample / 'sample'}",
            f"mlflow.tracking_uri=sqlite:///{work / 'mlruns.db'}",
            f"mlflow.artifact_root={work / 'mlartifacts'}",
            f"reports_dir={work / 'reports'}",
        ],
    )


@pytest.fixture(scope="module")
def pipeline(spark, sample, tmp_path_factory) -> Run:
    """`cdp-spark run` on the sample, uninterrupted, in two slices: `--to resolve` (its lakehouse and MLflow store
    are kept in ``resolved/`` for the resume test), then `--from profiles`. ``spark`` is the test session: the
    stages join it instead of starting another JVM in this process."""
    run = new_run(tmp_path_factory.mktemp("pipeline"), sample)
    assert run.cli("run", "--to", "resolve") == 0, "cdp-spark run failed (see the captured stderr)"
    shutil.copytree(run.root, run.work / "resolved" / "lakehouse")
    shutil.copy2(run.work / "mlruns.db", run.work / "resolved" / "mlruns.db")
    assert run.cli("run", "--from", "profiles") == 0, "cdp-spark run failed (see the captured stderr)"
    return run


# Columns that differ between two runs of the same data by design: when and by which run a row was written (the
# audit log's details name export ids and folders).
RUN_COLUMNS = ("run_id", "_batch_id")
RUN_DETAILS = {tables.AUDIT_LOG: ("details",)}


def comparable(df: DataFrame, table: tables.Table) -> DataFrame:
    """Without the run columns; maps as sorted entries (rows are compared sorted, and maps do not sort)."""
    stamped = [f.name for f in df.schema.fields if f.name.endswith("_at") and f.dataType == T.TimestampType()]
    maps = [f.name for f in df.schema.fields if isinstance(f.dataType, T.MapType)]
    df = df.withColumns({name: F.to_json(F.array_sort(F.map_entries(name))) for name in maps})
    return df.drop(*RUN_COLUMNS, *RUN_DETAILS.get(table, ()), *[name for name in stamped if name != "updated_at"])


def differences(spark, expected_root: str, actual_root: str, names: list[tables.Table]) -> DataFrame:
    """The rows (as JSON of the :func:`comparable` columns by name) that ``names`` hold a different number of times
    in the two lakehouses, with how many more the expected one holds: one query for all the tables."""
    frames = []
    for root, side in ((expected_root, 1), (actual_root, -1)):
        for table in names:
            df = comparable(tables.read(spark, root, table), table)
            row = F.to_json(F.struct(*sorted(df.columns)))
            frames.append(df.select(F.lit(table.full_name).alias("table"), row.alias("row"), F.lit(side).alias("n")))
    counted = reduce(DataFrame.unionByName, frames).groupBy("table", "row").agg(F.sum("n").alias("more"))
    return counted.where("more != 0")


def versions(spark, root: str) -> dict[str, int]:
    return {t.full_name: tables.log_snapshot(spark, root, t).version() for t in delta_tables(spark, root)}


def test_a_run_failing_in_a_middle_stage_exits_with_one_line_and_the_rerun_ends_as_an_uninterrupted_run(
    spark, sample, pipeline, tmp_path, monkeypatch, capsys
):
    run = new_run(tmp_path, sample)
    # Ingest, standardize and resolve as the uninterrupted run left them (the same stages on the same sample,
    # computed once): this run redoes them as the no-ops they are (resolve finds its inputs as it left them and
    # skips), then fails in profiles.
    shutil.copytree(pipeline.work / "resolved" / "lakehouse", run.root)
    shutil.copy2(pipeline.work / "resolved" / "mlruns.db", run.work / "mlruns.db")
    at_failure: dict[str, int] = {}

    def disk_full(*args, **kwargs):  # profiles dies after writing two of its tables
        at_failure.update(versions(spark, run.root))
        raise OSError("[Errno 28] No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(gold_job, "households", disk_full)
        assert run.cli("run") == EXIT_FAILED

    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cdp-spark run")]
    assert len(said) == 1 and said[0].startswith(
        "cdp-spark run failed at stage profiles: OSError: [Errno 28] No space left on device (report: "
    ), said
    report = (Path(run.work) / "reports" / "latest-run.md").read_text()
    assert "**profiles failed**; rerun `cdp-spark run` to resume." in report
    assert "| resolve | ok |" in report and "| profiles | failed |" in report and "| train | not run |" in report
    # After the failure only its metrics were recorded (what profiles counted before it failed); no table changed.
    after = versions(spark, run.root)
    metrics = tables.RUN_METRICS.full_name
    assert at_failure and after.pop(metrics) == at_failure.pop(metrics) + 1 and after == at_failure
    failed = tables.read(spark, run.root, tables.RUN_METRICS).where("stage = 'profiles' AND metric = 'failed'")
    assert sorted(r["step"] for r in failed.collect()) == ["households", "stage"]
    assert not tables.exists(spark, run.root, tables.CUSTOMER_SCORES), "a stage after the failed one ran"

    assert run.cli("run") == 0
    assert "**all stages succeeded**." in (Path(run.work) / "reports" / "latest-run.md").read_text()
    skips = tables.read(spark, run.root, tables.RUN_METRICS).where("stage = 'resolve' AND metric = 'unchanged'")
    # The uninterrupted run resolved (its metrics came with the copy); the failed run and the rerun skipped.
    assert [r.value for r in skips.orderBy("recorded_at").collect()] == [0.0, 1.0, 1.0], "resolve recomputed"
    expected, actual = delta_tables(spark, pipeline.root), delta_tables(spark, run.root)
    assert sorted(t.full_name for t in actual) == sorted(t.full_name for t in expected)
    assert [r.stage for r in tables.read(spark, run.root, tables.STAGE_INPUTS).orderBy("recorded_at").collect()] == [
        "resolve",
        "profiles",
    ]
    # The stage inputs hold the Delta versions and commit times of each lakehouse's own writes; the run metrics,
    # seconds and runs (the resumed pipeline ran some stages twice). Every other table must hold the same rows.
    same = [t for t in expected if t not in (tables.RUN_METRICS, tables.STAGE_INPUTS)]
    for table in same:
        columns = [(f.name, f.dataType) for f in tables.read(spark, pipeline.root, table).schema.fields]
        assert sorted(columns, key=str) == sorted(
            ((f.name, f.dataType) for f in tables.read(spark, run.root, table).schema.fields), key=str
        ), table.full_name
    differ = [tuple(r) for r in differences(spark, pipeline.root, run.root, same).limit(20).collect()]
    assert differ == [], "(table, row, rows more in the uninterrupted run than in the resumed one)"


def test_the_run_never_reads_the_ground_truth_and_evaluate_does_when_asked(spark, pipeline, tmp_path, capsys):
    """The generated sample has a ``_truth`` folder; the pipeline does not look at it (a production lakehouse has
    none). `cdp-spark evaluate` scores the identity map against it, on a copy of the run's lakehouse."""
    steps = tables.read(spark, pipeline.root, tables.RUN_METRICS).select("stage", "step").distinct().collect()
    assert not [r for r in steps if r["stage"] == "evaluate" or "evaluate" in r["step"]]
    shutil.copytree(pipeline.root, tmp_path / "lakehouse")
    copy = Run(tmp_path, [o for o in pipeline.overrides if not o.startswith("lakehouse.root=")])
    copy.overrides.append(f"lakehouse.root={tmp_path / 'lakehouse'}")
    capsys.readouterr()
    assert copy.cli("evaluate") == 0
    printed = json.loads(capsys.readouterr().out)
    assert 0.9 < printed["pairwise_precision"] <= 1 and 0.9 < printed["pairwise_recall"] <= 1, printed
    recorded = tables.read(spark, copy.root, tables.RUN_METRICS).where("stage = 'evaluate'")
    assert {r["metric"]: r["value"] for r in recorded.collect()}["pairwise_precision"] == pytest.approx(
        printed["pairwise_precision"]
    )
    assert copy.cli("evaluate", "--truth", str(tmp_path / "nowhere")) == EXIT_CONFIG
    assert "no ground truth at" in capsys.readouterr().err


def test_every_table_of_the_run_has_a_catalog_entry_whose_columns_and_types_it_holds(spark, pipeline):
    """The catalog matches the lakehouse a run builds: every Delta table under the root is an entry, holds the
    entry's columns with their types (exactly them, unless the entry says configuration adds more), and collects
    statistics on no personal column."""
    found = delta_tables(spark, pipeline.root)
    assert {t.layer for t in found} == {"bronze", "silver", "gold", "ops"}
    for table in found:
        assert table.description != "not in the catalog", f"{table.full_name} has no catalog entry"
        actual = {f.name: f.dataType.simpleString() for f in tables.read(spark, pipeline.root, table).schema.fields}
        declared = {f.name: f.dataType.simpleString() for f in table.schema.fields}
        assert {c: actual.get(c) for c in declared} == declared, table.full_name
        if table.extra_columns is None:
            assert list(actual) == table.columns, table.full_name
        properties = DeltaTable.forPath(spark, table.path(pipeline.root)).detail().first()["properties"]
        listed = [c.strip("` ") for c in properties.get("delta.dataSkippingStatsColumns", "").split(",") if c]
        assert not [c for c in listed if table.is_personal(c)], table.full_name
        assert (
            list(table.partition_by)
            == DeltaTable.forPath(spark, table.path(pipeline.root)).detail().first()["partitionColumns"]
        ), table.full_name


@pytest.fixture(scope="module")
def kernel_env(pipeline) -> dict[str, str]:
    """The environment for the kernels: the uninterrupted pipeline's lakehouse and overrides."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(
        {
            "CDP_NOTEBOOK_ROOT": pipeline.root,
            "CDP_NOTEBOOK_SET": "\n".join([*pipeline.overrides, *KERNEL_SPARK]),
            "IPYTHONDIR": str(pipeline.work / "ipython"),
        }
    )
    return env


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_without_outputs(name):
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, f"{name} has no code cells"
    assert [i for i, cell in enumerate(code) if cell.outputs or cell.execution_count is not None] == [], (
        f"{name}: clear the outputs before committing (Kernel > Restart & Clear Output)"
    )
    assert "parameters" in code[0].metadata.get("tags", []), f"{name}: the first code cell must be the parameters"


def text_outputs(notebook) -> str:  # noqa: ANN001 - nbformat node
    """Everything the cells printed or displayed as text, one string."""
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            texts.append(output.get("text", ""))
            texts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(texts)


def expected_lines(name: str, spark, root: str) -> list[str]:  # noqa: ANN001
    """What each notebook must print about this lakehouse: facts read from its tables, not just "it ran"."""
    if name.startswith("01_"):
        identity = load_identity(str(REPO / "conf" / "identity.yaml")).probabilistic
        store = f"sqlite:///{Path(root).parent / 'mlruns.db'}"  # the registry too: not the one another test set
        registry = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
        champion = registry.get_model_version_by_alias(identity.registered_model, "champion").version
        largest = tables.read(spark, root, tables.IDENTITY_MAP).groupBy("cdp_id").count().agg({"count": "max"})
        return [
            f"{tables.read(spark, root, tables.CUSTOMER_PROFILE).count():,} golden profiles",
            f"identity model: {identity.registered_model} champion version {champion}, prior ",
            # the one resolve of this lakehouse published its map: its health names that map's largest cluster
            f": ok; largest cluster {largest.first()[0]} records, ",
        ]
    if name.startswith("02_"):
        return [f"champion models:/{load_models(str(REPO / 'conf' / 'models.yaml')).clv.registered_model}/"]
    return ["the current definitions reproduce the stored membership: True (0 differences)"]


@pytest.fixture(scope="module")
def kernel(kernel_env) -> Iterator[KernelManager]:
    """One kernel, so one Spark JVM, for the three notebooks (each started its own: ~15 s each). Each notebook
    starts from an empty namespace (``%reset``): a notebook that relies on another's variables still fails."""
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(env=kernel_env, cwd=str(NOTEBOOK_DIR))  # the folder Jupyter starts the kernel in
    try:
        yield manager
    finally:
        manager.shutdown_kernel(now=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, kernel, kernel_env, spark):
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_code_cell("%reset -f"))
    client = NotebookClient(notebook, km=kernel, timeout=600)
    client.execute()  # raises CellExecutionError with the failing cell and its traceback
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert images, f"{name} ran but showed no plot"
    printed = text_outputs(notebook)
    for line in expected_lines(name, spark, kernel_env["CDP_NOTEBOOK_ROOT"]):
        assert line in printed, f"{name}: expected {line!r} in its output"
    if name.startswith("02_"):  # each candidate model trained, registered and judged by the gate
        assert len(re.findall(r"^\w+: version \d+ -> \w*:? ", printed, flags=re.MULTILINE)) >= 2, printed[-2000:]
