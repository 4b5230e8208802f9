"""Names and locations of every Delta table, and the few write helpers every stage shares.

Tables live under one lakehouse root as ``<root>/<layer>/<name>`` (a local folder by default, any
Hadoop-compatible URI on a cluster). No other module spells a table path.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def batch_id(source: str, version: int) -> str:
    """The ``_batch_id`` of a source's bronze rows from ingest batch ``version`` (``crm-000003``): ordered as
    text, the way standardize compares them with its ``ops.silver_log``."""
    return f"{source}-{version:06d}"


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
ADDRESS_CONSENT = Table("gold", "address_consent")
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


# Columns that hold a person's identifiers or personal attributes, in whatever table they appear (one list:
# a column means the same everywhere). Delta collects no statistics on them: the min/max values it keeps
# per file in the transaction log, its checkpoints and checksums would outlive an erasure of the rows.
# ``record_id`` is one: an email_engagement record id embeds the address.
PERSONAL_COLUMNS = frozenset(
    {
        "record_id", "src_record_id", "dst_record_id", "source_key", "record_key",
        "email", "emails", "phone", "phones", "identifier", "value", "value_hash",
        "first_name", "last_name", "address", "address_key", "city", "postcode", "birth_date",
        "loyalty_id", "loyalty_ids", "account_id", "account_ids", "cookie_id", "device_id", "user_id",
        "raw", "row", "provenance", "_raw", "_rescued_data",
    }
)  # fmt: skip
# A bronze table holds a source's own columns, unknown here: statistics on its lineage columns only.
BRONZE_STATS_COLUMNS = ("_ingested_at", "_batch_id", "_source_file")


# The column types Delta collects statistics on (it refuses arrays, maps, booleans and binaries).
_STATS_TYPES = (T.StringType, T.NumericType, T.DateType, T.TimestampType, T.TimestampNTZType)


def stats_columns(table: Table, schema: T.StructType, partition_by: Sequence[str] | None = None) -> list[str]:
    """The columns Delta may collect statistics on: every non-personal, non-partition column of a supported
    type (bronze: the lineage columns)."""
    partitions = table.partition_by if partition_by is None else partition_by
    fields = [f for f in schema.fields if isinstance(f.dataType, _STATS_TYPES) and f.name not in partitions]
    if table.layer == "bronze":
        return [f.name for f in fields if f.name in BRONZE_STATS_COLUMNS]
    return [f.name for f in fields if f.name.lower() not in PERSONAL_COLUMNS]


def delta_properties(table: Table, schema: T.StructType, partition_by: Sequence[str] | None = None) -> dict[str, str]:
    """The properties every table is created with: statistics on :func:`stats_columns` only."""
    stats = stats_columns(table, schema, partition_by)
    if not stats:
        return {"delta.dataSkippingNumIndexedCols": "0"}
    return {"delta.dataSkippingStatsColumns": ",".join(f"`{c}`" for c in stats)}


def _writer(df: DataFrame, table: Table, mode: str):  # noqa: ANN202 - DataFrameWriter
    """A Delta writer; the properties apply when the write creates the table (Delta ignores them after)."""
    writer = df.write.format("delta").mode(mode).options(**delta_properties(table, df.schema))
    if table.partition_by:
        writer = writer.partitionBy(*table.partition_by)
    return writer


def append(
    df: DataFrame, root: str, table: Table, merge_schema: bool = False, options: dict[str, str] | None = None
) -> None:
    """Append rows; ``options`` may carry ``txnAppId``/``txnVersion`` to make the append idempotent."""
    writer = _writer(df, table, "append").options(**(options or {}))
    if merge_schema:
        writer = writer.option("mergeSchema", "true")
    writer.save(table.path(root))


def overwrite(df: DataFrame, root: str, table: Table) -> None:
    """Replace the table's rows and schema. Delta refuses a schema without a column its statistics list
    names: the list is first cut to the columns both schemas have (``cdp-spark maintain`` extends it)."""
    spark = df.sparkSession
    if exists(spark, root, table):
        target = DeltaTable.forPath(spark, table.path(root))
        listed = target.detail().first()["properties"].get("delta.dataSkippingStatsColumns")
        kept = [c for c in stats_columns(table, df.schema) if c in target.toDF().columns]
        if listed and {c.strip("` ") for c in listed.split(",")} - set(kept):
            value = ",".join(f"`{c}`" for c in kept)
            key = "delta.dataSkippingStatsColumns" if kept else "delta.dataSkippingNumIndexedCols"
            path = table.path(root).replace("`", "``")
            spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('{key}' = '{value or 0}')")
            if not kept:
                spark.sql(f"ALTER TABLE delta.`{path}` UNSET TBLPROPERTIES ('delta.dataSkippingStatsColumns')")
    _writer(df, table, "overwrite").option("overwriteSchema", "true").save(table.path(root))


def replace_where(df: DataFrame, root: str, table: Table, condition: str) -> None:
    """Idempotently replace the slice ``condition`` (e.g. one ``as_of``) of a table, creating it if needed."""
    writer = _writer(df, table, "overwrite")
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
