"""The table catalog: every Delta table's schema, keys, owning stage, personal columns and properties, declared
once; and the few read and write helpers every stage shares.

Tables live under one lakehouse root as ``<root>/<layer>/<name>`` (a local folder by default, any
Hadoop-compatible URI on a cluster). No other module spells a table path or declares a table's schema: a stage
creates, reads and writes a table through its entry here (``tables.ORDERS.schema``, ``tables.read(spark, root,
tables.ORDERS)``). docs/tables.md is rendered from :data:`CATALOG` (``python -m cdp_spark.tables >
docs/tables.md``; ``tests/test_tables.py`` fails when the two differ).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import reduce

import pyarrow as pa
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

STRING, LONG, INT, DOUBLE = T.StringType(), T.LongType(), T.IntegerType(), T.DoubleType()
BOOLEAN, DATE, TIMESTAMP = T.BooleanType(), T.DateType(), T.TimestampType()
STRINGS = T.ArrayType(STRING)

# The stages that write tables (cdp_spark.pipeline.STAGES), and the owner of the tables every stage writes.
OWNERS = ("ingest", "standardize", "resolve", "profiles", "train", "score", "segment", "activate", "erase")
EVERY_STAGE = "every stage"


def schema(*columns: tuple) -> T.StructType:
    """A table schema from ``(name, type)`` or ``(name, type, nullable)`` columns (nullable unless said)."""
    return T.StructType([T.StructField(name, dtype, *rest) for name, dtype, *rest in columns])


@dataclass(frozen=True)
class Table:
    """One Delta table's contract. A table is identified by ``layer`` and ``name`` alone (two entries with the
    same ones are the same table, e.g. a table found on disk and its catalog entry).

    ``schema`` holds the columns every lakehouse has, in order; ``extra_columns`` says where the others come
    from when configuration adds some. ``keys``: what identifies a row (empty for a log). ``owner``: the one
    stage that writes the table. ``personal_columns``: columns holding a person's identifiers or personal
    attributes; Delta collects no statistics on them (:func:`stats_columns`). ``statistics``: when set, the only
    columns statistics are collected on (bronze: its lineage columns). ``erased``: an erasure deletes a person's
    rows from the table (its own bookkeeping and the run logs without personal values are kept).
    """

    layer: str
    name: str
    schema: T.StructType = field(default_factory=T.StructType, compare=False)
    keys: tuple[str, ...] = field(default=(), compare=False)
    owner: str = field(default="", compare=False)
    personal_columns: frozenset[str] = field(default=frozenset(), compare=False)
    partition_by: tuple[str, ...] = field(default=(), compare=False)
    description: str = field(default="", compare=False)
    extra_columns: str | None = field(default=None, compare=False)
    statistics: tuple[str, ...] | None = field(default=None, compare=False)
    erased: bool = field(default=True, compare=False)

    @property
    def full_name(self) -> str:
        return f"{self.layer}.{self.name}"

    @property
    def columns(self) -> list[str]:
        return self.schema.fieldNames()

    def path(self, root: str) -> str:
        return f"{root.rstrip('/')}/{self.layer}/{self.name}"

    def is_personal(self, column: str) -> bool:
        """One of the entry's personal columns; a column it does not declare (configuration adds some) is
        personal when some table's entry says a column of that name is."""
        name = column.lower()
        if name in {c.lower() for c in self.columns}:
            return name in {c.lower() for c in self.personal_columns}
        return name in PERSONAL_NAMES


LAYERS = ("bronze", "silver", "gold", "ops")

# Lineage columns ingest adds to every bronze row; the only ones Delta collects statistics on there.
BRONZE_LINEAGE = schema(("_ingested_at", TIMESTAMP), ("_source_file", STRING), ("_batch_id", STRING))
BRONZE_STATS_COLUMNS = tuple(BRONZE_LINEAGE.fieldNames())


def bronze(source: str) -> Table:
    """``bronze.<source>``: the catalog entry of one source's bronze table (one per source in conf/sources.yaml)."""
    return Table(
        "bronze",
        source,
        BRONZE_LINEAGE,
        owner="ingest",
        personal_columns=frozenset({"_rescued_data"}),
        description=(
            "Rows as received (strings mostly), plus lineage. Append-only, exactly once per file. The source's "
            "own columns are personal: statistics are collected on the lineage columns only. Standardize deletes "
            "the rows of an erased person that arrive again (suppression)."
        ),
        extra_columns="the source's columns as received (conf/sources.yaml), and `_rescued_data`",
        statistics=BRONZE_STATS_COLUMNS,
    )


def batch_id(source: str, version: int) -> str:
    """The ``_batch_id`` of a source's bronze rows from ingest batch ``version`` (``crm-000003``): ordered as
    text, the way standardize compares them with its ``ops.silver_log``."""
    return f"{source}-{version:06d}"


