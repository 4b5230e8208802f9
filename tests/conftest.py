"""One SparkSession per test process: local[2], tiny shuffles, no UI; a temp lakehouse per test.

`make test` runs two pytest-xdist workers, so two SparkSessions start at once: they take turns resolving
the jars into the shared Ivy cache (two resolutions writing the same cache can leave it half written).
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

import mlflow
import pytest

from cdp_spark import tracking
from cdp_spark.config import LakehouseConfig, MlflowConfig, SparkConfig
from cdp_spark.session import build_session
from cdp_spark.sources import KNOWN_JDBC_DRIVERS

pytest_plugins = ["ci_skips"]

# Arrow (pandas) UDFs run in Python workers: make them this interpreter (with numpy, pandas, phonenumbers ...),
# not whatever `python3` comes first on PATH. Read once when the SparkContext starts.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

# Settings for tiny data, measured on tests/test_gold.py + tests/test_activation.py (2 cores, one run, side by
# side): 135 s as the product runs, 80 s with these (0.59x). A test's query touches a few rows, so its cost is
# planning and compiling, not processing: expressions are interpreted instead of compiled to Java (Spark's own
# test suites run this mode too), one partition (shuffles, snapshots, local data) and no adaptive re-planning. The cluster test runs the
# jobs with the product's settings (code generation, AQE, two partitions).
TINY_DATA_CONF = {
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    "spark.sql.adaptive.enabled": "false",
    "spark.ui.enabled": "false",
    "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
}
TEST_SPARK = SparkConfig(
    master="local[2]",
    app_name="cdp-spark-tests",
    driver_memory="2g",
    shuffle_partitions=1,
    packages=[KNOWN_JDBC_DRIVERS["org.postgresql.Driver"]],  # for the JDBC source test against a real PostgreSQL
    conf={
        **TINY_DATA_CONF,
        "spark.databricks.delta.retentionDurationCheck.enabled": "false",
    },
)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    checkpoints = tmp_path_factory.mktemp("checkpoints")
    ivy = Path(TEST_SPARK.ivy_dir).expanduser()
    ivy.mkdir(parents=True, exist_ok=True)
    with (ivy / ".cdp-spark-tests.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, once this session's jars are resolved
        session = build_session(
            TEST_SPARK,
            LakehouseConfig(root=str(tmp_path_factory.mktemp("lakehouse")), checkpoint_dir=str(checkpoints)),
        )
    yield session
    session.stop()


@pytest.fixture
def lakehouse(tmp_path) -> LakehouseConfig:
    """A fresh lakehouse folder for one test, so tests never share tables by accident."""
    return LakehouseConfig(root=str(tmp_path / "lakehouse"))


def identity_overrides(tmp_path: Path, lakehouse: str = "lakehouse") -> list[str]:
    """The ``--set`` overrides of a resolve-stage test: a lakehouse, ``identity.yaml`` and an MLflow store under
    ``tmp_path`` (the test writes the yaml)."""
    return [
        f"lakehouse.root={tmp_path / lakehouse}",
        f"files.identity={tmp_path / 'identity.yaml'}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlruns.db'}",
        f"mlflow.artifact_root={tmp_path / 'mlartifacts'}",
    ]


@pytest.fixture
def tracker(tmp_path, monkeypatch) -> tracking.Tracking:
    """A fresh MLflow store and registry in a temp folder (never the repo's mlruns.db)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    previous = mlflow.get_tracking_uri()
    config = MlflowConfig(
        tracking_uri=f"sqlite:///{tmp_path}/mlruns.db", artifact_root=str(tmp_path / "mlartifacts"), experiment="test"
    )
    yield tracking.connect(config)
    mlflow.set_tracking_uri(previous)


# The test files that take longest, longest first: worker seconds per file in a whole-suite run on 2 cores
# (2026-12-05: 352, 253, 193, 131, 121, 120, 114, 88 and 83 s; the other 27 files take 505 s together).
LONGEST_FIRST = (
    "test_pipeline.py",
    "test_privacy.py",
    "test_identity_incremental.py",
    "test_identity_model.py",
    "test_silver.py",
    "test_models.py",
    "test_cluster.py",
    "test_bad_input.py",
    "test_identity_health.py",
)


def pytest_collection_modifyitems(items):
    """The longest files first (``LONGEST_FIRST``), then the others in their usual order.

    `make test` hands whole files to the pytest-xdist workers in this order (``--dist loadfile
    --no-loadscope-reorder``), so the short files fill in at the end and the workers finish together, instead of
    a long file starting last and running alone. The order changes how long the suite takes, never what it checks.
    """
    missing = [name for name in LONGEST_FIRST if not (Path(__file__).parent / name).is_file()]
    if missing:
        raise pytest.UsageError(f"tests/conftest.py LONGEST_FIRST names no test file: {', '.join(missing)}")
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
