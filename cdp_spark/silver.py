"""Bronze rows -> silver rows: map a source's columns onto a silver table's contract and standardize them.

The silver tables' columns are a contract (their catalog entries in :mod:`cdp_spark.tables`, docs/tables.md);
each column has a kind here that says how it is standardized. A source declares in conf/sources.yaml which SQL
expression over its bronze row gives each standard column (``SilverTarget``); this module does the rest, the
same way for every source.
The standardize stage writes silver with it; erasure (privacy) standardizes bronze rows on the fly with it to
find a person's raw rows.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from cdp_spark import tables
from cdp_spark.config import ConfigError
from cdp_spark.normalize.addresses import normalize_address, normalize_city, normalize_country, normalize_postcode
from cdp_spark.normalize.dates import parse_date, parse_timestamp
from cdp_spark.normalize.emails import normalize_email
from cdp_spark.normalize.names import normalize_name, split_full_name
from cdp_spark.normalize.phones import phone_e164
from cdp_spark.normalize.rules import StandardizeRules
from cdp_spark.normalize.text import blank_to_null, collapse_whitespace, nfkc
from cdp_spark.sources import SilverTarget, SourceConfig


@dataclass(frozen=True)
class SilverTable:
    """How standardize fills a silver table of the catalog: the kind of each column (how it is standardized)
    and the column the latest row per key is chosen by. Columns, their order and types, and keys are the
    catalog entry's."""

    table: tables.Table
    kinds: dict[str, str]  # standard column -> kind
    order_by: str | None  # latest wins on this column

    def __post_init__(self) -> None:
        if sorted(self.kinds) != sorted(self.table.columns):
            raise ValueError(f"{self.table.full_name}: kinds for {sorted(self.kinds)}, columns {self.table.columns}")

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def key(self) -> tuple[str, ...]:
        return self.table.keys

    @property
    def columns(self) -> dict[str, str]:
        """Standard column -> kind, in table order."""
        return {c: self.kinds[c] for c in self.table.columns}


SILVER: dict[str, SilverTable] = {
    t.name: t
    for t in [
        SilverTable(
            tables.CUSTOMER_RECORDS,
            {
                "record_id": "derived",
                "source": "derived",
                "source_key": "derived",
                "first_name": "name",
                "last_name": "name",
                "email": "email",
                "phone": "phone",
                "address": "address",
                "city": "city",
                "postcode": "postcode",
                "country": "country",
                "birth_date": "date",
                "loyalty_id": "id",
                "account_id": "id",
                "updated_at": "timestamp",
            },
            "updated_at",
        ),
        SilverTable(
            tables.ORDERS,
            {
                "order_id": "id",
                "channel": "lower",
                "record_id": "record_id",
                "account_id": "id",
                "loyalty_id": "id",
                "store_id": "id",
                "order_ts": "timestamp",
                "amount": "double",
                "currency": "upper",
                "items": "int",
                "updated_at": "timestamp",
            },
            "updated_at",
        ),
        SilverTable(
            tables.EVENTS,
            {
                "event_id": "id",
                "record_id": "record_id",
                "event_ts": "timestamp",
                "event_type": "lower",
                "platform": "lower",
                "cookie_id": "id",
                "device_id": "id",
                "account_id": "id",
                "email": "email",
                "utm_campaign": "text",
            },
            "event_ts",
        ),
        SilverTable(
            tables.SUPPORT_TICKETS,
            {
                "ticket_id": "id",
                "record_id": "record_id",
                "created_at": "timestamp",
                "topic": "lower",
                "satisfaction": "int",
            },
            "created_at",
        ),
        SilverTable(
            tables.EMAIL_ENGAGEMENT,
            {
                "message_id": "id",
                "record_id": "record_id",
                "email": "email",
                "event_type": "lower",
                "event_ts": "timestamp",
                "campaign_id": "id",
            },
            "event_ts",
        ),
        SilverTable(
            tables.CONSENT,
            {
                "identifier_type": "lower",
                "identifier": "identifier",
                "channel": "lower",
                "granted": "boolean",
                "recorded_at": "timestamp",
            },
            None,
        ),
    ]
}

# Columns a customer_records mapping may use besides the contract: split into first/last name.
INPUT_ONLY = {"customer_records": {"full_name"}}
_TRUE = ["true", "t", "yes", "y", "1", "granted", "opt-in", "opt_in"]
_FALSE = ["false", "f", "no", "n", "0", "denied", "withdrawn", "opt-out", "opt_out"]


