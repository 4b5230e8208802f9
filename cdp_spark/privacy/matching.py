"""Matching a table's rows against the erasure plan: which identifiers a row carries (by column for silver, gold
and ops; by the source's own silver mapping, standardized on the fly, for bronze; by token for quarantined raw
text), keyed and joined with the plan in one pass for every pending request."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp_spark import tables
from cdp_spark.hashing import HashKey, keyed_identifier, with_keyed
from cdp_spark.normalize.emails import normalize_email
from cdp_spark.normalize.phones import phone_e164
from cdp_spark.normalize.rules import StandardizeRules
from cdp_spark.silver import SILVER, standardize_rows, with_keys
from cdp_spark.sources import SourceConfig

# Bronze tables of a source no longer in config: the raw columns that may hold an id, and its kind (silver, gold
# and ops tables say whose a row is by the catalog's ``tables.IDENTIFYING_COLUMNS``).
BRONZE_ID_COLUMNS = {"loyalty_id": "loyalty_id", "account_id": "account_id", "user_id": "account_id"}


def person_spec(columns: list[str]) -> list[tuple[str, Column, bool]]:
    """The (kind, column, already hashed) triples that say whose a row of a silver/gold/ops table is."""
    identifying = tables.identifying_columns(columns)
    spec = [(tables.IDENTIFYING_COLUMNS[c], F.col(f"`{c}`"), False) for c in identifying if c != "identifier"]
    if "identifier" in identifying:
        for kind in ("email", "phone"):
            spec.append((kind, F.when(F.lower(F.col("identifier_type")) == kind, F.col("identifier")), False))
    return spec


def row_fingerprint(columns: list[str], alias: str | None = None) -> Column:
    """SHA-256 of a whole row: the key of tables with no key (bronze, quarantine); ``alias``: of a MERGE side."""
    prefix = f"{alias}." if alias else ""
    return F.sha2(F.to_json(F.struct(*[F.col(f"{prefix}`{c}`").alias(c) for c in columns])), 256)


# Bronze: the source's own silver mapping, standardized, says which values a raw row carries.


def _mapped(bronze: DataFrame, source: SourceConfig, target_index: int) -> DataFrame:
    target = source.silver[target_index]
    present = {c.lower() for c in bronze.columns}

    def expression(sql: str) -> Column:
        if sql.replace("_", "a").isalnum() and sql.lower() not in present:
            return F.lit(None).cast("string")
        return F.expr(sql)

    selected = [expression(sql).alias(c) for c, sql in target.columns.items() if c != "record_id"]
    carried = [F.col(f"`{k}`") for k in target.key if k not in target.columns]
    rows = bronze.where(F.expr(target.where)) if target.where else bronze
    return rows.select("_fp", *selected, *carried)


def bronze_candidates(bronze: DataFrame, source: SourceConfig | None, rules: StandardizeRules) -> DataFrame:
    """What each raw row says about whose it is: ``_fp, kind, plain`` (several rows per bronze row).

    In: a bronze table. With its source config, every silver mapping of the source is applied and
    standardized exactly as standardize does, giving record ids and standardized identifiers. A bronze
    table with no source in config (a retired source) is matched on columns named email, phone,
    loyalty_id, account_id or user_id.
    """
    columns = bronze.columns
    if source is not None:
        present = {c.lower() for c in columns}
        declared = {c: F.lit(None).cast(t) for c, t in source.schema_hints.items() if c.lower() not in present}
        bronze = bronze.withColumns(declared) if declared else bronze
    with_fp = bronze.withColumn("_fp", row_fingerprint(columns))
    parts: list[DataFrame] = []
    if source is not None and source.silver:
        for i, target in enumerate(source.silver):
            keyed = with_keys(standardize_rows(_mapped(with_fp, source, i), target.table, rules), source.name, target)
            spec = [(k, F.col(k), False) for k in ("record_id", "email", "phone", "loyalty_id", "account_id")]
            spec = [s for s in spec if s[0] in keyed.columns and s[0] in SILVER[target.table].columns]
            if target.table == "consent":
                spec += person_spec(["identifier_type", "identifier"])
            parts.append(identifier_candidates(keyed, spec))
    else:
        spec = []
        if "email" in columns:
            spec.append(("email", normalize_email(F.col("email").cast("string"), rules.emails), False))
        if "phone" in columns:
            spec.append(("phone", phone_e164(F.col("phone").cast("string"), rules.phones), False))
        spec += [
            (kind, F.trim(F.col(c).cast("string")), False) for c, kind in BRONZE_ID_COLUMNS.items() if c in columns
        ]
        if spec:
            parts.append(identifier_candidates(with_fp, spec))
    if not parts:
        return tables.rows_frame(bronze.sparkSession, [], "_fp string, kind string, plain string")
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part)
    return out


def identifier_candidates(df: DataFrame, spec: list[tuple[str, Column, bool]]) -> DataFrame:
    """``_fp, kind, plain``: every identifier of ``spec`` each row carries, as the message its keyed hash is of."""
    return (
        df.select(
            "_fp",
            F.explode(
                F.array(
                    *[
                        F.struct(F.lit(kind).alias("kind"), keyed_identifier(kind, value, hashed).alias("plain"))
                        for kind, value, hashed in spec
                    ]
                )
            ).alias("c"),
        )
        .select("_fp", "c.kind", "c.plain")
        .where(F.col("plain").isNotNull())
    )


# A raw token is tried as a loyalty id, account id or source key only from this length: "42" in another
# person's rejected row (a quantity, a house number) must not delete it because it equals an erased id.
MIN_ID_TOKEN = 6


def quarantine_candidates(quarantine: DataFrame, rules: StandardizeRules) -> DataFrame:
    """``_fp, kind, plain`` for rejected rows: their key, and every value of their raw text.

    The raw text is a JSON object (rejected by an expectation) or a raw line (malformed at ingest, a JSON
    line cut short included): its values are the JSON values, else every quoted string and every field
    between delimiters. Each is tried as an email and a phone; as a source key, loyalty or account id
    only from :data:`MIN_ID_TOKEN` characters. The row's own ``record_key`` is its record id.
    """
    columns = quarantine.columns
    as_json = F.from_json("raw", "map<string,string>")
    fields = F.concat(
        F.regexp_extract_all(F.col("raw"), F.lit('"([^"]*)"'), 1), F.split(F.col("raw"), r"[,;|\t{}\[\]]")
    )
    tokens = F.when(as_json.isNotNull(), F.map_values(as_json)).otherwise(fields)
    rows = quarantine.select(row_fingerprint(columns).alias("_fp"), "record_key", F.explode(tokens).alias("token"))
    token = F.trim(F.regexp_replace("token", '^"|"$', ""))
    rows = rows.withColumn("token", F.nullif(token, F.lit("")))
    phone_like = F.when(F.regexp_replace("token", r"[^0-9]", "").rlike(r"^\d{7,15}$"), F.col("token"))
    id_like = F.when(F.length("token") >= MIN_ID_TOKEN, F.col("token"))
    spec = [
        ("record_id", F.col("record_key"), False),
        ("email", normalize_email(F.col("token"), rules.emails), False),
        ("phone", phone_e164(phone_like, rules.phones), False),
        ("record_key", id_like, False),
        ("loyalty_id", id_like, False),
        ("account_id", id_like, False),
    ]
    return identifier_candidates(rows, spec)


@dataclass
class Erasure:
    """One erasure run's context: where, which plan, and the audit rows collected so far."""

    spark: SparkSession
    root: str
    run_id: str
    plan: DataFrame  # the pending plan rows: request_id, kind, value_hash (keyed)
    key: HashKey
    requesters: dict[str, str | None]
    audit: list[tuple]

    def record(self, table: str, per_request: dict[str, int], **details: object) -> None:
        for request_id, rows in sorted(per_request.items()):
            info = {"requested_by": self.requesters.get(request_id), **details}
            self.audit.append((self.run_id, "erase", request_id, table, rows, json.dumps(info, sort_keys=True)))

    def match(self, candidates: DataFrame) -> DataFrame:
        """``_fp, request_id`` of the candidates (``_fp, kind, plain``) whose keyed hash is in the plan.

        One pass for every pending request: each candidate is keyed once and joined with the plan (small:
        one row per identifier of the people erased, so Spark broadcasts it).
        """
        keyed = with_keyed(candidates, self.key, {"value_hash": F.col("plain")})
        plan = self.plan.select("kind", "value_hash", "request_id")
        return keyed.join(plan, ["kind", "value_hash"]).select("_fp", "request_id").distinct()


def rows_per_request(pairs: DataFrame) -> dict[str, int]:
    """Rows matched per request, from ``_fp, request_id`` pairs."""
    counted = pairs.groupBy("request_id").agg(F.count("*").alias("rows")).collect()
    return {r["request_id"]: r["rows"] for r in counted}
