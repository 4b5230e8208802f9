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


def consent_statements(consent: DataFrame, engagement: DataFrame) -> DataFrame:
    """Every statement about an address: ``identifier_type, identifier, channel, granted, recorded_at``.

    In: silver.consent and silver.email_engagement. An ``unsubscribe`` event is a withdrawal of the email
    channel for that address, at its event time; statements without a decision or a time are left out.
    """
    stated = consent.select(
        "identifier_type", "identifier", "channel", F.col("granted").cast("boolean").alias("granted"), "recorded_at"
    ).where(F.col("granted").isNotNull() & F.col("recorded_at").isNotNull())
    unsubscribed = engagement.where(
        (F.lower("event_type") == "unsubscribe") & F.col("email").isNotNull() & F.col("event_ts").isNotNull()
    ).select(
        F.lit("email").alias("identifier_type"),
        F.col("email").alias("identifier"),
        F.lit("email").alias("channel"),
        F.lit(False).alias("granted"),
        F.col("event_ts").alias("recorded_at"),
    )
    return stated.unionByName(unsubscribed)


def address_consent(person_records: DataFrame, statements: DataFrame) -> DataFrame:
    """Per person, address and channel: may this address be used? The gold.address_consent contract.

    In: ``person_records`` (``cdp_id``, ``email``, ``phone``), ``statements`` (:func:`consent_statements`).
    Out: ``cdp_id, identifier_type, identifier, channel, granted, recorded_at, shared``; only addresses
    with a statement. The latest statement about the address decides (at the same instant a withdrawal
    beats a grant: the safe reading of a contradiction). An address several people carry (a household
    phone) is ``shared``: its grant does not count for a person whose own address's latest statement on
    the channel is a withdrawal, so a relative's grant never overrides the person's own "no".
    """
    identifiers = None
    for identifier_type, column in CONSENT_IDENTIFIERS.items():
        part = person_records.select(
            "cdp_id", F.lit(identifier_type).alias("identifier_type"), F.col(column).alias("identifier")
        ).where(F.col("identifier").isNotNull())
        identifiers = part if identifiers is None else identifiers.unionByName(part)
    identifiers = identifiers.distinct()
    keys = ["identifier_type", "identifier"]
    holders = identifiers.groupBy(*keys).agg((F.count_distinct("cdp_id") > 1).alias("shared"))
    latest = statements.groupBy(*keys, "channel").agg(
        F.max_by("granted", F.struct(F.col("recorded_at"), (~F.col("granted")).alias("withdrawn"))).alias("granted"),
        F.max("recorded_at").alias("recorded_at"),
    )
    rows = identifiers.join(latest, keys).join(holders, keys)
    own_withdrawal = (
        rows.where(~F.col("shared") & ~F.col("granted"))
        .select("cdp_id", "channel")
        .distinct()
        .withColumn("_own_withdrawal", F.lit(True))
    )
    return (
        rows.join(own_withdrawal, ["cdp_id", "channel"], "left")
        .withColumn("granted", F.col("granted") & ~(F.col("shared") & F.coalesce("_own_withdrawal", F.lit(False))))
        .select("cdp_id", *keys, "channel", "granted", "recorded_at", "shared")
    )


def resolve_consent(addresses: DataFrame) -> DataFrame:
    """Per person and channel: true if any of their addresses may be used, false if stated but none may.

    In: :func:`address_consent`. Out: ``cdp_id``, ``consent_email``, ``consent_sms``, ``consent_ads``; only
    people with a statement. Exports decide per exported address, not by this summary.
    """
    return addresses.groupBy("cdp_id").agg(
        *[
            F.bool_or(F.when(F.col("channel") == channel, F.col("granted"))).alias(f"consent_{channel}")
            for channel in CONSENT_CHANNELS
        ]
    )


def golden_profiles(
    records: DataFrame,
    identity_map: DataFrame,
    addresses: DataFrame,
    activity: DataFrame,
    attributes: dict[str, AttributeRule],
) -> DataFrame:
    """One profile per cdp_id of the identity map, anonymous-only people included (null attributes).

    In: ``records`` (silver.customer_records), ``identity_map`` (``record_id``, ``cdp_id``), ``addresses``
    (:func:`address_consent`), ``activity`` (``record_id``, ``first_fact_ts``, ``last_fact_ts``: see
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
        .join(resolve_consent(addresses), on="cdp_id", how="left")
    )
    return profiles.select(*profile_columns(attributes))


def profile_columns(attributes: dict) -> list[str]:
    """gold.customer_profile's columns, in order, for the survivorship attributes of conf/profiles.yaml."""
    extra = [c for n, r in attributes.items() for c in output_columns(n, r) if c not in _PROFILE_HEAD]
    return [*_PROFILE_HEAD, *extra, *_PROFILE_TAIL, "provenance"]
