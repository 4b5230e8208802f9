"""Seeded, Spark-native sample data for every source, with ground truth kept aside.

Layout: ``<out>/<source>/day=YYYY-MM-DD/part-*`` (day 1 = the backfill of the history window, then one
drop per day), ``<out>/_truth/records`` (record_id, person_id), ``<out>/_truth/people`` (latent
behaviour) and ``<out>/_manifest.json``.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from cdp_spark import tables
from cdp_spark.config import SampleConfig
from cdp_spark.generate import sources
from cdp_spark.generate.people import SPEND_P, window_end
from cdp_spark.generate.people import people as make_people
from cdp_spark.normalize.emails import normalize_email
from cdp_spark.normalize.rules import EmailRules

log = logging.getLogger("cdp_spark")

CRM_COLUMNS = ["customer_id", "first_name", "last_name", "email", "phone", "address", "city", "postcode",
               "country", "birth_date", "loyalty_id", "updated_at"]  # fmt: skip
ORDER_COLUMNS = ["order_id", "account_id", "email", "first_name", "last_name", "phone", "postcode", "order_ts",
                 "amount", "currency", "items"]  # fmt: skip
POS_COLUMNS = ["transaction_id", "store_id", "loyalty_id", "amount", "transaction_ts"]
SUPPORT_COLUMNS = ["ticket_id", "name", "email", "phone", "topic", "satisfaction", "created_at"]
EMAIL_COLUMNS = ["message_id", "email", "event_type", "event_ts", "campaign_id"]
CONSENT_COLUMNS = ["identifier_type", "identifier", "channel", "granted", "recorded_at"]
SOURCES = ["crm", "orders", "events", "pos", "support", "email_engagement", "consent"]


def _files(rows: int) -> int:
    return max(1, rows // 1_000_000)


def _write_csv(df: DataFrame, path: str, columns: list[str]) -> None:
    (
        df.select(*columns, "day")
        .repartition("day")
        .sortWithinPartitions(columns[0])
        .write.mode("overwrite")
        .partitionBy("day")
        .option("header", "true")
        .csv(path)
    )


def _write_lines(df: DataFrame, path: str, key: str) -> None:
    df.repartition("day").sortWithinPartitions(key).select("day", "value").write.mode("overwrite").partitionBy(
        "day"
    ).text(path)


def _day(sample: SampleConfig, number: int) -> str:
    return (sample.start_date + timedelta(days=number - 1)).isoformat()


def generate(spark: SparkSession, out: str, people: int, days: int, seed: int, sample: SampleConfig) -> dict:
    """Write every source for ``people`` people over the history window plus ``days`` daily drops."""
    out = out.rstrip("/")
    drift_day, malformed_day = _day(sample, sample.drift_day), _day(sample, sample.malformed_day)
    persons = make_people(spark, people, days, seed, sample).persist()
    bought = sources.purchases(persons, seed, sample, days).persist()
    left = sources.dropout(bought)
    counts: dict[str, dict[str, int]] = {}

    def with_day(df: DataFrame) -> DataFrame:
        return sources.with_day(df, "ts", sample, days)

    crm = with_day(sources.crm(persons, seed, sample, days)).persist()
    _write_csv(crm, f"{out}/crm", CRM_COLUMNS)
    orders = with_day(sources.orders(persons, bought, seed, sample)).persist()
    orders.select(*ORDER_COLUMNS, "day").repartition("day").sortWithinPartitions("order_id").write.mode(
        "overwrite"
    ).partitionBy("day").parquet(f"{out}/orders")
    pos = with_day(sources.pos(persons, bought, seed)).persist()
    _write_csv(pos, f"{out}/pos", POS_COLUMNS)

    events = with_day(sources.events(persons, left, seed, sample, days)).persist()
    payload = F.to_json(
        F.struct(
            "event_id", "event_ts", "event_type", "cookie_id", "device_id", "user_id", "email",
            F.when((F.col("day") >= drift_day) & F.col("has_campaign"), F.col("campaign")).alias("utm_campaign"),
        )
    )  # fmt: skip
    # A few lines cut in half on the malformed day: at the configured rate, and at least three.
    rank = F.row_number().over(Window.partitionBy("day").orderBy("u_malformed", "event_id"))
    broken = (F.col("day") == malformed_day) & ((F.col("u_malformed") < sample.mess.malformed_row) | (rank <= 3))
    events_out = events.withColumn("value", payload).withColumn(
        "value", F.when(broken, F.substring("value", 1, 25)).otherwise(F.col("value"))
    )
    _write_lines(events_out, f"{out}/events", "event_id")

    support = with_day(sources.support(persons, seed, sample, days)).persist()
    _write_lines(support.withColumn("value", F.to_json(F.struct(*SUPPORT_COLUMNS))), f"{out}/support", "ticket_id")
    engagement = with_day(sources.email_engagement(persons, left, seed, sample, days)).persist()
    _write_lines(engagement.withColumn("value", F.to_json(F.struct(*EMAIL_COLUMNS))), f"{out}/email_engagement",
                 "message_id")  # fmt: skip
    consent = with_day(sources.consent(persons, seed, sample, days)).persist()
    _write_csv(consent, f"{out}/consent", CONSENT_COLUMNS)

    if days >= sample.malformed_day:
        _append_malformed_pos(spark, pos, f"{out}/pos/day={malformed_day}", malformed_day, sample)

    truth = _truth_records(crm, orders, pos, support, engagement, events)
    truth.repartition(_files(people)).sortWithinPartitions("record_id").write.mode("overwrite").parquet(
        f"{out}/_truth/records"
    )
    end = window_end(sample, days)
    persons.join(left, "person_id", "left").select(
        "person_id", "household_id", "household_size", "acquired_at", "purchase_rate", "dropout_probability",
        (SPEND_P / F.col("spend_nu")).alias("mean_spend"), "account_id", "loyalty_id", "device_only",
        "dropout_at", F.coalesce("purchases", F.lit(0)).alias("purchases"),
        F.col("dropout_at").isNull().alias("alive_at_end"), end.alias("window_end"),
    ).write.mode("overwrite").parquet(f"{out}/_truth/people")  # fmt: skip

    for name, df in [("crm", crm), ("orders", orders), ("events", events), ("pos", pos), ("support", support),
                     ("email_engagement", engagement), ("consent", consent)]:  # fmt: skip
        counts[name] = {r["day"]: int(r["count"]) for r in df.groupBy("day").count().collect()}
    manifest = {
        "people": people,
        "days": days,
        "seed": seed,
        "start_date": sample.start_date.isoformat(),
        "history_days": sample.history_days,
        "drift_day": drift_day,
        "malformed_day": malformed_day if days >= sample.malformed_day else None,
        "mess": sample.mess.model_dump(),
        "sources": SOURCES,
        "rows": counts,
    }
    _write_text(spark, f"{out}/_manifest.json", json.dumps(manifest, indent=2, sort_keys=True))
    for df in (persons, bought, crm, orders, pos, events, support, engagement, consent):
        df.unpersist()
    return manifest


def _append_malformed_pos(spark: SparkSession, pos: DataFrame, folder: str, day: str, sample: SampleConfig) -> None:
    """A file of store rows with a column too many (a till that appended a field) in the malformed day's drop.

    At the configured rate of that day's rows, and at least three: copies of store rows re-dated to the day.
    """
    day_rows = pos.where(F.col("day") == day).count()
    wanted = max(3, round(day_rows * sample.mess.malformed_row))
    bad = pos.orderBy(F.xxhash64("transaction_id"), "transaction_id").limit(wanted)  # top-k: no global sort
    line = F.concat_ws(
        ",",
        F.concat(F.lit("X"), "transaction_id"),
        "store_id",
        "loyalty_id",
        "amount",
        F.concat(F.lit(day + " "), F.date_format("ts", "HH:mm:ss")),
        F.lit("EXTRA"),
    )
    lines = bad.select(line.alias("value")).collect()
    rows = [(",".join(POS_COLUMNS),)] + [(r["value"],) for r in lines]
    tables.rows_frame(spark, rows, "value string").coalesce(1).write.mode("append").text(folder)


def _truth_records(crm, orders, pos, support, engagement, events) -> DataFrame:
    canonical = normalize_email(F.col("email"), EmailRules())
    parts = [
        crm.select(F.concat(F.lit("crm:"), "customer_id").alias("record_id"), "person_id"),
        orders.select(F.concat(F.lit("orders:"), "account_id").alias("record_id"), "person_id"),
        pos.where("loyalty_id != ''").select(F.concat(F.lit("pos:"), "loyalty_id").alias("record_id"), "person_id"),
        support.select(F.concat(F.lit("support:"), "ticket_id").alias("record_id"), "person_id"),
        engagement.select(F.concat(F.lit("email_engagement:"), canonical).alias("record_id"), "person_id"),
        events.select(F.concat(F.lit("cookie:"), "cookie_id").alias("record_id"), "person_id"),
    ]
    truth = parts[0]
    for part in parts[1:]:
        truth = truth.unionByName(part)
    return truth.distinct()


def _write_text(spark: SparkSession, path: str, text: str) -> None:
    """Write one small file through Hadoop's file system, so ``out`` may be any URI Spark can write."""
    jvm = spark.sparkContext._jvm
    target = jvm.org.apache.hadoop.fs.Path(path)
    fs = target.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    stream = fs.create(target, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()
