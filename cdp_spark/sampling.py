"""Seeded samples that do not depend on how the data is partitioned.

``DataFrame.sample`` and ``sampleBy`` draw one random stream per partition, so the rows they keep change with
the partition count, the cluster size and the order shuffled rows arrive in: a retrain or a re-estimation on
unchanged data sees different rows. Here each row's draw is a seeded hash of its key, so the same rows are
kept on every run, on any cluster.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

_BUCKETS = 1 << 40


def uniform_draw(keys: Sequence[str], seed: int) -> Column:
    """A value in [0, 1), uniform over distinct keys, fixed by the ``keys`` columns' values and ``seed``."""
    if not keys:
        raise ValueError("uniform_draw needs at least one key column")
    hashed = F.xxhash64(*[F.col(f"`{k}`") for k in keys], F.lit(seed))
    return F.pmod(hashed, F.lit(_BUCKETS)) / F.lit(float(_BUCKETS))


def keyed_sample(df: DataFrame, fraction: float | Column, seed: int, keys: Sequence[str] | None = None) -> DataFrame:
    """Rows kept with probability ``fraction`` (a number, or a per-row column such as a per-class rate).

    ``keys`` (default: every column) should identify a row; rows with equal keys are kept or dropped together.
    """
    if isinstance(fraction, (int, float)) and not 0.0 <= fraction <= 1.0:
        raise ValueError(f"sample fraction must be within [0, 1], got {fraction}")
    rate = fraction if isinstance(fraction, Column) else F.lit(float(fraction))
    return df.where(uniform_draw(list(keys or df.columns), seed) < rate)
