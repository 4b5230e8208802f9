"""Right to erasure: find everything of a person in every layer and export, delete it, and keep them out.

A request names a person by ``email``, ``phone``, ``cdp_id`` or ``record_id``. The erasure runs in steps
that a rerun completes whatever the point a previous run died at:

1. **plan** (``ops.erasure_plan``): each new request is resolved to its customer (silver records ->
   ``identity_map`` -> every record of that ``cdp_id``, anonymous ``cookie:`` records included) and to
   the identifiers those records carry, stored as keyed hashes only (HMAC-SHA-256 under
   ``privacy.hash_key``: :class:`cdp_spark.hashing.HashKey`; a plain hash of a phone is reversed by trying
   every number). The plan is written before any
   delete, because the deletes remove what it was derived from. A request that matches more than one
   customer, or whose identifier is not valid, is refused (audited, not planned): it needs a person.
2. **suppress** (``silver.erasure_suppression``): the hashes and ``cdp_id``, checked by standardize and
   activation (:mod:`cdp_spark.suppression`) so re-ingested files do not bring the person back and they
   are never exported again.
3. **delete** from every Delta table under the lakehouse, one pass per table for every pending request:
   bronze rows are matched on their values standardized on the fly (so raw ``JANE.DOE@Example.com``
   matches); silver, gold and ops tables on their ``cdp_id`` / record-id / identifier columns. A row's
   identifiers are keyed and joined with the plan; the matched rows are deleted by a MERGE on their
   fingerprints, so no hash or value is written into the Delta log's commit info. Deletes are idempotent.
4. **exports**: every export file that holds the person is rewritten without them and its manifest's
   checksum and counts are updated.
5. **complete**: the requests are marked done; a rerun then does nothing.

Shared identifiers (a household phone) are not the person's own: an email, phone, loyalty or account id
is erased by value only when no other customer's record carries it. Rows of other customers are never
deleted. ``ops.audit_log`` gets one row per request and table with the rows deleted, never a value.

Step 1 is :mod:`cdp_spark.privacy.plan`; which rows of a table the plan names is
:mod:`cdp_spark.privacy.matching`; step 4 is :mod:`cdp_spark.privacy.rewrite_exports`. This module runs the
steps, in that order, and deletes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from itertools import groupby

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp_spark import tables
from cdp_spark.exports import (
    tombstones,
)
from cdp_spark.hashing import HashKey
from cdp_spark.lakefiles import LakeFiles
from cdp_spark.normalize.rules import StandardizeRules
from cdp_spark.parallel import run_concurrently
from cdp_spark.privacy.matching import (
    Erasure,
    bronze_candidates,
    identifier_candidates,
    person_spec,
    quarantine_candidates,
    row_fingerprint,
    rows_per_request,
)
from cdp_spark.privacy.plan import plan_new_requests, utc_now
from cdp_spark.privacy.rewrite_exports import erase_exports
from cdp_spark.sources import SourcesConfig
from cdp_spark.suppression import keyed_rows

log = logging.getLogger("cdp_spark")

# Erasure bookkeeping (hashes only, by design) and run logs without personal data (``erased=False`` entries).
NOT_ERASED = {t.full_name for t in tables.CATALOG if not t.erased}


def delta_tables(spark: SparkSession, root: str) -> list[tables.Table]:
    """Every Delta table under the lakehouse root (``<layer>/<name>`` folders with a transaction log), as catalog
    entries."""
    files = LakeFiles(spark)
    found = []
    for layer in files.names(root):
        if layer.startswith(("_", ".")):
            continue
        for name in files.names(f"{root.rstrip('/')}/{layer}"):
            table = tables.entry(layer, name)
            if files.exists(f"{table.path(root)}/_delta_log"):
                found.append(table)
    return found


def _tombstone_export_state(spark: SparkSession, path: str, matched: DataFrame) -> None:
    """Replace the person's export state rows by tombstones in one commit, so destinations hear of the erasure.

    A MERGE keyed on whole rows: the matched rows are deleted, the tombstones inserted; a rerun finds the
    rows gone and the tombstones there, and changes nothing.
    """
    key = ["destination", "export_id", "cdp_id", "row"]
    changes = (
        matched.withColumn("_erase", F.lit(True))
        .unionByName(tombstones(matched).withColumn("_erase", F.lit(False)))
        .dropDuplicates(key)
    )
    condition = " AND ".join(f"t.`{c}` <=> s.`{c}`" for c in key)
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(changes.alias("s"), condition)
        .whenMatchedDelete(condition="s._erase")
        .whenNotMatchedInsert(condition="NOT s._erase", values={c: F.col(f"s.`{c}`") for c in matched.columns})
        .execute()
    )


def erase_by_fingerprint(job: Erasure, table: tables.Table, candidates: DataFrame) -> int:
    """Delete the rows whose fingerprint (``_fp``) has a candidate in the plan; returns rows deleted.

    The delete is a MERGE of the matched fingerprints on the fingerprint of every row: the commit info in
    the Delta log then holds the condition's columns, not the values or hashes a predicate would list.
    ``ops.export_state`` rows become tombstones instead (:func:`_tombstone_export_state`).
    """
    spark, path = job.spark, table.path(job.root)
    pairs = job.match(candidates).persist()
    try:
        per_request = rows_per_request(pairs)
        if not per_request:
            return 0
        matched = pairs.select("_fp").distinct()
        target = DeltaTable.forPath(spark, path)
        columns = target.toDF().columns
        if table.full_name == tables.EXPORT_STATE.full_name:
            rows = target.toDF().withColumn("_fp", row_fingerprint(columns)).join(matched, "_fp", "left_semi")
            rows = rows.drop("_fp").persist()
            deleted = rows.count()
            _tombstone_export_state(spark, path, rows)
            rows.unpersist()
        else:
            fingerprint = row_fingerprint(columns, "t")
            metrics = (
                target.alias("t").merge(matched.alias("s"), fingerprint == F.col("s._fp")).whenMatchedDelete().execute()
            )
            deleted = int(metrics.first()["num_deleted_rows"])
        job.record(table.full_name, per_request)
        return deleted
    finally:
        pairs.unpersist()


def erase_by_person(job: Erasure, table: tables.Table) -> int:
    """Delete the rows of a silver/gold/ops table whose person columns match the plan; returns rows deleted."""
    df = job.spark.read.format("delta").load(table.path(job.root))
    spec = person_spec(df.columns)
    if not spec:
        return 0
    return erase_by_fingerprint(
        job, table, identifier_candidates(df.withColumn("_fp", row_fingerprint(df.columns)), spec)
    )


def erase_table(job: Erasure, table: tables.Table, sources: SourcesConfig | None) -> int:
    """Erase the plan's people from one table, by the rule for its layer; returns rows deleted."""
    if table.full_name in NOT_ERASED:
        return 0
    spark = job.spark
    rules = sources.standardize if sources is not None else StandardizeRules()
    if table.layer == "bronze":
        source = next((s for s in sources.sources if s.name == table.name), None) if sources else None
        bronze = spark.read.format("delta").load(table.path(job.root))
        return erase_by_fingerprint(job, table, bronze_candidates(bronze, source, rules))
    if table.full_name == tables.QUARANTINE.full_name:
        quarantine = spark.read.format("delta").load(table.path(job.root))
        return erase_by_fingerprint(job, table, quarantine_candidates(quarantine, rules))
    return erase_by_person(job, table)


