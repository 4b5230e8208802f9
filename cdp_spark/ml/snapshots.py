"""Point-in-time feature snapshots for the models: read from gold.customer_features, computed once when missing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp_spark import tables
from cdp_spark.features import write_snapshots


def stored_as_ofs(spark: SparkSession, root: str) -> set[date]:
    """The as-of dates gold.customer_features holds (a partition column: a handful of values)."""
    if not tables.exists(spark, root, tables.CUSTOMER_FEATURES):
        return set()
    rows = tables.read(spark, root, tables.CUSTOMER_FEATURES).select("as_of").distinct().collect()
    return {row.as_of for row in rows}


def feature_snapshots(
    spark: SparkSession, root: str, as_ofs: Sequence[date], compute: Callable[[Sequence[date]], DataFrame]
) -> tuple[DataFrame, list[date]]:
    """Features of every customer at each of ``as_ofs``; the missing snapshots are computed and written first.

    ``compute(dates)`` returns the snapshots of those dates (``cdp_id``, ``as_of``, features) in one pass; they
    are written in one replaceWhere on their ``as_of`` values (:func:`cdp_spark.features.write_snapshots`), so a
    snapshot is computed once and a rerun rewrites the same rows. Returns the snapshots read back from the table
    (``cdp_id``, ``as_of``, features) and the as-of dates that had to be computed.
    """
    wanted = sorted(set(as_ofs))
    present = stored_as_ofs(spark, root)
    computed = [as_of for as_of in wanted if as_of not in present]
    if computed:
        write_snapshots(compute(computed), root, computed)
    snapshots = tables.read(spark, root, tables.CUSTOMER_FEATURES).where(F.col("as_of").isin(wanted))
    return snapshots, computed