# One silver row per source record; record_id = <source>:<source_key>.
CUSTOMER_RECORDS = Table(
    "silver",
    "customer_records",
    schema(
        ("record_id", STRING),
        ("source", STRING),
        ("source_key", STRING),
        ("first_name", STRING),
        ("last_name", STRING),
        ("email", STRING),
        ("phone", STRING),
        ("address", STRING),
        ("city", STRING),
        ("postcode", STRING),
        ("country", STRING),
        ("birth_date", DATE),
        ("loyalty_id", STRING),
        ("account_id", STRING),
        ("updated_at", TIMESTAMP),
    ),
    keys=("record_id",),
    owner="standardize",
    personal_columns=frozenset(
        {"record_id", "source_key", "first_name", "last_name", "email", "phone", "address", "city", "postcode"}
        | {"birth_date", "loyalty_id", "account_id"}
    ),
    description=(
        "One row per source record: `record_id` = `<source>:<source_key>`; standardized identity attributes "
        "(emails lowercase with provider rules applied, phones E.164, `country` ISO alpha-2). Upserted with "
        "MERGE; reruns change nothing."
    ),
)
ORDERS = Table(
    "silver",
    "orders",
    schema(
        ("order_id", STRING),
        ("channel", STRING),
        ("record_id", STRING),
        ("account_id", STRING),
        ("loyalty_id", STRING),
        ("store_id", STRING),
        ("order_ts", TIMESTAMP),
        ("amount", DOUBLE),
        ("currency", STRING),
        ("items", INT),
        ("updated_at", TIMESTAMP),
    ),
    keys=("order_id",),
    owner="standardize",
    personal_columns=frozenset({"record_id", "account_id", "loyalty_id"}),
    description=(
        "Order lines: `channel` `online`/`store`; `record_id` `orders:<account_id>` online, `pos:<loyalty_id>` "
        "in store, null for an anonymous store sale."
    ),
)
EVENTS = Table(
    "silver",
    "events",
    schema(
        ("event_id", STRING),
        ("record_id", STRING),
        ("event_ts", TIMESTAMP),
        ("event_type", STRING),
        ("platform", STRING),
        ("cookie_id", STRING),
        ("device_id", STRING),
        ("account_id", STRING),
        ("email", STRING),
        ("utm_campaign", STRING),
    ),
    keys=("event_id",),
    owner="standardize",
    personal_columns=frozenset({"record_id", "cookie_id", "device_id", "account_id", "email"}),
    description=(
        "Web and app events: `record_id` `cookie:<cookie_id>` (an anonymous identity record); `event_type` "
        "`page_view`, `add_to_cart`, `login`, `app_open`, ...; `platform` `web`/`app`."
    ),
)
SUPPORT_TICKETS = Table(
    "silver",
    "support_tickets",
    schema(
        ("ticket_id", STRING),
        ("record_id", STRING),
        ("created_at", TIMESTAMP),
        ("topic", STRING),
        ("satisfaction", INT),
    ),
    keys=("ticket_id",),
    owner="standardize",
    personal_columns=frozenset({"record_id"}),
    description="Support tickets: `record_id` `support:<ticket_id>`; `satisfaction` 1..5.",
)
EMAIL_ENGAGEMENT = Table(
    "silver",
    "email_engagement",
    schema(
        ("message_id", STRING),
        ("record_id", STRING),
        ("email", STRING),
        ("event_type", STRING),
        ("event_ts", TIMESTAMP),
        ("campaign_id", STRING),
    ),
    keys=("message_id",),
    owner="standardize",
    personal_columns=frozenset({"record_id", "email"}),
    description=(
        "Email sends, opens, clicks and unsubscribes (`event_type`); `record_id` `email_engagement:<email>` "
        "(so it embeds the address)."
    ),
)
CONSENT = Table(
    "silver",
    "consent",
    schema(
        ("identifier_type", STRING),
        ("identifier", STRING),
        ("channel", STRING),
        ("granted", BOOLEAN),
        ("recorded_at", TIMESTAMP),
    ),
    keys=("identifier_type", "identifier", "channel", "recorded_at"),
    owner="standardize",
    personal_columns=frozenset({"identifier"}),
    description=(
        "Consent statements per address and channel: `identifier_type` `email`/`phone`, `identifier` "
        "standardized, `channel` `email`/`sms`/`ads`."
    ),
)
QUARANTINE = Table(
    "silver",
    "quarantine",
    schema(
        ("source", STRING, False),
        ("stage", STRING, False),
        ("rule", STRING, False),
        ("reason", STRING, False),
        ("record_key", STRING),
        ("source_file", STRING),
        ("raw", STRING),
        ("run_id", STRING, False),
        ("quarantined_at", TIMESTAMP, False),
    ),
    owner="ingest, standardize",
    personal_columns=frozenset({"record_key", "raw"}),
    partition_by=("source",),
    description=(
        "Rejected rows, the rule they broke, the run that rejected them, the raw row. The one table two stages "
        "write: ingest (rows its readers could not parse) and standardize (keyless rows, failed `quarantine` "
        "expectations), both through `cdp_spark.quarantine`."
    ),
)
IDENTITY_EDGES = Table(
    "silver",
    "identity_edges",
    schema(
        ("src_record_id", STRING),
        ("dst_record_id", STRING),
        ("rule", STRING),
        ("score", DOUBLE),
        ("identifier", STRING),
        ("status", STRING),
        ("run_id", STRING),
    ),
    owner="resolve",
    personal_columns=frozenset({"src_record_id", "dst_record_id", "identifier"}),
    description=(
        "Links between records: the deterministic rule or probabilistic comparison (`rule`), `score`, "
        "`status` (`accepted` or why refused)."
    ),
)
IDENTITY_MAP = Table(
    "silver",
    "identity_map",
    schema(("record_id", STRING), ("cdp_id", STRING), ("component_size", LONG)),
    keys=("record_id",),
    owner="resolve",
    personal_columns=frozenset({"record_id"}),
    description=(
        "`record_id` -> stable `cdp_id`. Holds every record of `customer_records` and the anonymous records "
        "(`cookie:<id>`) seen in facts: `fact JOIN identity_map USING (record_id)` gives a fact's `cdp_id`."
    ),
)
IDENTITY_LINEAGE = Table(
    "silver",
    "identity_lineage",
    schema(
        ("cdp_id", STRING),
        ("event", STRING),
        ("previous_cdp_ids", STRINGS),
        ("records", LONG),
        ("run_id", STRING),
        ("recorded_at", TIMESTAMP),
    ),
    owner="resolve",
    description="How cdp_ids came and went: `event` `created`/`merged`/`split`/`retired`, with the ids before.",
)
IDENTITY_CHANGES = Table(
    "silver",
    "identity_changes",
    schema(
        ("record_id", STRING),
        ("previous_cdp_id", STRING),
        ("cdp_id", STRING),
        ("change", STRING),
        ("run_id", STRING),
        ("recorded_at", TIMESTAMP),
    ),
    owner="resolve",
    personal_columns=frozenset({"record_id"}),
    description=(
        "Every record whose `cdp_id` a resolve run changed: `change` `added` (no `previous_cdp_id`), `moved` or "
        "`removed` (no `cdp_id`). The `cdp_id`s a run touched are its rows' `previous_cdp_id` and `cdp_id`: what "
        "a stage downstream of the map has to update."
    ),
)
IDENTITY_STATE = Table(
    "silver",
    "identity_state",
    schema(("record_id", STRING), ("record_hash", LONG), ("raw_component", LONG), ("run_id", STRING)),
    keys=("record_id",),
    owner="resolve",
    personal_columns=frozenset({"record_id", "record_hash"}),
    description=(
        "What an incremental resolve starts from (`cdp_spark.identity.incremental`): per vertex (record or "
        "anonymous record) a 64-bit hash of the columns identity reads, and a 64-bit hash naming its component "
        "before the guards split any (`raw_component`)."
    ),
)
HOT_IDENTIFIERS = Table(
    "silver",
    "hot_identifiers",
    schema(("identifier", STRING), ("value_hash", STRING), ("records", LONG), ("reason", STRING), ("run_id", STRING)),
    owner="resolve",
    personal_columns=frozenset({"identifier", "value_hash"}),
    description=(
        "Identifier values too common to link on (`reason` `blocked`/`hot`), as hashes. Kept by erasure: a value "
        "many records share (a family phone, a junk email) guards everyone who carries it, and names nobody."
    ),
    erased=False,
)
ERASURE_SUPPRESSION = Table(
    "silver",
    "erasure_suppression",
    schema(("kind", STRING), ("value_hash", STRING), ("cdp_id", STRING), ("key_id", STRING)),
    owner="erase",
    personal_columns=frozenset({"value_hash"}),
    description=(
        "Keyed hashes of erased people's identifiers: standardize and activate drop rows that carry one, so an "
        "erased person never comes back."
    ),
    erased=False,
)

