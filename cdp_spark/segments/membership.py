"""Who is in which segment at an as-of, and the membership history kept as entry/exit intervals.

History (``gold.segment_membership``): one row per stay of a customer in a segment,
``segment, cdp_id, entered_at, exited_at (null while a member), last_as_of``. Running as-of ``T``:
a member with no open stay enters (new row, ``entered_at = T``); a member with an open stay stays
(``last_as_of = T``); an open stay of a customer who no longer qualifies closes (``exited_at = T``).
Rerunning ``T`` on changed inputs gives what a single run on those inputs gives: a stay opened at ``T``
that no longer qualifies is removed, a stay closed at ``T`` that qualifies again is reopened.
"""

from __future__ import annotations

from datetime import date

from delta.tables import DeltaTable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from cdp_spark import tables
from cdp_spark.segments.config import SegmentsConfig


def segment_view(profile: DataFrame, features: DataFrame, scores: DataFrame, as_of: date) -> DataFrame:
    """One row per profile with its features and scores at ``as_of`` (null where it has none).

    In: ``gold.customer_profile``, ``gold.customer_features`` and ``gold.customer_scores`` (both keyed
    ``cdp_id, as_of``). Out: every profile column, then the feature and score columns not already
    present, then ``as_of``.
    """
    view = profile
    for facts in (features, scores):
        at = facts.where(F.col("as_of") == F.lit(as_of)).drop("as_of")
        extra = [c for c in at.columns if c not in view.columns]
        view = view.join(at.select("cdp_id", *extra), "cdp_id", "left")
    return view.withColumn("as_of", F.lit(as_of).cast("date"))


def qualify(view: DataFrame, config: SegmentsConfig) -> DataFrame:
    """Members of every segment at the view's as-of, exclusive groups applied.

    In: the segment view (``cdp_id`` and the columns the conditions use). Out: ``segment, cdp_id``.
    A null condition counts as false. Within an exclusive group a customer keeps only the segment with the
    lowest priority (then name).
    """
    candidates = F.array(
        *[
            F.when(
                F.expr(f"({s.condition})"),
                F.struct(
                    F.lit(s.name).alias("segment"),
                    F.lit(s.exclusive_group or f"_alone:{s.name}").alias("group"),
                    F.lit(s.priority).alias("priority"),
                ),
            )
            for s in config.segments
        ]
    )
    # One pass over the view for all segments, instead of one scan per condition.
    qualified = view.select("cdp_id", F.explode(F.filter(candidates, lambda c: c.isNotNull())).alias("m")).select(
        "cdp_id", "m.*"
    )
    first_in_group = Window.partitionBy("cdp_id", "group").orderBy("priority", "segment")
    return (
        qualified.withColumn("_rank", F.row_number().over(first_in_group))
        .where("_rank = 1")
        .select("segment", "cdp_id")
    )


def latest_as_of(history: DataFrame) -> date | None:
    """The last as-of the history was run for (the greatest ``last_as_of`` or ``exited_at``)."""
    row = history.agg(F.greatest(F.max("last_as_of"), F.max("exited_at")).alias("latest")).first()
    return row["latest"] if row else None


