"""What a stage's last successful run read and left behind, so a run that finds the same has nothing to do.

A stage that derives its tables from others (resolve: silver -> identity tables) records, after it succeeds, the
Delta version of every table it read and wrote, its configuration and its code, as one row of
``ops.stage_inputs``. The next run computes the same state before doing anything; when it equals the last row the
stage's work would reproduce the tables it already left (the stage is deterministic on its inputs), so it skips.
Anything else reruns it: a new silver version, a changed config, other code, a model given or promoted, a table of
its own changed since (an erasure, a restore), or a last run that failed after writing some tables (it recorded
no row).

This is what makes `cdp-spark run` after a failure resume cheaply and a day with no new data cost seconds there;
``--force`` on the stage recomputes regardless. Resolve and profiles use it.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

import cdp_spark
from cdp_spark import tables
from cdp_spark.ops import StageRun

log = logging.getLogger("cdp_spark")


def table_versions(spark: SparkSession, root: str, entries: Iterable[tables.Table]) -> dict[str, str | None]:
    """Each table's latest Delta version and its commit time (``"<version>@<timestamp>"``: a table dropped and
    written again is not mistaken for the old one at the same version), or None when it does not exist. From the
    tables' transaction logs on the driver (:func:`cdp_spark.tables.log_snapshot`): no Spark job."""
    versions: dict[str, str | None] = {}
    for table in entries:
        snapshot = tables.log_snapshot(spark, root, table)
        if snapshot.version() < 0:
            versions[table.full_name] = None
            continue
        committed = datetime.fromtimestamp(snapshot.timestamp() / 1000, UTC).replace(tzinfo=None)
        versions[table.full_name] = f"{snapshot.version()}@{committed.isoformat()}"
    return versions


def code_digest(*names: str) -> str:
    """A digest of cdp-spark's version and the Python sources of ``names``: packages (``cdp_spark.identity``: every
    module in it) or modules (``cdp_spark.features``). Other code, other results. Read through importlib.resources,
    so it works from a zip shipped with --py-files."""
    digest = hashlib.sha256(cdp_spark.__version__.encode())
    for name in names:
        parent, _, leaf = name.rpartition(".")
        module = importlib.resources.files(parent) / f"{leaf}.py"
        if module.is_file():
            files = [module]
        else:
            files = sorted((i for i in importlib.resources.files(name).iterdir() if i.name.endswith(".py")), key=str)
        for item in files:
            digest.update(f"{name}/{item.name}".encode() + b"\0" + item.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class StageState:
    """What a stage reads and writes, and everything else its result depends on (``settings``: JSON values)."""

    stage: str
    reads: tuple[tables.Table, ...]
    writes: tuple[tables.Table, ...]
    settings: Mapping[str, object]

    def current(self, spark: SparkSession, root: str) -> dict:
        """The state as it is now: the versions of the tables read and written, and the settings."""
        names = {t.full_name: t for t in (*self.reads, *self.writes)}
        return {"tables": table_versions(spark, root, names.values()), "settings": dict(self.settings)}


def compare(spark: SparkSession, root: str, run: StageRun, state: StageState, force: bool = False) -> tuple[dict, bool]:
    """The state now (record it after the run with :func:`after_run`), and whether the stage has nothing to do: it
    finds what its last successful run left, and ``force`` is off. A step of ``run`` records ``unchanged``."""
    with run.step("compare inputs with the last run") as counts:
        before = state.current(spark, root)
        last = None if force else unchanged_since(spark, root, state.stage, before)
        counts["unchanged"] = int(last is not None)
    if last is not None:
        log.info(
            "[%s] its inputs, settings and code and its own tables are as run %s left them: nothing to do "
            "(--force recomputes)",
            state.stage,
            last,
        )
    return before, last is not None


def fingerprint(state: dict) -> str:
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()


def normalized(value: object) -> object:
    """``value`` as it reads back from its JSON record (tuples as lists, keys as strings)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _last_row(spark: SparkSession, root: str, stage: str):  # noqa: ANN202 - a Row or None
    if not tables.exists(spark, root, tables.STAGE_INPUTS):
        return None
    return (
        tables.read(spark, root, tables.STAGE_INPUTS)
        .where(F.col("stage") == stage)
        .orderBy(F.col("recorded_at").desc(), F.col("run_id").desc())
        .select("run_id", "fingerprint", "state")
        .first()
    )


def last_state(spark: SparkSession, root: str, stage: str) -> tuple[str, dict] | None:
    """The run id and the recorded state (``tables``, ``settings`` and the ``extra`` facts) of ``stage``'s last
    successful run, or None."""
    last = _last_row(spark, root, stage)
    return None if last is None else (last["run_id"], json.loads(last["state"]))


def unchanged_since(spark: SparkSession, root: str, stage: str, state: dict) -> str | None:
    """The run id of ``stage``'s last successful run when it left exactly ``state``; None otherwise (or never run)."""
    last = _last_row(spark, root, stage)
    return last["run_id"] if last is not None and last["fingerprint"] == fingerprint(state) else None


def record(
    spark: SparkSession,
    root: str,
    run_id: str,
    state: StageState,
    before: dict,
    settings: Mapping[str, object] | None = None,
    extra: Mapping[str, object] | None = None,
) -> None:
    """Append the state a successful run left (call it after the stage's last write): the versions the run read
    (``before``, from :func:`compare`: a table it only read cannot have moved under the lease), the versions of
    the tables it wrote as they are now, and ``settings`` as the run changed them (e.g. the model it promoted),
    else as they were. ``extra``: facts about the run kept beside the state (:func:`last_state` returns them), not
    part of what the next run compares."""
    written = table_versions(spark, root, state.writes)
    after = {"tables": {**before["tables"], **written}, "settings": dict(settings or before["settings"])}
    now = datetime.now(UTC).replace(tzinfo=None)
    kept = json.dumps({**(extra or {}), **after}, sort_keys=True, default=str)
    row = (state.stage, run_id, fingerprint(after), kept, now)
    tables.append(tables.rows_frame(spark, [row], tables.STAGE_INPUTS.schema), root, tables.STAGE_INPUTS)
