"""Stable ``cdp_id``: each new cluster keeps the id of the previous cluster it shares most records with.

Rules, deterministic whatever the partitioning:
1. every previous id goes to the new cluster holding most of its records (ties: smaller component id);
2. a new cluster that received several previous ids keeps the one it shares most records with (ties:
   smaller id); the others are retired as merged into it;
3. a cluster that received none gets a new id derived from its smallest record id (so a first run on
   the same data always gives the same ids); if that id is taken, derived from it and the ids its records had
   (the same inputs give the same ids in any run), and salted with the run id only if that is taken too.
Lineage rows record creations, merges, splits and retirements.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from cdp_spark import tables


def _new_id(key: F.Column) -> F.Column:
    return F.concat(F.lit("cdp-"), F.substring(F.sha2(key, 256), 1, 24))


def assign_cdp_ids(
    components: DataFrame, previous: DataFrame | None, run_id: str, taken: DataFrame | None = None
) -> tuple[DataFrame, DataFrame]:
    """Give each component a cdp_id, carrying ids over from ``previous`` (``record_id, cdp_id``).

    In: ``record_id, component_id``. Out: (``record_id, cdp_id, component_size``;
    lineage ``cdp_id, event, previous_cdp_ids, records``). ``taken``: ``cdp_id`` of every id in use, when
    ``previous`` is only the part of the map being re-resolved (default: ``previous``'s ids); no new id takes one.
    """
    spark = components.sparkSession
    if previous is None:
        previous = tables.rows_frame(spark, [], tables.IDENTITY_MAP.schema)
    sizes = components.groupBy("component_id").agg(F.count("*").alias("component_size"))
    shared = (
        components.join(previous.select("record_id", F.col("cdp_id").alias("previous_id")), "record_id")
        .groupBy("component_id", "previous_id")
        .agg(F.count("*").alias("shared"))
    )
    # Rule 1: each previous id goes to the component holding most of its records.
    by_previous = Window.partitionBy("previous_id").orderBy(F.desc("shared"), "component_id")
    heirs = shared.withColumn("_rank", F.row_number().over(by_previous)).where("_rank = 1").drop("_rank")
    # Rule 2: a component that inherits several keeps the one it shares most with.
    by_component = Window.partitionBy("component_id").orderBy(F.desc("shared"), "previous_id")
    kept = (
        heirs.withColumn("_rank", F.row_number().over(by_component))
        .where("_rank = 1")
        .select("component_id", F.col("previous_id").alias("kept_id"))
    )
    previous_sets = shared.groupBy("component_id").agg(
        F.array_sort(F.collect_set("previous_id")).alias("previous_cdp_ids")
    )
    # Rule 3: new ids for components that inherit nothing. The id of their smallest record, else (taken: the
    # records were split from a cluster that kept it) salted with the ids they come from: the same inputs give
    # the same ids, whichever run (full or incremental) computes them. The run id salts only a third collision.
    taken = (previous if taken is None else taken).select(F.col("cdp_id").alias("candidate")).distinct()
    is_taken = taken.withColumn("_taken", F.lit(True))
    origin = F.concat_ws(":", "component_id", F.array_join(F.coalesce("previous_cdp_ids", F.array()), ","))
    fresh = (
        sizes.join(kept, "component_id", "left_anti")
        .join(previous_sets, "component_id", "left")
        .withColumn("candidate", _new_id(F.col("component_id")))
        .join(is_taken, "candidate", "left")
        .withColumn("natural_taken", F.col("_taken").isNotNull())
        .drop("_taken")
        .withColumn("candidate", F.when(F.col("natural_taken"), _new_id(origin)).otherwise(F.col("candidate")))
        .join(is_taken, "candidate", "left")
        .select(
            "component_id",
            F.when(
                F.col("natural_taken") & F.col("_taken").isNotNull(), _new_id(F.concat_ws(":", origin, F.lit(run_id)))
            )
            .otherwise(F.col("candidate"))
            .alias("kept_id"),
        )
    )
    ids = kept.unionByName(fresh)
    identity_map = (
        components.join(ids, "component_id")
        .join(sizes, "component_id")
        .select("record_id", F.col("kept_id").alias("cdp_id"), "component_size")
    )

    spread = shared.groupBy("previous_id").agg(F.countDistinct("component_id").alias("parts"))
    split_sources = shared.join(spread.where("parts > 1"), "previous_id").select("component_id").distinct()
    per_component = (
        ids.join(sizes, "component_id")
        .join(previous_sets, "component_id", "left")
        .join(split_sources.withColumn("_split", F.lit(True)), "component_id", "left")
        .select(
            F.col("kept_id").alias("cdp_id"),
            F.when(F.col("previous_cdp_ids").isNull(), F.lit("created"))
            .when(F.size("previous_cdp_ids") > 1, F.lit("merged"))
            .when(F.col("_split"), F.lit("split"))
            .when(F.col("previous_cdp_ids")[0] != F.col("kept_id"), F.lit("split"))
            .otherwise(F.lit(None))
            .alias("event"),
            F.coalesce("previous_cdp_ids", F.array().cast("array<string>")).alias("previous_cdp_ids"),
            F.col("component_size").alias("records"),
        )
        .where(F.col("event").isNotNull())
    )
    retired = (
        previous.select(F.col("cdp_id").alias("previous_id"))
        .distinct()
        .join(ids.select(F.col("kept_id").alias("previous_id")), "previous_id", "left_anti")
        .select(
            F.col("previous_id").alias("cdp_id"),
            F.lit("retired").alias("event"),
            F.array("previous_id").alias("previous_cdp_ids"),
            F.lit(0).cast("long").alias("records"),
        )
    )
    return identity_map, per_component.unionByName(retired)


def record_changes(previous: DataFrame | None, current: DataFrame) -> DataFrame:
    """The records whose ``cdp_id`` differs between two maps (``record_id, cdp_id``, one row per record).

    Out: ``record_id, previous_cdp_id, cdp_id, change``: ``added`` (a record the previous map lacks), ``moved``
    or ``removed`` (a record the current map lacks). One full outer join on ``record_id``.
    """
    now = current.select("record_id", "cdp_id")
    if previous is None:
        return now.select("record_id", F.lit(None).cast("string").alias("previous_cdp_id"), "cdp_id").withColumn(
            "change", F.lit("added")
        )
    before = previous.select("record_id", F.col("cdp_id").alias("previous_cdp_id"))
    joined = before.join(now, "record_id", "full_outer").where(~F.col("previous_cdp_id").eqNullSafe(F.col("cdp_id")))
    change = (
        F.when(F.col("previous_cdp_id").isNull(), "added").when(F.col("cdp_id").isNull(), "removed").otherwise("moved")
    )
    return joined.select("record_id", "previous_cdp_id", "cdp_id", change.alias("change"))