@dataclass(frozen=True)
class ErasureSummary:
    requests: int
    already_done: int
    refused: int
    planned: int
    rows_deleted: int
    export_rows_removed: int


def erase(
    spark: SparkSession,
    root: str,
    requests: DataFrame,
    sources: SourcesConfig | None,
    run_id: str,
    key: HashKey,
    step: Callable[[str], AbstractContextManager[dict]] | None = None,
    parallelism: int = 1,
) -> ErasureSummary:
    """Run (or complete) the erasure of ``requests`` and of any request a failed run left pending.

    All pending requests are one batch: one pass over each table whatever their number, ``parallelism`` tables
    of a layer at once. ``step`` (``StageRun.step``) times each table and the exports in the run report.
    """
    step = step or _untimed
    rules = sources.standardize if sources is not None else StandardizeRules()
    audit: list[tuple] = []
    try:
        for table in (tables.ERASURE_PLAN, tables.ERASURE_SUPPRESSION):
            _key_bookkeeping(spark, root, table, key)
        already, refused, refused_audit = plan_new_requests(spark, root, requests, rules, run_id, key)
        audit += refused_audit
        if not tables.exists(spark, root, tables.ERASURE_PLAN):
            return ErasureSummary(requests.count(), already, refused, 0, 0, 0)
        pending = tables.read(spark, root, tables.ERASURE_PLAN).where(F.col("completed_at").isNull()).persist()
        pending_rows = pending.select("request_id", "requested_by", "kind", "value_hash", "cdp_id").collect()
        if not pending_rows:
            return ErasureSummary(requests.count(), already, refused, 0, 0, 0)
        requesters = {r["request_id"]: r["requested_by"] for r in pending_rows}
        plan = tables.rows_frame(
            spark, pending_rows, "request_id string, requested_by string, kind string, value_hash string, cdp_id string"
        )
        job = Erasure(spark, root, run_id, plan, key, requesters, audit)
        _suppress(
            spark,
            root,
            plan.select(
                "kind",
                "value_hash",
                "cdp_id",
                "request_id",
                F.lit(run_id).alias("run_id"),
                F.lit(utc_now()).cast("timestamp").alias("suppressed_at"),
                F.lit(key.key_id).alias("key_id"),
            ).dropDuplicates(["kind", "value_hash"]),
        )

        def erase_one(table: tables.Table) -> int:
            with step(f"erase {table.full_name}") as counts:
                counts["rows_deleted"] = erase_table(job, table, sources)
            return counts["rows_deleted"]

        deleted = 0
        for layer in _erasure_layers(delta_tables(spark, root)):
            deleted += sum(run_concurrently(spark, erase_one, layer, parallelism))
        with step("erase exports") as counts:
            export_rows = counts["rows_deleted"] = erase_exports(job)
        request_ids = sorted(requesters)
        for request_id in request_ids:
            details = {"requested_by": requesters[request_id], "status": "completed"}
            audit.append((run_id, "erase", request_id, None, None, json.dumps(details, sort_keys=True)))
        DeltaTable.forPath(spark, tables.ERASURE_PLAN.path(root)).update(
            condition=F.col("request_id").isin(request_ids) & F.col("completed_at").isNull(),
            set={"completed_at": F.lit(utc_now()).cast("timestamp")},
        )
        pending.unpersist()
        return ErasureSummary(requests.count(), already, refused, len(request_ids), deleted, export_rows)
    finally:
        # Written even when a step fails: the deletes done so far are audited.
        if audit:
            tables.audit(spark, root, audit)


