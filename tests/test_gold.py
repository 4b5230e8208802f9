"""Gold layer: survivorship with provenance, consent, households, point-in-time features, and the profiles job."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
from pathlib import Path

import pytest
from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cdp_spark import gold, tables
from cdp_spark.config import CdpConfig, ConfigError, StageFiles
from cdp_spark.features import (
    FEATURES,
    Facts,
    customer_features,
    customer_features_at,
    default_as_of,
    purchases,
    render_features_doc,
)
from cdp_spark.gold.households import households
from cdp_spark.gold.job import PROFILE_WRITES, run
from cdp_spark.gold.profiles import address_consent, consent_statements, golden_profiles, resolve_consent
from cdp_spark.gold.survivorship import HouseholdRules, load_profiles
from cdp_spark.ops import StageRun
from cdp_spark.pipeline import Context
from cdp_spark.tables import silver_schema as contract_schema

REPO = Path(__file__).resolve().parents[1]
IDENTITY_MAP_SCHEMA = T.StructType(
    [T.StructField(c, T.StringType()) for c in ("record_id", "cdp_id")]
    + [T.StructField("component_size", T.LongType())]
)


def frame(spark: SparkSession, table: str, rows: list[dict]) -> DataFrame:
    """Rows of a silver table given as strings, cast to its contract (timestamps read as UTC by the session)."""
    schema = contract_schema(table)
    text = T.StructType([T.StructField(f.name, T.StringType()) for f in schema.fields])
    raw = spark.createDataFrame([tuple(row.get(f.name) for f in schema.fields) for row in rows], text)
    return raw.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])


def records(spark: SparkSession, rows: list[dict]) -> DataFrame:
    full = [{"source": r["record_id"].split(":")[0], "source_key": r["record_id"].split(":", 1)[1], **r} for r in rows]
    return frame(spark, "customer_records", full)


def identity_map(spark: SparkSession, members: dict[str, list[str]]) -> DataFrame:
    rows = [(record_id, cdp_id, len(ids)) for cdp_id, ids in members.items() for record_id in ids]
    return spark.createDataFrame(rows, IDENTITY_MAP_SCHEMA)


def empty(spark: SparkSession, table: str) -> DataFrame:
    return spark.createDataFrame([], contract_schema(table))


ADDRESS_CONSENT_SCHEMA = (
    "cdp_id string, identifier_type string, identifier string, channel string, granted boolean, "
    "recorded_at timestamp, shared boolean"
)


def no_addresses(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([], ADDRESS_CONSENT_SCHEMA)


def no_activity(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([], "record_id string, first_fact_ts timestamp, last_fact_ts timestamp")


# --------------------------------------------------------------------------------------------
# Survivorship and provenance
# --------------------------------------------------------------------------------------------

RULES_YAML = """
attributes:
  first_name: {rule: source_priority, sources: [support, crm]}
  last_name: {rule: most_recent}
  email: {rule: most_frequent}
  phone: {rule: first_non_null}
  address: {rule: most_recent, columns: [address, city, postcode, country]}
  birth_date: {rule: first_non_null}
  emails: {rule: union, columns: [email], limit: 5}
  phones: {rule: union, columns: [phone], limit: 1}
  loyalty_ids: {rule: union, columns: [loyalty_id], limit: 5}
  account_ids: {rule: union, columns: [account_id], limit: 5}
