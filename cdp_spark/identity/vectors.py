"""Comparison vectors: the level of every comparison for every pair, and their counts (what EM reads)."""

from __future__ import annotations

import pandas as pd
from pyspark.sql import DataFrame

from cdp_spark.identity.rules import ProbabilisticConfig


def comparison_vectors(pairs: DataFrame, config: ProbabilisticConfig, keep_values: bool = False) -> DataFrame:
    """The level of every comparison for every pair.

    In: ``id_l, id_r, <column>_l, <column>_r`` (and ``blocked_by``, carried along). Out: ``id_l, id_r,
    gamma_<name>...`` (integers: -1 null, 0 else, higher is closer), ``blocked_by`` if given; with
    ``keep_values`` also ``<name>_l, <name>_r``, the compared values.
    """
    helpers = [h for comparison in config.comparisons for h in comparison.helper_columns()]
    if helpers:
        pairs = pairs.select("*", *helpers)
    values = []
    if keep_values:
        for comparison in config.comparisons:
            for side in ("l", "r"):
                values.append(comparison.value(side).cast("string").alias(f"{comparison.name}_{side}"))
    carried = ["blocked_by"] if "blocked_by" in pairs.columns else []
    return pairs.select("id_l", "id_r", *[c.gamma() for c in config.comparisons], *carried, *values)


def vector_counts(vectors: DataFrame, config: ProbabilisticConfig) -> pd.DataFrame:
    """Distinct comparison vectors and how many pairs show each (small: at most the product of level counts).

    In: ``gamma_<name>...`` (and ``blocked_by``). Out (pandas): ``gamma_<name>..., [blocked_by,] count``.
    """
    keys = [c.gamma_column for c in config.comparisons] + (["blocked_by"] if "blocked_by" in vectors.columns else [])
    counts = vectors.groupBy(*keys).count().toPandas()
    return counts.astype({k: "int64" for k in [*keys, "count"]})
