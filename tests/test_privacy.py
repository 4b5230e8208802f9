"""Right to erasure (plan, suppression, every layer and export) and the retention step that purges old versions."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import shutil
import time
from datetime import date, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from cdp_spark import tables
from cdp_spark.activation import job as activation_job
from cdp_spark.config import CdpConfig, ConfigError, LakehouseConfig, StageFiles
from cdp_spark.exports import UnsafePath
from cdp_spark.hashing import HashKey
from cdp_spark.normalize.rules import StandardizeRules
from cdp_spark.ops import StageRun
from cdp_spark.pipeline import Context
from cdp_spark.privacy import erase as erase_module
from cdp_spark.privacy import job as privacy_job
from cdp_spark.privacy import matching
from cdp_spark.privacy.erase import delta_tables
from cdp_spark.privacy.plan import normalize_requests, plan_requests, read_requests
from cdp_spark.privacy.rewrite_exports import erase_exports
from cdp_spark.standardize import job as standardize_job
from cdp_spark.suppression import Suppression, flag_suppressed, without_suppressed

T = date(2026, 2, 28)
NOW = datetime(2026, 2, 27, 12, 0)
JANE_CDP, BOB_CDP = "cdp-7f3a", "cdp-91bc"
# sha256 of Jane's normalized email and own phone, computed once with hashlib and pasted here.
JANE_EMAIL_SHA = "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"  # jane.doe@example.com
JANE_PHONE_SHA = "cb6880e416769253645cb9c6b8989154bf66a56a77fc14c81fb1019663cbb928"  # +14155552671
BOB_EMAIL_SHA = "5ff860bf1190596c7188ab851db691f0f3169c453936e9e1eba2f9a47f7a0018"  # bob@example.com
HOME_PHONE_SHA = "3ad9f10d73829a714b1383221691d4dbf08484f3ceeae884f53053a1c7bb0a92"  # +16502530000, shared
# Anything of Jane's, raw or standardized, in any case: none may survive the erasure.
JANE_TRACES = ("jane", "4155552671", "7731", JANE_CDP, JANE_EMAIL_SHA, JANE_PHONE_SHA)


SECRET = b"test-hash-key-0123456789"
KEY = HashKey(SECRET)


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def keyed(value: str, secret: bytes = SECRET) -> str:
    """The keyed hash the plan and suppression list keep: HMAC-SHA-256 of the plain SHA-256 hex."""
    return hmac.new(secret, sha(value).encode(), hashlib.sha256).hexdigest()


RECORDS_SCHEMA = (
    "record_id string, source string, source_key string, first_name string, last_name string, email string, "
    "phone string, address string, city string, postcode string, country string, birth_date date, "
    "loyalty_id string, account_id string, updated_at timestamp"
)


def records(spark):
    rows = [
        ("crm:CUST-JANE-7731", "crm", "CUST-JANE-7731", "jane", "doe", "jane.doe@example.com", "+14155552671",
         "1 main st", "boston", "02134", "US", date(1990, 3, 4), "LOY-JANE-55", None, NOW),
        # The household landline on Jane's web account is Bob's phone too: not Jane's alone.
        ("orders:ACC-JANE-42", "orders", "ACC-JANE-42", "jane", "doe", "jane.doe@example.com", "+16502530000",
         None, None, "02134", None, None, None, "ACC-JANE-42", NOW),
        ("email_engagement:jane.doe@example.com", "email_engagement", "jane.doe@example.com", None, None,
         "jane.doe@example.com", None, None, None, None, None, None, None, None, NOW),
        ("crm:CUST-BOB-1001", "crm", "CUST-BOB-1001", "bob", "roe", "bob@example.com", "+16502530000",
         "1 main st", "boston", "02134", "US", date(1988, 1, 2), "LOY-BOB-77", None, NOW),
        ("orders:ACC-BOB-17", "orders", "ACC-BOB-17", "bob", "roe", "bob@example.com", None,
         None, None, "02134", None, None, None, "ACC-BOB-17", NOW),
    ]  # fmt: skip
    return spark.createDataFrame(rows, RECORDS_SCHEMA)


def identity_map(spark):
    rows = [
        ("crm:CUST-JANE-7731", JANE_CDP, 4),
        ("orders:ACC-JANE-42", JANE_CDP, 4),
        ("email_engagement:jane.doe@example.com", JANE_CDP, 4),
        ("cookie:COOKIE-JANE-9", JANE_CDP, 4),
        ("crm:CUST-BOB-1001", BOB_CDP, 3),
        ("orders:ACC-BOB-17", BOB_CDP, 3),
        ("cookie:COOKIE-BOB-3", BOB_CDP, 3),
    ]
    return spark.createDataFrame(rows, "record_id string, cdp_id string, component_size long")


def test_plan_resolves_the_person_and_earlier_ids_keeps_shared_identifiers_out_and_refuses_unclear_requests(
    spark, tmp_path
):
    path = tmp_path / "requests.csv"
    path.write_text(
        "request_id,identifier_type,value,requested_by\n"
        'REQ-1,email," JANE.Doe@Example.com ",dpo@shop.example\n'
        "REQ-2,phone,(650) 253-0000,dpo@shop.example\n"  # the shared landline: two customers
        "REQ-3,email,not-an-email,dpo@shop.example\n"
        "REQ-4,record_id,cookie:COOKIE-JANE-9,\n"  # an anonymous record of Jane's
    )
    requests = normalize_requests(read_requests(spark, str(path), KEY), StandardizeRules())
    lineage = spark.createDataFrame(
        [
            (JANE_CDP, "merged", ["cdp-old-1"]),  # her records were cdp-old-1 and, before that, cdp-older-0
            ("cdp-old-1", "merged", ["cdp-older-0"]),
            (JANE_CDP, "split", ["cdp-mixed"]),  # a split parent held two people: left to the identifiers
            (BOB_CDP, "merged", ["cdp-bob-0"]),
        ],
        "cdp_id string, event string, previous_cdp_ids array<string>",
    )
    plan, refused = plan_requests(requests, records(spark), identity_map(spark), KEY, lineage)
    jane = [
        ("email", "jane.doe@example.com"),
        ("phone", "+14155552671"),
        ("loyalty_id", "LOY-JANE-55"),
        ("account_id", "ACC-JANE-42"),
        ("record_id", "crm:CUST-JANE-7731"),
        ("record_id", "orders:ACC-JANE-42"),
        ("record_id", "email_engagement:jane.doe@example.com"),
        ("record_id", "cookie:COOKIE-JANE-9"),
        ("record_key", "CUST-JANE-7731"),
        ("record_key", "ACC-JANE-42"),
        ("record_key", "jane.doe@example.com"),
        ("record_key", "COOKIE-JANE-9"),
        ("cdp_id", JANE_CDP),
        ("cdp_id", "cdp-old-1"),
        ("cdp_id", "cdp-older-0"),
    ]
    expected = spark.createDataFrame(
        [("REQ-1", "dpo@shop.example", kind, keyed(value), JANE_CDP) for kind, value in jane]
        + [("REQ-4", None, kind, keyed(value), JANE_CDP) for kind, value in jane],
        "request_id string, requested_by string, kind string, value_hash string, cdp_id string",
    )
    assert_df_equality(plan, expected, ignore_row_order=True, ignore_nullable=True)
    assert keyed("+16502530000") not in {r["value_hash"] for r in plan.collect()}
    expected_refused = spark.createDataFrame(
        [
            ("REQ-2", "dpo@shop.example", "identifier matches 2 customers"),
            ("REQ-3", "dpo@shop.example", "not a valid email"),
        ],
        "request_id string, requested_by string, reason string",
    )
    assert_df_equality(refused, expected_refused, ignore_row_order=True, ignore_nullable=True)


def test_requests_file_errors_name_the_file(spark, tmp_path):
    bad_type = tmp_path / "bad.jsonl"
    bad_type.write_text('{"request_id": "R1", "identifier_type": "passport", "value": "X123"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl: identifier_type must be one of .*R1: 'passport'"):
        read_requests(spark, str(bad_type), KEY)
    no_value = tmp_path / "missing.csv"
    no_value.write_text("identifier_type,email\nemail,a@b.com\n")
    with pytest.raises(ConfigError, match=r"missing.csv: missing column\(s\) \['value'\]"):
        read_requests(spark, str(no_value), KEY)


def test_suppression_drops_rows_of_erased_people_by_record_id_email_phone_ids_or_consent_identifier(spark):
    listed = spark.createDataFrame(
        [
            ("email", keyed("jane.doe@example.com")),
            ("phone", keyed("+14155552671")),
            ("record_id", keyed("crm:CUST-JANE-7731")),
            ("loyalty_id", keyed("L-JANE")),
        ],
        "kind string, value_hash string",
    )
    suppression = Suppression(listed, KEY)
    rows = spark.createDataFrame(
        [
            ("crm:CUST-JANE-7731", None, None, None),  # re-ingested old CRM file
            ("orders:ACC-NEW-1", "jane.doe@example.com", None, None),  # a new account with her email
            ("orders:ACC-NEW-2", None, "+14155552671", None),
            ("pos:R-9", None, None, "L-JANE"),  # her loyalty card at a till
            ("crm:CUST-BOB-1001", "bob@example.com", "+16502530000", "L-BOB"),
            ("orders:ACC-X", None, None, None),
            ("orders:ACC-Y", "crm:CUST-JANE-7731", "L-JANE", "+14155552671"),  # her values, in other kinds' columns
        ],
        "record_id string, email string, phone string, loyalty_id string",
    )
    expected = spark.createDataFrame(
        [
            ("crm:CUST-BOB-1001", "bob@example.com", "+16502530000", "L-BOB"),
            ("orders:ACC-X", None, None, None),
            ("orders:ACC-Y", "crm:CUST-JANE-7731", "L-JANE", "+14155552671"),
        ],
        "record_id string, email string, phone string, loyalty_id string",
    )
    flagged = flag_suppressed(rows, suppression)
    assert flagged.columns == [*rows.columns, "_suppressed"] and flagged.count() == rows.count()
    assert_df_equality(without_suppressed(rows, suppression), expected, ignore_row_order=True)
    assert_df_equality(without_suppressed(rows, None), rows)
    consent = spark.createDataFrame(
        [
            ("email", "jane.doe@example.com", "ads"),
            ("email", "bob@example.com", "ads"),
            ("phone", "+14155552671", "sms"),
        ],
        "identifier_type string, identifier string, channel string",
    )
    expected_consent = spark.createDataFrame(
        [("email", "bob@example.com", "ads")], "identifier_type string, identifier string, channel string"
    )
    assert_df_equality(without_suppressed(consent, suppression), expected_consent)


def test_quarantine_rows_match_in_any_raw_form_and_a_short_token_never_matches_as_an_id(spark):
    rows = [
        ("jane-cut", None, '{"event_id": "E-77", "email": "Jane.Doe@Example.com", "page_ti'),  # upload cut short
        ("jane-csv", None, "ORD-9;(415) 555-2671;2026-01-05"),
        ("jane-key", "crm:CUST-JANE-7731", '{"customer_id": "CUST-JANE-7731", "birth_date": "31/02"}'),
        ("bob-json", "orders:ORD-5", '{"order_id": "ORD-5", "email": "bob@example.com", "qty": "42"}'),
        ("bob-line", None, "ORD-6,bob@example.com,42"),
    ]
    quarantine = spark.createDataFrame(rows, "label string, record_key string, raw string")
    # Jane's own account id is "42": in Bob's rows it is a quantity, and must not take them with her.
    plan = spark.createDataFrame(
        [
            ("REQ-1", kind, keyed(value))
            for kind, value in [
                ("email", "jane.doe@example.com"),
                ("phone", "+14155552671"),
                ("account_id", "42"),
                ("record_id", "crm:CUST-JANE-7731"),
            ]
        ],
        "request_id string, kind string, value_hash string",
    )
    job = matching.Erasure(spark, "unused", "run-x", plan, KEY, {"REQ-1": None}, [])
    pairs = job.match(matching.quarantine_candidates(quarantine, StandardizeRules()))
    labelled = quarantine.withColumn("_fp", matching.row_fingerprint(quarantine.columns))
    matched = {r["label"] for r in labelled.join(pairs, "_fp").select("label").collect()}
    assert matched == {"jane-cut", "jane-csv", "jane-key"}


# --------------------------------------------------------------------------------------------
# End to end: a small lakehouse with Jane and Bob in every layer and two exports
# --------------------------------------------------------------------------------------------

LINEAGE = ", _ingested_at timestamp, _source_file string, _batch_id string, _rescued_data string"


def lineage(batch: str) -> tuple:
    return (NOW, f"file:/data/{batch}.csv", batch, None)


def log_ingested(spark, root: str, batches: dict[str, tuple[int, int]]) -> None:
    """The ``ops.ingest_log`` commits of bronze rows this test writes by hand: ``{source: (batch version, rows)}``
    (standardize takes a source's new batches from that log)."""
    rows = [
        (source, version, "committed", [f"file:/data/{source}.csv"], None, None, n, n, 0, "test", NOW)
        for source, (version, n) in batches.items()
    ]
    tables.append(spark.createDataFrame(rows, tables.INGEST_LOG.schema), root, tables.INGEST_LOG)


def build_lakehouse(spark, root: str) -> None:
    write = tables.overwrite
    crm = (
        "customer_id string, first_name string, last_name string, email string, phone string, address string, "
        "city string, postcode string, country string, birth_date string, loyalty_id string, updated_at string"
    )
    write(
        spark.createDataFrame(
            [
                ("CUST-JANE-7731", " Jane", "DOE", "Jane.Doe@Example.com ", "(415) 555-2671", "1 Main Street",
                 "Boston", "2134", "USA", "1990-03-04", "LOY-JANE-55", "2026-01-02T10:00:00Z", *lineage("crm-000001")),
                ("CUST-JANE-7731", "Jane", "Doe", "jane.doe@EXAMPLE.com", "415.555.2671", "1 Main St",
                 "Boston", "02134", "US", "1990-03-04", "LOY-JANE-55", "2026-02-02T10:00:00Z", *lineage("crm-000002")),
                ("CUST-BOB-1001", "Bob", "Roe", "bob@example.com", "(650) 253-0000", "1 Main Street",
                 "Boston", "02134", "US", "1988-01-02", "LOY-BOB-77", "2026-01-02T10:00:00Z", *lineage("crm-000001")),
            ],
            crm + LINEAGE,
        ),
        root,
        tables.bronze("crm"),
    )  # fmt: skip
    write(
        spark.createDataFrame(
            [
                ("ORD-1", "ACC-JANE-42", " JANE.DOE@example.com", "Jane", "Doe", "650-253-0000", "02134",
                 NOW, 25.0, "USD", 2, *lineage("orders-000001")),
                ("ORD-2", "ACC-BOB-17", "bob@example.com", "Bob", "Roe", None, "02134",
                 NOW, 40.0, "USD", 1, *lineage("orders-000001")),
            ],
            "order_id string, account_id string, email string, first_name string, last_name string, phone string, "
            "postcode string, order_ts timestamp, amount double, currency string, items int" + LINEAGE,
        ),
        root,
        tables.bronze("orders"),
    )  # fmt: skip
    write(
        spark.createDataFrame(
            [
                ("EV-1", "2026-02-01T09:00:00Z", "login", "COOKIE-JANE-9", None, "ACC-JANE-42", "Jane.Doe@example.com",
                 None, *lineage("events-000001")),
                ("EV-2", "2026-02-01T09:05:00Z", "page_view", "COOKIE-BOB-3", None, None, None, "spring",
                 *lineage("events-000001")),
            ],
            "event_id string, event_ts string, event_type string, cookie_id string, device_id string, user_id string, "
            "email string, utm_campaign string" + LINEAGE,
        ),
        root,
        tables.bronze("events"),
    )  # fmt: skip
    write(
        spark.createDataFrame(
            [
                ("email", "Jane.Doe@Example.com", "email", "yes", "2026-01-05T00:00:00Z", *lineage("consent-000001")),
                ("phone", "(415) 555-2671", "sms", "yes", "2026-01-05T00:00:00Z", *lineage("consent-000001")),
                ("email", "bob@example.com", "email", "yes", "2026-01-05T00:00:00Z", *lineage("consent-000001")),
            ],
            "identifier_type string, identifier string, channel string, granted string, recorded_at string" + LINEAGE,
        ),
        root,
        tables.bronze("consent"),
    )
    write(
        spark.createDataFrame(
            [
                ("MSG-1", "JANE.DOE@example.com", "open", "2026-02-03T08:00:00Z", "CAMP-1", *lineage("email-000001")),
                ("MSG-2", "bob@example.com", "open", "2026-02-03T08:00:00Z", "CAMP-1", *lineage("email-000001")),
            ],
            "message_id string, email string, event_type string, event_ts string, campaign_id string" + LINEAGE,
        ),
        root,
        tables.bronze("email_engagement"),
    )
    # silver
    write(records(spark), root, tables.CUSTOMER_RECORDS)
    write(
        spark.createDataFrame(
            [
                ("ORD-1", "online", "orders:ACC-JANE-42", "ACC-JANE-42", None, None, NOW, 25.0, "USD", 2, NOW),
                ("ORD-2", "online", "orders:ACC-BOB-17", "ACC-BOB-17", None, None, NOW, 40.0, "USD", 1, NOW),
            ],
            "order_id string, channel string, record_id string, account_id string, loyalty_id string, "
            "store_id string, order_ts timestamp, amount double, currency string, items int, updated_at timestamp",
        ),
        root,
        tables.ORDERS,
    )
    write(
        spark.createDataFrame(
            [
                ("EV-1", "cookie:COOKIE-JANE-9", NOW, "login", "web", "COOKIE-JANE-9", None, "ACC-JANE-42",
                 "jane.doe@example.com", None),
                ("EV-2", "cookie:COOKIE-BOB-3", NOW, "page_view", "web", "COOKIE-BOB-3", None, None, None, "spring"),
            ],
            "event_id string, record_id string, event_ts timestamp, event_type string, platform string, "
            "cookie_id string, device_id string, account_id string, email string, utm_campaign string",
        ),
        root,
        tables.EVENTS,
    )  # fmt: skip
    write(
        spark.createDataFrame(
            [
                ("MSG-1", "email_engagement:jane.doe@example.com", "jane.doe@example.com", "open", NOW, "CAMP-1"),
                ("MSG-2", "email_engagement:bob@example.com", "bob@example.com", "open", NOW, "CAMP-1"),
            ],
            "message_id string, record_id string, email string, event_type string, event_ts timestamp, "
            "campaign_id string",
        ),
        root,
        tables.EMAIL_ENGAGEMENT,
    )
    write(
        spark.createDataFrame(
            [
                ("email", "jane.doe@example.com", "email", True, NOW),
                ("phone", "+14155552671", "sms", True, NOW),
                ("email", "bob@example.com", "email", True, NOW),
            ],
            "identifier_type string, identifier string, channel string, granted boolean, recorded_at timestamp",
        ),
        root,
        tables.CONSENT,
    )
    write(
        spark.createDataFrame(
            [
                ("crm", "standardize", "expectation", "failed: birth_date", "crm:CUST-JANE-7731",
                 json.dumps({"customer_id": "CUST-JANE-7731", "email": "JANE.DOE@EXAMPLE.COM", "birth_date": "31/02"}),
                 "file:/data/crm.csv", "run-0", NOW),
                ("orders", "ingest", "malformed", "could not parse", None, "ORD-9,ACC-JANE-42,not-a-date",
                 "file:/data/orders.parquet", "run-0", NOW),
                ("events", "ingest", "malformed", "truncated JSON", None,
                 '{"event_id": "E-77", "email": "Jane.Doe@Example.com", "page_ti', "file:/data/events.json", "run-0", NOW),
                ("crm", "standardize", "expectation", "failed: birth_date", "crm:CUST-BOB-1001",
                 json.dumps({"customer_id": "CUST-BOB-1001", "email": "bob@example.com", "birth_date": "00/00"}),
                 "file:/data/crm.csv", "run-0", NOW),
            ],
            "source string, stage string, rule string, reason string, record_key string, raw string, "
            "source_file string, run_id string, quarantined_at timestamp",
        ),
        root,
        tables.QUARANTINE,
    )  # fmt: skip
    write(
        spark.createDataFrame(
            [
                ("crm:CUST-JANE-7731", "orders:ACC-JANE-42", "deterministic:email", 1.0, "email", "accepted", "run-0"),
                ("orders:ACC-JANE-42", "cookie:COOKIE-JANE-9", "fact:login", 1.0, "account_id", "accepted", "run-0"),
                ("crm:CUST-BOB-1001", "orders:ACC-BOB-17", "deterministic:email", 1.0, "email", "accepted", "run-0"),
                ("crm:CUST-JANE-7731", "crm:CUST-BOB-1001", "deterministic:phone", 1.0, "phone", "hot", "run-0"),
            ],
            "src_record_id string, dst_record_id string, rule string, score double, identifier string, "
            "status string, run_id string",
        ),
        root,
        tables.IDENTITY_EDGES,
    )
    write(identity_map(spark), root, tables.IDENTITY_MAP)
    write(
        spark.createDataFrame(
            [(JANE_CDP, "created", [], 4, "run-0"), (BOB_CDP, "created", [], 3, "run-0")],
            "cdp_id string, event string, previous_cdp_ids array<string>, records long, run_id string",
        ),
        root,
        tables.IDENTITY_LINEAGE,
    )
    # gold
    write(
        spark.createDataFrame(
            [
                (JANE_CDP, "Jane", "Doe", "jane.doe@example.com", ["jane.doe@example.com"], "+14155552671",
                 ["+14155552671", "+16502530000"], True, True, True),
                (BOB_CDP, "Bob", "Roe", "bob@example.com", ["bob@example.com"], "+16502530000", ["+16502530000"],
                 True, None, True),
            ],
            "cdp_id string, first_name string, last_name string, email string, emails array<string>, phone string, "
            "phones array<string>, consent_email boolean, consent_sms boolean, consent_ads boolean",
        ),
        root,
        tables.CUSTOMER_PROFILE,
    )  # fmt: skip
    write(
        spark.createDataFrame(
            [
                (cdp_id, kind, value, channel, True, NOW, value == "+16502530000")
                for cdp_id, kind, value in [
                    (JANE_CDP, "email", "jane.doe@example.com"),
                    (JANE_CDP, "phone", "+14155552671"),
                    (BOB_CDP, "email", "bob@example.com"),
                    (BOB_CDP, "phone", "+16502530000"),
                ]
                for channel in ("email", "ads")
            ],
            "cdp_id string, identifier_type string, identifier string, channel string, granted boolean, "
            "recorded_at timestamp, shared boolean",
        ),
        root,
        tables.ADDRESS_CONSENT,
    )
    write(
        spark.createDataFrame(
            [("hh-1", JANE_CDP, "1 main st|02134", 2), ("hh-1", BOB_CDP, "1 main st|02134", 2)],
            "household_id string, cdp_id string, address_key string, household_size int",
        ),
        root,
        tables.HOUSEHOLDS,
    )
    write(
        spark.createDataFrame(
            [(JANE_CDP, T, 1, 4), (BOB_CDP, T, 1, 6)],
            "cdp_id string, as_of date, orders_90d int, email_opens_90d int",
        ),
        root,
        tables.CUSTOMER_FEATURES,
    )
    write(
        spark.createDataFrame(
            [(JANE_CDP, T, 0.2, 300.0, 9), (BOB_CDP, T, 0.3, 200.0, 8)],
            "cdp_id string, as_of date, churn_probability double, clv double, clv_decile int",
        ),
        root,
        tables.CUSTOMER_SCORES,
    )
    write(
        spark.createDataFrame(
            [("email_engaged", JANE_CDP, T, None, T), ("email_engaged", BOB_CDP, T, None, T)],
            "segment string, cdp_id string, entered_at date, exited_at date, last_as_of date",
        ),
        root,
        tables.SEGMENT_MEMBERSHIP,
    )


DESTINATIONS = """
destinations:
  - name: newsletter
    segments: [email_engaged]
    identifiers: [cdp_id, email]
    attributes: [first_name, clv_decile]
    format: csv
    path: exports/newsletter
    channel: email
    mode: full
  - name: ads_match
    segments: [email_engaged]
    identifiers: [email, phone]
    format: jsonl
    path: exports/ads_match
    channel: ads
    hash_identifiers: true
    mode: delta
"""


def jane_identifiers() -> list[tuple[str, str]]:
    return [("email", "jane.doe@example.com"), ("phone", "+14155552671"), ("cdp_id", JANE_CDP)]


def table_texts(spark, root: str, version: int | None = None) -> dict[str, list[str]]:
    """Every row of every Delta table as lowercase JSON (tiny tables: collecting is fine here)."""
    out = {}
    for table in delta_tables(spark, root):
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        df = reader.load(table.path(root))
        out[table.full_name] = [r[0].lower() for r in df.select(F.to_json(F.struct("*"))).collect()]
    return out


def traces(texts: list[str]) -> list[str]:
    return [t for t in texts if any(trace.lower() in t for trace in JANE_TRACES)]


def bobs_rows(texts: list[str]) -> list[str]:
    return sorted(t for t in texts if ("bob" in t or BOB_CDP in t) and not traces([t]))


# Her email and phone as any file might spell them (raw, standardized, lowercased).
JANE_VALUES = ("jane.doe@example.com", "4155552671", "555-2671")


def files_holding(root: str, values: tuple[str, ...]) -> list[str]:
    """Every file under ``root`` whose bytes, or (Parquet) decoded values, contain one of ``values``."""
    hits = []
    for path in sorted(Path(root).rglob("*")):
        if not path.is_file():
            continue
        texts = [path.read_bytes().lower()]
        if path.suffix == ".parquet":
            decoded = pq.read_table(path).to_pylist()
            texts.append(json.dumps(decoded, default=str).lower().encode())
        if any(value.encode() in text for text in texts for value in values):
            hits.append(str(path.relative_to(root)))
    return hits


def export_files(root: str) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text()
        for p in sorted((Path(root) / "exports").rglob("*"))
        if p.is_file() and p.name != "_manifest.json"
    }


