"""What a stage's last successful run read and left behind, so a run that finds the same has nothing to do.

A stage that derives its tables from others (resolve: silver -> identity tables) records, after it succeeds, the
Delta version of every table it read and wrote, its configuration and its code, as one row of
``ops.stage_inputs``. The next run computes the same state before doing anything; when it equals the last row the
stage's work would reproduce the tables it already left (the stage is deterministic on its inputs), so it skips.
Anything else reruns it: a new silver version, a changed config, other code, a model given or promoted, a table of
its own changed since (an erasure, a restore), or a last run that failed after writing some tables (it recorded
no row).

This is what makes `cdp-spark run` after a failure resume cheaply and a daily run with no new data cost seconds;
``--force`` on the stage recomputes regardless.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

import cdp_spark
from cdp_spark import tables

log = logging.getLogger("cdp_spark")


def table_versions(spark: SparkSession, root: str, entries: Iterable[tables.Table]) -> dict[str, str | None]:
    """Each table's latest Delta version and its commit time (``"<version>@<timestamp>"``: a table dropped and
    written again is not mistaken for the old one at the same version), or None when it does not exist."""
    versions: dict[str, str | None] = {}
    for table in entries:
        if not tables.exists(spark, root, table):
            versions[table.full_name] = None
            continue
        last = DeltaTable.forPath(spark, table.path(root)).history(1).select("version", "timestamp").first()
        versions[table.full_name] = f"{last['version']}@{last['timestamp'].isoformat()}"
    return versions


def code_digest(package: str) -> str:
    """A digest of the Python sources of ``package`` (e.g. ``cdp_spark.identity``) and cdp-spark's version: other
    code, other results. Read through importlib.resources, so it works from a zip shipped with --py-files."""
    digest = hashlib.sha256(cdp_spark.__version__.encode())
    sources = importlib.resources.files(package)
    for item in sorted((i for i in sources.iterdir() if i.name.endswith(".py")), key=lambda i: i.name):
        digest.update(item.name.encode() + b"\0" + item.read_bytes())
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


def fingerprint(state: dict) -> str:
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()


def unchanged_since(spark: SparkSession, root: str, stage: str, state: dict) -> str | None:
    """The run id of ``stage``'s last successful run when it left exactly ``state``; None otherwise (or never run)."""
    if not tables.exists(spark, root, tables.STAGE_INPUTS):
        return None
    last = (
        tables.read(spark, root, tables.STAGE_INPUTS)
        .where(F.col("stage") == stage)
        .orderBy(F.col("recorded_at").desc(), F.col("run_id").desc())
        .select("run_id", "fingerprint")
        .first()
    )
    return last["run_id"] if last is not None and last["fingerprint"] == fingerprint(state) else None


def record(spark: SparkSession, root: str, stage: str, run_id: str, state: dict) -> None:
    """Append the state a successful run left (call it after the stage's last write)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    row = (stage, run_id, fingerprint(state), json.dumps(state, sort_keys=True, default=str), now)
    tables.append(spark.createDataFrame([row], tables.STAGE_INPUTS.schema), root, tables.STAGE_INPUTS)


def after_run(
    before: dict, spark: SparkSession, root: str, state: StageState, settings: Mapping[str, object] | None = None
) -> dict:
    """The state to record after a run: the versions the run read (``before``, taken when it started: a table it
    only read cannot have moved under the lease), with the versions of the tables it wrote as they are now, and
    ``settings`` as the run changed them (e.g. the model it promoted), else as they were."""
    written = table_versions(spark, root, state.writes)
    return {"tables": {**before["tables"], **written}, "settings": dict(settings or before["settings"])}
