"""`cdp-spark standardize`: new bronze batches -> standardized, checked silver tables, upserted with MERGE.

Incremental and exactly-once in effect: each source's bronze batches after the last one recorded in
``ops.silver_log`` are processed, and the batch is recorded only after every silver write succeeded.
A run killed half way redoes the unrecorded batches; the MERGEs and the transactional quarantine appends
make that redo change nothing that was already written.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import reduce

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp_spark import tables
from cdp_spark.normalize.rules import StandardizeRules
from cdp_spark.ops import StageRun
from cdp_spark.parallel import run_concurrently
from cdp_spark.pipeline import Context
from cdp_spark.quarantine import quarantine_rows, write_quarantine
from cdp_spark.silver import (
    SILVER,
    check_target,
    fact_record_id,
    map_columns,
    rank_per_key,
    ranking_columns,
    standardize_rows,
    to_contract,
    with_key_columns,
)
from cdp_spark.sources import SilverTarget, SourceConfig, load_sources
from cdp_spark.standardize.expectations import (
    ExpectationResult,
    ExpectationsConfig,
    count_results,
    enforce,
    evaluate,
    load_expectations,
    merged_results,
)
from cdp_spark.suppression import Suppression, flag_suppressed, read_suppression

log = logging.getLogger("cdp_spark")


@dataclass(frozen=True)
class SourceResult:
    """What one source's new rows became in one silver table."""

    rows_in: int
    rows_suppressed: int
    rows_missing_key: int
    rows_duplicate: int
    rows_quarantined: int
    rows_kept: int
    expectations: list[ExpectationResult]
    suppressed_bronze: frozenset[tuple[str, str]] = frozenset()  # (batch id, SHA-256 of the bronze payload)


@dataclass(frozen=True)
class Pending:
    """One source's bronze rows not yet standardized, up to ``batch_id``."""

    source: SourceConfig
    bronze: DataFrame
    batch_id: str


def standardized_batches(spark: SparkSession, root: str) -> dict[str, str]:
    """The last batch standardized of each source (``ops.silver_log``), in one read."""
    if not tables.exists(spark, root, tables.SILVER_LOG):
        return {}
    done = tables.read(spark, root, tables.SILVER_LOG).groupBy("source").agg(F.max("batch_id"))
    return {r[0]: r[1] for r in done.collect()}


def ingested_batches(spark: SparkSession, root: str) -> dict[str, str]:
    """The last ingest batch of each source that wrote bronze rows (``ops.ingest_log``, committed), in one read.

    Read from the log, not from the bronze tables: a ``max(_batch_id)`` per bronze table is a Delta snapshot and
    a scan of the table per source and run, the log is a few rows per batch."""
    if not tables.exists(spark, root, tables.INGEST_LOG):
        return {}
    committed = tables.read(spark, root, tables.INGEST_LOG).where("status = 'committed' AND rows_written > 0")
    return {
        r[0]: tables.batch_id(r[0], r[1]) for r in committed.groupBy("source").agg(F.max("batch_version")).collect()
    }


def _batch_number(batch_id: str) -> int:
    return int(batch_id.rsplit("-", 1)[-1])


def _mapped(pending: Pending, target: SilverTarget, rules: StandardizeRules, first: set[str]) -> DataFrame:
    """One source's rows mapped onto the table, the ``first`` columns standardized, keyed, tagged ``_source``."""
    source, bronze = pending.source, pending.bronze
    # A hinted field no file has carried yet is still a declared field: null, not an unknown column.
    present = {c.lower() for c in bronze.columns}
    declared = {c: F.lit(None).cast(t) for c, t in source.schema_hints.items() if c.lower() not in present}
    bronze = bronze.withColumns(declared) if declared else bronze
    mapped = standardize_rows(map_columns(bronze, target), target.table, rules, columns=first)
    return with_key_columns(mapped, source.name, target).withColumn("_source", F.lit(source.name))