"""

PERSON_RECORDS = [
    # Anna: four records from three sources.
    {
        "record_id": "crm:1",
        "first_name": "anna",
        "last_name": "smith",
        "email": "anna@x.com",
        "phone": "+15550001",
        "address": "1 oak rd",
        "city": "leeds",
        "postcode": "LS1 1AA",
        "country": "GB",
        "birth_date": "1990-01-01",
        "loyalty_id": "L1",
        "updated_at": "2025-01-01 00:00:00",
    },
    {
        "record_id": "crm:2",
        "first_name": "anne",
        "last_name": "smith",
        "email": "anna@x.com",
        "phone": "+15550001",
        "address": "9 elm st",
        "city": "york",
        "postcode": "YO1 1AA",
        "country": "GB",
        "birth_date": "1991-02-02",
        "updated_at": "2025-04-01 00:00:00",
    },
    # The most recent record has a postcode but no street: the address group must not take its postcode.
    {
        "record_id": "orders:A1",
        "first_name": "ann",
        "last_name": "smyth",
        "email": "ann@y.com",
        "phone": "+15550002",
        "postcode": "LS2 2BB",
        "account_id": "A1",
        "updated_at": "2025-05-01 00:00:00",
    },
    {
        "record_id": "support:T1",
        "first_name": "annie",
        "email": "ann@y.com",
        "phone": "+15550002",
        "updated_at": "2025-02-01 00:00:00",
    },
    # Bea: two crm records updated at the same instant -> the smaller record_id wins every tie.
    {"record_id": "crm:b", "first_name": "bee", "last_name": "jones", "updated_at": "2025-03-01 00:00:00"},
    {"record_id": "crm:a", "first_name": "bea", "last_name": "jonas", "updated_at": "2025-03-01 00:00:00"},
]
MEMBERS = {
    "p-anna": ["crm:1", "crm:2", "orders:A1", "support:T1", "cookie:k1"],
    "p-bea": ["crm:a", "crm:b"],
    "p-anon": ["cookie:zz"],  # only an anonymous cookie: a profile with no attributes
}


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    path = tmp_path_factory.mktemp("conf") / "profiles.yaml"
    path.write_text(RULES_YAML)
    return load_profiles(str(path))


@pytest.fixture(scope="module")
def survived(spark, rules):
    activity = spark.createDataFrame(
        [("cookie:k1", dt.datetime(2024, 12, 1), dt.datetime(2025, 6, 1))],
        "record_id string, first_fact_ts timestamp, last_fact_ts timestamp",
    )
    return golden_profiles(
        records(spark, PERSON_RECORDS),
        identity_map(spark, MEMBERS),
        no_addresses(spark),
        activity,
        rules.attributes,
    ).cache()


def test_every_rule_chooses_its_value(spark, survived):
    expected = spark.createDataFrame(
        [
            (
                "p-anna",
                "annie",
                "smyth",
                "ann@y.com",
                "+15550001",
                "9 elm st",
                "york",
                "YO1 1AA",
                "GB",
                dt.date(1990, 1, 1),
                ["ann@y.com", "anna@x.com"],
                ["+15550002"],
                ["L1"],
                ["A1"],
            ),
            ("p-bea", "bea", "jonas", None, None, None, None, None, None, None, [], [], [], []),
            ("p-anon", None, None, None, None, None, None, None, None, None, [], [], [], []),
        ],
        "cdp_id string, first_name string, last_name string, email string, phone string, address string, "
        "city string, postcode string, country string, birth_date date, emails array<string>, "
        "phones array<string>, loyalty_ids array<string>, account_ids array<string>",
    )
    assert_df_equality(survived.select(*expected.columns), expected, ignore_row_order=True, ignore_nullable=True)


def test_each_chosen_value_carries_its_provenance(spark, survived):
    provenance = survived.select("cdp_id", F.explode("provenance").alias("attribute", "origin")).select(
        "cdp_id", "attribute", "origin.source", "origin.record_id", "origin.rule"
    )
    expected = spark.createDataFrame(
        [
            ("p-anna", "first_name", "support", "support:T1", "source_priority"),
            ("p-anna", "last_name", "orders", "orders:A1", "most_recent"),
            # anna@x.com and ann@y.com have two records each: the tie goes to the most recent record.
            ("p-anna", "email", "orders", "orders:A1", "most_frequent"),
            ("p-anna", "phone", "crm", "crm:1", "first_non_null"),
            ("p-anna", "address", "crm", "crm:2", "most_recent"),
            ("p-anna", "birth_date", "crm", "crm:1", "first_non_null"),
            ("p-bea", "first_name", "crm", "crm:a", "source_priority"),
            ("p-bea", "last_name", "crm", "crm:a", "most_recent"),
        ],
        "cdp_id string, attribute string, source string, record_id string, rule string",
    )
    assert_df_equality(provenance, expected, ignore_row_order=True, ignore_nullable=True)


def test_profile_bookkeeping_counts_anonymous_records(spark, survived):
    expected = spark.createDataFrame(
        [
            ("p-anna", dt.datetime(2024, 12, 1), dt.datetime(2025, 6, 1), ["cookie", "crm", "orders", "support"], 5),
            ("p-bea", dt.datetime(2025, 3, 1), dt.datetime(2025, 3, 1), ["crm"], 2),
            ("p-anon", None, None, ["cookie"], 1),
        ],
        "cdp_id string, first_seen timestamp, last_seen timestamp, sources array<string>, record_count long",
    )
    assert_df_equality(survived.select(*expected.columns), expected, ignore_row_order=True, ignore_nullable=True)


def test_profiles_count_equals_cdp_ids(survived):
    assert survived.count() == 3
    assert survived.select("cdp_id").distinct().count() == 3


def test_rule_variants_as_extra_attributes(spark, tmp_path):
    # Extra attributes over copies of first_name: every rule on the same four records, in one Spark job.
    variants = {
        "by_priority": "{rule: source_priority, sources: [pos, crm]}",  # best listed source, then most recent
        "by_unlisted": "{rule: source_priority, sources: [pos]}",  # no listed source: unlisted rank last, by recency
        "by_recency": "{rule: most_recent}",
        "by_age": "{rule: first_non_null}",
        "by_frequency": "{rule: most_frequent}",  # four names once each: the most recent wins
    }
    extra = "".join(f"  {name}: {{{rule[1:-1]}, columns: [{name}]}}\n" for name, rule in variants.items())
    path = tmp_path / "profiles.yaml"
    path.write_text(RULES_YAML + extra)
    people = records(spark, PERSON_RECORDS[:4])
    people = people.select("*", *[F.col("first_name").alias(name) for name in variants])
    profile = golden_profiles(
        people,
        identity_map(spark, {"p-anna": ["crm:1", "crm:2", "orders:A1", "support:T1"]}),
        no_addresses(spark),
        no_activity(spark),
        load_profiles(str(path)).attributes,
    ).first()
    chosen = {name: (profile[name], profile["provenance"][name]["record_id"]) for name in variants}
    assert chosen == {
        "by_priority": ("anne", "crm:2"),
        "by_unlisted": ("ann", "orders:A1"),
        "by_recency": ("ann", "orders:A1"),
        "by_age": ("anna", "crm:1"),
        "by_frequency": ("ann", "orders:A1"),
    }
    assert profile.__fields__[-len(variants) - 8 :][: len(variants)] == list(variants)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (RULES_YAML.replace("limit: 5}\n  phones", "}\n  phones"), "attributes.emails: Value error, rule union"),
        (RULES_YAML.replace("{rule: most_recent}", "{rule: newest}"), "attributes.last_name.rule"),
        (RULES_YAML.replace("  birth_date: {rule: first_non_null}\n", ""), "birth_date"),
        (RULES_YAML.replace("sources: [support, crm]", "sources: []"), "source_priority needs"),
    ],
)
def test_bad_rules_name_file_and_key(tmp_path, yaml_text, message):
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=str(path)) as error:
        load_profiles(str(path))
    assert message in str(error.value)


def test_shipped_config_is_valid():
    config = load_profiles(str(REPO / "conf" / "profiles.yaml"))
    assert config.households.also_require == "surname"


# --------------------------------------------------------------------------------------------
# Consent
# --------------------------------------------------------------------------------------------


def statement(identifier_type: str, identifier: str, channel: str, granted: str, recorded_at: str) -> dict:
    return dict(
        identifier_type=identifier_type,
        identifier=identifier,
        channel=channel,
        granted=granted,
        recorded_at=recorded_at,
    )


def test_consent_is_decided_per_address_unsubscribes_withdraw_and_a_shared_phone_never_overrides_own_no(spark):
    person_records = spark.createDataFrame(
        [
            ("p1", "anna@x.com", "+15550001"),
            ("p1", "ann@y.com", "+15559999"),  # +15559999: the household landline, p3's too
            ("p2", "bob@z.com", None),
            ("p3", "cy@z.com", "+15559999"),
        ],
        "cdp_id string, email string, phone string",
    )
    consent = frame(
        spark,
        "consent",
        [
            statement("email", "anna@x.com", "email", "true", "2025-01-01 00:00:00"),
            # Withdrawn later through the person's other address: that address only.
            statement("email", "ann@y.com", "email", "false", "2025-06-01 00:00:00"),
            statement("phone", "+15550001", "sms", "false", "2025-01-01 00:00:00"),
            statement("phone", "+15550001", "sms", "true", "2025-03-01 00:00:00"),  # latest wins
            statement("phone", "+15550001", "ads", "false", "2025-02-01 00:00:00"),  # p1's own "no" to ads ...
            statement("phone", "+15559999", "ads", "true", "2025-05-01 00:00:00"),  # ... beats p3's later grant
            statement("email", "bob@z.com", "ads", "true", "2025-02-01 00:00:00"),
            statement("email", "bob@z.com", "sms", "true", "2025-02-01 00:00:00"),  # same instant: the "no" wins
            statement("email", "bob@z.com", "sms", "false", "2025-02-01 00:00:00"),
            statement("email", "cy@z.com", "email", "true", "2025-01-01 00:00:00"),
            statement("email", "bob@z.com", "email", "true", "2025-03-01 00:00:00"),  # opted in again
            statement("phone", "anna@x.com", "ads", "true", "2025-02-01 00:00:00"),  # an email stated as a phone
        ],
    )
    engagement = frame(
        spark,
        "email_engagement",
        [
            # Unsubscribing from a mail is a withdrawal of the email channel for that address ...
            {"message_id": "m1", "email": "cy@z.com", "event_type": "unsubscribe", "event_ts": "2025-04-01 00:00:00"},
            # ... which a later grant (a new opt-in) lifts again; other events say nothing about consent.
            {"message_id": "m2", "email": "bob@z.com", "event_type": "unsubscribe", "event_ts": "2025-01-01 00:00:00"},
            {"message_id": "m3", "email": "bob@z.com", "event_type": "click", "event_ts": "2025-07-01 00:00:00"},
        ],
    )
    addresses = address_consent(person_records, consent_statements(consent, engagement))
    ts = dt.datetime
    expected = spark.createDataFrame(
        [
            ("p1", "email", "anna@x.com", "email", True, ts(2025, 1, 1), False),
            ("p1", "email", "ann@y.com", "email", False, ts(2025, 6, 1), False),
            ("p1", "phone", "+15550001", "sms", True, ts(2025, 3, 1), False),
            ("p1", "phone", "+15550001", "ads", False, ts(2025, 2, 1), False),
            ("p1", "phone", "+15559999", "ads", False, ts(2025, 5, 1), True),
            ("p3", "phone", "+15559999", "ads", True, ts(2025, 5, 1), True),
            ("p2", "email", "bob@z.com", "ads", True, ts(2025, 2, 1), False),
            ("p2", "email", "bob@z.com", "sms", False, ts(2025, 2, 1), False),
            ("p2", "email", "bob@z.com", "email", True, ts(2025, 3, 1), False),
            ("p3", "email", "cy@z.com", "email", False, ts(2025, 4, 1), False),
        ],
        ADDRESS_CONSENT_SCHEMA,
    )
    assert_df_equality(addresses, expected, ignore_row_order=True, ignore_nullable=True)
    summary = spark.createDataFrame(
        [("p1", True, True, False), ("p2", True, False, True), ("p3", False, None, True)],
        "cdp_id string, consent_email boolean, consent_sms boolean, consent_ads boolean",
    )
    assert_df_equality(resolve_consent(addresses), summary, ignore_row_order=True, ignore_nullable=True)


# --------------------------------------------------------------------------------------------
# Households
# --------------------------------------------------------------------------------------------


def _household_id(key: str) -> str:
    return "hh-" + hashlib.sha256(key.encode()).hexdigest()[:20]


HOUSEHOLD_PROFILES = [
    ("h1", "smith", "+15550001", "1 Oak Rd", "LS1 1AA"),
    ("h2", "Smith", "+15550002", " 1  oak rd ", "ls1 1aa"),  # same address written differently
    ("h3", "jones", "+15550001", "1 oak rd", "LS1 1AA"),  # same address, another surname
    ("h4", "brown", None, "5 Hot St", "HT1 1AA"),  # address hot in silver.hot_identifiers
    ("h5", "brown", None, "5 hot st", "HT1 1AA"),
    ("h6", "grey", None, "Unknown", "XX1 1XX"),  # blocked placeholder
    ("h7", "grey", None, "unknown", "XX1 1XX"),
    *[(f"b{i}", "white", None, "7 Big Rd", "BG1 1AA") for i in range(4)],  # 4 profiles > max_household_size 3
    ("h8", "black", None, "2 Lone Ln", None),  # no postcode: no address key
]


@pytest.mark.parametrize(
    ("also_require", "expected"),
    [
        (
            "surname",
            [
                ("h1", "1 oak rd|ls1 1aa|smith", 2),
                ("h2", "1 oak rd|ls1 1aa|smith", 2),
                ("h3", "1 oak rd|ls1 1aa|jones", 1),
            ],
        ),
        (
            "phone",
            [
                ("h1", "1 oak rd|ls1 1aa|+15550001", 2),
                ("h2", "1 oak rd|ls1 1aa|+15550002", 1),
                ("h3", "1 oak rd|ls1 1aa|+15550001", 2),
            ],
        ),
        ("none", [("h1", "1 oak rd|ls1 1aa", 3), ("h2", "1 oak rd|ls1 1aa", 3), ("h3", "1 oak rd|ls1 1aa", 3)]),
    ],
)
def test_households_from_shared_addresses_only(spark, also_require, expected):
    profiles = spark.createDataFrame(
        HOUSEHOLD_PROFILES, "cdp_id string, last_name string, phone string, address string, postcode string"
    )
    hot = spark.createDataFrame(
        [("address", hashlib.sha256(b"5 Hot St").hexdigest()), ("email", hashlib.sha256(b"x@y.com").hexdigest())],
        "identifier string, value_hash string",
    )
    rules = HouseholdRules(also_require=also_require, max_household_size=3, blocked_addresses=["UNKNOWN"])
    expected_df = spark.createDataFrame(
        [(_household_id(group), cdp_id, "1 oak rd|ls1 1aa", size) for cdp_id, group, size in expected],
        "household_id string, cdp_id string, address_key string, household_size long",
    )
    assert_df_equality(households(profiles, hot, rules), expected_df, ignore_row_order=True, ignore_nullable=True)


def test_hot_phone_joins_no_household(spark):
    profiles = spark.createDataFrame(
        [("h1", "a", "+15550009", "1 Oak Rd", "LS1"), ("h2", "b", "+15550009", "1 Oak Rd", "LS1")],
        "cdp_id string, last_name string, phone string, address string, postcode string",
    )
    hot = spark.createDataFrame(
        [("phone", hashlib.sha256(b"+15550009").hexdigest())], "identifier string, value_hash string"
    )
    assert households(profiles, hot, HouseholdRules(also_require="phone")).count() == 0


# --------------------------------------------------------------------------------------------
# Point-in-time features
# --------------------------------------------------------------------------------------------

AS_OF = dt.date(2025, 6, 30)
FEATURE_MEMBERS = {
    "c1": [
        "crm:c1",
        "orders:A1",
        "pos:L1",
        "cookie:k1",
        "email_engagement:c@x.com",
        "support:T1",
        "support:T2",
        "support:T3",
    ],
    "c2": ["cookie:k2"],  # one web event only
    "c3": ["crm:c3"],  # a record first written after as_of: not yet in the snapshot
    "c4": ["crm:c4"],  # in the identity map, nothing dated anywhere
}


def history(spark: SparkSession, later: bool = False) -> Facts:
    """C1's hand-made history up to AS_OF; with ``later``, facts dated after AS_OF too (the leakage probe)."""
    orders = [
        {
            "order_id": "o1",
            "channel": "online",
            "record_id": "orders:A1",
            "order_ts": "2025-01-10 10:00:00",
            "amount": "100.0",
        },
        {
            "order_id": "o2",
            "channel": "store",
            "record_id": "pos:L1",
            "order_ts": "2025-01-10 15:00:00",
            "amount": "50.0",
        },
        {
            "order_id": "o3",
            "channel": "online",
            "record_id": "orders:A1",
            "order_ts": "2025-05-01 09:00:00",
            "amount": "30.0",
        },
        {
            "order_id": "o4",
            "channel": "store",
            "record_id": "pos:L1",
            "order_ts": "2025-06-20 12:00:00",
            "amount": "20.0",
        },
        {
            "order_id": "o5",
            "channel": "online",
            "record_id": "orders:A1",
            "order_ts": "2025-06-30 23:59:59.999",
            "amount": "10.0",
        },
        {
            "order_id": "o-anon",
            "channel": "store",
            "record_id": None,
            "order_ts": "2025-06-01 10:00:00",
            "amount": "5.0",
        },
    ]
    events = [
        {
            "event_id": "e1",
            "record_id": "cookie:k1",
            "event_ts": "2025-06-29 08:00:00",
            "event_type": "page_view",
            "platform": "web",
        },
        {
            "event_id": "e2",
            "record_id": "cookie:k1",
            "event_ts": "2025-06-15 08:00:00",
            "event_type": "login",
            "platform": "web",
        },
        {
            "event_id": "e3",
            "record_id": "cookie:k1",
            "event_ts": "2025-06-25 08:00:00",
            "event_type": "app_open",
            "platform": "app",
        },
        {
            "event_id": "e4",
            "record_id": "cookie:k1",
            "event_ts": "2025-05-31 08:00:00",
            "event_type": "page_view",
            "platform": "web",
        },  # 30 days before as_of: outside the 30-day window
        {
            "event_id": "e5",
            "record_id": "cookie:k2",
            "event_ts": "2025-06-01 08:00:00",
            "event_type": "page_view",
            "platform": "web",
        },
    ]
    emails = [
        {
            "message_id": "m1",
            "record_id": "email_engagement:c@x.com",
            "event_type": "open",
            "event_ts": "2025-04-15 10:00:00",
        },
        {
            "message_id": "m2",
            "record_id": "email_engagement:c@x.com",
            "event_type": "click",
            "event_ts": "2025-04-15 10:01:00",
        },
        {
            "message_id": "m3",
            "record_id": "email_engagement:c@x.com",
            "event_type": "open",
            "event_ts": "2025-03-01 10:00:00",
        },
        {
            "message_id": "m4",
            "record_id": "email_engagement:c@x.com",
            "event_type": "unsubscribe",
            "event_ts": "2025-06-01 10:00:00",
        },
    ]
    tickets = [
        {"ticket_id": "T1", "record_id": "support:T1", "created_at": "2025-06-10 10:00:00", "satisfaction": "4"},
        {"ticket_id": "T2", "record_id": "support:T2", "created_at": "2024-05-01 10:00:00", "satisfaction": "1"},
        {"ticket_id": "T3", "record_id": "support:T3", "created_at": "2025-02-01 10:00:00", "satisfaction": "2"},
    ]
    customer_records = [
        {"record_id": "crm:c1", "source": "crm", "updated_at": "2024-03-01 00:00:00"},
        {"record_id": "crm:c3", "source": "crm", "updated_at": "2025-08-01 00:00:00"},
    ]
    if later:
        orders += [
            {
                "order_id": "o6",
                "channel": "online",
                "record_id": "orders:A1",
                "order_ts": "2025-07-01 00:00:00",
                "amount": "999.0",
            },
            {
                "order_id": "o7",
                "channel": "store",
                "record_id": "pos:L1",
                "order_ts": "2025-09-01 00:00:00",
                "amount": "1.0",
            },
        ]
        events += [
            {
                "event_id": "e6",
                "record_id": "cookie:k2",
                "event_ts": "2025-07-01 00:00:00",
                "event_type": "login",
                "platform": "app",
            },
        ]
        emails += [
            {
                "message_id": "m5",
                "record_id": "email_engagement:c@x.com",
                "event_type": "open",
                "event_ts": "2025-07-02 00:00:00",
            },
        ]
        tickets += [
            {"ticket_id": "T4", "record_id": "support:T1", "created_at": "2025-07-03 00:00:00", "satisfaction": "5"},
        ]
    return Facts(
        orders=frame(spark, "orders", orders),
        events=frame(spark, "events", events),
        email_engagement=frame(spark, "email_engagement", emails),
        support_tickets=frame(spark, "support_tickets", tickets),
        identity_map=identity_map(spark, FEATURE_MEMBERS),
        customer_records=frame(spark, "customer_records", customer_records),
    )


