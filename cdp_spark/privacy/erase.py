"""Right to erasure: find everything of a person in every layer and export, delete it, and keep them out.

A request names a person by ``email``, ``phone``, ``cdp_id`` or ``record_id``. The erasure runs in steps
that a rerun completes whatever the point a previous run died at:

1. **plan** (``ops.erasure_plan``): each new request is resolved to its customer (silver records ->
   ``identity_map`` -> every record of that ``cdp_id``, anonymous ``cookie:`` records included) and to
   the identifiers those records carry, stored as keyed hashes only (HMAC-SHA-256 under
   ``privacy.hash_key``: :class:`cdp_spark.hashing.HashKey`; a plain hash of a phone is reversed by trying
   every number). The plan is written before any
   delete, because the deletes remove what it was derived from. A request that matches more than one
   customer, or whose identifier is not valid, is refused (audited, not planned): it needs a person.
2. **suppress** (``silver.erasure_suppression``): the hashes and ``cdp_id``, checked by standardize and
   activation (:mod:`cdp_spark.suppression`) so re-ingested files do not bring the person back and they
   are never exported again.
3. **delete** from every Delta table under the lakehouse, one pass per table for every pending request:
   bronze rows are matched on their values standardized on the fly (so raw ``JANE.DOE@Example.com``
   matches); silver, gold and ops tables on their ``cdp_id`` / record-id / identifier columns. A row's
   identifiers are keyed and joined with the plan; the matched rows are deleted by a MERGE on their
   fingerprints, so no hash or value is written into the Delta log's commit info. Deletes are idempotent.
4. **exports**: every export file that holds the person is rewritten without them and its manifest's
   checksum and counts are updated.
5. **complete**: the requests are marked done; a rerun then does nothing.

Shared identifiers (a household phone) are not the person's own: an email, phone, loyalty or account id
is erased by value only when no other customer's record carries it. Rows of other customers are never
deleted. ``ops.audit_log`` gets one row per request and table with the rows deleted, never a value.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cdp_spark import tables
from cdp_spark.config import ConfigError
from cdp_spark.exports import (
    MANIFEST,
    SPARK_FORMATS,
    UnsafePath,
    export_file,
    export_folder,
    read_export_file,
    tombstones,
)
from cdp_spark.hashing import HashKey, identifier_hash, keyed_identifier, with_keyed
from cdp_spark.lakefiles import LakeFiles
from cdp_spark.normalize.emails import normalize_email
from cdp_spark.normalize.phones import phone_e164
from cdp_spark.normalize.rules import StandardizeRules
from cdp_spark.parallel import run_concurrently
from cdp_spark.silver import SILVER, standardize_rows, with_keys
from cdp_spark.sources import SourceConfig, SourcesConfig
from cdp_spark.suppression import keyed_rows

log = logging.getLogger("cdp_spark")


REQUEST_TYPES = ("email", "phone", "cdp_id", "record_id")
# What a plan row's hash is of: the person's own identifiers, their record ids, the source keys of those
# records (the part after "<source>:", for raw quarantined rows) and their cdp_id.
KINDS = ("email", "phone", "loyalty_id", "account_id", "record_id", "record_key", "cdp_id")

PLAN_SCHEMA = T.StructType(
    [
        T.StructField("request_id", T.StringType(), False),
        T.StructField("requested_by", T.StringType(), True),
        T.StructField("kind", T.StringType(), False),
        T.StructField("value_hash", T.StringType(), False),
        T.StructField("cdp_id", T.StringType(), True),
        T.StructField("run_id", T.StringType(), False),
        T.StructField("planned_at", T.TimestampType(), False),
        T.StructField("completed_at", T.TimestampType(), True),
        T.StructField("key_id", T.StringType(), True),
    ]
)

# Column name -> kind, for every silver/gold/ops table: the columns that say whose a row is.
PERSON_COLUMNS = {
    "cdp_id": "cdp_id",
    "record_id": "record_id",
    "src_record_id": "record_id",
    "dst_record_id": "record_id",
    "email": "email",
    "phone": "phone",
    "loyalty_id": "loyalty_id",
    "account_id": "account_id",
}
# Erasure bookkeeping (hashes only, by design) and run logs without personal data.
NOT_ERASED = {
    tables.ERASURE_PLAN.full_name,
    tables.ERASURE_SUPPRESSION.full_name,
    "ops.audit_log",
    "ops.run_metrics",
    "ops.dq_metrics",
}
BRONZE_ID_COLUMNS = {"loyalty_id": "loyalty_id", "account_id": "account_id", "user_id": "account_id"}


# --------------------------------------------------------------------------------------------
# Requests and the plan
# --------------------------------------------------------------------------------------------


def read_requests(spark: SparkSession, path: str, key: HashKey) -> DataFrame:
    """Read a CSV (header) or JSON-lines requests file and check it.

    Out: ``request_id`` (given, or derived from the identifier's keyed hash), ``requested_by``,
    ``identifier_type``, ``value``. Raises ConfigError naming the file for missing columns or unknown identifier types.
    """
    # Everything as text: a phone written as a JSON number must not lose its leading zeros or '+'.
    reader = spark.read.option("header", "true") if path.lower().endswith(".csv") else spark.read
    raw = reader.csv(path) if path.lower().endswith(".csv") else reader.option("primitivesAsString", "true").json(path)
    columns = {c.lower(): c for c in raw.columns}
    missing = [c for c in ("identifier_type", "value") if c not in columns]
    if missing:
        raise ConfigError(
            f"{path}: missing column(s) {missing}; expected identifier_type, value, [request_id, requested_by]"
        )

    def text(name: str) -> Column:
        return F.trim(F.col(f"`{columns[name]}`").cast("string")) if name in columns else F.lit(None).cast("string")

    identifier_type, value = F.lower(text("identifier_type")), text("value")
    requests = raw.select(
        F.nullif(text("request_id"), F.lit("")).alias("request_id"),
        F.nullif(text("requested_by"), F.lit("")).alias("requested_by"),
        identifier_type.alias("identifier_type"),
        value.alias("value"),
    ).where(F.col("value").isNotNull() | F.col("identifier_type").isNotNull())
    derived = {"_derived": F.sha2(F.concat_ws("|", "identifier_type", "value"), 256)}
    requests = with_keyed(requests, key, derived).select(
        F.coalesce("request_id", F.concat(F.lit("req-"), F.substring("_derived", 1, 16))).alias("request_id"),
        "requested_by",
        "identifier_type",
        "value",
    )
    bad = requests.where(~F.coalesce(F.col("identifier_type").isin(*REQUEST_TYPES), F.lit(False)))
    bad_rows = bad.select("request_id", "identifier_type").limit(5).collect()
    if bad_rows:
        listed = ", ".join(f"{r['request_id']}: {r['identifier_type']!r}" for r in bad_rows)
        raise ConfigError(f"{path}: identifier_type must be one of {', '.join(REQUEST_TYPES)}; got {listed}")
    return requests


def normalize_requests(requests: DataFrame, rules: StandardizeRules) -> DataFrame:
    """Add ``normalized``: the identifier as silver stores it (canonical email, E.164 phone), null if invalid."""
    value = F.col("value")
    return requests.withColumn(
        "normalized",
        F.when(F.col("identifier_type") == "email", normalize_email(value, rules.emails))
        .when(F.col("identifier_type") == "phone", phone_e164(value, rules.phones))
        .otherwise(F.nullif(F.trim(value), F.lit(""))),
    )


def plan_requests(
    requests: DataFrame,
    records: DataFrame,
    identity_map: DataFrame,
    key: HashKey,
    lineage: DataFrame | None = None,
) -> tuple[DataFrame, DataFrame]:
    """Resolve normalized requests to the keyed hashes of everything that identifies each person.

    In: ``requests`` from :func:`normalize_requests`; ``silver.customer_records``; ``silver.identity_map``;
    the hash key; ``silver.identity_lineage``, whose ``merged`` events name the person's earlier
    ``cdp_id``s (history rows written under them are theirs too; a ``split`` parent held two people and is
    left to the identifiers). Out: (plan: ``request_id, requested_by, kind, value_hash, cdp_id``; refused: ``request_id,
    requested_by, reason``). Identifiers carried by a record outside the erased people are left out.

    Requests and everything derived per request are small (one row per request, record or identifier of the
    people to erase): they are materialized as they are built, so the plan below stays shallow instead of
    re-deriving (and re-optimizing) the request tree at every reuse.
    """
    requests = requests.localCheckpoint()
    invalid = requests.where(F.col("normalized").isNull()).select(
        "request_id", "requested_by", F.concat(F.lit("not a valid "), F.col("identifier_type")).alias("reason")
    )
    valid = requests.join(invalid.select("request_id"), "request_id", "left_anti")
    ids = identity_map.select("record_id", "cdp_id")
    known_records = records.select("record_id").unionByName(ids.select("record_id")).distinct()
    by = {t: valid.where(F.col("identifier_type") == t).select("request_id", "normalized") for t in REQUEST_TYPES}
    seed_records = (
        by["email"]
        .join(records, F.col("normalized") == F.col("email"))
        .select("request_id", "record_id")
        .unionByName(by["phone"].join(records, F.col("normalized") == F.col("phone")).select("request_id", "record_id"))
        .unionByName(
            by["record_id"]
            .join(known_records, F.col("normalized") == F.col("record_id"))
            .select("request_id", "record_id")
        )
    ).localCheckpoint()
    seed_people = (
        seed_records.join(ids, "record_id")
        .select("request_id", "cdp_id")
        .unionByName(by["cdp_id"].select("request_id", F.col("normalized").alias("cdp_id")))
        .distinct()
    )
    people = (
        seed_people.groupBy("request_id")
        .agg(F.count("*").alias("people"), F.first("cdp_id").alias("cdp_id"))
        .localCheckpoint()
    )
    ambiguous = (
        valid.select("request_id", "requested_by")
        .distinct()
        .join(people.where("people > 1"), "request_id")
        .select(
            "request_id",
            "requested_by",
            F.concat(F.lit("identifier matches "), F.col("people"), F.lit(" customers")).alias("reason"),
        )
    )
    refused = invalid.unionByName(ambiguous).distinct().localCheckpoint()
    accepted = valid.join(refused.select("request_id"), "request_id", "left_anti")
    person = people.where("people = 1").select("request_id", "cdp_id")
    person_records = (
        seed_records.join(refused.select("request_id"), "request_id", "left_anti")
        .unionByName(person.join(ids, "cdp_id").select("request_id", "record_id"))
        .distinct()
        .localCheckpoint()
    )
    values = person_records.join(records, "record_id").select(
        "request_id",
        F.explode(
            F.array(
                *[
                    F.struct(F.lit(kind).alias("kind"), F.col(kind).cast("string").alias("value"))
                    for kind in ("email", "phone", "loyalty_id", "account_id")
                ]
            )
        ).alias("v"),
    )
    own = values.select("request_id", "v.kind", "v.value").where(F.col("value").isNotNull())
    erased = person_records.select("record_id").distinct()
    others = records.join(erased, "record_id", "left_anti")
    shared = (
        others.select(
            F.explode(
                F.array(
                    *[
                        F.struct(F.lit(kind).alias("kind"), F.col(kind).cast("string").alias("value"))
                        for kind in ("email", "phone", "loyalty_id", "account_id")
                    ]
                )
            ).alias("v")
        )
        .select("v.kind", "v.value")
        .where(F.col("value").isNotNull())
        .distinct()
    )
    exclusive = own.join(shared, ["kind", "value"], "left_anti")
    requested = accepted.select(
        "request_id", F.col("identifier_type").alias("kind"), F.col("normalized").alias("value")
    )
    record_rows = person_records.select(
        "request_id", F.lit("record_id").alias("kind"), F.col("record_id").alias("value")
    )
    key_rows = person_records.where(F.col("record_id").contains(":")).select(
        "request_id",
        F.lit("record_key").alias("kind"),
        F.expr("substring(record_id, instr(record_id, ':') + 1)").alias("value"),
    )
    people_ids = person if lineage is None else person.unionByName(earlier_cdp_ids(person, lineage))
    cdp_rows = people_ids.select("request_id", F.lit("cdp_id").alias("kind"), F.col("cdp_id").alias("value"))
    values = exclusive.unionByName(requested).unionByName(record_rows).unionByName(key_rows).unionByName(cdp_rows)
    plain = F.lit(None).cast("string")
    for kind in KINDS:
        plain = F.when(F.col("kind") == kind, identifier_hash(kind, F.col("value"))).otherwise(plain)
    requesters = accepted.groupBy("request_id").agg(F.max("requested_by").alias("requested_by"))
    plan = (
        with_keyed(
            values.withColumn("_plain", plain).where(F.col("_plain").isNotNull()), key, {"value_hash": F.col("_plain")}
        )
        .select("request_id", "kind", "value_hash")
        .distinct()
        .join(requesters, "request_id")
        .join(person, "request_id", "left")
        .select("request_id", "requested_by", "kind", "value_hash", "cdp_id")
    )
    return plan, refused


MAX_MERGE_DEPTH = 50


def earlier_cdp_ids(person: DataFrame, lineage: DataFrame) -> DataFrame:
    """``request_id, cdp_id`` for every id the person's records had before merges (transitively).

    In: ``request_id, cdp_id``; silver.identity_lineage (``cdp_id, event, previous_cdp_ids``). Small: one
    row per merge the erased people went through.
    """
    merges = lineage.where(F.col("event") == "merged").select(
        F.col("cdp_id").alias("_into"), F.explode("previous_cdp_ids").alias("_earlier")
    )
    found = person.select("request_id", "cdp_id").localCheckpoint()
    frontier = found
    for _ in range(MAX_MERGE_DEPTH):
        step = (
            frontier.join(merges, F.col("cdp_id") == F.col("_into"))
            .select("request_id", F.col("_earlier").alias("cdp_id"))
            .join(found, ["request_id", "cdp_id"], "left_anti")
            .distinct()
            .localCheckpoint()
        )
        if step.isEmpty():
            break
        found = found.unionByName(step).localCheckpoint()
        frontier = step
    return found.join(person.select("request_id", "cdp_id"), ["request_id", "cdp_id"], "left_anti")


# --------------------------------------------------------------------------------------------
# Matching rows of a table
# --------------------------------------------------------------------------------------------


def person_spec(columns: list[str]) -> list[tuple[str, Column, bool]]:
    """The (kind, column, already hashed) triples that say whose a row of a silver/gold/ops table is."""
    spec = [(kind, F.col(f"`{c}`"), False) for c, kind in PERSON_COLUMNS.items() if c in columns]
    if {"identifier_type", "identifier"} <= set(columns):
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
            parts.append(_candidates(keyed, spec))
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
            parts.append(_candidates(with_fp, spec))
    if not parts:
        return bronze.sparkSession.createDataFrame([], "_fp string, kind string, plain string")
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part)
    return out


def _candidates(df: DataFrame, spec: list[tuple[str, Column, bool]]) -> DataFrame:
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
    return _candidates(rows, spec)


# --------------------------------------------------------------------------------------------
# The erasure run
# --------------------------------------------------------------------------------------------


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


def _per_request(pairs: DataFrame) -> dict[str, int]:
    """Rows matched per request, from ``_fp, request_id`` pairs."""
    counted = pairs.groupBy("request_id").agg(F.count("*").alias("rows")).collect()
    return {r["request_id"]: r["rows"] for r in counted}


def delta_tables(spark: SparkSession, root: str) -> list[tables.Table]:
    """Every Delta table under the lakehouse root, as ``<layer>/<name>`` folders with a transaction log."""
    files = LakeFiles(spark)
    found = []
    for layer in files.names(root):
        if layer.startswith(("_", ".")):
            continue
        for name in files.names(f"{root.rstrip('/')}/{layer}"):
            table = tables.Table(layer, name)
            if files.exists(f"{table.path(root)}/_delta_log"):
                found.append(table)
    return found


def _tombstone_export_state(spark: SparkSession, path: str, matched: DataFrame) -> None:
    """Replace the person's export state rows by tombstones in one commit, so destinations hear of the erasure.

    A MERGE keyed on whole rows: the matched rows are deleted, the tombstones inserted; a rerun finds the
    rows gone and the tombstones there, and changes nothing.
    """
    key = ["destination", "export_id", "cdp_id", "row"]
    changes = (
        matched.withColumn("_erase", F.lit(True))
        .unionByName(tombstones(matched).withColumn("_erase", F.lit(False)))
        .dropDuplicates(key)
    )
    condition = " AND ".join(f"t.`{c}` <=> s.`{c}`" for c in key)
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(changes.alias("s"), condition)
        .whenMatchedDelete(condition="s._erase")
        .whenNotMatchedInsert(condition="NOT s._erase", values={c: F.col(f"s.`{c}`") for c in matched.columns})
        .execute()
    )


def erase_by_fingerprint(job: Erasure, table: tables.Table, candidates: DataFrame) -> int:
    """Delete the rows whose fingerprint (``_fp``) has a candidate in the plan; returns rows deleted.

    The delete is a MERGE of the matched fingerprints on the fingerprint of every row: the commit info in
    the Delta log then holds the condition's columns, not the values or hashes a predicate would list.
    ``ops.export_state`` rows become tombstones instead (:func:`_tombstone_export_state`).
    """
    spark, path = job.spark, table.path(job.root)
    pairs = job.match(candidates).persist()
    try:
        per_request = _per_request(pairs)
        if not per_request:
            return 0
        matched = pairs.select("_fp").distinct()
        target = DeltaTable.forPath(spark, path)
        columns = target.toDF().columns
        if table.full_name == tables.EXPORT_STATE.full_name:
            rows = target.toDF().withColumn("_fp", row_fingerprint(columns)).join(matched, "_fp", "left_semi")
            rows = rows.drop("_fp").persist()
            deleted = rows.count()
            _tombstone_export_state(spark, path, rows)
            rows.unpersist()
        else:
            fingerprint = row_fingerprint(columns, "t")
            metrics = (
                target.alias("t").merge(matched.alias("s"), fingerprint == F.col("s._fp")).whenMatchedDelete().execute()
            )
            deleted = int(metrics.first()["num_deleted_rows"])
        job.record(table.full_name, per_request)
        return deleted
    finally:
        pairs.unpersist()


def erase_by_person(job: Erasure, table: tables.Table) -> int:
    """Delete the rows of a silver/gold/ops table whose person columns match the plan; returns rows deleted."""
    df = job.spark.read.format("delta").load(table.path(job.root))
    spec = person_spec(df.columns)
    if not spec:
        return 0
    return erase_by_fingerprint(job, table, _candidates(df.withColumn("_fp", row_fingerprint(df.columns)), spec))


def erase_table(job: Erasure, table: tables.Table, sources: SourcesConfig | None) -> int:
    """Erase the plan's people from one table, by the rule for its layer; returns rows deleted."""
    if table.full_name in NOT_ERASED:
        return 0
    spark = job.spark
    rules = sources.standardize if sources is not None else StandardizeRules()
    if table.layer == "bronze":
        source = next((s for s in sources.sources if s.name == table.name), None) if sources else None
        bronze = spark.read.format("delta").load(table.path(job.root))
        return erase_by_fingerprint(job, table, bronze_candidates(bronze, source, rules))
    if table.full_name == tables.QUARANTINE.full_name:
        quarantine = spark.read.format("delta").load(table.path(job.root))
        return erase_by_fingerprint(job, table, quarantine_candidates(quarantine, rules))
    return erase_by_person(job, table)


# Exports ------------------------------------------------------------------------------------

EXPORT_COLUMNS = {
    "cdp_id": ("cdp_id", False),
    "email": ("email", False),
    "phone": ("phone", False),
    "email_sha256": ("email", True),
    "phone_sha256": ("phone", True),
    "cdp_id_sha256": ("cdp_id", True),
}


def export_folders(spark: SparkSession, root: str) -> list[str]:
    """Folders of every export ever written, from the ``export`` rows of ``ops.audit_log``."""
    if not tables.exists(spark, root, tables.AUDIT_LOG):
        return []
    rows = (
        tables.read(spark, root, tables.AUDIT_LOG)
        .where(F.col("action") == "export")
        .select(F.get_json_object("details", "$.folder").alias("folder"))
        .where(F.col("folder").isNotNull())
        .distinct()
        .collect()
    )
    return sorted(export_folder(r["folder"]) for r in rows)


def _replace_file(spark: SparkSession, kept: DataFrame, path: str, file_format: str) -> None:
    """Write ``kept`` as one file at ``path``, via a temporary folder next to it (see :func:`_finish_replace`)."""
    files = LakeFiles(spark)
    tmp = _tmp_folder(path)
    writer = kept.coalesce(1).write.mode("overwrite").format("json" if file_format == "jsonl" else file_format)
    if file_format == "csv":
        writer = writer.option("header", "true")
    writer.save(tmp)
    _finish_replace(files, path)


def _tmp_folder(path: str) -> str:
    folder, _, name = path.rpartition("/")
    return f"{folder}/_erase_tmp_{name}"


def _finish_replace(files: LakeFiles, path: str) -> bool:
    """Move the rewritten file over the original; also completes a replacement a crash interrupted."""
    tmp = _tmp_folder(path)
    parts = [n for n in files.names(tmp) if n.startswith("part-")]
    if not parts:
        files.delete(tmp)
        return False
    files.delete(path)
    files.rename(f"{tmp}/{parts[0]}", path)
    files.delete(tmp)
    return True


def erase_exports(job: Erasure) -> int:
    """Rewrite every export file that holds a planned person without them; update manifests. Returns rows removed."""
    spark, files = job.spark, LakeFiles(job.spark)
    removed_total = 0
    for folder in export_folders(spark, job.root):
        manifest_path = f"{folder}/{MANIFEST}"
        if not files.exists(manifest_path):
            continue  # an export that never finished holds nothing a consumer could have received
        manifest = json.loads(files.read_text(manifest_path))
        if manifest.get("format") not in SPARK_FORMATS:
            raise UnsafePath(f"{manifest_path}: unknown format {manifest.get('format')!r}; refused")
        # Every path is checked before any file is touched: a crafted manifest must not make erasure delete
        # or rewrite anything outside its export folder.
        paths = [export_file(folder, entry.get("name"), manifest_path) for entry in manifest["files"]]
        changed = False
        removed_adds = 0
        for entry, path in zip(manifest["files"], paths, strict=True):
            if _finish_replace(files, path):
                changed = True
            df = read_export_file(spark, path, manifest["format"], manifest.get("columns"))
            spec = [(kind, F.col(f"`{c}`"), hashed) for c, (kind, hashed) in EXPORT_COLUMNS.items() if c in df.columns]
            if spec:
                fingerprinted = df.withColumn("_fp", row_fingerprint(df.columns))
                pairs = job.match(_candidates(fingerprinted, spec)).persist()
                per_request = _per_request(pairs)
                if per_request:
                    kept = fingerprinted.join(pairs.select("_fp").distinct(), "_fp", "left_anti").drop("_fp")
                    _replace_file(spark, kept, path, manifest["format"])
                    job.record(f"export {manifest['destination']}/{manifest['export_id']}/{entry['name']}", per_request)
                    changed = True
                pairs.unpersist()
            checksum = files.sha256(path)
            if checksum != entry["sha256"]:
                rows = read_export_file(spark, path, manifest["format"], manifest.get("columns")).count()
                removed = entry["rows"] - rows
                removed_total += removed
                if entry["kind"] in ("members", "adds"):
                    removed_adds += removed
                entry.update(rows=rows, sha256=checksum)
                changed = True
        if changed:
            counts = manifest["counts"]
            counts["adds"] = sum(e["rows"] for e in manifest["files"] if e["kind"] in ("members", "adds"))
            counts["removes"] = sum(e["rows"] for e in manifest["files"] if e["kind"] == "removes")
            counts["erasures"] = sum(e["rows"] for e in manifest["files"] if e["kind"] == "erasures")
            counts["total"] = max(0, counts["total"] - removed_adds)
            manifest.setdefault("amended_by_erasure", []).append(job.run_id)
            files.write_text(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return removed_total


# The run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErasureSummary:
    requests: int
    already_done: int
    refused: int
    planned: int
    rows_deleted: int
    export_rows_removed: int


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def plan_new_requests(
    spark: SparkSession, root: str, requests: DataFrame, rules: StandardizeRules, run_id: str, key: HashKey
) -> tuple[int, int, list[tuple]]:
    """Plan the requests not planned before; returns (requests already completed, refused, their audit rows)."""
    existing = (
        tables.read(spark, root, tables.ERASURE_PLAN)
        if tables.exists(spark, root, tables.ERASURE_PLAN)
        else spark.createDataFrame([], PLAN_SCHEMA)
    )
    done = {
        r["request_id"]
        for r in existing.where(F.col("completed_at").isNotNull()).select("request_id").distinct().collect()
    }
    planned = {r["request_id"] for r in existing.select("request_id").distinct().collect()}
    ids = {r["request_id"] for r in requests.select("request_id").distinct().collect()}
    new = requests.where(~F.col("request_id").isin(sorted(planned))) if planned else requests
    audit: list[tuple] = []
    refused_count = 0
    if ids - planned:
        records = _read_or_empty(
            spark,
            root,
            tables.CUSTOMER_RECORDS,
            "record_id string, email string, phone string, loyalty_id string, account_id string",
        )
        identity_map = _read_or_empty(spark, root, tables.IDENTITY_MAP, "record_id string, cdp_id string")
        lineage = _read_or_empty(
            spark, root, tables.IDENTITY_LINEAGE, "cdp_id string, event string, previous_cdp_ids array<string>"
        )
        plan, refused = plan_requests(normalize_requests(new, rules), records, identity_map, key, lineage)
        refused_rows = refused.collect()
        refused_count = len(refused_rows)
        for r in refused_rows:
            details = json.dumps({"requested_by": r["requested_by"], "status": "refused", "reason": r["reason"]})
            audit.append((run_id, "erase", r["request_id"], None, 0, details))
        now = _now()
        plan = plan.select(
            "*",
            F.lit(run_id).alias("run_id"),
            F.lit(now).cast("timestamp").alias("planned_at"),
            F.lit(None).cast("timestamp").alias("completed_at"),
            F.lit(key.key_id).alias("key_id"),
        )
        tables.upsert(
            spark.createDataFrame(plan.collect(), PLAN_SCHEMA),
            root,
            tables.ERASURE_PLAN,
            ["request_id", "kind", "value_hash"],
        )
    return len(ids & done), refused_count, audit


def _read_or_empty(spark: SparkSession, root: str, table: tables.Table, schema: str) -> DataFrame:
    return tables.read(spark, root, table) if tables.exists(spark, root, table) else spark.createDataFrame([], schema)


def erase(
    spark: SparkSession,
    root: str,
    requests: DataFrame,
    sources: SourcesConfig | None,
    run_id: str,
    key: HashKey,
    step: Callable[[str], AbstractContextManager[dict]] | None = None,
    parallelism: int = 1,
) -> ErasureSummary:
    """Run (or complete) the erasure of ``requests`` and of any request a failed run left pending.

    All pending requests are one batch: one pass over each table whatever their number, ``parallelism`` tables
    of a layer at once. ``step`` (``StageRun.step``) times each table and the exports in the run report.
    """
    step = step or _untimed
    rules = sources.standardize if sources is not None else StandardizeRules()
    audit: list[tuple] = []
    try:
        for table in (tables.ERASURE_PLAN, tables.ERASURE_SUPPRESSION):
            _key_bookkeeping(spark, root, table, key)
        already, refused, refused_audit = plan_new_requests(spark, root, requests, rules, run_id, key)
        audit += refused_audit
        if not tables.exists(spark, root, tables.ERASURE_PLAN):
            return ErasureSummary(requests.count(), already, refused, 0, 0, 0)
        pending = tables.read(spark, root, tables.ERASURE_PLAN).where(F.col("completed_at").isNull()).persist()
        pending_rows = pending.select("request_id", "requested_by", "kind", "value_hash", "cdp_id").collect()
        if not pending_rows:
            return ErasureSummary(requests.count(), already, refused, 0, 0, 0)
        requesters = {r["request_id"]: r["requested_by"] for r in pending_rows}
        plan = spark.createDataFrame(
            pending_rows, "request_id string, requested_by string, kind string, value_hash string, cdp_id string"
        )
        job = Erasure(spark, root, run_id, plan, key, requesters, audit)
        _suppress(
            spark,
            root,
            plan.select(
                "kind",
                "value_hash",
                "cdp_id",
                "request_id",
                F.lit(run_id).alias("run_id"),
                F.lit(_now()).cast("timestamp").alias("suppressed_at"),
                F.lit(key.key_id).alias("key_id"),
            ).dropDuplicates(["kind", "value_hash"]),
        )

        def erase_one(table: tables.Table) -> int:
            with step(f"erase {table.full_name}") as counts:
                counts["rows_deleted"] = erase_table(job, table, sources)
            return counts["rows_deleted"]

        deleted = 0
        for layer in _erasure_layers(delta_tables(spark, root)):
            deleted += sum(run_concurrently(spark, erase_one, layer, parallelism))
        with step("erase exports") as counts:
            export_rows = counts["rows_deleted"] = erase_exports(job)
        request_ids = sorted(requesters)
        for request_id in request_ids:
            details = {"requested_by": requesters[request_id], "status": "completed"}
            audit.append((run_id, "erase", request_id, None, None, json.dumps(details, sort_keys=True)))
        DeltaTable.forPath(spark, tables.ERASURE_PLAN.path(root)).update(
            condition=F.col("request_id").isin(request_ids) & F.col("completed_at").isNull(),
            set={"completed_at": F.lit(_now()).cast("timestamp")},
        )
        pending.unpersist()
        return ErasureSummary(requests.count(), already, refused, len(request_ids), deleted, export_rows)
    finally:
        # Written even when a step fails: the deletes done so far are audited.
        if audit:
            tables.append(tables.audit_rows(spark, audit), root, tables.AUDIT_LOG)


def _key_bookkeeping(spark: SparkSession, root: str, table: tables.Table, key: HashKey) -> None:
    """Check that ``table``'s hashes were made with ``key``; key rows hashed before keys existed, in place.

    A table hashed with another key is a ConfigError (see :func:`cdp_spark.suppression.keyed_rows`).
    """
    if not tables.exists(spark, root, table):
        return
    stored = tables.read(spark, root, table)
    keyed = keyed_rows(stored, key, table.full_name)  # raises on a foreign key
    if "key_id" in stored.columns and stored.where(F.col("key_id").isNull()).isEmpty():
        return
    log.info("[erase] %s: hashes made before hash keys existed are keyed with %s", table.full_name, key.key_id)
    tables.overwrite(keyed.select(*stored.columns, *([] if "key_id" in stored.columns else ["key_id"])), root, table)


@contextmanager
def _untimed(name: str) -> Iterator[dict]:
    yield {}


def _suppress(spark: SparkSession, root: str, suppression: DataFrame) -> None:
    """Add the plan's hashes to the suppression list; hashes already there keep their first request."""
    if tables.exists(spark, root, tables.ERASURE_SUPPRESSION):
        listed = tables.read(spark, root, tables.ERASURE_SUPPRESSION).select("kind", "value_hash")
        suppression = suppression.join(listed, ["kind", "value_hash"], "left_anti")
    rows = suppression.collect()
    if rows:
        tables.append(spark.createDataFrame(rows, suppression.schema), root, tables.ERASURE_SUPPRESSION)


def _erasure_layers(found: list[tables.Table]) -> list[list[tables.Table]]:
    """The tables by layer: bronze, then silver, gold, ops, others. A layer's tables are erased at once, one
    layer after the other, so if a run dies half way the person's downstream rows still exist (and the rerun,
    matching upstream, finds them)."""
    rank = {"bronze": 0, "silver": 1, "gold": 2, "ops": 3}
    ordered = sorted(found, key=lambda t: (rank.get(t.layer, 4), t.layer, t.name))
    return [list(group) for _, group in groupby(ordered, key=lambda t: (rank.get(t.layer, 4), t.layer))]