def _same_types(frames: list[DataFrame]) -> list[DataFrame]:
    """Cast a column that two sources carry with different types (a JSON double, a CSV string) to string.

    The columns still to be standardized read their value as text anyway; left to the union's own type
    coercion, a text value that is not a number would fail the cast and the job instead of the row.
    """
    types: dict[str, set[str]] = {}
    for frame in frames:
        for field in frame.schema.fields:
            types.setdefault(field.name, set()).add(field.dataType.simpleString())
    mixed = [name for name, seen in types.items() if len(seen) > 1]
    return [f.withColumns({c: F.col(c).cast("string") for c in mixed if c in f.columns}) for f in frames]


def _with_fact_record_id(rows: DataFrame, table: str, parts: list[tuple[Pending, SilverTarget]]) -> DataFrame:
    """A fact's ``record_id``: its source's SQL over the standardized columns (customer records have theirs)."""
    if "record_id" not in SILVER[table].columns or table == "customer_records":
        return rows
    record_id = F.lit(None).cast("string")
    for pending, target in parts:
        record_id = F.when(F.col("_source") == pending.source.name, fact_record_id(target)).otherwise(record_id)
    return rows.withColumn("record_id", record_id)


def process_table(
    table: str,
    parts: list[tuple[Pending, SilverTarget]],
    rules: StandardizeRules,
    expectations: ExpectationsConfig,
    root: str,
    run_id: str,
    suppression: Suppression | None = None,
) -> tuple[dict[str, SourceResult], int]:
    """Map, standardize, key, deduplicate, check and upsert every source's new rows of one silver table at once.

    One MERGE per table, however many sources feed it: the table is read once per run, not once per source.
    The key and ordering columns are standardized first and only the latest row per key is standardized in
    full. The latest row per key wins across sources too (a customer record's key carries its source, so
    only facts can meet another source's row). Returns each source's counts and the rows inserted or changed.

    Rows carrying an identifier on the erasure ``suppression`` list are dropped before anything is kept,
    quarantined or checked, counted (``rows_suppressed``), audited, and deleted from bronze. With a list to check, every column is
    standardized before the ranking, since the check needs the standardized identifiers of every row.
    """
    spec = SILVER[table]
    first = set().union(*(ranking_columns(target) for _, target in parts))
    if suppression is not None:
        first = set(spec.columns)
    frames = _same_types([_mapped(pending, target, rules, first) for pending, target in parts])
    union = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
    if suppression is not None:
        union = flag_suppressed(_with_fact_record_id(union, table, parts), suppression)
    else:
        union = union.withColumn("_suppressed", F.lit(False))
    ranked = rank_per_key(union, table).persist()
    flagged = None
    try:
        by_source = {
            r["_source"]: r
            for r in ranked.groupBy("_source")
            .agg(
                F.count("*").alias("rows_in"),
                F.count_if("_suppressed").alias("suppressed"),
                F.count_if(F.col("_key_missing") & ~F.col("_suppressed")).alias("missing"),
                F.count_if((F.col("_rank") == 1) & ~F.col("_suppressed")).alias("latest"),
            )
            .collect()
        }
        latest = ranked.where((F.col("_rank") == 1) & ~F.col("_suppressed")).drop("_rank", "_suppressed")
        latest = standardize_rows(latest, table, rules, columns=set(spec.columns) - first)
        if suppression is None:
            latest = _with_fact_record_id(latest, table, parts)
        checks = expectations.for_table(table)
        flagged = evaluate(latest, checks).persist()
        counted = count_results(flagged, table, checks, by="_source")
        kept, rejected = enforce(flagged, table, checks, merged_results(counted, table, checks), spec.key[0])
        rows_changed = tables.upsert(to_contract(kept, table), root, spec.table, list(spec.key), order_by=spec.order_by)
        results = {}
        for pending, target in parts:
            name = pending.source.name
            row = by_source.get(name)
            rows_in, suppressed, missing, latest_rows = (
                (row["rows_in"], row["suppressed"], row["missing"], row["latest"]) if row else (0, 0, 0, 0)
            )
            checked, rows_rejected = counted.get(name, ([], 0))
            results[name] = SourceResult(
                rows_in=rows_in,
                rows_suppressed=suppressed,
                rows_missing_key=missing,
                rows_duplicate=rows_in - suppressed - missing - latest_rows,
                rows_quarantined=missing + rows_rejected,
                rows_kept=latest_rows - rows_rejected,
                expectations=checked or [ExpectationResult(table, e.name, e.action, 0, 0) for e in checks],
                suppressed_bronze=_bronze_keys(ranked, name) if suppressed else frozenset(),
            )
            if missing + rows_rejected:
                _quarantine(ranked, rejected, pending, target, spec.key, run_id, root)
            if suppressed:
                _audit_suppressed(ranked.sparkSession, root, run_id, pending, table, suppressed)
        return results, rows_changed
    finally:
        if flagged is not None:
            flagged.unpersist()
        ranked.unpersist()


