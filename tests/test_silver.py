"""`ingest` then `standardize` with the shipped conf/: silver tables, quarantine, reruns, kill-and-rerun."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from cdp_spark import tables
from cdp_spark.config import load_config
from cdp_spark.pipeline import Context, run_stage
from cdp_spark.standardize import job as standardize_job

DAY1, DAY2 = "2026-01-01", "2026-01-02"

CRM_HEADER = (
    "customer_id,first_name,last_name,email,phone,address,city,postcode,country,birth_date,loyalty_id,updated_at"
)


def write(sample: Path, source: str, day: str, name: str, lines: list[str]) -> None:
    folder = sample / source / f"day={day}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join(lines) + "\n")


def jsonl(*rows: dict) -> list[str]:
    return [json.dumps(r) for r in rows]


def write_orders(spark, sample: Path, day: str, rows: list[tuple]) -> None:
    schema = (
        "order_id string, account_id string, email string, first_name string, last_name string, phone string, "
        "postcode string, order_ts timestamp, amount double, currency string, items int"
    )
    spark.createDataFrame(rows, schema).coalesce(1).write.mode("overwrite").parquet(
        str(sample / "orders" / f"day={day}")
    )


def day1(spark, sample: Path) -> None:
    write(
        sample,
        "crm",
        DAY1,
        "crm.csv",
        [
            CRM_HEADER,
            "c1,  mr. JOHN ,smith,John.Smith@Gmail.com,(415) 555-2671,12 Main Street,Boston,2134,USA,1980-02-03,L1,"
            "2025-12-01T10:00:00Z",
            "c2,Jane,Doe,jane@example.com,,5 Oak Avenue,Boston,02134,US,3/4/1990,,2025-12-02T10:00:00Z",
            "c3,No,Identifier,not-an-email,,,,,,,,2025-12-03T10:00:00Z",  # quarantined: nothing to link on
            "c1,John,Smith,old@example.com,,,,,,,,2025-11-01T10:00:00Z",  # an older copy of c1: loses
        ],
    )
    write_orders(
        spark,
        sample,
        DAY1,
        [
            (
                "o1",
                "a1",
                "johnsmith@gmail.com",
                "John",
                "Smith",
                None,
                "02134",
                dt.datetime(2025, 12, 5, 9),
                25.0,
                "usd",
                2,
            ),
            (
                "o2",
                "a1",
                "johnsmith@gmail.com",
                "John",
                "Smith",
                None,
                "02134",
                dt.datetime(2025, 12, 6, 9),
                -5.0,
                "usd",
                1,
            ),
        ],
    )
    write(
        sample,
        "events",
        DAY1,
        "events.json",
        jsonl(
            {
                "event_id": "e1",
                "event_ts": "2025-12-05T08:00:00Z",
                "event_type": "login",
                "cookie_id": "k1",
                "user_id": "a1",
            },
            {"event_id": "e2", "event_ts": "2025-12-05T08:01:00Z", "event_type": "page_view", "cookie_id": "k1"},
        ),
    )
    write(
        sample,
        "pos",
        DAY1,
        "pos.csv",
        [
            "transaction_id,store_id,loyalty_id,amount,transaction_ts",
            "t1,s1,L1,10.5,2025-12-07 12:00:00",
            "t2,s1,,3.0,2025-12-07 12:05:00",
        ],
    )
    write(
        sample,
        "support",
        DAY1,
        "support.json",
        jsonl(
            {
                "ticket_id": "s1",
                "name": "Dr. Jane Doe",
                "email": "JANE@example.com",
                "phone": None,
                "topic": "Delivery",
                "satisfaction": 4,
                "created_at": "2025-12-08T10:00:00Z",
            }
        ),
    )
    write(
        sample,
        "email_engagement",
        DAY1,
        "email.json",
        jsonl(
            {
                "message_id": "m1",
                "email": "john.smith@gmail.com",
                "event_type": "open",
                "event_ts": "2025-12-09T10:00:00Z",
                "campaign_id": "x1",
            }
        ),
    )
    write(
        sample,
        "consent",
        DAY1,
        "consent.csv",
        [
            "identifier_type,identifier,channel,granted,recorded_at",
            "email,Jane@Example.com,email,true,2025-12-01T00:00:00Z",
            "phone,(415) 555-2671,sms,yes,2025-12-01T00:00:00Z",
        ],
    )


def day2(sample: Path) -> None:
    write(
        sample,
        "crm",
        DAY2,
        "crm.csv",
        [
            CRM_HEADER,
            "c2,Jane,Doe-Smith,jane@example.com,,5 Oak Avenue,Boston,02134,US,1990-03-04,,2026-01-02T10:00:00Z",
        ],
    )
    write(
        sample,
        "events",
        DAY2,
        "events.json",
        [
            json.dumps(
                {
                    "event_id": "e3",
                    "event_ts": "2026-01-02T08:00:00Z",
                    "event_type": "page_view",
                    "cookie_id": "k2",
                    "utm_campaign": "winter",
                }
            ),
            '{"event_id": "e4", "event_ts": ',  # malformed: quarantined at ingest
        ],
    )


def context(spark, tmp_path: Path, root: str) -> Context:
    overrides = [f"lakehouse.root={root}", f"landing={tmp_path / 'sample'}"]
    return Context(load_config("conf", None, overrides), argparse.Namespace(), _spark=spark)


def silver_tables(spark, root: str) -> dict:
    names = ["CUSTOMER_RECORDS", "ORDERS", "EVENTS", "SUPPORT_TICKETS", "EMAIL_ENGAGEMENT", "CONSENT"]
    return {n: tables.read(spark, root, getattr(tables, n)) for n in names}


def versions(spark, root: str) -> dict[str, int]:
    return {
        name: df.sparkSession.sql(f"DESCRIBE HISTORY delta.`{getattr(tables, name).path(root)}`").count()
        for name, df in silver_tables(spark, root).items()
    }


def test_ingest_and_standardize_fill_silver_reconcile_and_rerun_changes_nothing(spark, tmp_path, lakehouse):
    sample, root = tmp_path / "sample", lakehouse.root
    day1(spark, sample)
    ctx = context(spark, tmp_path, root)
    run_stage("ingest", ctx)
    run = run_stage("standardize", ctx)

    records = tables.read(spark, root, tables.CUSTOMER_RECORDS)
    expected = spark.createDataFrame(
        [
            (
                "crm:c1",
                "John",
                "Smith",
                "johnsmith@gmail.com",
                "+14155552671",
                "12 main st",
                "02134",
                "US",
                dt.date(1980, 2, 3),
                "L1",
                None,
            ),
            (
                "crm:c2",
                "Jane",
                "Doe",
                "jane@example.com",
                None,
                "5 oak ave",
                "02134",
                "US",
                dt.date(1990, 3, 4),
                None,
                None,
            ),
            ("orders:a1", "John", "Smith", "johnsmith@gmail.com", None, None, "02134", None, None, None, "a1"),
            ("pos:L1", None, None, None, None, None, None, None, None, "L1", None),
            ("support:s1", "Jane", "Doe", "jane@example.com", None, None, None, None, None, None, None),
            (
                "email_engagement:johnsmith@gmail.com",
                None,
                None,
                "johnsmith@gmail.com",
                None,
                None,
                None,
                None,
                None,
                None,
                None,
            ),
        ],
        "record_id string, first_name string, last_name string, email string, phone string, address string, "
        "postcode string, country string, birth_date date, loyalty_id string, account_id string",
    )
    assert_df_equality(records.select(*expected.columns), expected, ignore_row_order=True, ignore_nullable=True)

    orders = tables.read(spark, root, tables.ORDERS).select("order_id", "channel", "record_id", "amount", "currency")
    assert sorted(map(tuple, orders.collect())) == [
        ("o1", "online", "orders:a1", 25.0, "USD"),
        ("pos-t1", "store", "pos:L1", 10.5, None),
        ("pos-t2", "store", None, 3.0, None),
    ]
    events = tables.read(spark, root, tables.EVENTS).select("event_id", "record_id", "account_id", "platform")
    assert sorted(map(tuple, events.collect())) == [("e1", "cookie:k1", "a1", "web"), ("e2", "cookie:k1", None, "web")]
    consent = tables.read(spark, root, tables.CONSENT).select("identifier_type", "identifier", "channel", "granted")
    assert sorted(map(tuple, consent.collect())) == [
        ("email", "jane@example.com", "email", True),
        ("phone", "+14155552671", "sms", True),
    ]

    quarantine = tables.read(spark, root, tables.QUARANTINE).where("stage = 'standardize'")
    reasons = sorted((r["source"], r["record_key"], r["reason"]) for r in quarantine.collect())
    assert reasons == [
        ("crm", "crm:c3", "failed expectation(s): has_an_identifier"),
        ("orders", "o2", "failed expectation(s): amount_not_negative"),
    ]
    dq = tables.read(spark, root, tables.DQ_METRICS).where("expectation = 'amount_not_negative'")
    assert sorted((r["source"], r["passed"], r["failed"]) for r in dq.collect()) == [("orders", 1, 1), ("pos", 2, 0)]
    # Every row read is accounted for: written, quarantined, or a duplicate of a newer row.
    metrics = tables.read(spark, root, tables.RUN_METRICS).where(F.col("run_id") == run.run_id)
    by_step: dict[str, dict[str, float]] = {}
    for r in metrics.collect():
        by_step.setdefault(r["step"], {})[r["metric"]] = r["value"]
    crm = by_step["crm -> customer_records"]
    assert (crm["rows_read"], crm["rows_written"], crm["rows_quarantined"], crm["rows_duplicate"]) == (4, 2, 1, 1)
    for step, m in by_step.items():
        if "rows_read" in m and "->" in step:
            assert m["rows_read"] == m["rows_written"] + m["rows_quarantined"] + m["rows_duplicate"], step

    before = versions(spark, root)
    run_stage("ingest", ctx)
    run_stage("standardize", ctx)
    assert versions(spark, root) == before

    day2(sample)
    run_stage("ingest", ctx)
    run_stage("standardize", ctx)
    jane = tables.read(spark, root, tables.CUSTOMER_RECORDS).where("record_id = 'crm:c2'").first()
    assert jane["last_name"] == "Doe-Smith"
    new_events = tables.read(spark, root, tables.EVENTS).where("event_id = 'e3'").first()
    assert new_events["utm_campaign"] == "winter"
    assert tables.read(spark, root, tables.QUARANTINE).where("stage = 'ingest' AND source = 'events'").count() == 1


def comparable(spark, root: str) -> dict:
    out = silver_tables(spark, root)
    out["QUARANTINE"] = tables.read(spark, root, tables.QUARANTINE).drop("run_id", "quarantined_at")
    return out


def test_kill_after_bronze_then_rerun_equals_an_uninterrupted_run(spark, tmp_path, monkeypatch):
    sample = tmp_path / "sample"
    day1(spark, sample)
    clean_root, killed_root = str(tmp_path / "clean"), str(tmp_path / "killed")
    clean = context(spark, tmp_path, clean_root)
    run_stage("ingest", clean)
    shutil.copytree(clean_root, killed_root)  # the same ingest, once: both standardize the same bronze
    run_stage("standardize", clean)

    killed = context(spark, tmp_path, killed_root)
    calls = {"n": 0}
    original = standardize_job.process_table

    def dies_on_the_fourth_table(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("killed half way through standardize")
        return original(*args, **kwargs)

    monkeypatch.setattr(standardize_job, "process_table", dies_on_the_fourth_table)
    with pytest.raises(KeyboardInterrupt):
        run_stage("standardize", killed)
    monkeypatch.setattr(standardize_job, "process_table", original)
    run_stage("standardize", killed)

    expected, actual = comparable(spark, clean_root), comparable(spark, killed_root)
    for name, df in expected.items():
        assert_df_equality(actual[name], df, ignore_row_order=True, ignore_column_order=True, ignore_nullable=True)


def test_sources_that_type_one_column_differently_meet_in_one_table(spark, tmp_path):
    """orders (Parquet) carries amount as a double, pos (CSV) as text; one MERGE takes both. A text amount
    that is no number is quarantined by its expectation, not a failed job."""
    from cdp_spark.sources import load_sources
    from cdp_spark.standardize.expectations import load_expectations

    sources = load_sources("conf/sources.yaml")
    by_name = {s.name: s for s in sources.sources}
    lineage = "_source_file string, _batch_id string, _ingested_at timestamp"
    now = dt.datetime(2026, 1, 2, 12)
    orders = spark.createDataFrame(
        [("o1", "a1", dt.datetime(2026, 1, 1, 10), 25.0, "USD", 1, "f1", "batch-000001", now)],
        f"order_id string, account_id string, order_ts timestamp, amount double, currency string, items int, {lineage}",
    )
    pos = spark.createDataFrame(
        [
            ("t1", "s1", "L1", "ten", "2026-01-01T11:00:00Z", "f2", "batch-000001", now),
            ("t2", "s1", "L2", "3.50", "2026-01-01T12:00:00Z", "f2", "batch-000001", now),
        ],
        f"transaction_id string, store_id string, loyalty_id string, amount string, transaction_ts string, {lineage}",
    )
    parts = [
        (standardize_job.Pending(by_name[name], bronze, "batch-000001"), by_name[name].silver[0])
        for name, bronze in (("orders", orders), ("pos", pos))
    ]
    assert all(target.table == "orders" for _, target in parts)
    root = str(tmp_path / "lakehouse")
    results, changed = standardize_job.process_table(
        "orders", parts, sources.standardize, load_expectations("conf/expectations.yaml"), root, "run-1"
    )
    assert changed == 2
    written = tables.read(spark, root, tables.ORDERS).select("order_id", "amount", "record_id")
    assert sorted(map(tuple, written.collect())) == [("o1", 25.0, "orders:a1"), ("pos-t2", 3.5, "pos:L2")]
    assert (results["pos"].rows_in, results["pos"].rows_kept, results["pos"].rows_quarantined) == (2, 1, 1)
    assert (results["orders"].rows_in, results["orders"].rows_kept) == (1, 1)
    quarantined = tables.read(spark, root, tables.QUARANTINE).select("source", "record_key", "reason").collect()
    assert [tuple(r) for r in quarantined] == [("pos", "pos-t1", "failed expectation(s): amount_not_negative")]
