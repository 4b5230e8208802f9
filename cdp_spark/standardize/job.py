"""`cdp-spark standardize`: new bronze batches -> standardized, checked silver tables, upserted with MERGE.

Incremental and exactly-once in effect: each source's bronze batches after the last one recorded in
``ops.silver_log`` are processed, and the batch is recorded only after every silver write succeeded.
A run killed half way redoes the unrecorded batches; the MERGEs and the transactional quarantine appends
make that redo change nothing that was already written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cdp_spark import tables
from cdp_spark.ingest.bronze import quarantine_rows
from cdp_spark.ingest.sources import SilverTarget, SourceConfig, load_sources
from cdp_spark.ops import StageRun
from cdp_spark.pipeline import Context
from cdp_spark.standardize.expectations import (
    ExpectationResult,
    ExpectationsConfig,
    count_results,
    enforce,
    evaluate,
    load_expectations,
)
from cdp_spark.standardize.rules import StandardizeRules
from cdp_spark.standardize.silver import (
    SILVER,
    check_target,
    map_columns,
    rank_per_key,
    ranking_columns,
    standardize_rows,
    to_contract,
    with_fact_record_id,
    with_key_columns,
)

log = logging.getLogger("cdp_spark")

SILVER_LOG_SCHEMA = "source string, batch_id string, run_id string, recorded_at timestamp"
DQ_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType(), False),
        T.StructField("table", T.StringType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("expectation", T.StringType(), False),
        T.StructField("action", T.StringType(), False),
        T.StructField("passed", T.LongType(), False),
        T.StructField("failed", T.LongType(), False),
        T.StructField("recorded_at", T.TimestampType(), False),
    ]
)


@dataclass(frozen=True)
class TargetResult:
    rows_in: int
    rows_missing_key: int
    rows_duplicate: int
    rows_quarantined: int
    rows_kept: int
    rows_changed: int
    expectations: list[ExpectationResult]


def last_batch(spark: SparkSession, root: str, source: str) -> str | None:
    if not tables.exists(spark, root, tables.SILVER_LOG):
        return None
    row = tables.read(spark, root, tables.SILVER_LOG).where(F.col("source") == source).agg(F.max("batch_id")).first()
    return row[0]


def new_bronze_rows(spark: SparkSession, root: str, source: str) -> DataFrame | None:
    """Bronze rows of batches not yet standardized, or None if the source has no bronze table yet."""
    bronze = tables.bronze(source)
    if not tables.exists(spark, root, bronze):
        return None
    rows = tables.read(spark, root, bronze)
    done = last_batch(spark, root, source)
    return rows.where(F.col("_batch_id") > done) if done else rows


def _batch_number(batch_id: str) -> int:
    return int(batch_id.rsplit("-", 1)[-1])


def process_target(
    bronze: DataFrame,
    source: SourceConfig,
    target: SilverTarget,
    rules: StandardizeRules,
    expectations: ExpectationsConfig,
    root: str,
    run_id: str,
    batch_id: str,
) -> TargetResult:
    """Map, standardize, key, deduplicate, check and upsert one source's new rows into one silver table.

    The key and ordering columns are standardized first and only the latest row per key is standardized
    in full; the counts come from two aggregations (rows by key state, then expectations).
    """
    spec = SILVER[target.table]
    # A hinted field no file has carried yet is still a declared field: null, not an unknown column.
    present = {c.lower() for c in bronze.columns}
    declared = {c: F.lit(None).cast(t) for c, t in source.schema_hints.items() if c.lower() not in present}
    bronze = bronze.withColumns(declared) if declared else bronze
    first = ranking_columns(target)
    mapped = standardize_rows(map_columns(bronze, target), target.table, rules, columns=first)
    ranked = rank_per_key(with_key_columns(mapped, source.name, target), target.table).persist()
    flagged = None
    try:
        row = ranked.agg(
            F.count("*").alias("rows_in"),
            F.count_if("_key_missing").alias("missing"),
            F.count_if(F.col("_rank") == 1).alias("latest"),
        ).first()
        rows_in, rows_missing, rows_latest = row["rows_in"], row["missing"], row["latest"]
        latest = ranked.where(F.col("_rank") == 1).drop("_rank")
        rest = set(spec.columns) - first
        latest = with_fact_record_id(standardize_rows(latest, target.table, rules, columns=rest), target)
        checks = expectations.for_table(target.table)
        flagged = evaluate(latest, checks).persist()
        results, rows_rejected = count_results(flagged, target.table, checks)
        kept, rejected = enforce(flagged, target.table, checks, results, spec.key[0])
        key_text = F.concat_ws("|", *[F.col(k).cast("string") for k in spec.key])
        quarantine = quarantine_rows(
            ranked.where("_key_missing"),
            source.name,
            "standardize",
            "missing_key",
            f"no value for key column(s) {', '.join(target.key)} of {target.table}",
            None,
            run_id,
        )
        if rejected is not None:
            reason = F.concat(F.lit("failed expectation(s): "), F.array_join("_dq_failed", ", "))
            quarantine = quarantine.unionByName(
                quarantine_rows(rejected, source.name, "standardize", "expectation", reason, key_text, run_id)
            )
        contract = to_contract(kept, target.table)
        rows_changed = tables.upsert(contract, root, spec.table, list(spec.key), order_by=spec.order_by)
        rows_quarantined = rows_missing + rows_rejected
        if rows_quarantined:
            # One transaction per (source, table, batch): a redone batch appends nothing twice.
            txn = {"txnAppId": f"cdp-silver-{source.name}-{target.table}", "txnVersion": str(_batch_number(batch_id))}
            tables.append(quarantine, root, tables.QUARANTINE, options=txn)
        return TargetResult(
            rows_in=rows_in,
            rows_missing_key=rows_missing,
            rows_duplicate=rows_in - rows_missing - rows_latest,
            rows_quarantined=rows_quarantined,
            rows_kept=rows_latest - rows_rejected,
            rows_changed=rows_changed,
            expectations=results,
        )
    finally:
        if flagged is not None:
            flagged.unpersist()
        ranked.unpersist()


def _record_dq(spark: SparkSession, root: str, run_id: str, results: list[tuple[str, ExpectationResult]]) -> None:
    """Append the run's expectation counts, per (source, result), to ops.dq_metrics in one commit."""
    if not results:
        return
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [(run_id, r.table, source, r.expectation, r.action, r.passed, r.failed, now) for source, r in results]
    tables.append(spark.createDataFrame(rows, DQ_SCHEMA), root, tables.DQ_METRICS)


