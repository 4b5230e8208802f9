"""``gold.segment_membership`` read at an as-of: the history the segments stage keeps (one row per stay,
``segment, cdp_id, entered_at, exited_at, last_as_of``; see :mod:`cdp_spark.segments.membership`), read by the
segment report and by activation (who an export sends).
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def members_at(history: DataFrame, as_of: date) -> DataFrame:
    """Members of each segment at a run as-of, read back from the history: ``segment, cdp_id``."""
    t = F.lit(as_of).cast("date")
    return history.where(
        (F.col("entered_at") <= t)
        & (F.col("last_as_of") >= t)
        & (F.col("exited_at").isNull() | (F.col("exited_at") > t))
    ).select("segment", "cdp_id")