FEATURE_SCHEMA = (
    "cdp_id string, as_of date, recency_days int, frequency long, monetary_value double, total_spend double, "
    "tenure_days int, orders_30d long, orders_90d long, orders_365d long, spend_30d double, spend_90d double, "
    "spend_365d double, aov_90d double, aov_365d double, channel_online boolean, channel_store boolean, "
    "online_orders_365d long, store_orders_365d long, web_events_30d long, app_events_30d long, logins_30d long, "
    "email_opens_90d long, email_clicks_90d long, email_unsubscribed boolean, tickets_365d long, "
    "avg_satisfaction_365d double, days_since_last_order int, days_since_last_web int, "
    "days_since_last_email_open int, days_since_last_ticket int, bgnbd_frequency long, bgnbd_recency_days int, "
    "bgnbd_t_days int, bgnbd_monetary double"
)


def test_features_match_hand_computed_values(spark):
    # Ages in days before 2025-06-30: Jan 10 = 171, Mar 1 = 121, Apr 15 = 76, May 1 = 60, May 31 = 30,
    # Jun 1 = 29, Jun 10 = 20, Jun 20 = 10, Jun 30 = 0; 2024-05-01 = 425, 2024-03-01 (first record) = 486.
    c1 = (
        "c1",
        AS_OF,
        0,  # recency_days: o5 at 23:59:59.999 on as_of counts
        5,
        42.0,
        210.0,  # frequency, monetary_value = 210 / 5, total_spend
        486,  # tenure_days: the crm record of 2024-03-01
        2,
        3,
        5,  # orders 30d (o4, o5), 90d (+ o3), 365d
        30.0,
        60.0,
        210.0,  # spend 30d, 90d, 365d
        20.0,
        42.0,  # aov_90d = 60 / 3, aov_365d
        True,
        True,
        3,
        2,  # channels; online o1 o3 o5, store o2 o4
        2,
        1,
        1,  # web e1 + e2 (e4 is 30 days old), app e3, login e2
        1,
        1,
        True,  # opens in 90d (m1; m3 is 121 days old), clicks, unsubscribed
        2,
        3.0,  # tickets in 365d (T1, T3; T2 is 425 days old), mean satisfaction (4 + 2) / 2
        0,
        1,
        76,
        20,  # days since last order, web, email open, ticket
        # purchase days Jan 10 (150), May 1 (30), Jun 20 (20), Jun 30 (10): 3 repeats, first to last 171 days,
        # first to as_of 171 days, repeat-day mean (30 + 20 + 10) / 3
        3,
        171,
        171,
        20.0,
    )
    c2 = (
        "c2",
        AS_OF,
        None,
        0,
        None,
        0.0,
        29,
        0,
        0,
        0,
        0.0,
        0.0,
        0.0,
        None,
        None,
        False,
        False,
        0,
        0,
        1,
        0,
        0,
        0,
        0,
        False,
        0,
        None,
        None,
        29,
        None,
        None,
        0,
        None,
        None,
        0.0,
    )
    expected = spark.createDataFrame([c1, c2], FEATURE_SCHEMA)
    assert_df_equality(customer_features(history(spark), AS_OF), expected, ignore_row_order=True, ignore_nullable=True)