def check_target(source: SourceConfig, target: SilverTarget) -> None:
    """Fail early, naming the source, when a mapping names columns the silver table does not have."""
    spec = SILVER[target.table]
    allowed = set(spec.columns) - {"record_id", "source", "source_key"} | INPUT_ONLY.get(target.table, set())
    if target.table != "customer_records":
        allowed |= {"record_id"}
    unknown = sorted(set(target.columns) - allowed)
    if unknown:
        raise ConfigError(
            f"sources[{source.name}].silver[{target.table}].columns: unknown column(s) {unknown}; "
            f"{target.table} has {sorted(allowed)}"
        )
    if target.table != "customer_records":
        missing = [k for k in spec.key if k not in target.columns]
        if missing:
            raise ConfigError(f"sources[{source.name}].silver[{target.table}]: map the key column(s) {missing}")


def map_columns(bronze: DataFrame, target: SilverTarget) -> DataFrame:
    """Evaluate the mapping's SQL over each bronze row; a bare column name missing from bronze gives null.

    A missing column is schema drift in the other direction (a field not seen yet, e.g. a JSON field
    that appears on a later day), not an error. Out: the mapped columns, the key columns not mapped,
    ``updated_at`` (when the table has one and the mapping does not set it), ``_raw`` (the bronze row as
    JSON, kept for quarantine), ``_source_file``, ``_batch_id``.
    """
    present = {c.lower() for c in bronze.columns}

    def expression(sql: str) -> Column:
        if sql.replace("_", "a").isalnum() and sql.lower() not in present:
            return F.lit(None).cast("string")
        return F.expr(sql)

    payload = [c for c in bronze.columns if not c.startswith("_")]
    # record_id is read over the standardized columns (see with_keys), so it is not mapped here.
    selected = [expression(sql).alias(column) for column, sql in target.columns.items() if column != "record_id"]
    carried = [F.col(k) for k in target.key if k not in target.columns]
    if "updated_at" in SILVER[target.table].columns and "updated_at" not in target.columns:
        updated = expression(target.updated_at) if target.updated_at else F.lit(None).cast("string")
        carried.append(updated.alias("updated_at"))
    rows = bronze.where(F.expr(target.where)) if target.where else bronze
    return rows.select(
        *selected,
        *carried,
        F.to_json(F.struct(*[F.col(f"`{c}`") for c in payload])).alias("_raw"),
        "_source_file",
        "_batch_id",
    )


def _to_boolean(value: Column) -> Column:
    text = F.lower(F.trim(value.cast("string")))
    return F.when(text.isin(_TRUE), F.lit(True)).when(text.isin(_FALSE), F.lit(False))


def _standard(column: str, kind: str, df: DataFrame, rules: StandardizeRules) -> Column:
    value = F.col(column) if column in df.columns else F.lit(None).cast("string")
    text = blank_to_null(collapse_whitespace(value.cast("string")))
    if kind == "name":
        return normalize_name(value.cast("string"), rules.names)
    if kind == "email":
        return normalize_email(value.cast("string"), rules.emails)
    if kind == "phone":
        region = F.col("country") if "country" in df.columns else None
        return phone_e164(value.cast("string"), rules.phones, region)
    if kind == "address":
        return normalize_address(value.cast("string"), rules.addresses)
    if kind == "city":
        return normalize_city(value.cast("string"))
    if kind == "country":
        return normalize_country(value.cast("string"), rules.addresses)
    if kind == "postcode":
        return normalize_postcode(value.cast("string"), F.col("country"), rules.addresses)
    if kind == "date":
        return parse_date(value, rules.dates)
    if kind == "timestamp":
        return parse_timestamp(value, rules.dates)
    if kind == "double":
        return value.try_cast("double")
    if kind == "int":
        # "3.0" and "1e1" are ints; "1e10" (overflow) and "NaN" are no int: null, never an ANSI error.
        return F.coalesce(value.try_cast("int"), value.try_cast("double").try_cast("int"))
    if kind == "boolean":
        return _to_boolean(value)
    if kind == "lower":
        return F.lower(text)
    if kind == "upper":
        return F.upper(text)
    if kind == "text":
        return nfkc(text)
    return text  # id, record_id: trimmed strings


def ranking_columns(target: SilverTarget) -> set[str]:
    """The contract columns needed to key and rank a target's rows, with what they depend on.

    Standardize does these first, keeps the latest row per key, and standardizes the remaining columns
    of those rows only: duplicates and keyless rows never pay for phone parsing and the like.
    """
    spec = SILVER[target.table]
    keys = {k for k in (*target.key, *spec.key) if spec.columns.get(k, "derived") != "derived"}
    columns = keys | ({spec.order_by} if spec.order_by else set())
    if "country" in spec.columns and any(spec.columns[c] in ("phone", "postcode") for c in columns):
        columns.add("country")  # phone regions and postcode formats depend on the standardized country
    return columns