def _bronze_keys(ranked: DataFrame, source: str) -> frozenset[tuple[str, str]]:
    """The bronze rows behind a source's suppressed rows: (batch, SHA-256 of ``_raw``). An erased person's
    rows arriving again, a handful: collected."""
    rows = ranked.where(F.col("_suppressed") & (F.col("_source") == source))
    return frozenset((r[0], r[1]) for r in rows.select("_batch_id", F.sha2("_raw", 256)).distinct().collect())


def _drop_from_bronze(spark: SparkSession, root: str, source: str, keys: set[tuple[str, str]]) -> None:
    """Delete the bronze rows behind suppressed rows: an erased person's data arriving again is not kept.

    A bronze row is found by its batch and its payload (its non-lineage columns as JSON, as ``map_columns``
    wrote ``_raw``). Done once per source at the end of the run, after every table read the batch.
    """
    bronze = tables.bronze(source)
    payload = [c for c in tables.read(spark, root, bronze).columns if not c.startswith("_")]
    raw = F.sha2(F.to_json(F.struct(*[F.col(f"`{c}`") for c in payload])), 256)
    batches, hashes = sorted({b for b, _ in keys}), sorted({h for _, h in keys})
    DeltaTable.forPath(spark, bronze.path(root)).delete(F.col("_batch_id").isin(batches) & raw.isin(hashes))


def _audit_suppressed(spark: SparkSession, root: str, run_id: str, pending: Pending, table: str, rows: int) -> None:
    """One ops.audit_log row per (source, table, batch) with the number of erased people's rows dropped."""
    details = json.dumps({"stage": "standardize", "batch_id": pending.batch_id}, sort_keys=True)
    row = (run_id, "suppress", pending.source.name, SILVER[table].table.full_name, rows, details)
    txn = {
        "txnAppId": f"cdp-suppress-{pending.source.name}-{table}",
        "txnVersion": str(_batch_number(pending.batch_id)),
    }
    tables.audit(spark, root, [row], options=txn)


def _quarantine(
    ranked: DataFrame,
    rejected: DataFrame | None,
    pending: Pending,
    target: SilverTarget,
    key: tuple[str, ...],
    run_id: str,
    root: str,
) -> None:
    """Append one source's keyless and rejected rows to silver.quarantine, once per (source, table, batch)."""
    name = pending.source.name
    quarantine = quarantine_rows(
        ranked.where(F.col("_key_missing") & ~F.col("_suppressed") & (F.col("_source") == name)),
        name,
        "standardize",
        "missing_key",
        f"no value for key column(s) {', '.join(target.key)} of {target.table}",
        None,
        run_id,
    )
    if rejected is not None:
        reason = F.concat(F.lit("failed expectation(s): "), F.array_join("_dq_failed", ", "))
        key_text = F.concat_ws("|", *[F.col(k).cast("string") for k in key])
        quarantine = quarantine.unionByName(
            quarantine_rows(
                rejected.where(F.col("_source") == name), name, "standardize", "expectation", reason, key_text, run_id
            )
        )
    # One transaction per (source, table, batch): a redone batch appends nothing twice.
    txn = {"txnAppId": f"cdp-silver-{name}-{target.table}", "txnVersion": str(_batch_number(pending.batch_id))}
    write_quarantine(quarantine, root, txn)


def _record_dq(spark: SparkSession, root: str, run_id: str, results: list[tuple[str, ExpectationResult]]) -> None:
    """Append the run's expectation counts, per (source, result), to ops.dq_metrics in one commit."""
    if not results:
        return
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [(run_id, r.table, source, r.expectation, r.action, r.passed, r.failed, now) for source, r in results]
    tables.append(tables.rows_frame(spark, rows, tables.DQ_METRICS.schema), root, tables.DQ_METRICS)