def versions(spark, root: str) -> dict[str, int]:
    return {t.full_name: tables.log_snapshot(spark, root, t).version() for t in delta_tables(spark, root)}


@pytest.fixture(scope="module")
def exported_template(spark, tmp_path_factory) -> CdpConfig:
    """The hand-made lakehouse with the test destinations exported once, kept pristine for the tests to restore."""
    work = tmp_path_factory.mktemp("erasure")
    destinations = work / "destinations.yaml"
    destinations.write_text(DESTINATIONS)
    config = CdpConfig(
        lakehouse=LakehouseConfig(root=str(work / "lakehouse")), files=StageFiles(destinations=str(destinations))
    )
    build_lakehouse(spark, config.lakehouse.root)
    activation_job.run(Context(config, argparse.Namespace(as_of=None), _spark=spark), StageRun("activate"))
    shutil.copytree(config.lakehouse.root, work / "pristine")
    return config


@pytest.fixture
def exported_lakehouse(spark, exported_template) -> CdpConfig:
    """The exported lakehouse as it was built, at the path it was built at (the audit log names its export folders).

    The tests of this file run one after another in one process (one xdist worker per file), so each restores the
    same folder; Delta's cached table logs are dropped, as they would point at versions the restore took away.
    """
    root = Path(exported_template.lakehouse.root)
    shutil.rmtree(root)
    shutil.copytree(root.parent / "pristine", root)
    spark._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()
    return exported_template