CUSTOMER_PROFILE = Table(
    "gold",
    "customer_profile",
    schema(
        ("cdp_id", STRING),
        ("first_name", STRING),
        ("last_name", STRING),
        ("email", STRING),
        ("emails", STRINGS),
        ("phone", STRING),
        ("phones", STRINGS),
        ("address", STRING),
        ("city", STRING),
        ("postcode", STRING),
        ("country", STRING),
        ("birth_date", DATE),
        ("loyalty_ids", STRINGS),
        ("account_ids", STRINGS),
        ("consent_email", BOOLEAN),
        ("consent_sms", BOOLEAN),
        ("consent_ads", BOOLEAN),
        ("first_seen", TIMESTAMP),
        ("last_seen", TIMESTAMP),
        ("sources", STRINGS),
        ("record_count", LONG),
        (
            "provenance",
            T.MapType(STRING, schema(("source", STRING), ("record_id", STRING), ("rule", STRING))),
        ),
    ),
    keys=("cdp_id",),
    owner="profiles",
    personal_columns=frozenset(
        {"first_name", "last_name", "email", "emails", "phone", "phones", "address", "city", "postcode"}
        | {"birth_date", "loyalty_ids", "account_ids", "provenance"}
    ),
    description=(
        "One row per `cdp_id`: golden attributes (`email`, `phone` primary), `consent_*` (some address may be "
        "used for the channel; null = never stated) and `provenance` (which source and record won, by which "
        "rule)."
    ),
    extra_columns="further conf/profiles.yaml attributes, before `consent_email`",
)
HOUSEHOLDS = Table(
    "gold",
    "households",
    schema(("household_id", STRING), ("cdp_id", STRING), ("address_key", STRING), ("household_size", LONG)),
    keys=("cdp_id",),
    owner="profiles",
    personal_columns=frozenset({"address_key"}),
    description="People at the same address who share a surname (conf/profiles.yaml `households`).",
)
ADDRESS_CONSENT = Table(
    "gold",
    "address_consent",
    schema(
        ("cdp_id", STRING),
        ("identifier_type", STRING),
        ("identifier", STRING),
        ("channel", STRING),
        ("granted", BOOLEAN),
        ("recorded_at", TIMESTAMP),
        ("shared", BOOLEAN),
    ),
    keys=("cdp_id", "identifier_type", "identifier", "channel"),
    owner="profiles",
    personal_columns=frozenset({"identifier"}),
    description=(
        "`granted`: the latest statement about the address (silver.consent, and `unsubscribe` events as email "
        "withdrawals; false for a shared address when the person withdrew on their own); `shared`: several "
        "people carry the address."
    ),
)
CUSTOMER_FEATURES = Table(
    "gold",
    "customer_features",
    schema(
        ("cdp_id", STRING),
        ("as_of", DATE),
        ("recency_days", INT),
        ("frequency", LONG),
        ("monetary_value", DOUBLE),
        ("total_spend", DOUBLE),
        ("tenure_days", INT),
        ("orders_30d", LONG),
        ("orders_90d", LONG),
        ("orders_365d", LONG),
        ("spend_30d", DOUBLE),
        ("spend_90d", DOUBLE),
        ("spend_365d", DOUBLE),
        ("aov_90d", DOUBLE),
        ("aov_365d", DOUBLE),
        ("channel_online", BOOLEAN),
        ("channel_store", BOOLEAN),
        ("online_orders_365d", LONG),
        ("store_orders_365d", LONG),
        ("web_events_30d", LONG),
        ("app_events_30d", LONG),
        ("logins_30d", LONG),
        ("email_opens_90d", LONG),
        ("email_clicks_90d", LONG),
        ("email_unsubscribed", BOOLEAN),
        ("tickets_365d", LONG),
        ("avg_satisfaction_365d", DOUBLE),
        ("days_since_last_order", INT),
        ("days_since_last_web", INT),
        ("days_since_last_email_open", INT),
        ("days_since_last_ticket", INT),
        ("bgnbd_frequency", LONG),
        ("bgnbd_recency_days", INT),
        ("bgnbd_t_days", INT),
        ("bgnbd_monetary", DOUBLE),
    ),
    keys=("cdp_id", "as_of"),
    owner="profiles",
    partition_by=("as_of",),
    description=(
        "Point-in-time feature snapshots: what was known about each person at the end of the `as_of` day. What "
        "each feature means and its window: `FEATURES` in cdp_spark/features.py (docs/features.md), one per "
        "column after `as_of`, in order. Written through `cdp_spark.features.write_snapshots` only: profiles "
        "writes the latest snapshot, train and score the as-ofs they miss."
    ),
)
CUSTOMER_SCORES = Table(
    "gold",
    "customer_scores",
    schema(
        ("cdp_id", STRING),
        ("as_of", DATE),
        ("churn_probability", DOUBLE),
        ("p_alive", DOUBLE),
        ("expected_purchases", DOUBLE),
        ("clv", DOUBLE),
        ("clv_decile", INT),
        ("churn_model", STRING),
        ("churn_model_version", INT),
        ("clv_model", STRING),
        ("clv_model_version", INT),
    ),
    keys=("cdp_id", "as_of"),
    owner="score",
    partition_by=("as_of",),
    description="Churn probability, P(alive), expected purchases and CLV per customer, with the model versions.",
)
SEGMENT_MEMBERSHIP = Table(
    "gold",
    "segment_membership",
    schema(("segment", STRING), ("cdp_id", STRING), ("entered_at", DATE), ("exited_at", DATE), ("last_as_of", DATE)),
    keys=("segment", "cdp_id", "entered_at"),
    owner="segment",
    description="Segment membership with history: `exited_at` null while a member.",
)
SEGMENT_REPORT = Table(
    "gold",
    "segment_report",
    schema(
        ("as_of", DATE),
        ("segment", STRING),
        ("members", LONG),
        ("mean_clv", DOUBLE),
        ("mean_churn_probability", DOUBLE),
        ("entries", LONG),
        ("exits", LONG),
        ("overlap", T.MapType(STRING, LONG)),
    ),
    keys=("as_of", "segment"),
    owner="segment",
    partition_by=("as_of",),
    description=(
        "Per segment and as-of: size, mean scores, entries, exits and overlap with the other segments. Counts "
        "only: no row is a person's, so erasure has nothing to delete here."
    ),
    erased=False,
)