def pending_sources(ctx: Context, stage: StageRun, sources: list[SourceConfig]) -> list[Pending]:
    """Each source's bronze rows ingested since its last standardized batch, up to the newest committed one;
    a source with nothing new is a step ``<source>: nothing new``."""
    spark, root = ctx.spark, ctx.root
    done, newest = standardized_batches(spark, root), ingested_batches(spark, root)
    pending = []
    for source in sources:
        last, batch_id = done.get(source.name), newest.get(source.name)
        if batch_id is None and not tables.exists(spark, root, tables.bronze(source.name)):
            log.warning("[standardize] %s: no bronze table yet (run cdp-spark ingest first); skipped", source.name)
            continue
        if batch_id is None or (last is not None and batch_id <= last):
            with stage.step(f"{source.name}: nothing new") as counts:
                counts["rows_read"] = 0
            continue
        rows = tables.read(spark, root, tables.bronze(source.name)).where(F.col("_batch_id") <= batch_id)
        pending.append(Pending(source, rows.where(F.col("_batch_id") > last) if last else rows, batch_id))
    return pending


def _record_source(stage: StageRun, step: str, result: SourceResult) -> None:
    """One source's counts in one table, as metrics of the step ``<source> -> <table>``, and logged."""
    metrics = {
        "rows_read": result.rows_in,
        "rows_written": result.rows_kept,
        "rows_quarantined": result.rows_quarantined,
        "rows_suppressed": result.rows_suppressed,
        "rows_duplicate": result.rows_duplicate,
        **{f"dq_failed:{r.expectation}": r.failed for r in result.expectations},
    }
    for metric, value in metrics.items():
        stage.record(step, metric, value)
    log.info("[%s] %s: %s", stage.stage, step, " ".join(f"{k}={v:,}" for k, v in metrics.items()))


def run(ctx: Context, stage: StageRun) -> None:
    """Every silver table from all its sources' new bronze batches (``lakehouse.table_parallelism`` tables at
    once); then the batches are recorded in ops.silver_log (one commit)."""
    sources = load_sources(ctx.config.files.sources)
    expectations = load_expectations(ctx.config.files.expectations)
    for source in sources.sources:
        for target in source.silver:
            check_target(source, target)
    spark, root = ctx.spark, ctx.root
    dq_results: list[tuple[str, ExpectationResult]] = []
    suppressed_bronze: dict[str, set[tuple[str, str]]] = {}
    pending = pending_sources(ctx, stage, [s for s in sources.sources if s.silver])
    suppression = read_suppression(spark, root, ctx.config.privacy.hash_key) if pending else None
    if suppression is not None:
        suppression = suppression.persist()
    work = [(t, parts) for t in SILVER if (parts := [(p, x) for p in pending for x in p.source.silver if x.table == t])]

    def standardize_table(item: tuple[str, list[tuple[Pending, SilverTarget]]]) -> None:
        table, parts = item
        with stage.step(f"{table} <- {', '.join(p.source.name for p, _ in parts)}") as counts:
            results, rows_changed = process_table(
                table, parts, sources.standardize, expectations, root, stage.run_id, suppression
            )
            counts["rows_changed"] = rows_changed
            for name, result in results.items():
                dq_results.extend((name, r) for r in result.expectations)
                suppressed_bronze.setdefault(name, set()).update(result.suppressed_bronze)
                _record_source(stage, f"{name} -> {table}", result)

    try:
        # Each table is its own MERGE: several at once keep the executors busy while another's driver work
        # (planning, the Delta log, the commit) runs.
        run_concurrently(spark, standardize_table, work, ctx.config.lakehouse.table_parallelism)
        for source, keys in sorted(suppressed_bronze.items()):
            if keys:
                _drop_from_bronze(spark, root, source, keys)
        if pending:
            now = datetime.now(UTC).replace(tzinfo=None)
            markers = [(p.source.name, p.batch_id, stage.run_id, now) for p in pending]
            tables.append(tables.rows_frame(spark, markers, tables.SILVER_LOG.schema), root, tables.SILVER_LOG)
    finally:
        # Also when a later step fails: what was measured is recorded.
        _record_dq(spark, root, stage.run_id, dq_results)
        if suppression is not None:
            suppression.unpersist()