@pytest.mark.slow
def test_erasure_leaves_no_trace_in_any_table_export_or_old_version_and_reruns_as_a_no_op(
    spark, exported_lakehouse, tmp_path
):
    config = exported_lakehouse
    root = config.lakehouse.root
    exported = export_files(root)
    assert any("jane.doe@example.com" in text for text in exported.values())
    assert any(JANE_EMAIL_SHA in text for text in exported.values())

    before = table_texts(spark, root)
    last_with_jane = versions(spark, root)  # each table's version before the erasure
    assert all(traces(before[name]) for name in before if name not in ("ops.audit_log",)), "Jane is everywhere"
    bob_before = {name: bobs_rows(texts) for name, texts in before.items()}

    requests = tmp_path / "requests.csv"
    requests.write_text('request_id,identifier_type,value,requested_by\nREQ-1,email," JANE.Doe@Example.com ",dpo\n')
    ctx = Context(config, argparse.Namespace(requests=str(requests)), _spark=spark)
    stage = StageRun("erase")
    privacy_job.erase_run(ctx, stage)
    metrics = {metric: value for _, metric, value in stage.metrics}
    assert (metrics["erased"], metrics["refused"], metrics["already_erased"]) == (1, 0, 0)

    after = table_texts(spark, root)
    bookkeeping = (tables.ERASURE_PLAN.full_name, tables.ERASURE_SUPPRESSION.full_name)
    for name, texts in after.items():
        if name in bookkeeping:
            # Keyed hashes and the cdp_id, by design; never a raw value or a plain (brute-forceable) hash.
            assert not [t for t in texts if "jane" in t.replace(JANE_CDP, "") or "4155552671" in t], name
            assert not [t for t in texts if JANE_EMAIL_SHA in t or JANE_PHONE_SHA in t or sha(JANE_CDP) in t], name
        elif name == tables.EXPORT_STATE.full_name:
            # Her exported rows are tombstones until each destination's next export: SHA-256 identifiers only.
            tombstones = [t for t in texts if '"cdp_id":"erased"' in t]
            assert len(tombstones) == 2 and all(JANE_EMAIL_SHA in t for t in tombstones)
            assert traces([t for t in texts if t not in tombstones]) == []
            assert not [t for t in tombstones if "jane" in t or JANE_CDP in t or "4155552671" in t]
        else:
            assert traces(texts) == [], name
    suppression = tables.read(spark, root, tables.ERASURE_SUPPRESSION).where(
        F.col("kind").isin("email", "phone", "cdp_id")
    )
    generated = (Path(root) / "_keys" / "hash_key").read_text().strip().encode()  # no privacy.hash_key configured
    expected_suppression = spark.createDataFrame(
        [(kind, keyed(value, generated), JANE_CDP) for kind, value in jane_identifiers()],
        "kind string, value_hash string, cdp_id string",
    )
    assert_df_equality(
        suppression.select("kind", "value_hash", "cdp_id"),
        expected_suppression,
        ignore_row_order=True,
        ignore_nullable=True,
    )
    # Bob, who shares Jane's household and landline, keeps every row that is his alone, unchanged.
    assert {name: bobs_rows(after[name]) for name in bob_before} == bob_before
    assert any(HOME_PHONE_SHA in t or "+16502530000" in t for t in after["silver.customer_records"])

    audit = tables.read(spark, root, tables.AUDIT_LOG).where("action = 'erase'")
    audited = {(r["target"], r["table"]): r["rows"] for r in audit.collect()}
    assert audited[("REQ-1", "bronze.crm")] == 2
    assert audited[("REQ-1", "silver.customer_records")] == 3
    assert audited[("REQ-1", "silver.identity_map")] == 4
    assert audited[("REQ-1", "silver.quarantine")] == 3
    assert audited[("REQ-1", "gold.customer_profile")] == 1
    assert ("REQ-1", None) in audited  # the completion row

    # Export files: rewritten without Jane, manifests match the files again.
    for name, text in export_files(root).items():
        assert traces([text.lower()]) == [], name
    for manifest_path in (Path(root) / "exports").rglob("_manifest.json"):
        manifest = json.loads(manifest_path.read_text())
        for entry in manifest["files"]:
            data = (manifest_path.parent / entry["name"]).read_bytes()
            assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert manifest["counts"]["total"] == 1
        assert manifest["amended_by_erasure"] == [stage.run_id]
    newsletter = "".join(t for n, t in export_files(root).items() if "newsletter" in n)
    assert BOB_CDP in newsletter and "bob@example.com" in newsletter
    assert BOB_EMAIL_SHA in "".join(t for n, t in export_files(root).items() if "ads_match" in n)

    # Copies outside the tables: a crashed run's Spark checkpoint (whole rows) and the transaction logs, whose
    # entries from before the erasure describe files that held her. Both are made 40 days old, older than
    # the retentions; another run's fresh checkpoint must survive.
    crashed = Path(root) / "_checkpoints" / "spark" / "crashed-run" / "rdd-7"
    crashed.mkdir(parents=True)
    (crashed / "part-00000").write_bytes(b"\x00jane.doe@example.com\x00+14155552671")
    running = Path(root) / "_checkpoints" / "spark" / "running-run"
    running.mkdir()
    (running / "part-00000").write_bytes(b"\x00bob@example.com")
    aged = time.time() - 40 * 86400
    for path in [*Path(root).glob("*/*/_delta_log/*"), crashed / "part-00000", crashed, crashed.parent]:
        os.utime(path, (aged, aged))
    assert files_holding(root, JANE_VALUES)

    # Retention 0: time travel to before the erasure must fail or show nothing of Jane.
    maintain = StageRun("maintain")
    privacy_job.maintain_run(Context(config, argparse.Namespace(retention_hours=0), _spark=spark), maintain)
    # No file under the root holds her any more: data files, logs, checkpoints, checksums, leftovers.
    assert files_holding(root, JANE_VALUES) == []
    assert not crashed.parent.exists() and running.exists()
    # Each table's last version before the erasure must fail to read or show nothing of her (an older version
    # needs older log entries and files, which retention removes first).
    failed = 0
    for table in delta_tables(spark, root):
        if table.full_name not in last_with_jane or table.full_name in bookkeeping:  # the erasure's own, hashes
            continue
        version = last_with_jane[table.full_name]
        try:
            rows = spark.read.format("delta").option("versionAsOf", version).load(table.path(root))
            texts = [r[0].lower() for r in rows.select(F.to_json(F.struct("*"))).collect()]
        except Exception:  # noqa: BLE001 - the files of that version are gone: what retention is for
            failed += 1
            continue
        not_tombstones = [t for t in texts if '"cdp_id":"erased"' not in t]  # hashes, by design (above)
        assert traces(not_tombstones) == [], f"{table.full_name} version {version}"
    assert failed > 0

    # A rerun finds the request done and changes nothing.
    versions_before = versions(spark, root)
    rerun = StageRun("erase")
    privacy_job.erase_run(ctx, rerun)
    rerun_metrics = {metric: value for _, metric, value in rerun.metrics}
    assert (rerun_metrics["erased"], rerun_metrics["already_erased"]) == (0, 1)
    assert versions(spark, root) == versions_before

    # New files carry her again (a CRM export with a new customer id, an order on her account) next to a new
    # customer: standardize keeps her out of silver, counts the rows it dropped and audits them.
    crm = tables.read(spark, root, tables.bronze("crm")).schema
    tables.append(
        spark.createDataFrame(
            [
                ("CUST-NEW-1", "J.", "Doe", " JANE.DOE@example.com", None, None, None, None, "US", None, None,
                 "2026-03-01T10:00:00Z", *lineage("crm-000003")),
                ("CUST-CAROL-5", "Carol", "Poe", "carol@example.com", "(212) 555-0100", None, "New York", "10001",
                 "US", None, None, "2026-03-01T10:00:00Z", *lineage("crm-000003")),
            ],
            crm,
        ),
        root,
        tables.bronze("crm"),
    )  # fmt: skip
    orders = tables.read(spark, root, tables.bronze("orders")).schema
    tables.append(
        spark.createDataFrame(
            [("ORD-9", "ACC-JANE-42", None, None, None, None, None, NOW, 30.0, "USD", 1, *lineage("orders-000002"))],
            orders,
        ),
        root,
        tables.bronze("orders"),
    )
    log_ingested(spark, root, {"crm": (3, 2), "orders": (2, 1)})
    standardize = StageRun("standardize")
    standardize_job.run(Context(config, argparse.Namespace(), _spark=spark), standardize)
    after_new_files = table_texts(spark, root)
    for name, texts in after_new_files.items():
        if name.startswith(("silver.", "gold.")) and name not in bookkeeping:
            assert traces(texts) == [], name
    assert any("carol@example.com" in t for t in after_new_files["silver.customer_records"])
    counted = {(step, metric): value for step, metric, value in standardize.metrics}
    assert counted[("crm -> customer_records", "rows_suppressed")] == 1
    assert counted[("orders -> orders", "rows_suppressed")] == 1
    assert counted[("orders -> customer_records", "rows_suppressed")] == 1
    for name in ("bronze.crm", "bronze.orders"):  # the new files' rows of hers are not kept either
        assert traces(after_new_files[name]) == [], name
    assert any("carol@example.com" in t for t in after_new_files["bronze.crm"])
    suppressed = tables.read(spark, root, tables.AUDIT_LOG).where("action = 'suppress'")
    assert {(r["target"], r["table"], r["rows"]) for r in suppressed.collect()} == {
        ("crm", "silver.customer_records", 1),
        ("orders", "silver.orders", 1),
        ("orders", "silver.customer_records", 1),
    }

    # The destinations' next exports send her erasure (SHA-256 identifiers) and Bob as before; then the
    # tombstones are gone from the state.
    DeltaTable.forPath(spark, tables.SEGMENT_MEMBERSHIP.path(root)).update(
        set={"last_as_of": F.lit(date(2026, 3, 1))}
    )  # the next day's segment run: Bob still in
    activate = StageRun("activate")
    activation_job.run(Context(config, argparse.Namespace(as_of="2026-03-01"), _spark=spark), activate)
    exported_now = {n: t for n, t in export_files(root).items() if "/20260301-" in n}
    erasures = {n: t for n, t in exported_now.items() if "/erasures-" in n}
    assert sorted(n.split("/")[1] for n in erasures) == ["ads_match", "newsletter"]
    assert all(JANE_EMAIL_SHA in t and sha(JANE_CDP) in t for t in erasures.values())
    assert JANE_PHONE_SHA in erasures[next(n for n in erasures if "ads_match" in n)]
    assert not [t for t in exported_now.values() if "jane" in t.lower() or JANE_CDP in t]
    assert BOB_CDP in "".join(exported_now.values())
    for manifest_path in (Path(root) / "exports").glob("*/20260301-*/_manifest.json"):
        assert json.loads(manifest_path.read_text())["counts"]["erasures"] == 1
    state = tables.read(spark, root, tables.EXPORT_STATE)
    assert state.where(F.col("cdp_id") == "erased").count() == 0


