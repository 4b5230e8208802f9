"""``silver.quarantine``: rows a stage rejects, kept with why and the raw row, never silently dropped.

Ingest quarantines rows its readers could not parse; standardize quarantines keyless rows and rows failing a
``quarantine`` expectation. Both shape and write them here, so the table has one schema and one writer.
"""

from __future__ import annotations

import threading

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cdp_spark import tables

# Ingest and standardize work on several sources or tables at once (driver threads): one quarantine commit at a
# time, so that two first writes do not race to create the table.
_WRITES = threading.Lock()

# The column Spark's permissive readers put a malformed row's text in.
CORRUPT = "_corrupt_record"


def quarantine_rows(
    rejected: DataFrame, source: str, stage: str, rule: str, reason: Column | str, key: Column | None, run_id: str
) -> DataFrame:
    """Shape rejected rows as ``silver.quarantine`` rows; ``raw`` keeps the whole row (or the corrupt text) as JSON."""
    if CORRUPT in rejected.columns:
        raw = F.col(CORRUPT)
    elif "_raw" in rejected.columns:  # the bronze row, kept as JSON by the silver mapping
        raw = F.col("_raw")
    else:
        raw = F.to_json(F.struct(*[F.col(f"`{c}`") for c in rejected.columns]))
    source_file = F.col("_source_file") if "_source_file" in rejected.columns else F.lit(None).cast("string")
    return rejected.select(
        F.lit(source).alias("source"),
        F.lit(stage).alias("stage"),
        F.lit(rule).alias("rule"),
        (F.lit(reason) if isinstance(reason, str) else reason).alias("reason"),
        (key if key is not None else F.lit(None).cast("string")).alias("record_key"),
        source_file.alias("source_file"),
        raw.alias("raw"),
        F.lit(run_id).alias("run_id"),
        F.current_timestamp().alias("quarantined_at"),
    )


def write_quarantine(rows: DataFrame, root: str, options: dict[str, str]) -> None:
    """Append :func:`quarantine_rows` to ``silver.quarantine``, its one writer; ``options`` carry the caller's
    Delta transaction id (``txnAppId``/``txnVersion``), so a redone batch quarantines nothing twice."""
    with _WRITES:
        tables.append(rows, root, tables.QUARANTINE, options=options)