RUN_METRICS = Table(
    "ops",
    "run_metrics",
    schema(
        ("run_id", STRING, False),
        ("stage", STRING, False),
        ("step", STRING, False),
        ("metric", STRING, False),
        ("value", DOUBLE),
        ("recorded_at", TIMESTAMP, False),
    ),
    owner=EVERY_STAGE,
    description="Long format; step durations are the metric `seconds`. Every stage records through `cdp_spark.ops`.",
    # Not `value`: a shared list of personal column names once named it; kept, so lakehouses keep their properties.
    statistics=("run_id", "stage", "step", "metric", "recorded_at"),
    erased=False,
)
DQ_METRICS = Table(
    "ops",
    "dq_metrics",
    schema(
        ("run_id", STRING, False),
        ("table", STRING, False),
        ("source", STRING, False),
        ("expectation", STRING, False),
        ("action", STRING, False),
        ("passed", LONG, False),
        ("failed", LONG, False),
        ("recorded_at", TIMESTAMP, False),
    ),
    owner="standardize",
    description="Rows passing and failing each expectation (conf/expectations.yaml), per run, table and source.",
    erased=False,
)
AUDIT_LOG = Table(
    "ops",
    "audit_log",
    schema(
        ("run_id", STRING, False),
        ("action", STRING, False),
        ("target", STRING),
        ("table", STRING),
        ("rows", LONG),
        ("details", STRING),
        ("recorded_at", TIMESTAMP, False),
    ),
    owner=EVERY_STAGE,
    description=(
        "Who was exported, erased or suppressed, as counts and ids, never a personal value. Written through "
        "`cdp_spark.tables.audit` by the stages that export, erase or suppress."
    ),
    erased=False,
)
EXPORT_STATE = Table(
    "ops",
    "export_state",
    schema(
        ("destination", STRING, False),
        ("export_id", STRING, False),
        ("as_of", DATE, False),
        ("cdp_id", STRING),  # null on the marker row of a committed export
        ("row", STRING),  # the exported columns as JSON
        ("exported_at", TIMESTAMP, False),
    ),
    owner="activate",
    personal_columns=frozenset({"row"}),
    partition_by=("destination",),
    description=(
        "What each destination was sent, per export (`row`: the exported columns as JSON; a marker row with null "
        "`cdp_id` commits an export). Erasure turns an erased person's rows into tombstones."
    ),
)
ERASURE_PLAN = Table(
    "ops",
    "erasure_plan",
    schema(
        ("request_id", STRING, False),
        ("requested_by", STRING),
        ("kind", STRING, False),
        ("value_hash", STRING, False),
        ("cdp_id", STRING),
        ("run_id", STRING, False),
        ("planned_at", TIMESTAMP, False),
        ("completed_at", TIMESTAMP),
        ("key_id", STRING),
    ),
    keys=("request_id", "kind", "value_hash"),
    owner="erase",
    personal_columns=frozenset({"value_hash"}),
    description="Each erasure request resolved to its person's identifiers, as keyed hashes only.",
    erased=False,
)
INGEST_LOG = Table(
    "ops",
    "ingest_log",
    schema(
        ("source", STRING, False),
        ("batch_version", LONG, False),
        ("status", STRING, False),
        ("files", STRINGS),
        ("watermark_from", STRING),
        ("watermark_to", STRING),
        ("rows_read", LONG),
        ("rows_written", LONG),
        ("rows_quarantined", LONG),
        ("run_id", STRING, False),
        ("logged_at", TIMESTAMP, False),
    ),
    owner="ingest",
    description=(
        "Batch plan and commit per source: the files (or JDBC watermarks) of each batch. Standardize takes a "
        "source's new batches from its commits. File names and counts only: kept by erasure."
    ),
    erased=False,
)
SILVER_LOG = Table(
    "ops",
    "silver_log",
    schema(("source", STRING), ("batch_id", STRING), ("run_id", STRING), ("recorded_at", TIMESTAMP)),
    owner="standardize",
    description="The bronze batches standardize has merged into silver, per source. Ids only: kept by erasure.",
    erased=False,
)

