"""Bronze ingest: incremental and exactly once, schema drift, malformed rows quarantined, counts reconcile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from cdp_spark import tables
from cdp_spark.config import ConfigError, load_model_file
from cdp_spark.ingest import bronze
from cdp_spark.ingest.bronze import plan_batch, run_batch
from cdp_spark.sources import SourceConfig, SourcesConfig
from cdp_spark.standardize.job import ingested_batches

CRM = SourceConfig.model_validate(
    {
        "name": "crm",
        "format": "csv",
        "path": "{landing}/crm",
        "options": {"header": "true"},
        "schema": "customer_id string, email string, updated_at string",
        "business_key": ["customer_id"],
        "updated_at": "updated_at",
    }
)
EVENTS = SourceConfig.model_validate(
    {
        "name": "events",
        "format": "json",
        "path": "{landing}/events",
        "schema_hints": {"event_ts": "string", "device_id": "string"},
        "business_key": ["event_id"],
    }
)


def write_day(sample: Path, source: str, day: str, name: str, lines: list[str]) -> None:
    folder = sample / source / f"day={day}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join(lines) + "\n")


def ingest(spark, root: str, source: SourceConfig, sample: Path, run_id: str = "run") -> bronze.BatchResult | None:
    batch = plan_batch(spark, root, source, str(sample), run_id)
    return None if batch is None else run_batch(spark, root, source, batch, run_id)


def events(*rows: dict) -> list[str]:
    return [json.dumps(r) for r in rows]


def test_incremental_ingest_drift_and_malformed_rows(spark, tmp_path, lakehouse):
    sample, root = tmp_path / "sample", lakehouse.root
    write_day(
        sample,
        "events",
        "2026-01-01",
        "part-0.json",
        events(
            {"event_id": "e1", "event_ts": "2026-01-01T10:00:00Z", "cookie_id": "c1", "device_id": "d1", "duration": 5},
            {"event_id": "e2", "event_ts": "2026-01-01T11:00:00Z", "cookie_id": "c2", "device_id": "d2", "duration": 7},
        ),
    )
    first = ingest(spark, root, EVENTS, sample)
    assert (first.rows_read, first.rows_written, first.rows_quarantined) == (2, 2, 0)
    bronze_path = tables.bronze("events").path(root)
    version_after_day1 = spark.sql(f"DESCRIBE HISTORY delta.`{bronze_path}`").agg(F.max("version")).first()[0]

    # A rerun with no new files writes nothing: no batch, no new table version.
    assert ingest(spark, root, EVENTS, sample) is None
    assert spark.sql(f"DESCRIBE HISTORY delta.`{bronze_path}`").agg(F.max("version")).first()[0] == version_after_day1

    # Day 2: a new field appears, values have the wrong type for the hints and for the table's
    # established types, and one line is broken JSON.
    write_day(
        sample,
        "events",
        "2026-01-02",
        "part-0.json",
        [
            *events(
                {
                    "event_id": "e3",
                    "event_ts": "2026-01-02T09:00:00Z",
                    "cookie_id": "c1",
                    "utm_campaign": "winter",
                    "duration": "n/a",
                },
                {
                    "event_id": "e4",
                    "event_ts": "2026-01-02T09:30:00Z",
                    "cookie_id": "c3",
                    "device_id": {"model": "x"},
                    "duration": 3,
                },
            ),
            '{"event_id": "e5", "event_ts": ',
        ],
    )
    second = ingest(spark, root, EVENTS, sample, run_id="run-2")
    assert (second.rows_read, second.rows_written, second.rows_quarantined) == (3, 2, 1)

    table = tables.read(spark, root, tables.bronze("events"))
    assert "utm_campaign" in table.columns
    rows = {r["event_id"]: r for r in table.collect()}
    assert sorted(rows) == ["e1", "e2", "e3", "e4"]
    assert rows["e3"]["utm_campaign"] == "winter" and rows["e1"]["utm_campaign"] is None
    assert rows["e4"]["device_id"] is None
    assert json.loads(rows["e4"]["_rescued_data"]) == {"device_id": '{"model":"x"}'}
    assert (rows["e3"]["duration"], json.loads(rows["e3"]["_rescued_data"])) == (None, {"duration": "n/a"})
    assert (rows["e1"]["duration"], rows["e4"]["duration"], rows["e1"]["_rescued_data"]) == (5, 3, None)
    assert rows["e1"]["_batch_id"] == "events-000000" and rows["e3"]["_batch_id"] == "events-000001"
    assert rows["e3"]["_source_file"].endswith("day=2026-01-02/part-0.json")
    assert all(rows[e]["_ingested_at"] is not None for e in rows)

    quarantined = tables.read(spark, root, tables.QUARANTINE).collect()
    assert len(quarantined) == 1
    q = quarantined[0]
    assert (q["source"], q["stage"], q["rule"], q["run_id"]) == ("events", "ingest", "malformed", "run-2")
    assert q["raw"] == '{"event_id": "e5", "event_ts": '
    assert "malformed json row" in q["reason"] and q["source_file"].endswith("part-0.json")


def test_csv_wrong_column_count_is_quarantined(spark, tmp_path, lakehouse):
    sample = tmp_path / "sample"
    write_day(
        sample,
        "crm",
        "2026-01-01",
        "part-0.csv",
        [
            "customer_id,email,updated_at",
            "1,ann@example.com,2026-01-01T00:00:00Z",
            "2,bob@example.com,2026-01-01T00:00:00Z,unexpected,extra",
            "3,cy@example.com,2026-01-01T00:00:00Z",
        ],
    )
    result = ingest(spark, lakehouse.root, CRM, sample)
    assert (result.rows_read, result.rows_written, result.rows_quarantined) == (3, 2, 1)
    good = tables.read(spark, lakehouse.root, tables.bronze("crm")).select("customer_id", "email")
    expected = spark.createDataFrame(
        [("1", "ann@example.com"), ("3", "cy@example.com")], "customer_id string, email string"
    )
    assert_df_equality(good, expected, ignore_row_order=True, ignore_nullable=True)
    raw = tables.read(spark, lakehouse.root, tables.QUARANTINE).select("raw").first()[0]
    assert raw == "2,bob@example.com,2026-01-01T00:00:00Z,unexpected,extra"


def test_run_killed_after_bronze_write_is_completed_once(spark, tmp_path, lakehouse, monkeypatch):
    sample, root = tmp_path / "sample", lakehouse.root
    write_day(
        sample, "crm", "2026-01-01", "part-0.csv", ["customer_id,email,updated_at", "1,a@x.io,2026-01-01T00:00:00Z"]
    )
    write_day(
        sample, "crm", "2026-01-02", "part-0.csv", ["customer_id,email,updated_at", "2,b@x.io,2026-01-02T00:00:00Z"]
    )

    original_append_log = bronze._append_log

    def die_before_commit(spark_, root_, batch, status, run_id, result, **options):
        if status == "committed":
            raise RuntimeError("killed")
        original_append_log(spark_, root_, batch, status, run_id, result, **options)

    monkeypatch.setattr(bronze, "_append_log", die_before_commit)
    with pytest.raises(RuntimeError, match="killed"):
        ingest(spark, root, CRM, sample)
    monkeypatch.setattr(bronze, "_append_log", original_append_log)
    # Its rows are in bronze, but standardize takes a batch only once ingest committed it.
    assert tables.read(spark, root, tables.bronze("crm")).count() == 2
    assert ingested_batches(spark, root) == {}

    # A new file arrives before the rerun: the rerun first finishes the planned batch, then takes the new file.
    write_day(
        sample, "crm", "2026-01-03", "part-0.csv", ["customer_id,email,updated_at", "3,c@x.io,2026-01-03T00:00:00Z"]
    )
    resumed = ingest(spark, root, CRM, sample)
    assert resumed.rows_read == 2
    assert ingested_batches(spark, root) == {"crm": "crm-000000"}
    follow_up = ingest(spark, root, CRM, sample)
    assert follow_up.rows_read == 1
    assert ingested_batches(spark, root) == {"crm": "crm-000001"}
    assert ingest(spark, root, CRM, sample) is None

    ids = sorted(r[0] for r in tables.read(spark, root, tables.bronze("crm")).select("customer_id").collect())
    assert ids == ["1", "2", "3"]
    log_rows = tables.read(spark, root, tables.INGEST_LOG).where("status = 'committed'").collect()
    assert sorted((r["batch_version"], r["rows_read"]) for r in log_rows) == [(0, 2), (1, 1)]


def test_conform_casts_to_hints_and_rescues_what_does_not_fit(spark):
    batch = spark.createDataFrame([("1", "5"), ("2", "five"), ("3", None)], "id string, satisfaction string")
    out = bronze.conform(batch, None, {"satisfaction": "int"})
    expected = spark.createDataFrame(
        [("1", 5, None), ("2", None, '{"satisfaction":"five"}'), ("3", None, None)],
        "id string, satisfaction int, _rescued_data string",
    )
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_source_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "sources.yaml"
    bad.write_text("sources:\n  - name: crm\n    format: csv\n    path: x\n    business_key: [id]\n")
    with pytest.raises(ConfigError, match=r"sources\.0: Value error, a csv source needs a schema"):
        load_model_file(SourcesConfig, bad)
    bad.write_text("sources:\n  - name: crm\n    format: xml\n    path: x\n    business_key: [id]\n")
    with pytest.raises(ConfigError, match=r"sources\.0\.format: Input should be"):
        load_model_file(SourcesConfig, bad)
    # Source paths never read the sample generator's settings: the old placeholder is an error naming the new one.
    bad.write_text(
        "sources:\n  - name: orders\n    format: parquet\n    path: '{sample}/orders'\n    business_key: [id]\n"
    )
    with pytest.raises(ConfigError, match=r'sources\.0: Value error, "\{sample\}" in a path is now "\{landing\}"'):
        load_model_file(SourcesConfig, bad)


def test_repository_sources_config_is_valid():
    config = load_model_file(SourcesConfig, Path(__file__).resolve().parents[1] / "conf" / "sources.yaml")
    assert {s.location("s3a://lake/landing/") for s in config.sources if s.name in ("crm", "orders")} == {
        "s3a://lake/landing/crm",
        "s3a://lake/landing/orders",
    }
    assert {s.name for s in config.sources} == {
        "crm",
        "orders",
        "events",
        "pos",
        "support",
        "email_engagement",
        "consent",
    }