def membership_changes(members: DataFrame, history: DataFrame, as_of: date) -> DataFrame:
    """The rows a run at ``as_of`` changes in the history; nothing when rerun on the same inputs.

    In: ``members`` (``segment, cdp_id`` at ``as_of``), ``history`` (``gold.segment_membership``).
    Out: ``segment, cdp_id, entered_at, exited_at, last_as_of, _op`` with ``_op`` one of ``insert``,
    ``update`` (the row's new ``exited_at``/``last_as_of``) or ``delete``.
    """
    t = F.lit(as_of).cast("date")
    # At most one stay per (segment, cdp_id) is open or was closed at T; the latest one counts.
    latest = Window.partitionBy("segment", "cdp_id").orderBy(F.desc("entered_at"))
    relevant = (
        history.where(F.col("exited_at").isNull() | (F.col("exited_at") == t))
        .withColumn("_rank", F.row_number().over(latest))
        .where("_rank = 1")
        .drop("_rank")
    )
    joined = members.withColumn("_member", F.lit(True)).join(relevant, ["segment", "cdp_id"], "full")
    member = F.coalesce(F.col("_member"), F.lit(False))
    has_stay = F.col("entered_at").isNotNull()
    is_open = has_stay & F.col("exited_at").isNull()
    op = (
        F.when(member & ~has_stay, F.lit("insert"))
        .when(member & (F.col("exited_at").isNotNull() | (F.col("last_as_of") != t)), F.lit("update"))
        .when(~member & is_open & (F.col("entered_at") == t), F.lit("delete"))
        .when(~member & is_open, F.lit("update"))
    )
    return (
        joined.withColumn("_op", op)
        .where(F.col("_op").isNotNull())
        .select(
            "segment",
            "cdp_id",
            F.when(has_stay, F.col("entered_at")).otherwise(t).alias("entered_at"),
            F.when(~member, t).alias("exited_at"),
            F.when(member, t).otherwise(F.col("last_as_of")).alias("last_as_of"),
            "_op",
        )
    )


class AsOfBeforeHistory(ValueError):
    """Segment membership only moves forward in time."""


def update_membership(members: DataFrame, root: str, as_of: date) -> dict[str, int]:
    """Apply a run at ``as_of`` to ``gold.segment_membership`` with one MERGE (none when nothing changes).

    Returns the counts of entries, stays updated, exits and removed stays. Raises AsOfBeforeHistory when
    ``as_of`` is earlier than the latest as-of already recorded.
    """
    spark = members.sparkSession
    table = tables.SEGMENT_MEMBERSHIP
    if not tables.exists(spark, root, table):
        first = members.select(
            "segment",
            "cdp_id",
            F.lit(as_of).cast("date").alias("entered_at"),
            F.lit(None).cast("date").alias("exited_at"),
            F.lit(as_of).cast("date").alias("last_as_of"),
        )
        tables.overwrite(first, root, table)
        return {"entered": tables.read(spark, root, table).count(), "stayed": 0, "exited": 0, "removed": 0}
    history = tables.read(spark, root, table)
    latest = latest_as_of(history)
    if latest is not None and as_of < latest:
        raise AsOfBeforeHistory(
            f"as-of {as_of} is earlier than the latest segment run ({latest}) in {table.full_name}: membership "
            "history only moves forward; run a later as-of, or rebuild the history from the earliest as-of"
        )
    changes = membership_changes(members, history, as_of).persist()
    try:
        # One small aggregate gives every count: updates with an exit date are exits, the others stays.
        by_kind = {
            (r["_op"], r["exiting"]): r["count"]
            for r in changes.groupBy("_op", F.col("exited_at").isNotNull().alias("exiting")).count().collect()
        }
        stats = {
            "entered": by_kind.get(("insert", False), 0),
            "stayed": by_kind.get(("update", False), 0),
            "exited": by_kind.get(("update", True), 0),
            "removed": sum(n for (op, _), n in by_kind.items() if op == "delete"),
        }
        if not by_kind:
            return stats  # a MERGE that changes nothing would still commit a version
        (
            DeltaTable.forPath(spark, table.path(root))
            .alias("t")
            .merge(
                changes.alias("s"),
                "t.segment = s.segment AND t.cdp_id = s.cdp_id AND t.entered_at = s.entered_at",
            )
            .whenMatchedDelete(condition="s._op = 'delete'")
            .whenMatchedUpdate(
                condition="s._op = 'update'", set={"exited_at": "s.exited_at", "last_as_of": "s.last_as_of"}
            )
            .whenNotMatchedInsert(
                condition="s._op = 'insert'",
                values={c: f"s.{c}" for c in ("segment", "cdp_id", "entered_at", "exited_at", "last_as_of")},
            )
            .execute()
        )
        return stats
    finally:
        changes.unpersist()
