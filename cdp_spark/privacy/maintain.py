"""The retention step: purge deleted rows for good, compact and cluster files, and report table sizes.

For every Delta table under the lakehouse root, in this order:

1. ``REORG TABLE ... APPLY (PURGE)`` where deletion vectors are enabled: a DELETE with deletion vectors
   only marks rows as gone, the data file still holds them; purging rewrites those files;
2. ``OPTIMIZE`` (``ZORDER BY`` the key readers filter on: ``cdp_id`` or ``record_id``) when the table
   has more than one file;
3. ``VACUUM`` with the retention period: files no version newer than the retention needs are deleted,
   so erased rows disappear from time travel too (older versions then fail to read);
4. the transaction log is checkpointed and its entries older than ``log_retention_hours`` removed: they
   carry commit info and per-file statistics of rows erased since.

Before that, the table's properties are brought to what :func:`cdp_spark.tables.delta_properties` and the
config say: statistics on non-personal columns only, the log retention. Spark checkpoint folders other
runs left behind (whole rows of a crashed run) go after ``checkpoint_retention_hours``
(:func:`clean_checkpoints`).

``ANALYZE TABLE`` needs a catalog table; for path tables the Delta table details (``numFiles``,
``sizeInBytes``) are collected as metrics instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from cdp_spark import tables
from cdp_spark.config import MaintenanceConfig
from cdp_spark.lakefiles import LakeFiles

# The keys readers filter by, per table; tables not listed use cdp_id, else record_id, if they have one.
ZORDER_BY: dict[str, list[str]] = {
    "silver.customer_records": ["record_id"],
    "silver.identity_map": ["record_id"],
    "silver.orders": ["record_id"],
    "silver.events": ["record_id"],
    "silver.support_tickets": ["record_id"],
    "silver.email_engagement": ["record_id"],
    "silver.identity_edges": ["src_record_id"],
    "gold.customer_profile": ["cdp_id"],
    "gold.households": ["cdp_id"],
    "gold.customer_features": ["cdp_id"],
    "gold.customer_scores": ["cdp_id"],
    "gold.segment_membership": ["cdp_id"],
    "ops.export_state": ["cdp_id"],
}


@dataclass(frozen=True)
class TableMaintenance:
    table: str
    files_before: int
    bytes_before: int
    files_after: int
    bytes_after: int
    purged: bool
    optimized: bool
    zorder_by: tuple[str, ...]


def _quoted(path: str) -> str:
    return "delta.`" + path.replace("`", "``") + "`"


def table_detail(spark: SparkSession, path: str) -> dict:
    """``DESCRIBE DETAIL`` of a path table: numFiles, sizeInBytes, properties, partitionColumns ..."""
    return spark.sql(f"DESCRIBE DETAIL {_quoted(path)}").first().asDict()


def zorder_columns(table: tables.Table, schema: T.StructType, partition_columns: list[str]) -> list[str]:
    """The Z-order keys of a table: from ZORDER_BY, else cdp_id or record_id; only columns with statistics
    (personal ones have none: :func:`cdp_spark.tables.stats_columns`)."""
    wanted = ZORDER_BY.get(table.full_name)
    if wanted is None:
        wanted = next(([c] for c in ("cdp_id", "record_id") if c in schema.fieldNames()), [])
    with_stats = set(tables.stats_columns(table, schema, partition_columns))
    return [c for c in wanted if c in with_stats]


def wanted_properties(
    table: tables.Table, schema: T.StructType, partition_columns: list[str], config: MaintenanceConfig
) -> dict[str, str]:
    """Statistics on non-personal columns; the log kept ``log_retention_hours`` (Delta wants at least the
    VACUUM retention)."""
    log_hours = max(config.log_retention_hours, config.retention_hours)
    return {
        **tables.delta_properties(table, schema, partition_columns),
        "delta.deletedFileRetentionDuration": f"interval {config.retention_hours} hours",
        "delta.logRetentionDuration": f"interval {log_hours} hours",
        "delta.checkpointRetentionDuration": f"interval {log_hours} hours",
    }


def sync_properties(spark: SparkSession, path: str, wanted: dict[str, str], current: dict[str, str]) -> bool:
    """Set the properties that differ (one commit); returns whether any did."""
    changed = {k: v for k, v in wanted.items() if str(current.get(k)) != v}
    stale = [k for k in ("delta.dataSkippingStatsColumns", "delta.dataSkippingNumIndexedCols") if k in current]
    stale = [k for k in stale if k not in wanted]
    if stale:
        spark.sql(f"ALTER TABLE {_quoted(path)} UNSET TBLPROPERTIES ({', '.join(repr(k) for k in stale)})")
    if changed:
        pairs = ", ".join(f"{k!r} = {v!r}" for k, v in sorted(changed.items()))
        spark.sql(f"ALTER TABLE {_quoted(path)} SET TBLPROPERTIES ({pairs})")
    return bool(changed or stale)


def clean_log(spark: SparkSession, path: str) -> None:
    """Checkpoint the transaction log; Delta then removes the entries (with their checksums and older
    checkpoints) older than the log retention, whole days only."""
    jvm = spark.sparkContext._jvm
    jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path).checkpoint()


def maintain_table(spark: SparkSession, root: str, table: tables.Table, config: MaintenanceConfig) -> TableMaintenance:
    """Purge, optimize and vacuum one table; returns its size before and after."""
    path = table.path(root)
    schema = spark.read.format("delta").load(path).schema
    before = table_detail(spark, path)
    partitions = list(before.get("partitionColumns") or [])
    if sync_properties(spark, path, wanted_properties(table, schema, partitions, config), before["properties"] or {}):
        before = table_detail(spark, path)
    properties = before.get("properties") or {}
    purged = False
    if config.purge_deletion_vectors and str(properties.get("delta.enableDeletionVectors", "false")).lower() == "true":
        spark.sql(f"REORG TABLE {_quoted(path)} APPLY (PURGE)")
        purged = True
    delta_table = DeltaTable.forPath(spark, path)
    keys: list[str] = []
    optimized = False
    if config.optimize and before["numFiles"] > 1:
        keys = zorder_columns(table, schema, partitions)
        if keys:
            delta_table.optimize().executeZOrderBy(*keys)
        else:
            delta_table.optimize().executeCompaction()
        optimized = True
    delta_table.vacuum(float(config.retention_hours))
    clean_log(spark, path)
    # VACUUM removes only files no current row is in: the current size changes only by a purge or an OPTIMIZE.
    after = table_detail(spark, path) if purged or optimized else before
    return TableMaintenance(
        table.full_name,
        int(before["numFiles"]),
        int(before["sizeInBytes"]),
        int(after["numFiles"]),
        int(after["sizeInBytes"]),
        purged,
        optimized,
        tuple(keys),
    )


def clean_checkpoints(spark: SparkSession, folder: str, hours: int) -> list[str]:
    """Delete the Spark checkpoint folders under ``folder`` (one per application) untouched for ``hours``.

    They hold whole rows of the DataFrames a run checkpointed; Spark deletes them when a run ends well,
    a crashed run leaves them. This run's own folder is kept. Returns the folders deleted.
    """
    files = LakeFiles(spark)
    own = (spark.sparkContext.getCheckpointDir() or "").rstrip("/").rsplit("/", 1)[-1]
    cutoff = time.time() - hours * 3600
    deleted = []
    for name in files.names(folder):
        path = f"{folder.rstrip('/')}/{name}"
        if name != own and files.last_modified(path) < cutoff:
            files.delete(path)
            deleted.append(path)
    return deleted
