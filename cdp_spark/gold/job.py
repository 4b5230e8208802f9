"""`cdp-spark profiles`: silver + identity map -> gold.customer_profile, gold.households, gold.customer_features."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import functions as F

from cdp_spark import stage_inputs, tables
from cdp_spark.config import ConfigError
from cdp_spark.features import Facts, customer_features, default_as_of, record_activity, write_snapshots
from cdp_spark.gold.households import households
from cdp_spark.gold.profiles import address_consent, consent_statements, golden_profiles
from cdp_spark.gold.survivorship import load_profiles
from cdp_spark.ops import StageRun
from cdp_spark.pipeline import Context
from cdp_spark.stage_inputs import StageState


def _as_of(ctx: Context, facts: Facts) -> dt.date:
    text = getattr(ctx.args, "as_of", None)
    if not text:
        return default_as_of(facts)
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--as-of {text!r}: expected a date YYYY-MM-DD") from None


# What profiles reads (Facts, records, consent, engagement, hot values) and writes.
PROFILE_READS = (
    tables.CUSTOMER_RECORDS,
    tables.IDENTITY_MAP,
    tables.ORDERS,
    tables.EVENTS,
    tables.SUPPORT_TICKETS,
    tables.EMAIL_ENGAGEMENT,
    tables.CONSENT,
    tables.HOT_IDENTIFIERS,
)
PROFILE_WRITES = (tables.ADDRESS_CONSENT, tables.CUSTOMER_PROFILE, tables.HOUSEHOLDS, tables.CUSTOMER_FEATURES)


def run(ctx: Context, stage: StageRun) -> None:
    spark, root = ctx.spark, ctx.root
    config = load_profiles(ctx.config.files.profiles)
    state = StageState(
        "profiles",
        reads=PROFILE_READS,
        writes=PROFILE_WRITES,
        settings={
            "config": config.model_dump(mode="json"),
            "as_of": getattr(ctx.args, "as_of", None),  # None: the latest data date, which the facts decide
            "code": stage_inputs.code_digest("cdp_spark.gold", "cdp_spark.features"),
        },
    )
    before, unchanged = stage_inputs.compare(spark, root, stage, state, getattr(ctx.args, "force", False))
    if unchanged:
        return
    with stage.step("read silver") as counts:
        facts = Facts.read(spark, root)
        records = tables.read(spark, root, tables.CUSTOMER_RECORDS)
        consent = tables.read_or_empty(spark, root, tables.CONSENT)
        engagement = tables.read_or_empty(spark, root, tables.EMAIL_ENGAGEMENT)
        hot = tables.read_or_empty(spark, root, tables.HOT_IDENTIFIERS)
        counts["records"] = records.count()
        counts["identity_records"] = facts.identity_map.count()
    with stage.step("address consent") as counts:
        people = facts.identity_map.select("record_id", "cdp_id").join(
            records.select("record_id", "email", "phone"), "record_id"
        )
        addresses = address_consent(people, consent_statements(consent, engagement)).checkpoint()
        counts["rows"] = addresses.count()
        counts["written"] = tables.overwrite_if_changed(addresses, root, tables.ADDRESS_CONSENT)
    with stage.step("profiles") as counts:
        activity = record_activity(facts)
        profile = golden_profiles(records, facts.identity_map, addresses, activity, config.attributes).checkpoint()
        counts["profiles"] = profile.count()
        counts["cdp_ids"] = facts.identity_map.select("cdp_id").distinct().count()
        if counts["profiles"] != counts["cdp_ids"]:
            raise RuntimeError(
                f"gold.customer_profile would hold {counts['profiles']} rows for {counts['cdp_ids']} cdp_ids: "
                "exactly one per cdp_id is the contract; nothing was written"
            )
        counts["written"] = tables.overwrite_if_changed(profile, root, tables.CUSTOMER_PROFILE)
    with stage.step("households") as counts:
        household = households(profile, hot, config.households).checkpoint()
        sizes = household.agg(
            F.count(F.lit(1)).alias("people"),
            F.count_distinct("household_id").alias("households"),
            F.count_distinct(F.when(F.col("household_size") > 1, F.col("household_id"))).alias("multi_person"),
        ).first()
        counts.update(sizes.asDict())
        counts["written"] = tables.overwrite_if_changed(household, root, tables.HOUSEHOLDS)
    with stage.step("features") as counts:
        as_of = _as_of(ctx, facts)
        snapshot = customer_features(facts, as_of)
        write_snapshots(snapshot, root, [as_of])
        counts["rows"] = (
            tables.read(spark, root, tables.CUSTOMER_FEATURES).where(F.col("as_of") == F.lit(as_of)).count()
        )
    stage_inputs.record(spark, root, stage.run_id, state, before)
