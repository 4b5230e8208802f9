"""Erasure requests and the plan: read and check request files, resolve each request to its person and the
identifiers their records carry, stored as keyed hashes in ``ops.erasure_plan`` (see :mod:`cdp_spark.privacy.erase`
for the whole run)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp_spark import tables
from cdp_spark.config import ConfigError
from cdp_spark.hashing import HashKey, identifier_hash, with_keyed
from cdp_spark.normalize.emails import normalize_email
from cdp_spark.normalize.phones import phone_e164
from cdp_spark.normalize.rules import StandardizeRules

log = logging.getLogger("cdp_spark")


REQUEST_TYPES = ("email", "phone", "cdp_id", "record_id")
# What a plan row's hash is of: the person's own identifiers, their record ids, the source keys of those
# records (the part after "<source>:", for raw quarantined rows) and their cdp_id.
KINDS = ("email", "phone", "loyalty_id", "account_id", "record_id", "record_key", "cdp_id")


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


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def plan_new_requests(
    spark: SparkSession, root: str, requests: DataFrame, rules: StandardizeRules, run_id: str, key: HashKey
) -> tuple[int, int, list[tuple]]:
    """Plan the requests not planned before; returns (requests already completed, refused, their audit rows)."""
    existing = tables.read_or_empty(spark, root, tables.ERASURE_PLAN)
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
        records = tables.read_or_empty(spark, root, tables.CUSTOMER_RECORDS)
        identity_map = tables.read_or_empty(spark, root, tables.IDENTITY_MAP)
        lineage = tables.read_or_empty(spark, root, tables.IDENTITY_LINEAGE)
        plan, refused = plan_requests(normalize_requests(new, rules), records, identity_map, key, lineage)
        refused_rows = refused.collect()
        refused_count = len(refused_rows)
        for r in refused_rows:
            details = json.dumps({"requested_by": r["requested_by"], "status": "refused", "reason": r["reason"]})
            audit.append((run_id, "erase", r["request_id"], None, 0, details))
        now = utc_now()
        plan = plan.select(
            "*",
            F.lit(run_id).alias("run_id"),
            F.lit(now).cast("timestamp").alias("planned_at"),
            F.lit(None).cast("timestamp").alias("completed_at"),
            F.lit(key.key_id).alias("key_id"),
        )
        tables.upsert(
            tables.rows_frame(spark, plan.collect(), tables.ERASURE_PLAN.schema),
            root,
            tables.ERASURE_PLAN,
            list(tables.ERASURE_PLAN.keys),
        )
    return len(ids & done), refused_count, audit