STAGE_INPUTS = Table(
    "ops",
    "stage_inputs",
    schema(
        ("stage", STRING, False),
        ("run_id", STRING, False),
        ("fingerprint", STRING, False),
        ("state", STRING, False),
        ("recorded_at", TIMESTAMP, False),
    ),
    keys=("stage", "run_id"),
    owner="resolve, profiles",
    description=(
        "What a stage's successful run read and left (Delta versions, config and code digests, as JSON): a run that "
        "finds the same skips (`cdp_spark.stage_inputs`). Versions and digests only: kept by erasure."
    ),
    erased=False,
)

IDENTITY_HEALTH = Table(
    "ops",
    "identity_health",
    schema(("run_id", STRING, False), ("metric", STRING, False), ("value", DOUBLE), ("recorded_at", TIMESTAMP, False)),
    owner="resolve",
    description=(
        "Identity health of each resolve run, long format (`cdp_spark.identity.health`): cluster sizes, bridged "
        "clusters, each rule's share of the links, level weights, new hot values, their drift from the last "
        "successful run, and each check of conf/identity.yaml `health` (`check:<name>`, `verdict`: 0 ok, 1 warn, "
        "2 fail). Written before the map is replaced, so a failed run's numbers are kept too. Counts and shares "
        "only, naming nobody: kept by erasure."
    ),
    erased=False,
)