@pytest.mark.slow
def test_erasure_interrupted_half_way_is_completed_by_the_rerun(spark, exported_lakehouse, tmp_path, monkeypatch):
    config = exported_lakehouse
    root = config.lakehouse.root
    # As scheduled: no --requests, the request files dropped into privacy.requests (under the lakehouse root).
    folder = Path(root) / config.privacy.requests
    folder.mkdir(parents=True)
    (folder / "monday.csv").write_text(
        "request_id,identifier_type,value,requested_by\nREQ-1,email,jane.doe@example.com,dpo\n"
    )
    (folder / "_notes.csv").write_text("not a request file: skipped and kept\n")
    ctx = Context(config, argparse.Namespace(requests=None), _spark=spark)

    # The run dies once bronze and silver are done: gold, ops and the exports still hold Jane.
    real_erase_table = erase_module.erase_table

    def dies_at_gold(job, table, sources):
        if table.layer == "gold":
            raise RuntimeError("killed half way")
        return real_erase_table(job, table, sources)

    with monkeypatch.context() as patch:
        patch.setattr(erase_module, "erase_table", dies_at_gold)
        with pytest.raises(RuntimeError, match="killed half way"):
            privacy_job.erase_run(ctx, StageRun("erase"))
    half = table_texts(spark, root)
    assert traces(half["bronze.crm"]) == [] and traces(half["silver.customer_records"]) == []
    assert traces(half["gold.customer_profile"]), "the interrupted run stopped before gold"
    plan = tables.read(spark, root, tables.ERASURE_PLAN)
    assert plan.where("completed_at is null").count() > 0, "the request stays pending"

    assert (folder / "monday.csv").exists(), "a failed run keeps its request files"

    # The rerun (same file) completes the pending request although Jane's records are already gone, then
    # deletes the request file: it names her in clear.
    rerun = StageRun("erase")
    privacy_job.erase_run(ctx, rerun)
    assert sorted(p.name for p in folder.iterdir()) == ["_notes.csv"]
    nothing = StageRun("erase")
    privacy_job.erase_run(ctx, nothing)  # an empty folder: nothing to do
    assert [(m, v) for _, m, v in nothing.metrics if m == "requests"] == [("requests", 0)]
    bookkeeping = (tables.ERASURE_PLAN.full_name, tables.ERASURE_SUPPRESSION.full_name)
    for name, texts in table_texts(spark, root).items():
        if name not in bookkeeping:
            # Tombstones are hashes by design; exactly one per destination she was exported to, not two.
            tombstones = [t for t in texts if '"cdp_id":"erased"' in t]
            assert len(tombstones) == (2 if name == tables.EXPORT_STATE.full_name else 0), name
            assert traces([t for t in texts if t not in tombstones]) == [], name
    for name, text in export_files(root).items():
        assert traces([text.lower()]) == [], name
    assert tables.read(spark, root, tables.ERASURE_PLAN).where("completed_at is null").count() == 0
    audit = tables.read(spark, root, tables.AUDIT_LOG).where("action = 'erase' and target = 'REQ-1'")
    assert audit.where("`table` = 'bronze.crm'").agg(F.sum("rows")).first()[0] == 2  # audited once, by the first run
    assert audit.where("`table` is null").count() == 1  # completed once


