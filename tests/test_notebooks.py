"""The notebooks run top to bottom on a small generated lakehouse, each in its own kernel (and so its own JVM).

The pipeline runs once, in this process, on tiny sample data in a temp folder; the kernels find that data through
the notebooks' parameters (``CDP_NOTEBOOK_ROOT`` and ``CDP_NOTEBOOK_SET``, the same ``--set`` overrides the pipeline
ran with), so what a data scientist opens after ``make demo`` is what CI executes.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from cdp_spark import tables
from cdp_spark.cli import main
from cdp_spark.ml.config import load_models

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
# Three kernels, each its own JVM, after a pipeline run on generated data.
pytestmark = [pytest.mark.slow, pytest.mark.integration]
NOTEBOOKS = ["01_profiles_and_identity.ipynb", "02_models.ipynb", "03_segments.ipynb"]
PEOPLE, DAYS = 300, 2
# Each kernel starts its own local Spark next to the test session's: keep it as small as the test session.
KERNEL_SPARK = [
    "spark.master=local[2]",
    "spark.driver_memory=1g",
    "spark.shuffle_partitions=2",
    "spark.conf="
    + json.dumps(
        {
            "spark.ui.enabled": "false",
            "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
        }
    ),
]


@pytest.fixture(scope="module")
def kernel_env(spark, tmp_path_factory) -> dict[str, str]:
    """Run the pipeline up to `segment` on generated data in a temp folder; the environment for the kernels.

    ``spark`` is the test session: the stages join it instead of starting another JVM in this process.
    """
    work = tmp_path_factory.mktemp("notebooks")
    lakehouse = work / "lakehouse"
    # One churn training snapshot instead of four: the notebooks need a trained model, not a good one.
    models = yaml.safe_load((REPO / "conf" / "models.yaml").read_text(encoding="utf-8"))
    models["churn"]["n_snapshots"] = 1
    (work / "models.yaml").write_text(yaml.safe_dump(models), encoding="utf-8")
    overrides = [
        f"files.models={work / 'models.yaml'}",
        f"lakehouse.root={lakehouse}",
        f"sample.path={work / 'sample'}",
        f"mlflow.tracking_uri=sqlite:///{work / 'mlruns.db'}",
        f"mlflow.artifact_root={work / 'mlartifacts'}",
        f"reports_dir={work / 'reports'}",
    ]
    sets = [arg for o in overrides for arg in ("--set", o)]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)  # conf/ is read from the repository, like the CLI run from its root
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert main([*sets, "generate", "--people", str(PEOPLE), "--days", str(DAYS)]) == 0
        for stage in ("ingest", "standardize", "resolve", "profiles", "train", "score", "segment"):
            assert main([*sets, stage]) == 0, f"cdp-spark {stage} failed (see the captured stderr)"

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(
        {
            "CDP_NOTEBOOK_ROOT": str(lakehouse),
            "CDP_NOTEBOOK_SET": "\n".join([*overrides, *KERNEL_SPARK]),
            "IPYTHONDIR": str(work / "ipython"),
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
        return [f"{tables.read(spark, root, tables.CUSTOMER_PROFILE).count():,} golden profiles"]
    if name.startswith("02_"):
        return [f"champion models:/{load_models(str(REPO / 'conf' / 'models.yaml')).clv.registered_model}/"]
    return ["the current definitions reproduce the stored membership: True (0 differences)"]


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, kernel_env, spark):
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},  # the folder Jupyter starts the kernel in
    )
    client.execute(env=kernel_env)  # raises CellExecutionError with the failing cell and its traceback
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