def test_later_facts_do_not_leak_into_a_snapshot(spark):
    before = customer_features(history(spark), AS_OF)
    with_future = customer_features(history(spark, later=True), AS_OF)
    assert_df_equality(with_future, before, ignore_row_order=True, ignore_nullable=True)


def test_several_as_ofs_in_one_pass_equal_the_single_date_snapshots(spark):
    facts = history(spark, later=True)
    may_31, jul_1, aug_1 = dt.date(2025, 5, 31), dt.date(2025, 7, 1), dt.date(2025, 8, 1)
    as_ofs = [aug_1, may_31, AS_OF, jul_1]
    together = customer_features_at(facts, as_ofs)
    one_by_one = [customer_features(facts, as_of) for as_of in as_ofs]
    union = one_by_one[0]
    for snapshot in one_by_one[1:]:
        union = union.unionByName(snapshot)
    assert together.columns == union.columns == ["cdp_id", "as_of", *[f.name for f in FEATURES]]
    assert_df_equality(together, union, ignore_row_order=True, ignore_nullable=True)

    # c2 (first seen Jun 1) is not in the May 31 snapshot, c3 (record of Aug 1) only in Aug 1's; o6 and e6 at
    # midnight of Jul 1 count from Jul 1 on, not on Jun 30; e6 (app) is 31 days old on Aug 1, out of the 30-day window.
    expected = spark.createDataFrame(
        [
            ("c1", may_31, 456, 3, 0),
            ("c1", AS_OF, 486, 5, 1),
            ("c2", AS_OF, 29, 0, 0),
            ("c1", jul_1, 487, 6, 1),
            ("c2", jul_1, 30, 0, 1),
            ("c1", aug_1, 518, 6, 0),
            ("c2", aug_1, 61, 0, 0),
            ("c3", aug_1, 0, 0, 0),
        ],
        "cdp_id string, as_of date, tenure_days int, frequency long, app_events_30d long",
    )
    actual = together.select("cdp_id", "as_of", "tenure_days", "frequency", "app_events_30d")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_default_as_of_and_purchases(spark):
    facts = history(spark, later=True)
    assert default_as_of(facts) == dt.date(2025, 9, 1)
    expected = spark.createDataFrame(
        [("c1", dt.datetime(2025, 1, 10, 10), 100.0), ("c1", dt.datetime(2025, 9, 1), 1.0)],
        "cdp_id string, order_ts timestamp, amount double",
    )
    actual = purchases(facts).where(F.col("amount").isin(100.0, 1.0))
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)
    assert purchases(facts).count() == 7  # every order of a known person; the anonymous store sale is nobody's