def run(ctx: Context, stage: StageRun) -> None:
    sources = load_sources(ctx.config.files.sources)
    expectations = load_expectations(ctx.config.files.expectations)
    for source in sources.sources:
        for target in source.silver:
            check_target(source, target)
    spark, root = ctx.spark, ctx.root
    dq_results: list[tuple[str, ExpectationResult]] = []
    try:
        for source in sources.sources:
            if source.silver:
                _standardize_source(ctx, stage, source, sources.standardize, expectations, dq_results)
    finally:
        # Also when a later step fails: what was measured is recorded.
        _record_dq(spark, root, stage.run_id, dq_results)


def _standardize_source(
    ctx: Context,
    stage: StageRun,
    source: SourceConfig,
    rules: StandardizeRules,
    expectations: ExpectationsConfig,
    dq_results: list[tuple[str, ExpectationResult]],
) -> None:
    """Every silver target of one source's new bronze batches, then the batch recorded in ops.silver_log."""
    spark, root = ctx.spark, ctx.root
    bronze = new_bronze_rows(spark, root, source.name)
    if bronze is None:
        log.warning("[standardize] %s: no bronze table yet (run cdp-spark ingest first); skipped", source.name)
        return
    bronze = bronze.persist()
    try:
        batch_id = bronze.agg(F.max("_batch_id")).first()[0]
        if batch_id is None:
            with stage.step(f"{source.name}: nothing new") as counts:
                counts["rows_read"] = 0
            return
        for target in source.silver:
            with stage.step(f"{source.name} -> {target.table}") as counts:
                result = process_target(bronze, source, target, rules, expectations, root, stage.run_id, batch_id)
                dq_results += [(source.name, r) for r in result.expectations]
                counts.update(
                    rows_read=result.rows_in,
                    rows_written=result.rows_kept,
                    rows_quarantined=result.rows_quarantined,
                    rows_duplicate=result.rows_duplicate,
                    rows_changed=result.rows_changed,
                )
                for r in result.expectations:
                    counts[f"dq_failed:{r.expectation}"] = r.failed
        marker = spark.createDataFrame(
            [(source.name, batch_id, stage.run_id, datetime.now(UTC).replace(tzinfo=None))], SILVER_LOG_SCHEMA
        )
        tables.append(marker, root, tables.SILVER_LOG)
    finally:
        bronze.unpersist()