# Columns that say whose a row is, and the kind of identifier each holds (erasure finds a person's rows by them; a
# column means the same in every table). ``identifier_type, identifier`` pairs (consent) hold emails and phones.
IDENTIFYING_COLUMNS = {
    "cdp_id": "cdp_id",
    "record_id": "record_id",
    "src_record_id": "record_id",
    "dst_record_id": "record_id",
    "email": "email",
    "phone": "phone",
    "loyalty_id": "loyalty_id",
    "account_id": "account_id",
}
TYPED_IDENTIFIER = ("identifier_type", "identifier")


def identifying_columns(columns: Sequence[str]) -> list[str]:
    """The columns among ``columns`` that say whose a row is (:data:`IDENTIFYING_COLUMNS`, and ``identifier`` when
    ``identifier_type`` says its kind)."""
    found = [c for c in IDENTIFYING_COLUMNS if c in columns]
    return found + (["identifier"] if set(TYPED_IDENTIFIER) <= set(columns) else [])


# Every table; bronze has one entry per source (:func:`bronze`), shown here for a source named ``<source>``.
CATALOG: tuple[Table, ...] = (
    bronze("<source>"),
    CUSTOMER_RECORDS,
    ORDERS,
    EVENTS,
    SUPPORT_TICKETS,
    EMAIL_ENGAGEMENT,
    CONSENT,
    QUARANTINE,
    IDENTITY_EDGES,
    IDENTITY_MAP,
    IDENTITY_LINEAGE,
    IDENTITY_CHANGES,
    IDENTITY_STATE,
    HOT_IDENTIFIERS,
    ERASURE_SUPPRESSION,
    CUSTOMER_PROFILE,
    HOUSEHOLDS,
    ADDRESS_CONSENT,
    CUSTOMER_FEATURES,
    CUSTOMER_SCORES,
    SEGMENT_MEMBERSHIP,
    SEGMENT_REPORT,
    RUN_METRICS,
    DQ_METRICS,
    AUDIT_LOG,
    EXPORT_STATE,
    ERASURE_PLAN,
    INGEST_LOG,
    SILVER_LOG,
    STAGE_INPUTS,
    IDENTITY_HEALTH,
)
_BY_NAME = {t.full_name: t for t in CATALOG if t.layer != "bronze"}
# Every column name some entry declares personal (how a column no entry declares is judged: Table.is_personal).
PERSONAL_NAMES = frozenset(c.lower() for t in CATALOG for c in t.personal_columns)


def entry(layer: str, name: str) -> Table:
    """The catalog entry of ``<layer>.<name>`` (any name in bronze). A table the catalog does not know (left by
    another version, say) is all personal as far as anyone can tell: Delta collects no statistics on it."""
    if layer == "bronze":
        return bronze(name)
    return _BY_NAME.get(f"{layer}.{name}") or Table(layer, name, description="not in the catalog", statistics=())


def silver_schema(name: str) -> T.StructType:
    """The schema of the silver table ``name`` (e.g. ``orders``), as the standardize stage writes it."""
    return _BY_NAME[f"silver.{name}"].schema


_AUDIT_WRITES = threading.Lock()


