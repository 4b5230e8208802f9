"""Clustering: GraphFrames connected components over records and accepted edges, then guards.

After the components are found, two guards split clusters that should not stand:
- **limits**: a profile with more distinct values of an identifier than its limit (6 emails where 5 are
  allowed) loses the edges of its weakest identifier type (probabilistic edges first, then by priority)
  until it is within limits;
- **size**: a component larger than ``max_component_size`` loses its weakest probabilistic edges, round
  by round; one that is still too large with deterministic edges only is reported, not hidden.
Only the offending components are re-clustered, so the guards cost little when few clusters offend.
"""

from __future__ import annotations

import logging

from graphframes import GraphFrame
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from cdp_spark.identity.rules import ClusteringConfig, IdentityConfig

log = logging.getLogger("cdp_spark")

PROBABILISTIC_PRIORITY = 1_000_000  # probabilistic edges are weaker than any identifier


def connected_components(vertices: DataFrame, edges: DataFrame, clustering: ClusteringConfig) -> DataFrame:
    """Connected components labelled by their smallest record id.

    In: vertices ``record_id``; edges ``src_record_id, dst_record_id``. Out: ``record_id, component_id``.
    """
    # Materialized once: the collision check and every iteration of the algorithm read the vertex set.
    v = vertices.select("record_id").distinct().withColumn("id", F.xxhash64("record_id")).checkpoint()
    collisions = v.groupBy("id").count().where("count > 1").limit(1).count()
    if collisions:
        raise RuntimeError("64-bit hash collision between record ids; rename the records or report this")
    e = edges.select(F.xxhash64("src_record_id").alias("src"), F.xxhash64("dst_record_id").alias("dst"))
    components = GraphFrame(v, e).connectedComponents(
        algorithm=clustering.algorithm,
        checkpointInterval=clustering.checkpoint_interval,
        broadcastThreshold=clustering.broadcast_threshold,
        max_iter=clustering.max_iterations,
    )
    return components.select(
        "record_id", F.min("record_id").over(Window.partitionBy("component")).alias("component_id")
    )


def _edge_priority(config: IdentityConfig) -> F.Column:
    priority = F.lit(PROBABILISTIC_PRIORITY)
    for rule in config.identifiers:
        priority = F.when(F.col("identifier") == rule.name, F.lit(rule.priority)).otherwise(priority)
    return F.when(F.col("rule").startswith("probabilistic"), F.lit(PROBABILISTIC_PRIORITY)).otherwise(priority)


def offending_components(components: DataFrame, values: DataFrame, config: IdentityConfig) -> DataFrame:
    """Components over an identifier limit or the size limit, with why.

    Out: ``component_id, reason`` (``limit:<identifier>`` or ``size``).
    """
    limits = {r.name: r.limit for r in config.identifiers if r.limit}
    sizes = components.groupBy("component_id").agg(F.count("*").alias("size"))
    oversized = sizes.where(F.col("size") > config.clustering.max_component_size).select(
        "component_id", F.lit("size").alias("reason")
    )
    if not limits:
        return oversized
    limited_values = values.where(F.col("identifier").isin(list(limits)))
    counts = (
        limited_values.join(components, "record_id")
        .groupBy("component_id", "identifier")
        .agg(F.countDistinct("value").alias("distinct_values"))
    )
    limit_col = F.lit(None)
    for name, limit in limits.items():
        limit_col = F.when(F.col("identifier") == name, F.lit(limit)).otherwise(limit_col)
    over_limit = counts.where(F.col("distinct_values") > limit_col).select(
        "component_id", F.concat(F.lit("limit:"), F.col("identifier")).alias("reason")
    )
    return over_limit.unionByName(oversized)


def cluster(
    records: DataFrame, edges: DataFrame, values: DataFrame, config: IdentityConfig, max_rounds: int = 10
) -> tuple[DataFrame, DataFrame, DataFrame, DataFrame]:
    """Cluster records, then split components that break an identifier limit or the size limit.

    In: records ``record_id``; edges ``src_record_id, dst_record_id, rule, score, identifier``; values
    ``record_id, identifier, value``. Out: (``record_id, component_id``; edges with ``status``
    ``accepted`` or ``refused:<reason>``; still-offending ``component_id, reason``; the components before the
    guards, ``record_id, raw_component``, a 64-bit hash of its smallest record id: what the guards decide on,
    so the unit an incremental run re-resolves whole).
    """
    # The edges are a lazy plan (identifier self-joins, pair scoring): materialize them once, before the
    # components read them, instead of computing them for the algorithm and again for the guards.
    edges = edges.withColumn("_priority", _edge_priority(config)).withColumn("status", F.lit("accepted")).checkpoint()
    components = connected_components(records, edges, config.clustering).checkpoint()
    raw = components.select("record_id", F.xxhash64("component_id").alias("raw_component"))
    offending = offending_components(components, values, config).checkpoint()
    for round_number in range(1, max_rounds + 1):
        n_offending = offending.count()
        if n_offending == 0:
            break
        log.info("[resolve] guard round %d: %d component(s) over a limit or the size cap", round_number, n_offending)
        reasons = offending.groupBy("component_id").agg(F.array_sort(F.collect_set("reason")).alias("reasons"))
        in_offending = edges.join(components.withColumnRenamed("record_id", "src_record_id"), "src_record_id").join(
            reasons, "component_id"
        )
        accepted = in_offending.where(F.col("status") == "accepted")
        # The weakest accepted edges of each offending component give way: lowest priority type, and
        # for probabilistic edges only those at the component's minimum score.
        by_component = Window.partitionBy("component_id")
        weakest = accepted.withColumn("_worst", F.max("_priority").over(by_component)).where(
            F.col("_priority") == F.col("_worst")
        )
        weakest = weakest.withColumn("_min_score", F.min("score").over(by_component)).where(
            (F.col("_priority") != PROBABILISTIC_PRIORITY) | (F.col("score") == F.col("_min_score"))
        )
        refused = weakest.select(
            "src_record_id",
            "dst_record_id",
            "rule",
            F.concat(F.lit("refused:"), F.array_join("reasons", "+")).alias("new_status"),
        )
        if refused.limit(1).count() == 0:
            break  # nothing left to remove: these stay reported
        edges = (
            edges.join(refused, ["src_record_id", "dst_record_id", "rule"], "left")
            .withColumn("status", F.coalesce("new_status", "status"))
            .drop("new_status")
            .checkpoint()
        )
        affected = components.join(reasons.select("component_id"), "component_id").select("record_id")
        affected_edges = edges.where(F.col("status") == "accepted").join(
            affected.withColumnRenamed("record_id", "src_record_id"), "src_record_id", "left_semi"
        )
        recomputed = connected_components(affected, affected_edges, config.clustering)
        components = components.join(affected, "record_id", "left_anti").unionByName(recomputed).checkpoint()
        offending = offending_components(
            components.join(recomputed.select("component_id").distinct(), "component_id", "left_semi"), values, config
        ).checkpoint()
    return components, edges.drop("_priority"), offending, raw
