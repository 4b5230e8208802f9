"""Blocking: the candidate pairs, records that satisfy at least one blocking rule, each pair once.

Pairs carry each record column twice, as ``<column>_l`` and ``<column>_r``, next to ``id_l < id_r``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

from pyspark.errors import AnalysisException, ParseException
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import FractionalType

from cdp_spark.config import ConfigError
from cdp_spark.identity.blocking_rule import BlockingRule, parse_blocking_rule, to_pair_columns
from cdp_spark.identity.rules import ProbabilisticConfig


def record_side(records: DataFrame, id_col: str, columns: list[str], side: str) -> DataFrame:
    """One side of the pairs: ``id_<side>`` and ``<column>_<side>`` for each of ``columns``."""
    return records.select(
        F.col(f"`{id_col}`").alias(f"id_{side}"), *[F.col(f"`{c}`").alias(f"{c}_{side}") for c in columns]
    )


def pair_columns(config: ProbabilisticConfig, rules: Sequence[BlockingRule]) -> list[str]:
    """The record columns a pair carries: those the comparisons and then the rules read, each once."""
    columns = [c for comparison in config.comparisons for c in comparison.source_columns]
    columns += [c for rule in rules for c in rule.columns]
    return list(dict.fromkeys(columns))


def require_columns(records: DataFrame, id_col: str, columns: list[str]) -> None:
    """A ConfigError naming the columns the settings name and the records lack."""
    missing = [c for c in [id_col, *columns] if c not in records.columns]
    if missing:
        raise ConfigError(
            f"records lack column(s) {missing} named by the probabilistic config (id column, comparisons or "
            f"blocking rules); the records have {records.columns}"
        )
    if "id" in columns and id_col != "id":
        raise ConfigError("a record column named 'id' clashes with the pair columns id_l/id_r; rename it")


def sharing_a_block(
    records: DataFrame, id_col: str, columns: list[str], rules: Sequence[BlockingRule], ids: DataFrame
) -> DataFrame | None:
    """The records that can pair with one of ``ids`` (``_id``) under some rule: those records themselves and every
    record whose join keys under a rule equal theirs, found in one pass over ``records``.

    Each record gets, per rule (and its mirror), a 64-bit hash of its keys as the left side of a pair and one as the
    right side; a record is kept when one of its hashes is the opposite side's hash of an involved record. A hash
    collision only keeps a record too many (the rules are applied to the pairs afterwards); a null key never joins,
    so it gives no hash. Keys whose two sides have different types (``l.x = cast(r.y as int)``) are compared after
    Spark's type coercion, which a hash of each side would not see, and a join finds -0.0 equal to 0.0: with such keys
    the answer is None (any record may pair).
    """
    both = records.select(
        F.col(f"`{id_col}`").cast("string").alias("_id"),
        *[F.col(f"`{c}`").alias(f"{c}_{side}") for side in "lr" for c in columns],
    )
    wanted, offered = [], []  # the involved records' hashes; every record's hashes, side for side
    for i, rule in enumerate(rules):
        for j, variant in enumerate(v for v in [rule, rule.mirrored()] if v is not None):
            lefts = [F.expr(to_pair_columns(a)) for a, _ in variant.keys]
            rights = [F.expr(to_pair_columns(b)) for _, b in variant.keys]
            types = [f.dataType for f in both.select(*lefts, *rights).schema.fields]
            if types[: len(lefts)] != types[len(lefts) :] or any(isinstance(t, FractionalType) for t in types):
                return None

            def key(side: str, values: list[Column], tag: str = f"{i}.{j}") -> Column:
                present = reduce(Column.__and__, [v.isNotNull() for v in values])
                return F.when(present, F.xxhash64(F.lit(f"{tag}{side}"), *values))

            # involved on the left pairs with a record whose right keys equal its left ones, and the reverse
            wanted += [key("r", lefts), key("l", rights)]
            offered += [key("r", rights), key("l", lefts)]
    involved = both.join(ids, "_id", "left_semi")
    keys = involved.select(F.explode(F.array(*wanted)).alias("_key")).where("_key IS NOT NULL").distinct()
    sharing = both.select("_id", F.explode(F.array(*offered)).alias("_key")).join(keys, "_key", "left_semi")
    kept = sharing.select("_id").unionByName(ids).distinct()
    return records.join(kept, F.col(f"`{id_col}`").cast("string") == F.col("_id"), "left_semi")


def candidate_pairs(
    records: DataFrame, config: ProbabilisticConfig, id_col: str, involving: DataFrame | None = None
) -> DataFrame:
    """Pairs of records that satisfy at least one blocking rule, each pair once with ``id_l < id_r``.

    In: ``id_col`` and the columns the comparisons and rules name. Out: ``id_l, id_r``,
    ``<column>_l, <column>_r`` for each of those columns, and ``blocked_by`` (bit i set when the pair
    satisfies rule i). ``involving`` (``record_id``): only the pairs with at least one of these records (an
    incremental run's new and changed records against all), each still once. Each rule is an equi-join on its equality
    terms plus a filter for the rest; a pair an earlier rule already produced is filtered out of the
    later ones (cheaper than a distinct over all pairs, which would shuffle them all again).
    """
    parsed = [parse_blocking_rule(text) for text in config.blocking_rules]
    columns = pair_columns(config, parsed)
    require_columns(records, id_col, columns)
    if involving is not None:
        ids = involving.select(F.col("record_id").cast("string").alias("_id")).distinct()
        sharing = sharing_a_block(records, id_col, columns, parsed, ids)
        if sharing is not None:  # a small share of the records, which each rule's two joins read: computed once
            records = sharing.checkpoint()
    left, right = record_side(records, id_col, columns, "l"), record_side(records, id_col, columns, "r")
    if involving is not None:
        left = left.join(ids.select(F.col("_id").alias("id_l"), F.lit(True).alias("_in_l")), "id_l", "left")
        right = right.join(ids.select(F.col("_id").alias("id_r"), F.lit(True).alias("_in_r")), "id_r", "left")
    earlier: list[str] = []
    parts = []
    for rule in parsed:
        for variant in [rule, rule.mirrored()]:
            if variant is None:
                continue
            try:
                keep = F.col("id_l") < F.col("id_r")
                for condition in variant.filters:
                    keep = keep & F.expr(to_pair_columns(condition))
                for condition in earlier:
                    keep = keep & ~F.coalesce(F.expr(condition), F.lit(False))
                if involving is None:
                    parts.append(left.join(right, variant.join_keys(), "inner").where(keep))
                else:  # the left record involved, or else the right one: each pair once
                    involved_l, involved_r = F.col("_in_l").isNotNull(), F.col("_in_r").isNotNull()
                    parts.append(left.where(involved_l).join(right, variant.join_keys(), "inner").where(keep))
                    parts.append(
                        left.where(~involved_l).join(right.where(involved_r), variant.join_keys(), "inner").where(keep)
                    )
            except (AnalysisException, ParseException) as exc:
                raise ConfigError(f"blocking rule {rule.text!r}: {str(exc).splitlines()[0]}") from None
            earlier.append(variant.condition())
    ordered = ["id_l", "id_r", *[f"{c}_l" for c in columns], *[f"{c}_r" for c in columns]]
    # every rule a pair satisfies, not just the first that produced it: training estimates m per rule
    holds = []
    for i, rule in enumerate(parsed):
        variants = [v.condition() for v in [rule, rule.mirrored()] if v is not None]
        condition = F.coalesce(F.expr(" OR ".join(f"({v})" for v in variants)), F.lit(False))
        holds.append(F.when(condition, F.lit(1 << i)).otherwise(F.lit(0)))
    blocked_by = reduce(Column.__add__, holds).alias("blocked_by")
    return reduce(DataFrame.unionByName, parts).select(*[f"`{c}`" for c in ordered], blocked_by)