def audit(spark: SparkSession, root: str, rows: list[tuple], options: dict[str, str] | None = None) -> None:
    """Append ``(run_id, action, target, table, rows, details)`` tuples to ops.audit_log, stamped now; ``options``
    may carry ``txnAppId``/``txnVersion`` to make the append idempotent. One append at a time in this process
    (a stage may work on several tables from driver threads): two first writes do not race to create the table."""
    now = datetime.now(UTC).replace(tzinfo=None)
    with _AUDIT_WRITES:
        append(rows_frame(spark, [(*r, now) for r in rows], AUDIT_LOG.schema), root, AUDIT_LOG, options=options)


def exists(spark: SparkSession, root: str, table: Table) -> bool:
    return DeltaTable.isDeltaTable(spark, table.path(root))


def read(spark: SparkSession, root: str, table: Table) -> DataFrame:
    if not exists(spark, root, table):
        raise FileNotFoundError(
            f"Delta table {table.full_name} not found at {table.path(root)}: run the stage that writes it first"
        )
    return spark.read.format("delta").load(table.path(root))


def read_or_empty(spark: SparkSession, root: str, table: Table) -> DataFrame:
    """The table, or no rows with its catalog schema when no stage has written it yet."""
    if exists(spark, root, table):
        return read(spark, root, table)
    return rows_frame(spark, [], table.schema)


def rows_frame(spark: SparkSession, rows: Iterable[Sequence], schema: T.StructType | str) -> DataFrame:
    """A DataFrame of a few rows the driver holds (log entries, metrics, markers, parameters), handed to the JVM
    through Arrow. ``schema``: a StructType or a DDL string.

    ``spark.createDataFrame(rows)`` re-pickles the rows in a Python worker per partition each time the frame is
    read: 0.15 s per read of a 10-row frame on local[2] (a Python worker per task on a cluster), against 0.015 s
    this way (``benchmarks/rows_frame.py``). Values follow createDataFrame's rules: a naive datetime is in the
    local time of this process, a null in a non-nullable column is refused.
    """
    struct = schema if isinstance(schema, T.StructType) else T.StructType.fromDDL(schema)
    arrow = to_arrow_schema(struct)
    rows = [tuple(row) for row in rows]
    if any(len(row) != len(struct.fields) for row in rows):
        raise ValueError(f"rows_frame: every row needs {len(struct.fields)} values ({struct.simpleString()})")
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in struct.fields]
    arrays = []
    for values, spark_field, arrow_field in zip(columns, struct.fields, arrow, strict=True):
        if not spark_field.nullable and any(v is None for v in values):
            raise ValueError(f"rows_frame: column {spark_field.name} is not nullable but a row holds None")
        if isinstance(spark_field.dataType, T.TimestampType):
            values = [v.astimezone(UTC) if isinstance(v, datetime) else v for v in values]
        arrays.append(pa.array(values, type=arrow_field.type))
    return spark.createDataFrame(pa.Table.from_arrays(arrays, schema=arrow), struct)


# The column types Delta collects statistics on (it refuses arrays, maps, booleans and binaries).
_STATS_TYPES = (T.StringType, T.NumericType, T.DateType, T.TimestampType, T.TimestampNTZType)


def stats_columns(table: Table, schema: T.StructType, partition_by: Sequence[str] | None = None) -> list[str]:
    """The columns Delta may collect statistics on: every column of ``schema`` of a supported type that is neither
    a partition column nor one of the entry's personal columns (or, when the entry says, its ``statistics``)."""
    partitions = table.partition_by if partition_by is None else partition_by
    fields = [f for f in schema.fields if isinstance(f.dataType, _STATS_TYPES) and f.name not in partitions]
    if table.statistics is not None:
        return [f.name for f in fields if f.name in table.statistics]
    return [f.name for f in fields if not table.is_personal(f.name)]


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


def _comparable(column: T.StructField) -> F.Column:
    """A column as equality can compare it: a map as its entries sorted by key (maps have no equality)."""
    if isinstance(column.dataType, T.MapType):
        return F.array_sort(F.map_entries(F.col(f"`{column.name}`")))
    return F.col(f"`{column.name}`")


def overwrite_if_changed(df: DataFrame, root: str, table: Table, ignore: tuple[str, ...] = ()) -> int:
    """Overwrite a derived table only when its content changed, so a rerun adds no version; 1 when written.

    One full outer join of the new rows and the table's tells (two ``exceptAll`` would shuffle both sides twice):
    on the table's ``keys`` when it has some (a row changed when a value of another column differs), else on every
    column but ``ignore`` (the run that wrote a row), and then ``df``'s rows must be distinct.
    """
    spark = df.sparkSession
    if exists(spark, root, table):
        current = read(spark, root, table)
        if sorted(current.columns) == sorted(df.columns):
            fields = [f for f in df.schema.fields if f.name not in ignore]
            keys = [f for f in fields if f.name in table.keys] if table.keys else fields
            values = [f for f in fields if f not in keys]
            new = df.select(*[_comparable(f).alias(f"n{i}") for i, f in enumerate(fields)], F.lit(True).alias("_n"))
            old = current.select(
                *[_comparable(f).alias(f"o{i}") for i, f in enumerate(fields)], F.lit(True).alias("_o")
            )
            index = {f.name: i for i, f in enumerate(fields)}
            on = [new[f"n{index[f.name]}"].eqNullSafe(old[f"o{index[f.name]}"]) for f in keys]
            differs = [~new[f"n{index[f.name]}"].eqNullSafe(old[f"o{index[f.name]}"]) for f in values]
            joined = new.join(old, reduce(lambda a, b: a & b, on), "full_outer")
            changed = reduce(lambda a, b: a | b, [F.col("_n").isNull(), F.col("_o").isNull(), *differs])
            if joined.where(changed).limit(1).count() == 0:
                return 0
    overwrite(df, root, table)
    return 1