@pytest.mark.slow
def test_a_crafted_manifest_cannot_make_erasure_touch_a_table(spark, exported_lakehouse):
    root = exported_lakehouse.lakehouse.root
    manifest_path = next((Path(root) / "exports" / "ads_match").rglob("_manifest.json"))
    manifest = json.loads(manifest_path.read_text())
    manifest["files"].append({"name": "../../../silver/customer_records", "kind": "adds", "rows": 1, "sha256": "0"})
    manifest_path.write_text(json.dumps(manifest))
    records_before = tables.read(spark, root, tables.CUSTOMER_RECORDS).count()
    exports_before = export_files(root)
    plan = spark.createDataFrame(
        [("REQ-1", None, "email", keyed("jane.doe@example.com"), JANE_CDP)],
        "request_id string, requested_by string, kind string, value_hash string, cdp_id string",
    )
    job = matching.Erasure(spark, root, "run-x", plan, KEY, {"REQ-1": None}, [])

    with pytest.raises(UnsafePath, match=r"silver/customer_records'.*refused"):
        erase_exports(job)
    assert tables.read(spark, root, tables.CUSTOMER_RECORDS).count() == records_before > 0
    assert export_files(root) == exports_before  # refused before any file was touched


def test_delta_collects_statistics_only_on_non_personal_columns_so_no_value_lives_on_in_the_log(spark, tmp_path):
    root = str(tmp_path / "lakehouse")
    rows = spark.createDataFrame(
        [("cdp-1", "jane.doe@example.com", "crm:CUST-1", 10.5, ["a"], True)],
        "cdp_id string, email string, record_id string, amount double, tags array<string>, vip boolean",
    )
    tables.overwrite(rows, root, tables.CUSTOMER_PROFILE)
    log = [line for p in Path(tables.CUSTOMER_PROFILE.path(root), "_delta_log").glob("*.json") for line in p.open()]
    stats = [json.loads(json.loads(line)["add"]["stats"]) for line in log if '"add"' in line]
    assert stats and all(set(s["minValues"]) == {"cdp_id", "amount"} for s in stats)
    assert not [line for line in log if "jane" in line or "CUST-1" in line]
    properties = DeltaTable.forPath(spark, tables.CUSTOMER_PROFILE.path(root)).detail().first()["properties"]
    assert properties["delta.dataSkippingStatsColumns"] == "`cdp_id`,`amount`"
    # A new schema without a column the list names is accepted (Delta refuses it otherwise).
    tables.overwrite(rows.drop("amount"), root, tables.CUSTOMER_PROFILE)
    assert tables.read(spark, root, tables.CUSTOMER_PROFILE).columns == ["cdp_id", "email", "record_id", "tags", "vip"]
    # Bronze holds a source's own columns: statistics on lineage only.
    bronze = spark.createDataFrame([("jane.doe@example.com", "b-1")], "email string, _batch_id string")
    tables.append(bronze, root, tables.bronze("crm"))
    properties = DeltaTable.forPath(spark, tables.bronze("crm").path(root)).detail().first()["properties"]
    assert properties["delta.dataSkippingStatsColumns"] == "`_batch_id`"
