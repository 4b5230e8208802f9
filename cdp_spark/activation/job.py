"""`cdp-spark activate`: one export per destination of conf/destinations.yaml, at the latest segment as-of."""

from __future__ import annotations

import logging
from datetime import date

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp_spark import tables
from cdp_spark.activation.config import check_destinations, load_destinations
from cdp_spark.activation.export import audience, current_members, run_export
from cdp_spark.ops import StageRun
from cdp_spark.pipeline import Context
from cdp_spark.segments.config import load_segments
from cdp_spark.suppression import read_suppression

log = logging.getLogger("cdp_spark")


def resolve_as_of(history: DataFrame, given: str | None) -> date:
    """The as-of given on the command line, else the latest segment run."""
    if given:
        return date.fromisoformat(given)
    latest = history.agg(F.max("last_as_of")).first()[0]
    if latest is None:
        raise ValueError(f"{tables.SEGMENT_MEMBERSHIP.full_name} is empty: run `cdp-spark segment` first")
    return latest


def read_scores(spark: SparkSession, root: str, as_of: date) -> DataFrame:
    return tables.read(spark, root, tables.CUSTOMER_SCORES).where(F.col("as_of") == F.lit(as_of))


def run(ctx: Context, stage: StageRun) -> None:
    spark, root = ctx.spark, ctx.root
    segments = load_segments(ctx.config.files.segments)
    destinations = load_destinations(ctx.config.files.destinations)
    history = tables.read(spark, root, tables.SEGMENT_MEMBERSHIP)
    as_of = resolve_as_of(history, getattr(ctx.args, "as_of", None))
    profile = tables.read(spark, root, tables.CUSTOMER_PROFILE)
    if not tables.exists(spark, root, tables.ADDRESS_CONSENT):
        raise FileNotFoundError(
            f"Delta table {tables.ADDRESS_CONSENT.full_name} not found: exports decide consent per address from "
            "it; run `cdp-spark profiles` first (a lakehouse from before per-address consent lacks it)"
        )
    addresses = tables.read(spark, root, tables.ADDRESS_CONSENT)
    scores = read_scores(spark, root, as_of)
    check_destinations(
        destinations, segments, sorted(set(profile.columns) | set(scores.columns)), ctx.config.files.destinations
    )
    suppression = read_suppression(spark, root, ctx.config.privacy.hash_key)
    segments_hash = segments.definitions_hash()
    for destination in destinations.destinations:
        with stage.step(f"export {destination.name}") as counts:
            members = current_members(history, destination.segments, as_of)
            rows = audience(members, profile, scores, suppression, destination, addresses)
            result = run_export(rows, root, destination, as_of, segments_hash, stage.run_id)
            counts.update(adds=result.adds, removes=result.removes, erasures=result.erasures, total=result.total)
            counts["skipped"] = int(result.status == "skipped")
            if result.status == "skipped":
                log.info("[activate] %s: export %s already done; nothing written", destination.name, result.export_id)
            else:
                log.info("[activate] %s: export %s written to %s", destination.name, result.export_id, result.folder)
