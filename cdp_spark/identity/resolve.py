"""Identity resolution end to end: deterministic + probabilistic edges -> clusters -> stable cdp_id."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp_spark.identity.blocking import candidate_pairs
from cdp_spark.identity.deterministic import anonymous_records, deterministic_edges, guard_values, identifier_values
from cdp_spark.identity.graph import cluster
from cdp_spark.identity.model import FittedModel, accepted_edges
from cdp_spark.identity.model_change import ModelChange, gate_breaches, model_change
from cdp_spark.identity.rules import IdentityConfig
from cdp_spark.identity.stable_ids import assign_cdp_ids
from cdp_spark.identity.training import NoCandidatePairs, train
from cdp_spark.identity.vectors import comparison_vectors
from cdp_spark.ops import progress

log = logging.getLogger("cdp_spark")

EDGE_COLUMNS = ["src_record_id", "dst_record_id", "rule", "score", "identifier"]


@dataclass
class ResolveResult:
    identity_map: DataFrame  # record_id, cdp_id, component_size
    raw_components: DataFrame  # record_id, raw_component: the components before the guards split any
    edges: DataFrame  # src_record_id, dst_record_id, rule, score, identifier, status
    guarded_values: DataFrame  # identifier, value, records, reason
    lineage: DataFrame  # cdp_id, event, previous_cdp_ids, records
    offending: DataFrame  # component_id, reason (still over a limit after the guards)
    model: FittedModel | None  # the model the probabilistic edges were scored with
    trained: FittedModel | None  # the model this run trained (None when one was given): the same as ``model``
    # unless the retrain gate kept the champion (``compare_with``), which then scored the edges
    model_change: ModelChange | None  # a trained model against ``compare_with``, on the same candidate pairs


def probabilistic_edges(
    records: DataFrame,
    config: IdentityConfig,
    model: FittedModel | None = None,
    compare_with: FittedModel | None = None,
) -> tuple[DataFrame, FittedModel, FittedModel | None, DataFrame, ModelChange | None]:
    """Fellegi-Sunter edges above the acceptance threshold, shaped like the deterministic ones.

    ``model``: score with it (its comparisons must be the config's) instead of training one. ``compare_with``: a
    model (the champion) a trained one is compared with on the same candidate pairs; when the change breaks the
    retrain gate (``probabilistic.retrain_gate``) the champion scores the edges, not the new model. Returns (edges,
    the model that scored them, the model trained (None when given), the comparison vectors the edges read,
    persisted when trained: unpersist them once the edges are materialized, the change).
    The candidate pairs and their levels (the Jaro-Winkler UDF among them) are computed once: training counts them,
    scoring and the comparison filter the same rows.
    """
    settings = config.probabilistic
    vectors = comparison_vectors(candidate_pairs(records, settings, config.record_id), settings)
    if model is None:  # read twice or three times: by training, the comparison and the edges
        vectors = vectors.persist(StorageLevel.MEMORY_AND_DISK)
    change, trained = None, None
    try:
        if model is None:
            model = trained = train(records, settings, config.record_id, seed=settings.seed, vectors=vectors)
            if compare_with is not None:
                change = model_change(vectors, trained, compare_with, settings.match_threshold)
                if gate_breaches(change, settings.retrain_gate):
                    log.warning("[resolve] the retrained model breaks the retrain gate: the champion scores the links")
                    model = compare_with
    except BaseException:
        vectors.unpersist()
        raise
    accepted = accepted_edges(records, settings, config.record_id, model, vectors=vectors)
    edges = accepted.select(
        F.col("src_record_id").cast("string"),
        F.col("dst_record_id").cast("string"),
        "rule",
        F.col("score").cast("double"),
        F.lit(None).cast("string").alias("identifier"),
    )
    return edges, model, trained, vectors, change


@dataclass(frozen=True)
class IdentityValues:
    """Every vertex's identifier values (records' and anonymous records' from facts), checkpointed, and the guard's
    verdict on each value, which the whole population decides (a value is hot by how many records share it)."""

    records: DataFrame  # the records, their id cast to string
    values: DataFrame  # record_id, identifier, value
    anonymous: DataFrame | None  # record_id, identifier, value of the anonymous records only
    usable: DataFrame  # record_id, identifier, value not guarded
    guarded: DataFrame  # identifier, value, records, reason

    def vertices(self, record_id: str) -> DataFrame:
        """``record_id`` of every vertex: the records and the anonymous records."""
        vertices = self.records.select(F.col(record_id).alias("record_id"))
        if self.anonymous is not None:
            vertices = vertices.unionByName(self.anonymous.select("record_id")).distinct()
        return vertices


def identity_values(records: DataFrame, config: IdentityConfig, facts: dict[str, DataFrame] | None) -> IdentityValues:
    """The identifier values of ``records`` and of the anonymous records ``facts`` give, and the guard's verdicts."""
    missing = [r.column for r in config.identifiers if r.column and r.column not in records.columns]
    if config.record_id not in records.columns:
        missing.insert(0, config.record_id)
    if missing:
        raise ValueError(f"records lack the columns named in the identity config: {missing}; have {records.columns}")
    records = records.withColumn(config.record_id, F.col(config.record_id).cast("string"))
    values = identifier_values(records, config)
    anonymous = anonymous_records(facts or {}, config)
    if anonymous is not None:
        values = values.unionByName(anonymous).distinct()
    with progress("[resolve] identifier values"):
        values = values.checkpoint()
        # The verdicts count every value's records (a shuffle of all values): once, not at each use of them.
        usable, guarded = guard_values(values, config)
        usable, guarded = usable.checkpoint(), guarded.checkpoint()
    return IdentityValues(records, values, anonymous, usable, guarded)


@dataclass(frozen=True)
class Scope:
    """The part of the graph an incremental run re-resolves (``cdp_spark.identity.incremental``): ``record_ids``,
    whole components (before the guards) of the last run plus every record new or changed since, closed under
    every link; ``taken``: ``cdp_id`` of the whole previous map, which no new id may take."""

    record_ids: DataFrame
    taken: DataFrame


def resolve(
    spark: SparkSession,
    records: DataFrame,
    config: IdentityConfig,
    previous_map: DataFrame | None = None,
    facts: dict[str, DataFrame] | None = None,
    run_id: str = "adhoc",
    model: FittedModel | None = None,
    compare_with: FittedModel | None = None,
    values: IdentityValues | None = None,
    scope: Scope | None = None,
) -> ResolveResult:
    """Resolve ``records`` (any schema: the columns are named in ``config``) into stable cdp_ids.

    ``model``: score the probabilistic pairs with this fitted model instead of training one (train once, resolve
    many). ``compare_with``: compare the model this run trains with this one (the champion) on the same pairs.
    ``values``: :func:`identity_values` of these records and facts when already computed. ``scope``: resolve only
    these vertices (their links never leave them), with the guards' verdicts of the whole population; ``model``
    is required with a probabilistic config, and the map returned covers the scope only.
    """
    values = values or identity_values(records, config, facts)
    records, usable, guarded = values.records, values.usable, values.guarded
    vertices = values.vertices(config.record_id)
    if scope is not None:
        if config.probabilistic is not None and model is None:
            raise ValueError("an incremental resolve scores with the model of the run it continues: pass model")
        ids = scope.record_ids.select("record_id")
        # A small share of the whole, which blocking, the edges and every guard round read: materialized once,
        # not a semi-join over all records and values at each use.
        records = records.join(
            ids.withColumnRenamed("record_id", config.record_id), config.record_id, "left_semi"
        ).checkpoint()
        usable = usable.join(ids, "record_id", "left_semi").checkpoint()
        vertices = vertices.join(ids, "record_id", "left_semi").checkpoint()
        if previous_map is not None:
            previous_map = previous_map.join(ids, "record_id", "left_semi").checkpoint()
    edges = deterministic_edges(usable).select(*EDGE_COLUMNS)
    vectors, change, trained = None, None, None
    if config.probabilistic is not None:
        what = "u from random pairs, m by EM" if model is None else "given, not trained"
        try:
            with progress(f"[resolve] probabilistic model ({what})"):
                prob_edges, model, trained, vectors, change = probabilistic_edges(records, config, model, compare_with)
            edges = edges.unionByName(prob_edges)
        except NoCandidatePairs as exc:
            log.warning("probabilistic matching skipped: %s", exc)
    with progress("[resolve] edges scored and clustered (connected components, guards)"):
        components, edges, offending, raw = cluster(vertices, edges, usable, config)
    if vectors is not None:
        vectors.unpersist()  # cluster() materialized the edges
    taken = None if scope is None else scope.taken
    identity_map, lineage = assign_cdp_ids(components, previous_map, run_id, taken)
    return ResolveResult(identity_map, raw, edges, guarded, lineage, offending, model, trained, change)
