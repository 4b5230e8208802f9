"""Incremental resolve: re-resolve only the part of the graph that new, changed and removed records can reach.

A full resolve compares every record with every other (blocking) and clusters them all. A daily drop touches a
small share of the people, so an incremental run resolves a *scope* and keeps every other ``cdp_id`` as it is. It
needs what the last run left in ``silver.identity_state``: per vertex (record or anonymous record) a hash of what
identity reads of it, and its component before the guards split any (the *raw component*: the guards decide on a
whole raw component, so it is the unit that is re-resolved whole).

A vertex is **dirty** when its hash is new, changed or gone. **Affected** vertices are the dirty ones, those
sharing a usable identifier value with a dirty one, those holding a value whose guard verdict changed (hot now and
not then, or the reverse: the whole population decides it) and the probabilistic partners of a dirty record (its
candidate pairs, blocked against every record, scored by the model the last run scored with). The **scope** is
every vertex of a raw component holding an affected vertex, plus the affected vertices.

Why resolving the scope alone gives the full run's map: a link between a vertex in the scope and one outside it
would need two clean vertices (or a value) it did not link last time with the same model, values and guard
verdicts, and then they were in one raw component and both in the scope; or a dirty end, whose partners and
value-sharers are affected; or a value whose verdict changed, whose holders are affected. So the raw components
of the scope are those a full run finds, the guards split them the same way, and a component outside the scope is
the same set of records as before and keeps its id (``stable_ids``: a previous id goes to the component holding
most of its records). ``tests/test_identity_incremental.py`` checks incremental against full over several days.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cdp_spark.identity.blocking import candidate_pairs, pair_columns
from cdp_spark.identity.blocking_rule import parse_blocking_rule
from cdp_spark.identity.model import FittedModel, accepted_edges
from cdp_spark.identity.resolve import IdentityValues, Scope
from cdp_spark.identity.rules import IdentityConfig
from cdp_spark.identity.vectors import comparison_vectors


def identity_columns(config: IdentityConfig) -> list[str]:
    """The record columns identity reads besides the id: identifiers, comparisons and blocking rules."""
    columns = [rule.column for rule in config.identifiers if rule.column]
    if config.probabilistic is not None:
        rules = [parse_blocking_rule(text) for text in config.probabilistic.blocking_rules]
        columns += pair_columns(config.probabilistic, rules)
    return [c for c in dict.fromkeys(columns) if c != config.record_id]


def vertex_hashes(values: IdentityValues, config: IdentityConfig) -> DataFrame:
    """``record_id, record_hash``: a record's hash of the columns identity reads; an anonymous record's of its
    values (an id both a record and an anonymous record has a row for each)."""
    columns = [F.col(f"`{c}`").alias(c) for c in identity_columns(config)]
    hashes = values.records.select(
        F.col(config.record_id).alias("record_id"), F.xxhash64(F.to_json(F.struct(*columns))).alias("record_hash")
    )
    if values.anonymous is not None:
        anonymous = values.anonymous.groupBy("record_id").agg(
            F.xxhash64(
                F.array_join(F.array_sort(F.collect_list(F.concat_ws("\u0001", "identifier", "value"))), "\u0002")
            ).alias("record_hash")
        )
        hashes = hashes.unionByName(anonymous)
    return hashes


def dirty_vertices(hashes: DataFrame, state: DataFrame) -> DataFrame:
    """``record_id`` of the vertices new, changed or gone since the state was written."""
    now = hashes.select("record_id", "record_hash", F.lit(True).alias("_now"))
    then = state.select("record_id", "record_hash", F.lit(True).alias("_then"))
    changed = now.join(then, ["record_id", "record_hash"], "full_outer")
    return changed.where(F.col("_now").isNull() | F.col("_then").isNull()).select("record_id").distinct()


def verdict_changes(guarded: DataFrame, previous_guarded: DataFrame | None) -> DataFrame:
    """``identifier, value_hash`` of the values whose guard verdict changed: guarded now and not then, the reverse,
    or for another reason (``silver.hot_identifiers`` keeps values as SHA-256)."""
    now = guarded.select("identifier", F.sha2("value", 256).alias("value_hash"), "reason", F.lit(True).alias("_now"))
    if previous_guarded is None:
        return now.select("identifier", "value_hash")
    then = previous_guarded.select("identifier", "value_hash", "reason", F.lit(True).alias("_then"))
    changed = now.join(then, ["identifier", "value_hash", "reason"], "full_outer")
    return changed.where(F.col("_now").isNull() | F.col("_then").isNull()).select("identifier", "value_hash")


def probabilistic_partners(
    values: IdentityValues, config: IdentityConfig, model: FittedModel, dirty: DataFrame
) -> DataFrame:
    """``record_id`` of both ends of every link the model accepts between a dirty record and any record."""
    settings = config.probabilistic
    pairs = candidate_pairs(values.records, settings, config.record_id, involving=dirty)
    accepted = accepted_edges(values.records, settings, config.record_id, model, comparison_vectors(pairs, settings))
    # both ends from one pass: a union of two selects would compute and score the pairs twice
    return accepted.select(F.explode(F.array("src_record_id", "dst_record_id")).alias("record_id"))


def state_rows(hashes: DataFrame, raw_components: DataFrame) -> DataFrame:
    """silver.identity_state's columns but the run id: each vertex's hash and raw component."""
    return hashes.join(raw_components, "record_id").select("record_id", "record_hash", "raw_component")


def scope(
    values: IdentityValues,
    hashes: DataFrame,
    config: IdentityConfig,
    state: DataFrame,
    previous_map: DataFrame,
    previous_guarded: DataFrame | None,
    model: FittedModel | None,
) -> tuple[Scope, DataFrame]:
    """The vertices to re-resolve, and the dirty ones (``record_id``, checkpointed both).

    In: ``hashes`` :func:`vertex_hashes` now; ``state`` ``record_id, record_hash, raw_component``
    (silver.identity_state); ``previous_map`` ``record_id, cdp_id``; ``previous_guarded`` silver.hot_identifiers
    (None: no value was guarded).
    """
    dirty = dirty_vertices(hashes, state).checkpoint()
    usable = values.usable
    dirty_values = usable.join(dirty, "record_id", "left_semi").select("identifier", "value").distinct()
    sharing = usable.join(dirty_values, ["identifier", "value"], "left_semi").select("record_id")
    changes = verdict_changes(values.guarded, previous_guarded)
    holders = (
        values.values.withColumn("value_hash", F.sha2("value", 256))
        .join(changes, ["identifier", "value_hash"], "left_semi")
        .select("record_id")
    )
    affected = dirty.unionByName(sharing).unionByName(holders)
    if config.probabilistic is not None and model is not None:
        affected = affected.unionByName(probabilistic_partners(values, config, model, dirty))
    affected = affected.distinct().checkpoint()
    touched = state.join(affected, "record_id", "left_semi").select("raw_component").distinct()
    members = state.join(touched, "raw_component", "left_semi").select("record_id")
    record_ids = (
        members.unionByName(affected)
        .distinct()
        .join(values.vertices(config.record_id), "record_id", "left_semi")
        .checkpoint()
    )
    return Scope(record_ids, previous_map.select("cdp_id").distinct()), dirty


def merged(previous: DataFrame, replaced: DataFrame, scoped: DataFrame, key: str = "record_id") -> DataFrame:
    """``previous`` rows whose ``key`` is not in ``replaced`` (``record_id``), and the rows ``scoped`` resolved."""
    gone = replaced.select(F.col("record_id").alias(key))
    return previous.join(gone, key, "left_anti").unionByName(scoped)