def test_features_doc_lists_every_feature():
    doc = (REPO / "docs" / "features.md").read_text()
    assert doc == render_features_doc(), "docs/features.md is stale: write render_features_doc() to it"
    missing = [f.name for f in FEATURES if f"| `{f.name}` |" not in doc]
    assert missing == []
    assert len({f.name for f in FEATURES}) == len(FEATURES)


# --------------------------------------------------------------------------------------------
# The profiles job end to end
# --------------------------------------------------------------------------------------------


def _version(spark: SparkSession, root: str, table: tables.Table) -> int:
    return DeltaTable.forPath(spark, table.path(root)).history(1).select("version").first()[0]


@pytest.mark.slow
def test_profiles_job_end_to_end_and_rerun_is_a_no_op(spark, lakehouse):
    root = lakehouse.root
    facts = history(spark)
    people = records(
        spark,
        [
            {
                "record_id": "crm:c1",
                "first_name": "cara",
                "last_name": "lee",
                "email": "c@x.com",
                "address": "4 Ash Rd",
                "postcode": "AS1 1AA",
                "updated_at": "2024-03-01 00:00:00",
            },
            {
                "record_id": "orders:A1",
                "first_name": "cara",
                "last_name": "lee",
                "account_id": "A1",
                "updated_at": "2025-06-30 00:00:00",
            },
            {
                "record_id": "crm:c3",
                "first_name": "dan",
                "last_name": "lee",
                "address": "4 ash rd",
                "postcode": "as1 1aa",
                "updated_at": "2025-08-01 00:00:00",
            },
        ],
    )
    tables.overwrite(people, root, tables.CUSTOMER_RECORDS)
    tables.overwrite(facts.identity_map, root, tables.IDENTITY_MAP)
    tables.overwrite(facts.orders, root, tables.ORDERS)
    tables.overwrite(facts.events, root, tables.EVENTS)
    # email_engagement, support_tickets, consent and hot_identifiers are missing: read as empty.
    config = CdpConfig(lakehouse=lakehouse, files=StageFiles(profiles=str(REPO / "conf" / "profiles.yaml")))
    ctx = Context(config=config, args=argparse.Namespace(as_of="2025-06-30"), _spark=spark)

    stage = StageRun(stage="profiles")
    run(ctx, stage)
    profile = gold.profiles(spark, root)
    assert profile.count() == 4 == facts.identity_map.select("cdp_id").distinct().count()
    assert_df_equality(
        gold.households(spark, root).select("cdp_id", "address_key", "household_size"),
        spark.createDataFrame(
            [("c1", "4 ash rd|as1 1aa", 2), ("c3", "4 ash rd|as1 1aa", 2)],
            "cdp_id string, address_key string, household_size long",
        ),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    snapshot = gold.features(spark, root)
    assert snapshot.select("cdp_id").orderBy("cdp_id").collect() == [("c1",), ("c2",)]
    assert snapshot.where("cdp_id = 'c1'").select("frequency", "tickets_365d").first() == (5, 0)
    view = gold.profile_of(spark, root, "c1")
    assert view.profile["first_name"] == "cara"
    assert view.records.count() == 8
    metrics = {(step, metric): value for step, metric, value in stage.metrics}
    assert metrics[("profiles", "profiles")] == metrics[("profiles", "cdp_ids")] == 4
    assert metrics[("profiles", "written")] == 1
    assert [metrics[("households", m)] for m in ("people", "households", "multi_person")] == [2, 1, 1]

    # Nothing changed since: the rerun skips and writes nothing at all.
    written = (*PROFILE_WRITES, tables.STAGE_INPUTS)
    versions = {t.name: _version(spark, root, t) for t in written}
    skipped = StageRun(stage="profiles")
    run(ctx, skipped)
    assert {step for step, _, _ in skipped.metrics} == {"compare inputs with the last run"}
    assert {t.name: _version(spark, root, t) for t in written} == versions
    # --force recomputes, and the same rows replace nothing but the feature snapshot's slice.
    kept = (tables.CUSTOMER_PROFILE, tables.HOUSEHOLDS)
    versions = {t.name: _version(spark, root, t) for t in kept}
    rerun = StageRun(stage="profiles")
    run(Context(config=config, args=argparse.Namespace(as_of="2025-06-30", force=True), _spark=spark), rerun)
    assert {t.name: _version(spark, root, t) for t in kept} == versions
    rerun_metrics = {(step, metric): value for step, metric, value in rerun.metrics}
    assert rerun_metrics[("profiles", "written")] == rerun_metrics[("households", "written")] == 0
    assert_df_equality(gold.features(spark, root, "2025-06-30"), snapshot, ignore_row_order=True)