def standardize_rows(
    mapped: DataFrame, table: str, rules: StandardizeRules, columns: Collection[str] | None = None
) -> DataFrame:
    """Standardize the contract columns of ``table`` (all, or only ``columns``); missing ones become null.

    Country is standardized first: postcodes and phone regions depend on it (a call with ``columns``
    that holds a phone or postcode but not country expects country standardized already). Consent
    identifiers are standardized by their type (email or phone).
    """
    spec = SILVER[table]
    wanted = set(spec.columns) if columns is None else set(columns)
    df = mapped
    if table == "customer_records" and "full_name" in df.columns and wanted & {"first_name", "last_name"}:
        given_first = F.col("first_name") if "first_name" in df.columns else F.lit(None).cast("string")
        given_last = F.col("last_name") if "last_name" in df.columns else F.lit(None).cast("string")
        df = (
            df.withColumn("full_name", normalize_name(F.col("full_name").cast("string"), rules.names))
            .withColumn("full_name", split_full_name(F.col("full_name")))
            .withColumns(
                {
                    "first_name": F.coalesce(given_first, F.col("full_name.first")),
                    "last_name": F.coalesce(given_last, F.col("full_name.last")),
                }
            )
            .drop("full_name")
        )
    if "country" in spec.columns and "country" in wanted:
        df = df.withColumn("country", _standard("country", "country", df, rules))
    standard = {}
    for column, kind in spec.columns.items():
        if kind in ("derived", "record_id") or column == "country" or column not in wanted:
            continue
        if kind == "identifier":
            identifier_type = F.lower(F.trim(F.col("identifier_type")))
            raw = F.col(column).cast("string")
            standard[column] = (
                F.when(identifier_type == "email", normalize_email(raw, rules.emails))
                .when(identifier_type == "phone", phone_e164(raw, rules.phones))
                .otherwise(blank_to_null(collapse_whitespace(raw)))
            )
            continue
        standard[column] = _standard(column, kind, df, rules)
    return df.withColumns(standard)


def with_keys(standardized: DataFrame, source: str, target: SilverTarget) -> DataFrame:
    """Add ``record_id`` and ``_key_missing`` (and for customer_records ``source``, ``source_key``).

    Key columns are read after standardization, so an email key is the canonical address. A customer
    record's id is ``<source>:<key values joined by |>``; a fact's ``record_id`` is the mapping's SQL
    over the standardized columns (e.g. ``concat('cookie:', cookie_id)``), null when it has none.
    """
    return with_fact_record_id(with_key_columns(standardized, source, target), target)


def with_key_columns(standardized: DataFrame, source: str, target: SilverTarget) -> DataFrame:
    """``_key_missing``, and a customer record's ``source``, ``source_key``, ``record_id`` (see ``with_keys``).

    Needs only the key columns standardized.
    """
    parts = [F.trim(F.col(k).cast("string")) for k in target.key]
    missing = F.lit(False)
    for part in parts:
        missing = missing | part.isNull() | (part == "")
    df = standardized.withColumn("_key_missing", missing)
    if target.table == "customer_records":
        source_key = F.concat_ws("|", *parts)
        df = df.withColumns(
            {
                "source": F.lit(source),
                "source_key": source_key,
                "record_id": F.concat(F.lit(f"{source}:"), source_key),
            }
        )
    return df


def with_fact_record_id(standardized: DataFrame, target: SilverTarget) -> DataFrame:
    """A fact's ``record_id``: the mapping's SQL over the standardized columns (see ``with_keys``)."""
    if target.table == "customer_records" or "record_id" not in SILVER[target.table].columns:
        return standardized
    return standardized.withColumn("record_id", fact_record_id(target))


def fact_record_id(target: SilverTarget) -> Column:
    """The mapping's SQL for a fact's ``record_id`` (a string), null when the mapping has none."""
    sql = target.columns.get("record_id")
    return F.expr(sql).cast("string") if sql else F.lit(None).cast("string")


def rank_per_key(df: DataFrame, table: str) -> DataFrame:
    """Add ``_rank``: 1 for the latest row per key of the silver table, by ``order_by`` then the raw row (for
    determinism); null for rows whose key is missing (``_key_missing``, from ``with_key_columns``).

    Keyless rows are spread over the window's partitions by a hash of their raw row, not piled onto one.
    """
    spec = SILVER[table]
    order = [F.desc_nulls_last(spec.order_by)] if spec.order_by else []
    spread = F.when(F.col("_key_missing"), F.xxhash64("_raw"))
    window = Window.partitionBy(*spec.key, spread).orderBy(*order, F.desc("_raw"))
    return df.withColumn("_rank", F.when(~F.col("_key_missing"), F.row_number().over(window)))


def to_contract(df: DataFrame, table: str) -> DataFrame:
    """Exactly the catalog's columns of the silver table, in order, with their types."""
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in SILVER[table].table.schema.fields])
