"""The segment report: size, value, risk, movement and overlap of every segment at an as-of, and a bar chart."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cdp_spark import tables
from cdp_spark.segment_history import members_at

REPORT_COLUMNS = [
    "as_of",
    "segment",
    "members",
    "mean_clv",
    "mean_churn_probability",
    "entries",
    "exits",
    "overlap",
]


def segment_report(history: DataFrame, view: DataFrame, segments: list[str], as_of: date) -> DataFrame:
    """One row per segment at ``as_of``, segments without members included.

    In: ``history`` (``gold.segment_membership``), ``view`` (``cdp_id, clv, churn_probability`` at
    ``as_of``), the segment names. Out: ``as_of, segment, members, mean_clv, mean_churn_probability,
    entries`` (stays entered at ``as_of``), ``exits`` (stays closed at ``as_of``), ``overlap``
    (map: other segment -> members in both).
    """
    spark = history.sparkSession
    t = F.lit(as_of).cast("date")
    names = tables.rows_frame(spark, [(s,) for s in segments], "segment string")
    members = members_at(history, as_of)
    sizes = (
        members.join(view.select("cdp_id", "clv", "churn_probability"), "cdp_id", "left")
        .groupBy("segment")
        .agg(
            F.count("*").alias("members"),
            F.avg("clv").alias("mean_clv"),
            F.avg("churn_probability").alias("mean_churn_probability"),
        )
    )
    movement = history.groupBy("segment").agg(
        F.sum(F.when(F.col("entered_at") == t, 1).otherwise(0)).alias("entries"),
        F.sum(F.when(F.col("exited_at") == t, 1).otherwise(0)).alias("exits"),
    )
    a, b = members.alias("a"), members.alias("b")
    overlap = (
        a.join(b, (F.col("a.cdp_id") == F.col("b.cdp_id")) & (F.col("a.segment") != F.col("b.segment")))
        .groupBy(F.col("a.segment").alias("segment"), F.col("b.segment").alias("other"))
        .agg(F.count("*").alias("shared"))
        .groupBy("segment")
        .agg(F.map_from_entries(F.collect_list(F.struct("other", "shared"))).alias("overlap"))
    )
    return (
        names.join(sizes, "segment", "left")
        .join(movement, "segment", "left")
        .join(overlap, "segment", "left")
        .select(
            t.alias("as_of"),
            "segment",
            F.coalesce("members", F.lit(0)).cast("long").alias("members"),
            "mean_clv",
            "mean_churn_probability",
            F.coalesce("entries", F.lit(0)).cast("long").alias("entries"),
            F.coalesce("exits", F.lit(0)).cast("long").alias("exits"),
            F.coalesce("overlap", F.create_map().cast("map<string,bigint>")).alias("overlap"),
        )
    )


def write_chart(report_rows: list[dict], as_of: date, reports_dir: str) -> Path:
    """A PNG bar chart of members, entries and exits per segment; returns its path.

    ``report_rows`` are the collected rows of :func:`segment_report` (one per segment: a small aggregate).
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on a cluster driver or in CI
    import matplotlib.pyplot as plt

    rows = sorted(report_rows, key=lambda r: r["segment"])
    names = [r["segment"] for r in rows]
    positions = range(len(rows))
    width = 0.27
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(rows)), 4.5))
    for offset, column, label in (
        (-width, "members", "members"),
        (0, "entries", "entered"),
        (width, "exits", "exited"),
    ):
        ax.bar([p + offset for p in positions], [r[column] for r in rows], width, label=label)
    ax.set_xticks(list(positions), names, rotation=30, ha="right")
    ax.set_ylabel("customers")
    ax.set_title(f"Segments at {as_of.isoformat()}")
    ax.legend()
    fig.tight_layout()
    out = Path(reports_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"segments_{as_of.isoformat()}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
