"""Identity health, run over run, without labels: a handful of numbers per resolve run, their drift from the last
successful run, and the checks of ``conf/identity.yaml``'s ``health`` section that warn or fail a run.

Identity has no truth in production, so a bad run is told by its shape: clusters grow (a junk value shared by many
records links them), clusters hang on single links, one rule's share of the links jumps (a blocking rule that
compares everyone with everyone), the model's weights move, new values turn hot. Every function here aggregates in
Spark and brings back a few numbers; the metrics are long format, ``name -> value``:

- ``records``, ``cdp_ids``; ``clusters_<bucket>``: share of the clusters of 1, 2, 3-5, 6-10, 11-20 and over 20
  records; ``records_share_over_20``: share of the records in clusters of over 20; ``cluster_size_max``,
  ``cluster_size_p99``;
- ``bridged_clusters``, ``bridged_share``: clusters of 3+ records held together by single links (of those of 3+);
- ``links``, ``link_share:<rule>``: accepted links, and each rule's share of them (a deterministic rule is
  ``deterministic:<identifier>``: the share per rule is the share per identifier, plus ``probabilistic``);
- ``weight:<comparison>/<level>``: the match weight (bits) of each level of the model that scored;
  ``weight_change_max``: the largest change of a level's weight from the last accepted model;
- ``hot_values``, ``hot_values_new``: values guarded as hot, and those the last run did not guard;
- ``drift:<share>``: each share minus the last run's; ``link_share_change_max``: the largest absolute drift of a
  rule's share;
- ``check:<name>``: 0 passed, 1 warned, 2 failed, for each check evaluated; ``verdict``: the worst of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F

from cdp_spark.identity.model import FittedModel
from cdp_spark.identity.model_change import ModelChange
from cdp_spark.identity.rules import HealthConfig

# Cluster-size buckets: (label, smallest, largest or None).
BUCKETS = (("1", 1, 1), ("2", 2, 2), ("3_5", 3, 5), ("6_10", 6, 10), ("11_20", 11, 20), ("over_20", 21, None))
LARGE = 20  # records: a cluster larger than this is large (records_share_over_20)

# Each check of HealthConfig and the metric it reads.
CHECKS = {
    "max_cluster_size": "cluster_size_max",
    "max_share_in_large_clusters": "records_share_over_20",
    "max_bridged_share": "bridged_share",
    "max_rule_share_change": "link_share_change_max",
    "max_weight_change": "weight_change_max",
    "max_new_hot_values": "hot_values_new",
}
OK, WARN, FAIL = 0, 1, 2


def _bucket(size: F.Column, low: int, high: int | None) -> F.Column:
    return (size >= low) if high is None else size.between(low, high)


def cluster_metrics(identity_map: DataFrame) -> dict[str, float]:
    """Cluster sizes: how many records and clusters, the share of clusters per size bucket, the largest.

    In: ``record_id, cdp_id``. One aggregate over the clusters reaches the driver.
    """
    sizes = identity_map.groupBy("cdp_id").agg(F.count(F.lit(1)).alias("records"))
    return _size_metrics(sizes.agg(*_size_columns()).first())


def _size_columns() -> list[F.Column]:
    """The aggregates of :func:`_size_metrics` over clusters (a ``records`` column: the cluster's size)."""
    size = F.col("records")
    return [
        F.sum(size).alias("records"),
        F.count(F.lit(1)).alias("cdp_ids"),
        F.max(size).alias("cluster_size_max"),
        F.percentile(size, 0.99).alias("cluster_size_p99"),
        F.sum(F.when(size > LARGE, size).otherwise(0)).alias("over_large"),
        *[F.count_if(_bucket(size, low, high)).alias(f"clusters_{label}") for label, low, high in BUCKETS],
    ]


def _size_metrics(row: Row) -> dict[str, float]:
    clusters, records = row["cdp_ids"], row["records"] or 0
    metrics = {
        "records": float(records),
        "cdp_ids": float(clusters),
        "cluster_size_max": float(row["cluster_size_max"] or 0),
        "cluster_size_p99": float(row["cluster_size_p99"] or 0),
        "records_share_over_20": row["over_large"] / records if records else 0.0,
    }
    for label, _, _ in BUCKETS:
        metrics[f"clusters_{label}"] = row[f"clusters_{label}"] / clusters if clusters else 0.0
    return metrics


def cluster_links(identity_map: DataFrame, edges: DataFrame) -> DataFrame:
    """Each cluster's size and the links that hold it together, and whether every one of them is a bridge.

    In: map ``record_id, cdp_id``; edges ``src_record_id, dst_record_id, rule, identifier, status``. Out:
    ``cdp_id, records, links, bridged``.

    A cheap, scalable proxy for bridges (no graph algorithm): a connected cluster of n records with exactly n - 1
    links is a tree, so each of its links is a bridge, and one wrong link holds two people together. Links are
    counted as evidence, not as edges: a deterministic rule links the k records sharing a value as a star of
    k - 1 edges to the smallest one, but the value links each pair of them (k(k-1)/2 links: a star of 3+ records
    sharing one value is no bridge); a pair linked by two rules has two links. So ``bridged`` marks clusters of 3+
    records held together by links of single pairs (two records sharing a value, one probabilistic match), each
    the only evidence between its two sides. It misses a cluster with a bridge and a cycle elsewhere.
    """
    accepted = edges.where(F.col("status") == "accepted").select("src_record_id", "dst_record_id", "rule", "identifier")
    accepted = accepted.distinct()
    # A deterministic star: k - 1 edges to its centre (dst) stand for k(k-1)/2 links; a probabilistic edge is one.
    stars = (
        accepted.where(F.col("identifier").isNotNull())
        .groupBy("rule", "dst_record_id")
        .agg(F.count(F.lit(1)).alias("edges"))
        .select("dst_record_id", (F.col("edges") * (F.col("edges") + 1) / 2).cast("long").alias("links"))
    )
    pairs = accepted.where(F.col("identifier").isNull()).select("dst_record_id", F.lit(1).cast("long").alias("links"))
    links = (
        stars.unionByName(pairs)
        .join(identity_map.select(F.col("record_id").alias("dst_record_id"), "cdp_id"), "dst_record_id")
        .groupBy("cdp_id")
        .agg(F.sum("links").alias("links"))
    )
    sizes = identity_map.groupBy("cdp_id").agg(F.count(F.lit(1)).alias("records"))
    return (
        sizes.join(links, "cdp_id", "left")
        .withColumn("links", F.coalesce("links", F.lit(0)).cast("long"))
        .withColumn("bridged", (F.col("records") >= 3) & (F.col("links") == F.col("records") - 1))
    )


def bridge_metrics(identity_map: DataFrame, edges: DataFrame) -> dict[str, float]:
    """``bridged_clusters`` and ``bridged_share`` (of the clusters of 3+ records): see :func:`cluster_links`."""
    return _bridge_metrics(cluster_links(identity_map, edges).agg(*_bridge_columns()).first())


def _bridge_columns() -> list[F.Column]:
    return [F.count_if("bridged").alias("bridged"), F.count_if(F.col("records") >= 3).alias("of")]


def _bridge_metrics(row: Row) -> dict[str, float]:
    return {
        "bridged_clusters": float(row["bridged"]),
        "bridged_share": row["bridged"] / row["of"] if row["of"] else 0.0,
    }


def link_metrics(edges: DataFrame) -> dict[str, float]:
    """``links`` (accepted) and ``link_share:<rule>``. In: ``rule, status``; one row per rule reaches the driver."""
    per_rule = edges.where(F.col("status") == "accepted").groupBy("rule").agg(F.count(F.lit(1)).alias("links"))
    counts = {row["rule"]: row["links"] for row in per_rule.collect()}
    total = sum(counts.values())
    return {"links": float(total), **{f"link_share:{rule}": n / total for rule, n in sorted(counts.items())}}


def hot_value_metrics(guarded: DataFrame, previous: DataFrame | None) -> dict[str, float]:
    """``hot_values`` (guarded as hot this run) and ``hot_values_new`` (of those, the ones the last run did not
    guard; not known without a last run).

    In: ``identifier, value_hash, reason`` of this run and of the last (``silver.hot_identifiers`` before it is
    replaced): hashes are compared, never values.
    """
    hot = guarded.where(F.col("reason") == "hot").select("identifier", "value_hash").distinct()
    metrics = {"hot_values": float(hot.count())}
    if previous is not None:
        new = hot.join(previous.select("identifier", "value_hash"), ["identifier", "value_hash"], "left_anti")
        metrics["hot_values_new"] = float(new.count())
    return metrics


def model_metrics(
    model: FittedModel | None, change: ModelChange | None, previous: dict[str, float]
) -> dict[str, float]:
    """``weight:<comparison>/<level>`` of the model that scored, and ``weight_change_max``: the largest change (bits)
    of a level's weight from the last accepted model. That is the champion when this run's retrain was compared
    with it (``change``), else the model that scored the last run (its recorded weights); unknown without either.
    """
    if model is None:
        return {}
    metrics = {f"weight:{comparison}/{label}": w for (comparison, label), w in model.level_weights().items()}
    if change is not None:
        metrics["weight_change_max"] = change.max_weight_change
    else:
        moved = [abs(w - previous[name]) for name, w in metrics.items() if name in previous]
        if moved:
            metrics["weight_change_max"] = max(moved)
    return metrics


def _is_share(name: str) -> bool:
    return name.startswith(("clusters_", "link_share:")) or name in ("records_share_over_20", "bridged_share")


def drift_metrics(metrics: dict[str, float], previous: dict[str, float]) -> dict[str, float]:
    """``drift:<share>``: each share minus the last run's (a rule one run lacks has share 0 there), and
    ``link_share_change_max``; nothing without a last run."""
    if not previous:
        return {}
    shares = sorted({n for n in (*metrics, *previous) if _is_share(n)})
    drift = {f"drift:{n}": metrics.get(n, 0.0) - previous.get(n, 0.0) for n in shares}
    rules = [abs(v) for n, v in drift.items() if n.startswith("drift:link_share:")]
    if rules:
        drift["link_share_change_max"] = max(rules)
    return drift


def health_metrics(
    identity_map: DataFrame,
    edges: DataFrame,
    guarded: DataFrame,
    previous_guarded: DataFrame | None,
    model: FittedModel | None,
    change: ModelChange | None,
    previous: dict[str, float],
) -> dict[str, float]:
    """Every metric of one run (the module's list but the checks), against the last successful run's ``previous``
    metrics (empty on a first run). In: as :func:`cluster_links`, :func:`hot_value_metrics`."""
    # Sizes and bridges in one pass over the clusters (one shuffle of the map, one action).
    row = cluster_links(identity_map, edges).agg(*_size_columns(), *_bridge_columns()).first()
    metrics = {
        **_size_metrics(row),
        **_bridge_metrics(row),
        **link_metrics(edges),
        **hot_value_metrics(guarded, previous_guarded),
        **model_metrics(model, change, previous),
    }
    return {**metrics, **drift_metrics(metrics, previous)}


@dataclass(frozen=True)
class Breach:
    """A check whose metric is above its ``warn`` or ``fail`` limit (the higher one it passes)."""

    check: str
    metric: str
    value: float
    limit: float
    level: int  # WARN or FAIL

    def __str__(self) -> str:
        word = "fail" if self.level == FAIL else "warn"
        return f"{self.check}: {self.metric} {self.value:.4g} is above {word} {self.limit:g}"


def breaches(metrics: dict[str, float], config: HealthConfig) -> list[Breach]:
    """The checks ``metrics`` break, in the order of the config; a check whose metric is unknown is skipped."""
    found = []
    for check, metric in CHECKS.items():
        threshold = getattr(config, check)
        if threshold is None or metric not in metrics:
            continue
        value = metrics[metric]
        if threshold.fail is not None and value > threshold.fail:
            found.append(Breach(check, metric, value, threshold.fail, FAIL))
        elif threshold.warn is not None and value > threshold.warn:
            found.append(Breach(check, metric, value, threshold.warn, WARN))
    return found


def check_metrics(metrics: dict[str, float], config: HealthConfig, found: list[Breach]) -> dict[str, float]:
    """``check:<name>`` (0 passed, 1 warned, 2 failed) of each check evaluated, and the ``verdict``: the worst."""
    levels = {b.check: b.level for b in found}
    evaluated = {
        f"check:{check}": float(levels.get(check, OK))
        for check, metric in CHECKS.items()
        if getattr(config, check) is not None and metric in metrics
    }
    return {**evaluated, "verdict": max(evaluated.values(), default=float(OK))}


class IdentityHealthFailed(Exception):
    """A resolve run broke a ``fail`` limit of ``health``: it published nothing."""

    def __init__(self, found: list[Breach]):
        failed = "; ".join(str(b) for b in found if b.level == FAIL)
        super().__init__(
            f"identity health check failed, the identity map was not replaced: {failed} "
            "(conf/identity.yaml health; the metrics are in ops.identity_health)"
        )
        self.breaches = found


def last_successful(health: DataFrame, succeeded: DataFrame) -> dict[str, float]:
    """The metrics of the latest run in ``health`` (``run_id, metric, value, recorded_at``) that succeeded (its
    ``run_id`` is in ``succeeded``): what this run's drift is measured from. Empty when there is none."""
    runs = health.join(succeeded.select("run_id").distinct(), "run_id", "left_semi")
    last = runs.groupBy("run_id").agg(F.max("recorded_at").alias("at")).orderBy(F.desc("at"), F.desc("run_id")).first()
    if last is None:
        return {}
    rows = runs.where(F.col("run_id") == last["run_id"]).select("metric", "value").collect()
    return {row["metric"]: row["value"] for row in rows if row["value"] is not None}
