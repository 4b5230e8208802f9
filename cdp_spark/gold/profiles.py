"""Golden profiles: one row per cdp_id, attributes chosen by the survivorship rules, consent, provenance."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cdp_spark.gold.survivorship import AttributeRule, aggregations, output_columns, prepare

CONSENT_CHANNELS = ("email", "sms", "ads")
# Consent statements are about identifiers of these kinds, found in these record columns.
CONSENT_IDENTIFIERS = {"email": "email", "phone": "phone"}

_PROFILE_HEAD = ["cdp_id", "first_name", "last_name", "email", "emails", "phone", "phones", "address", "city"]
_PROFILE_HEAD += ["postcode", "country", "birth_date", "loyalty_ids", "account_ids"]
_PROFILE_TAIL = ["consent_email", "consent_sms", "consent_ads", "first_seen", "last_seen", "sources", "record_count"]


def resolve_consent(person_records: DataFrame, consent: DataFrame) -> DataFrame:
    """Per person and channel, the most recent consent statement about any of the person's emails or phones.

    In: ``person_records`` (``cdp_id``, ``email``, ``phone``), ``consent`` (silver.consent). Out: ``cdp_id``,
    ``consent_email``, ``consent_sms``, ``consent_ads``; only people with a statement. At the same instant a
    withdrawal beats a grant: the safe reading of a contradiction.
    """
    identifiers = None
    for identifier_type, column in CONSENT_IDENTIFIERS.items():
        part = person_records.select(
            "cdp_id", F.lit(identifier_type).alias("identifier_type"), F.col(column).alias("identifier")
        ).where(F.col("identifier").isNotNull())
        identifiers = part if identifiers is None else identifiers.unionByName(part)
    statements = identifiers.distinct().join(
        consent.select("identifier_type", "identifier", "channel", "granted", "recorded_at").where(
            F.col("granted").isNotNull() & F.col("recorded_at").isNotNull()
        ),
        on=["identifier_type", "identifier"],
        how="inner",
    )
    latest_first = F.struct(F.col("recorded_at"), (~F.col("granted")).alias("withdrawn"))
    return statements.groupBy("cdp_id").agg(
        *[
            F.max_by(
                F.when(F.col("channel") == channel, F.col("granted")),
                F.when(F.col("channel") == channel, latest_first),
            ).alias(f"consent_{channel}")
            for channel in CONSENT_CHANNELS
        ]
    )


def golden_profiles(
    records: DataFrame,
    identity_map: DataFrame,
    consent: DataFrame,
    activity: DataFrame,
    attributes: dict[str, AttributeRule],
) -> DataFrame:
    """One profile per cdp_id of the identity map, anonymous-only people included (null attributes).

    In: ``records`` (silver.customer_records), ``identity_map`` (``record_id``, ``cdp_id``), ``consent``
    (silver.consent), ``activity`` (``record_id``, ``first_fact_ts``, ``last_fact_ts``: see
    ``features.record_activity``). Out: the gold.customer_profile contract (docs/tables.md) with any extra
    configured attributes after ``account_ids``: ``cdp_id``, golden attributes, ``consent_*``, ``first_seen``,
    ``last_seen``, ``sources`` (sorted; an anonymous record's source is its record_id prefix, e.g. ``cookie``),
    ``record_count`` (identity records, anonymous ones included), ``provenance``.
    """
    person_records = (
        identity_map.select("record_id", "cdp_id")
        .join(records.drop("cdp_id"), on="record_id", how="left")
        .join(activity, on="record_id", how="left")
        .withColumn("source", F.coalesce(F.col("source"), F.substring_index(F.col("record_id"), ":", 1)))
    )
    aggregates, golden, provenance = aggregations(attributes)
    profiles = (
        prepare(person_records, attributes)
        .groupBy("cdp_id")
        .agg(
            *aggregates,
            F.min(F.least("updated_at", "first_fact_ts")).alias("first_seen"),
            F.max(F.greatest("updated_at", "last_fact_ts")).alias("last_seen"),
            F.array_sort(F.collect_set("source")).alias("sources"),
            F.count_distinct("record_id").alias("record_count"),
        )
        .select("cdp_id", *golden, provenance, "first_seen", "last_seen", "sources", "record_count")
        .join(resolve_consent(person_records, consent), on="cdp_id", how="left")
    )
    extra = [c for n, r in attributes.items() for c in output_columns(n, r) if c not in _PROFILE_HEAD]
    return profiles.select(*_PROFILE_HEAD, *extra, *_PROFILE_TAIL, "provenance")
