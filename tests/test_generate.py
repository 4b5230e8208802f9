"""The sample-data generator: reproducible, every source in its format, mess at its rates, truth complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from cdp_spark.config import MessRates, SampleConfig
from cdp_spark.generate import generate, vocab
from cdp_spark.generate.people import people

MESS = MessRates(
    name_typo=0.3,
    email_variant=0.3,
    second_email=0.5,
    missing_field=0.2,
    household=0.5,
    junk_email=0.1,
    device_only=0.5,
    malformed_row=0.01,
)
SAMPLE = SampleConfig(people=400, days=3, seed=42, history_days=365, drift_day=2, malformed_day=3, mess=MESS)


@pytest.fixture(scope="module")
def sample(spark, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    generate(spark, str(out), SAMPLE.people, SAMPLE.days, SAMPLE.seed, SAMPLE)
    return out


def read(spark, sample: Path, source: str):
    path = str(sample / source)
    if source in ("crm", "pos", "consent"):
        return spark.read.option("header", "true").csv(path)
    if source == "orders":
        return spark.read.parquet(path)
    return spark.read.json(path)


def test_same_seed_same_data_other_seed_other_data(spark, sample, tmp_path):
    again = tmp_path / "again"
    generate(spark, str(again), SAMPLE.people, SAMPLE.days, SAMPLE.seed, SAMPLE)
    for source in ["crm", "orders", "events", "pos", "support", "email_engagement", "consent", "_truth/records"]:
        first = read(spark, sample, source) if source != "_truth/records" else spark.read.parquet(str(sample / source))
        second = read(spark, again, source) if source != "_truth/records" else spark.read.parquet(str(again / source))
        assert_df_equality(first, second, ignore_row_order=True, ignore_nullable=True)
    assert json.loads((sample / "_manifest.json").read_text()) == json.loads((again / "_manifest.json").read_text())
    other = people(spark, 50, 3, seed=7, sample=SAMPLE).select("first_name", "email")
    same = people(spark, 50, 3, seed=42, sample=SAMPLE).select("first_name", "email")
    assert other.exceptAll(same).count() > 40


def test_every_source_in_its_format_with_its_columns(spark, sample):
    expected = {
        "crm": ("csv", "customer_id,first_name,last_name,email,phone,address,city,postcode,country,birth_date,loyalty_id,updated_at"),
        "orders": ("parquet", "order_id,account_id,email,first_name,last_name,phone,postcode,order_ts,amount,currency,items"),
        "pos": ("csv", "transaction_id,store_id,loyalty_id,amount,transaction_ts"),
        "consent": ("csv", "identifier_type,identifier,channel,granted,recorded_at"),
        "support": ("json", None),
        "email_engagement": ("json", None),
        "events": ("json", None),
    }  # fmt: skip
    for source, (fmt, header) in expected.items():
        days = sorted(p.name for p in (sample / source).iterdir() if p.name.startswith("day="))
        assert days[0] == "day=2026-01-01", source
        files = [f for f in (sample / source).rglob("part-*") if not f.name.endswith(".crc")]
        assert files, source
        if fmt == "csv":
            assert all(f.read_text().splitlines()[0] == header for f in files), source
        elif fmt == "parquet":
            assert all(f.read_bytes()[:4] == b"PAR1" for f in files)
            assert ",".join(c for c in read(spark, sample, source).columns if c != "day") == header
        else:
            line = files[0].read_text().splitlines()[0]
            assert isinstance(json.loads(line), dict), source
    # Every file holds exactly the rows the manifest says the seed produced, per source and day, plus the
    # store rows with a field too many appended on the malformed day (the rate of that day's rows, at least
    # three); the CRM's first day has every person at least once (second emails, households add rows).
    manifest = json.loads((sample / "_manifest.json").read_text())
    implied = {source: dict(per_day) for source, per_day in manifest["rows"].items()}
    malformed_day = manifest["malformed_day"]
    implied["pos"][malformed_day] += max(3, round(implied["pos"][malformed_day] * MESS.malformed_row))
    for source in expected:
        counted = read(spark, sample, source).groupBy(F.col("day").cast("string").alias("day")).count().collect()
        assert {r["day"]: r["count"] for r in counted} == implied[source], source
    assert SAMPLE.people <= manifest["rows"]["crm"]["2026-01-01"] <= 2 * SAMPLE.people


def test_mess_appears_at_roughly_its_configured_rate(spark, sample):
    truth = spark.read.parquet(str(sample / "_truth/records"))
    clean = people(spark, SAMPLE.people, SAMPLE.days, SAMPLE.seed, SAMPLE)
    crm = (
        read(spark, sample, "crm")
        .withColumn("record_id", F.concat(F.lit("crm:"), "customer_id"))
        .join(truth, "record_id")
        .join(
            clean.select(
                "person_id",
                F.col("first_name").alias("true_first"),
                F.col("email").alias("true_email"),
                F.col("second_email").alias("true_second"),
            ),
            "person_id",
        )  # fmt: skip
    )
    n = crm.count()

    def share(condition: str) -> float:
        return crm.where(condition).count() / n

    junk = ", ".join(f"'{e}'" for e in vocab.JUNK_EMAILS)
    assert 0.05 <= share(f"email IN ({junk})") <= 0.15
    assert 0.12 <= share("phone IS NULL") <= 0.28
    assert 0.12 <= share("address IS NULL") <= 0.28
    assert 0.15 <= share("first_name != true_first") <= 0.35  # typo rate 0.3 on names longer than 3 letters
    varied = f"email IS NOT NULL AND email NOT IN ({junk}) AND email != true_email AND NOT email <=> true_second"
    assert 0.12 <= share(varied) <= 0.35  # 0.3 of the unmissed, un-junked emails
    assert 0.3 <= share("true_second IS NOT NULL") <= 0.7

    truth_people = spark.read.parquet(str(sample / "_truth/people"))
    total = truth_people.count()
    assert 0.35 <= truth_people.where("household_size = 2").count() / total <= 0.65
    households = truth_people.where("household_size = 2").groupBy("household_id").count()
    assert households.where("count != 2").count() == 0
    eligible = truth_people.where("account_id IS NOT NULL")
    assert eligible.where("device_only").count() > 0
    # Shared household phones: two people, one number, in the CRM.
    shared = (
        crm.where("phone IS NOT NULL")
        .groupBy(F.regexp_replace("phone", r"\D", ""))
        .agg(F.countDistinct("person_id").alias("people"))
    )
    assert shared.where("people > 1").count() > 0


def test_ground_truth_covers_every_record(spark, sample):
    truth = spark.read.parquet(str(sample / "_truth/records"))
    assert truth.groupBy("record_id").count().where("count > 1").count() == 0
    ids = [
        read(spark, sample, "crm").select(F.concat(F.lit("crm:"), "customer_id")),
        read(spark, sample, "orders").select(F.concat(F.lit("orders:"), "account_id")),
        read(spark, sample, "pos")
        .where("loyalty_id IS NOT NULL AND transaction_id NOT LIKE 'X%'")
        .select(F.concat(F.lit("pos:"), "loyalty_id")),
        read(spark, sample, "support").select(F.concat(F.lit("support:"), "ticket_id")),
        read(spark, sample, "events").where("cookie_id IS NOT NULL").select(F.concat(F.lit("cookie:"), "cookie_id")),
    ]
    for records in ids:
        records = records.toDF("record_id").distinct()
        assert records.join(truth, "record_id", "left_anti").count() == 0


def test_drift_and_malformed_rows_on_their_days(spark, sample):
    events = spark.read.option("mode", "PERMISSIVE").json(str(sample / "events"))
    by_day = {r["day"].isoformat() if hasattr(r["day"], "isoformat") else r["day"]: r for r in
              events.groupBy("day").agg(F.count("utm_campaign").alias("utm"),
                                        F.count("_corrupt_record").alias("broken")).collect()}  # fmt: skip
    assert by_day["2026-01-01"]["utm"] == 0 and by_day["2026-01-02"]["utm"] > 0
    assert by_day["2026-01-01"]["broken"] == 0 and by_day["2026-01-02"]["broken"] == 0
    assert by_day["2026-01-03"]["broken"] >= 3
    pos_lines = [
        line for f in (sample / "pos").glob("day=2026-01-03/part-*.txt") for line in f.read_text().splitlines()
    ]
    assert len([line for line in pos_lines if line.count(",") == 5]) >= 3
    assert not list((sample / "pos").glob("day=2026-01-0[12]/part-*.txt"))


def test_purchases_follow_the_latent_process(spark, sample):
    truth_people = spark.read.parquet(str(sample / "_truth/people"))
    assert truth_people.where("purchases > 0").count() > 0.9 * SAMPLE.people
    # Nobody buys after dropping out: the dropout is the last purchase.
    truth = spark.read.parquet(str(sample / "_truth/records"))
    orders = read(spark, sample, "orders").withColumn("record_id", F.concat(F.lit("orders:"), "account_id"))
    late = orders.join(truth, "record_id").join(truth_people, "person_id").where("order_ts > dropout_at")
    assert late.count() == 0
    assert truth_people.where("dropout_at IS NOT NULL").count() > 0
