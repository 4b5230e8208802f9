"""Names and locations of every Delta table, and the few write helpers every stage shares.

Tables live under one lakehouse root as ``<root>/<layer>/<name>`` (a local folder by default, any
Hadoop-compatible URI on a cluster). No other module spells a table path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T


@dataclass(frozen=True)
class Table:
    layer: str
    name: str
    partition_by: tuple[str, ...] = ()

    @property
    def full_name(self) -> str:
        return f"{self.layer}.{self.name}"

    def path(self, root: str) -> str:
        return f"{root.rstrip('/')}/{self.layer}/{self.name}"


LAYERS = ("bronze", "silver", "gold", "ops")


def bronze(source: str) -> Table:
    return Table("bronze", source)


CUSTOMER_RECORDS = Table("silver", "customer_records")
ORDERS = Table("silver", "orders")
EVENTS = Table("silver", "events")
SUPPORT_TICKETS = Table("silver", "support_tickets")
EMAIL_ENGAGEMENT = Table("silver", "email_engagement")
CONSENT = Table("silver", "consent")
QUARANTINE = Table("silver", "quarantine", partition_by=("source",))
IDENTITY_EDGES = Table("silver", "identity_edges")
IDENTITY_MAP = Table("silver", "identity_map")
IDENTITY_LINEAGE = Table("silver", "identity_lineage")
HOT_IDENTIFIERS = Table("silver", "hot_identifiers")

CUSTOMER_PROFILE = Table("gold", "customer_profile")
HOUSEHOLDS = Table("gold", "households")
CUSTOMER_FEATURES = Table("gold", "customer_features", partition_by=("as_of",))
CUSTOMER_SCORES = Table("gold", "customer_scores", partition_by=("as_of",))
SEGMENT_MEMBERSHIP = Table("gold", "segment_membership")
SEGMENT_REPORT = Table("gold", "segment_report", partition_by=("as_of",))
ERASURE_SUPPRESSION = Table("silver", "erasure_suppression")

RUN_METRICS = Table("ops", "run_metrics")
DQ_METRICS = Table("ops", "dq_metrics")
AUDIT_LOG = Table("ops", "audit_log")
EXPORT_STATE = Table("ops", "export_state", partition_by=("destination",))
ERASURE_PLAN = Table("ops", "erasure_plan")
INGEST_LOG = Table("ops", "ingest_log")
SILVER_LOG = Table("ops", "silver_log")

# ops.audit_log: who was exported, erased or suppressed, as counts and ids, never a personal value.
AUDIT_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType(), False),
        T.StructField("action", T.StringType(), False),
        T.StructField("target", T.StringType(), True),
        T.StructField("table", T.StringType(), True),
        T.StructField("rows", T.LongType(), True),
        T.StructField("details", T.StringType(), True),
        T.StructField("recorded_at", T.TimestampType(), False),
    ]
)


def audit_rows(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    """``(run_id, action, target, table, rows, details)`` tuples as ops.audit_log rows, stamped now."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return spark.createDataFrame([(*r, now) for r in rows], AUDIT_SCHEMA)


def exists(spark: SparkSession, root: str, table: Table) -> bool:
    return DeltaTable.isDeltaTable(spark, table.path(root))


def read(spark: SparkSession, root: str, table: Table) -> DataFrame:
    if not exists(spark, root, table):
        raise FileNotFoundError(
            f"Delta table {table.full_name} not found at {table.path(root)}: run the stage that writes it first"
        )
    return spark.read.format("delta").load(table.path(root))


def append(
    df: DataFrame, root: str, table: Table, merge_schema: bool = False, options: dict[str, str] | None = None
) -> None:
    """Append rows; ``options`` may carry ``txnAppId``/``txnVersion`` to make the append idempotent."""
    writer = df.write.format("delta").mode("append").options(**(options or {}))
    if merge_schema:
        writer = writer.option("mergeSchema", "true")
    if table.partition_by:
        writer = writer.partitionBy(*table.partition_by)
    writer.save(table.path(root))


def overwrite(df: DataFrame, root: str, table: Table) -> None:
    writer = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
    if table.partition_by:
        writer = writer.partitionBy(*table.partition_by)
    writer.save(table.path(root))


def replace_where(df: DataFrame, root: str, table: Table, condition: str) -> None:
    """Idempotently replace the slice ``condition`` (e.g. one ``as_of``) of a table, creating it if needed."""
    writer = df.write.format("delta").mode("overwrite")
    if table.partition_by:
        writer = writer.partitionBy(*table.partition_by)
    spark = df.sparkSession
    if exists(spark, root, table):
        writer = writer.option("replaceWhere", condition)
    writer.save(table.path(root))


def row_hash(columns: list[str]) -> F.Column:
    """A stable hash of the named columns, used to detect changed rows before a MERGE."""
    return F.sha2(F.to_json(F.struct(*[F.col(c) for c in sorted(columns)])), 256)


def upsert(
    source: DataFrame,
    root: str,
    table: Table,
    keys: list[str],
    order_by: str | None = None,
) -> int:
    """MERGE ``source`` into ``table`` on ``keys``; return the number of rows inserted or changed.

    A true no-op on rerun: the source is first reduced to rows that are new or differ from the
    target (anti-join on key + row hash) and the MERGE is skipped when none are left, because a
    Delta MERGE that changes nothing still commits a version. With ``order_by`` (e.g. ``updated_at``)
    a target row is only replaced by a source row that is not older.
    """
    spark = source.sparkSession
    value_columns = [c for c in source.columns if c not in keys]
    if not exists(spark, root, table):
        overwrite(source, root, table)
        return spark.read.format("delta").load(table.path(root)).count()
    target = spark.read.format("delta").load(table.path(root))
    hashed_source = source.withColumn("_row_hash", row_hash(value_columns))
    hashed_target = target.select(*keys, row_hash(value_columns).alias("_row_hash"))
    changed = hashed_source.join(hashed_target, on=[*keys, "_row_hash"], how="left_anti").drop("_row_hash")
    # Checkpointed, not cached: Delta materializes a MERGE source that is not a plain table scan, and for a
    # cached plan it computes the plan again (Python UDFs and all); a checkpoint is copied instead.
    changed = changed.checkpoint()
    n_changed = changed.count()
    if n_changed == 0:
        return 0
    condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    update_condition = f"s.`{order_by}` >= t.`{order_by}`" if order_by else None
    (
        DeltaTable.forPath(spark, table.path(root))
        .alias("t")
        .merge(changed.alias("s"), condition)
        .whenMatchedUpdateAll(condition=update_condition)
        .whenNotMatchedInsertAll()
        .execute()
    )
    return n_changed
