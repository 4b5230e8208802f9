"""`cdp-spark segment`: membership with history at an as-of, and the segment report (table and chart)."""

from __future__ import annotations

import logging
from datetime import date

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp_spark import tables
from cdp_spark.ops import StageRun
from cdp_spark.pipeline import Context
from cdp_spark.segments.config import check_conditions, load_segments
from cdp_spark.segments.membership import qualify, segment_view, update_membership
from cdp_spark.segments.report import segment_report, write_chart

log = logging.getLogger("cdp_spark")


def resolve_as_of(spark: SparkSession, root: str, given: str | None) -> date:
    """The as-of given on the command line, else the latest as-of of ``gold.customer_scores``."""
    if given:
        return date.fromisoformat(given)
    latest = tables.read(spark, root, tables.CUSTOMER_SCORES).agg(F.max("as_of")).first()[0]
    if latest is None:
        raise ValueError(f"{tables.CUSTOMER_SCORES.full_name} is empty: run `cdp-spark score` first or pass --as-of")
    return latest


def read_view(spark: SparkSession, root: str, as_of: date) -> DataFrame:
    return segment_view(
        tables.read(spark, root, tables.CUSTOMER_PROFILE),
        tables.read(spark, root, tables.CUSTOMER_FEATURES),
        tables.read(spark, root, tables.CUSTOMER_SCORES),
        as_of,
    )


def run(ctx: Context, stage: StageRun) -> None:
    spark, root = ctx.spark, ctx.root
    path = ctx.config.files.segments
    config = load_segments(path)
    as_of = resolve_as_of(spark, root, getattr(ctx.args, "as_of", None))
    view = read_view(spark, root, as_of)
    check_conditions(spark, config, view.schema, path)
    with stage.step(f"membership at {as_of}") as counts:
        members = qualify(view, config)
        counts.update(update_membership(members, root, as_of))
    with stage.step("report") as counts:
        history = tables.read(spark, root, tables.SEGMENT_MEMBERSHIP)
        report = segment_report(history, view, config.names, as_of)
        tables.replace_where(report, root, tables.SEGMENT_REPORT, f"as_of = '{as_of.isoformat()}'")
        rows = [
            r.asDict() for r in tables.read(spark, root, tables.SEGMENT_REPORT).where(F.col("as_of") == as_of).collect()
        ]
        chart = write_chart(rows, as_of, ctx.config.reports_dir)
        for row in rows:
            counts[f"members:{row['segment']}"] = row["members"]
        log.info("[segment] report %s, chart %s", tables.SEGMENT_REPORT.full_name, chart)