def _key_bookkeeping(spark: SparkSession, root: str, table: tables.Table, key: HashKey) -> None:
    """Check that ``table``'s hashes were made with ``key``; key rows hashed before keys existed, in place.

    A table hashed with another key is a ConfigError (see :func:`cdp_spark.suppression.keyed_rows`).
    """
    if not tables.exists(spark, root, table):
        return
    stored = tables.read(spark, root, table)
    keyed = keyed_rows(stored, key, table.full_name)  # raises on a foreign key
    if "key_id" in stored.columns and stored.where(F.col("key_id").isNull()).isEmpty():
        return
    log.info("[erase] %s: hashes made before hash keys existed are keyed with %s", table.full_name, key.key_id)
    tables.overwrite(keyed.select(*stored.columns, *([] if "key_id" in stored.columns else ["key_id"])), root, table)


@contextmanager
def _untimed(name: str) -> Iterator[dict]:
    yield {}


def _suppress(spark: SparkSession, root: str, suppression: DataFrame) -> None:
    """Add the plan's hashes to the suppression list; hashes already there keep their first request."""
    if tables.exists(spark, root, tables.ERASURE_SUPPRESSION):
        listed = tables.read(spark, root, tables.ERASURE_SUPPRESSION).select("kind", "value_hash")
        suppression = suppression.join(listed, ["kind", "value_hash"], "left_anti")
    rows = suppression.collect()
    if rows:
        tables.append(tables.rows_frame(spark, rows, suppression.schema), root, tables.ERASURE_SUPPRESSION)


def _erasure_layers(found: list[tables.Table]) -> list[list[tables.Table]]:
    """The tables by layer: bronze, then silver, gold, ops, others. A layer's tables are erased at once, one
    layer after the other, so if a run dies half way the person's downstream rows still exist (and the rerun,
    matching upstream, finds them)."""
    rank = {"bronze": 0, "silver": 1, "gold": 2, "ops": 3}
    ordered = sorted(found, key=lambda t: (rank.get(t.layer, 4), t.layer, t.name))
    return [list(group) for _, group in groupby(ordered, key=lambda t: (rank.get(t.layer, 4), t.layer))]