def log_snapshot(spark: SparkSession, root: str, table: Table):  # noqa: ANN201 - a py4j handle on a Delta Snapshot
    """The snapshot Delta keeps of the table's transaction log, brought up to date on the driver: ``version()`` (-1
    when there is no table), ``timestamp()`` (of the last commit, ms), ``metadata().id()``. No Spark job, where
    ``DESCRIBE HISTORY`` reads the last commit with one."""
    delta_log = spark.sparkContext._jvm.org.apache.spark.sql.delta.DeltaLog.forTable(
        spark._jsparkSession, table.path(root)
    )
    return delta_log.update(
        getattr(delta_log, "update$default$1")(),
        getattr(delta_log, "update$default$2")(),
        getattr(delta_log, "update$default$3")(),
    )


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


# docs/tables.md around the catalog: what holds for every table, and who may write besides a table's owner.
_DOC_HEAD = """\
Every table is Delta under one lakehouse root, `<root>/<layer>/<name>`; `cdp_spark.tables` is the only
module that spells a path or declares a schema (`tables.CUSTOMER_RECORDS.path(root)`,
`tables.read(spark, root, tables.ORDERS)`, `tables.ORDERS.schema`). Timestamps are UTC `timestamp`; dates are
`date`. Identifiers in silver are standardized: emails lowercase with provider rules applied
(`cdp_spark.normalize.emails`), phones E.164. Every fact row carries the `record_id` it belongs to, so
`fact JOIN identity_map USING (record_id)` gives its `cdp_id`.

**Personal** columns hold a person's identifiers or personal attributes: Delta collects no statistics on them
(the min/max it keeps per file would outlive an erasure), and a column a table does not declare is personal
when another table declares one of that name personal. **Owner**: the one stage that writes the table
(`tests/test_tables.py` checks that one module does). Besides the owner, only these change a table's rows:
`cdp-spark erase` deletes an erased person's rows from every table not marked *kept by erasure* (and turns
their `ops.export_state` rows into tombstones); `cdp-spark maintain` compacts and vacuums every table and
brings its properties to the catalog's; standardize deletes from `bronze.<source>` the rows of an erased person
that arrive again. Tables *every stage* writes are written through one function: `ops.run_metrics` by
`cdp_spark.ops`, `ops.audit_log` by `cdp_spark.tables.audit`."""


def _markdown_entry(table: Table) -> list[str]:
    facts = [f"key {', '.join(f'`{k}`' for k in table.keys)}" if table.keys else "no key"]
    facts.append(f"owner: {table.owner}")
    if table.partition_by:
        facts.append(f"partitioned by {', '.join(f'`{c}`' for c in table.partition_by)}")
    if not table.erased:
        facts.append("kept by erasure")
    lines = [f"### `{table.full_name}`", "", table.description, "", " · ".join(facts), ""]
    lines += ["| column | type | personal |", "| --- | --- | --- |"]
    for f in table.schema.fields:
        dtype = f.dataType.simpleString() + ("" if f.nullable else " not null")
        lines.append(f"| `{f.name}` | {dtype} | {'yes' if f.name in table.personal_columns else ''} |")
    if table.extra_columns:
        lines.append("| ... | | |")
        lines += ["", f"More columns: {table.extra_columns}."]
    if table.statistics is not None:
        stats = ", ".join(f"`{c}`" for c in table.statistics) or "none"
        lines += ["", f"Statistics on {stats} only."]
    return [*lines, ""]


def render_markdown() -> str:
    """docs/tables.md, rendered from :data:`CATALOG` (a test keeps the file in step with the catalog)."""
    lines = [
        "# Table contracts",
        "",
        "<!-- Generated from cdp_spark/tables.py CATALOG by render_markdown(); edit the catalog, not this file:",
        "     python -m cdp_spark.tables > docs/tables.md -->",
        "",
        _DOC_HEAD,
        "",
    ]
    for layer in LAYERS:
        lines += [f"## {layer}", ""]
        for table in CATALOG:
            if table.layer == layer:
                lines += _markdown_entry(table)
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
