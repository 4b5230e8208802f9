"""The retention step: purge deleted rows for good, compact and cluster files, and report table sizes.

For every Delta table under the lakehouse root, in this order:

1. ``REORG TABLE ... APPLY (PURGE)`` where deletion vectors are enabled: a DELETE with deletion vectors
   only marks rows as gone, the data file still holds them; purging rewrites those files;
2. ``OPTIMIZE`` (``ZORDER BY`` the key readers filter on: ``cdp_id`` or ``record_id``) when the table
   has more than one file;
3. ``VACUUM`` with the retention period: files no version newer than the retention needs are deleted,
   so erased rows disappear from time travel too (older versions then fail to read).

``ANALYZE TABLE`` needs a catalog table; for path tables the Delta table details (``numFiles``,
``sizeInBytes``) are collected as metrics instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from cdp_spark import tables
from cdp_spark.config import MaintenanceConfig

# Delta collects statistics (what Z-ordering and data skipping use) on the first 32 columns by default.
STATS_COLUMNS = 32

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


def zorder_columns(table: tables.Table, columns: list[str], partition_columns: list[str]) -> list[str]:
    """The Z-order keys of a table: from ZORDER_BY, else cdp_id or record_id; only columns with statistics."""
    wanted = ZORDER_BY.get(table.full_name)
    if wanted is None:
        wanted = next(([c] for c in ("cdp_id", "record_id") if c in columns), [])
    with_stats = set(columns[:STATS_COLUMNS]) - set(partition_columns)
    return [c for c in wanted if c in with_stats]


def maintain_table(spark: SparkSession, root: str, table: tables.Table, config: MaintenanceConfig) -> TableMaintenance:
    """Purge, optimize and vacuum one table; returns its size before and after."""
    path = table.path(root)
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
        columns = spark.read.format("delta").load(path).columns
        keys = zorder_columns(table, columns, list(before.get("partitionColumns") or []))
        if keys:
            delta_table.optimize().executeZOrderBy(*keys)
        else:
            delta_table.optimize().executeCompaction()
        optimized = True
    delta_table.vacuum(float(config.retention_hours))
    after = table_detail(spark, path)
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
