"""Hostile input (issue 19): a bad source is reported and never blocks the healthy ones; a mistyped path is an
error, not a silent zero-row success; a failed stage still records its metrics."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import pytest
import yaml
from pyspark.sql import functions as F
from test_ingest import CRM as CRM_SOURCE

from cdp_spark import tables
from cdp_spark.config import load_config
from cdp_spark.ingest.job import SourcesFailed
from cdp_spark.pipeline import Context, run_stage

# The CRM source of the ingest tests, as a sources.yaml entry.
CRM = CRM_SOURCE.model_dump(by_alias=True, exclude_defaults=True)
EVENTS = {"name": "events", "format": "json", "path": "{landing}/events", "business_key": ["event_id"]}
ORDERS = {"name": "orders", "format": "parquet", "path": "{landing}/orders", "business_key": ["order_id"]}


def context(spark, tmp_path: Path, sources: list[dict]) -> Context:
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump({"sources": sources}))
    overrides = [
        f"lakehouse.root={tmp_path / 'lakehouse'}",
        f"landing={tmp_path / 'sample'}",
        f"files.sources={tmp_path / 'sources.yaml'}",
    ]
    return Context(load_config("conf", None, overrides), argparse.Namespace(), _spark=spark)


def write(tmp_path: Path, source: str, name: str, text: str | bytes) -> None:
    folder = tmp_path / "sample" / source / "day=2026-01-01"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(text if isinstance(text, bytes) else text.encode())


def step_metrics(spark, root: str, stage: str) -> dict[str, dict[str, float]]:
    rows = tables.read(spark, root, tables.RUN_METRICS).where(F.col("stage") == stage).collect()
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        out.setdefault(r["step"], {})[r["metric"]] = r["value"]
    return out


def test_a_bad_source_is_reported_after_the_healthy_ones_are_ingested(spark, tmp_path):
    write(tmp_path, "crm", "crm.csv", "customer_id,email,updated_at\nc1,a@example.com,2026-01-01\n")
    write(tmp_path, "orders", "orders.parquet", "this is no parquet file")  # unreadable: the reader fails
    write(tmp_path, "events", "events.json", '{"event_id": "e1"}\n{"event_id": "e2"}\n')
    mistyped = {**CRM, "name": "crm_eu", "path": "{landing}/crm-eu"}  # no such folder
    ctx = context(spark, tmp_path, [ORDERS, CRM, mistyped, EVENTS])

    with pytest.raises(SourcesFailed) as failed:
        run_stage("ingest", ctx)

    assert sorted(failed.value.failures) == ["crm_eu", "orders"]
    message = str(failed.value)
    assert message.startswith("2 of 4 sources failed (the others were ingested): ")
    assert "crm_eu: FileNotFoundError: source crm_eu: path " in message and "crm-eu does not exist" in message
    root = ctx.root
    assert tables.read(spark, root, tables.bronze("crm")).count() == 1
    assert tables.read(spark, root, tables.bronze("events")).count() == 2
    assert not tables.exists(spark, root, tables.bronze("orders"))
    # The failed stage recorded its metrics: the healthy sources' counts, each failure, the stage's verdict.
    metrics = step_metrics(spark, root, "ingest")
    assert metrics["ingest crm"]["rows_written"] == 1 and "failed" not in metrics["ingest crm"]
    assert metrics["ingest events"]["rows_written"] == 2
    assert metrics["ingest orders"]["failed"] == 1 and metrics["ingest crm_eu"]["failed"] == 1
    assert metrics["stage"]["failed"] == 1

    # The bad file deleted before it was read: a clear error naming it, not a batch that silently reads nothing.
    bad_file = tmp_path / "sample" / "orders" / "day=2026-01-01" / "orders.parquet"
    bad_file.unlink()
    with pytest.raises(SourcesFailed, match=r"orders: FileNotFoundError: source orders: 1 file\(s\) of batch 0, "):
        run_stage("ingest", ctx)

    # Fixed (the folder created, the file sent again readable): the rerun ingests the rest and nothing twice.
    fixed = tmp_path / "fixed"
    spark.createDataFrame([("o1",)], "order_id string").coalesce(1).write.parquet(str(fixed))
    next(fixed.glob("*.parquet")).rename(bad_file)
    (tmp_path / "sample" / "crm-eu").mkdir()
    run_stage("ingest", ctx)
    assert tables.read(spark, root, tables.bronze("orders")).count() == 1
    assert tables.read(spark, root, tables.bronze("crm")).count() == 1


def test_a_missing_path_is_nothing_to_do_only_when_the_source_allows_it(spark, tmp_path):
    ctx = context(spark, tmp_path, [{**CRM, "allow_missing": True}])
    run = run_stage("ingest", ctx)
    assert ("ingest crm", "rows_read", 0.0) in run.metrics
    assert not tables.exists(spark, ctx.root, tables.bronze("crm"))


def ingest_counts(run) -> dict[str, dict[str, float]]:  # noqa: ANN001 - StageRun
    out: dict[str, dict[str, float]] = {}
    for step, metric, value in run.metrics:
        out.setdefault(step, {})[metric] = value
    return out


def test_poison_json_keys_and_a_file_of_one_truncated_line_never_fail_the_batch(spark, tmp_path):
    write(
        tmp_path,
        "events",
        "events.json",
        '{"event_id": "e1", "page title": "Home", "a`b": 1, "ok": "x"}\n'
        '{"event_id": "e2", "_rescued_data": "theirs", "_metadata": {"k": 1}, "nested": {"bad key": 2}}\n'
        '{"event_id": "e3", "page ti\n',
    )
    write(tmp_path, "upload", "cut.json", '{"event_id": "e9", "email": "jane@exa')  # an interrupted upload
    upload = {**EVENTS, "name": "upload", "path": "{landing}/upload"}
    ctx = context(spark, tmp_path, [EVENTS, upload])

    counts = ingest_counts(run_stage("ingest", ctx))

    for step in ("ingest events", "ingest upload"):
        m = counts[step]
        assert m["rows_read"] == m["rows_written"] + m["rows_quarantined"], step
    assert (counts["ingest events"]["rows_written"], counts["ingest events"]["rows_quarantined"]) == (2, 1)
    assert (counts["ingest upload"]["rows_written"], counts["ingest upload"]["rows_quarantined"]) == (0, 1)
    bronze = tables.read(spark, ctx.root, tables.bronze("events"))
    assert {"page_title", "a_b", "src_rescued_data", "src_metadata", "nested", "ok"} <= set(bronze.columns)
    rows = {r["event_id"]: r for r in bronze.collect()}
    assert rows["e1"]["page_title"] == "Home" and rows["e2"]["src_rescued_data"] == "theirs"
    assert rows["e2"]["nested"] == '{"bad key":2}'  # kept as its JSON text
    assert rows["e2"]["_source_file"].endswith("/events/day=2026-01-01/events.json")
    quarantined = tables.read(spark, ctx.root, tables.QUARANTINE).where("source = 'upload'").collect()
    assert [(r["rule"], r["raw"]) for r in quarantined] == [("malformed", '{"event_id": "e9", "email": "jane@exa')]
    assert quarantined[0]["source_file"].endswith("/upload/day=2026-01-01/cut.json")

    # A rerun has nothing new: the poison no longer fails every run.
    assert ingest_counts(run_stage("ingest", ctx))["ingest events"]["files"] == 0


def test_an_int_that_overflows_or_is_nan_is_null_not_an_ansi_error(spark):
    from cdp_spark.normalize.rules import StandardizeRules
    from cdp_spark.silver import _standard

    df = spark.createDataFrame(
        [("3",), ("3.0",), ("1e1",), ("1e10",), ("NaN",), ("-Infinity",), ("abc",)], "items string"
    )
    got = [r[0] for r in df.select(_standard("items", "int", df, StandardizeRules())).collect()]
    assert got == [3, 3, 10, None, None, None, None]


def test_csv_columns_are_mapped_by_header_new_ones_kept_missing_ones_null(spark, tmp_path, caplog):
    write(tmp_path, "crm", "a.csv", "customer_id,email,updated_at\nc1,a@example.com,2026-01-01\n")
    write(tmp_path, "crm", "b.csv", "updated_at,email,customer_id\n2026-01-02,b@example.com,c2\n")  # reversed
    write(tmp_path, "crm", "c.csv", "customer_id,email,updated_at,tier\nc3,c@example.com,2026-01-03,gold\n")
    write(tmp_path, "crm", "d.csv", "Customer_ID,updated_at\nc4,2026-01-04\n")  # no email; other case
    write(tmp_path, "crm", "e.csv", "customer_id,email,updated_at\nc5,e@example.com,2026-01-05,extra,cells\n")
    ctx = context(spark, tmp_path, [CRM])

    counts = ingest_counts(run_stage("ingest", ctx))["ingest crm"]

    assert (counts["rows_read"], counts["rows_written"], counts["rows_quarantined"]) == (5, 4, 1)
    bronze = tables.read(spark, ctx.root, tables.bronze("crm"))
    got = sorted(tuple(r) for r in bronze.select("customer_id", "email", "updated_at", "tier").collect())
    assert got == [
        ("c1", "a@example.com", "2026-01-01", None),
        ("c2", "b@example.com", "2026-01-02", None),
        ("c3", "c@example.com", "2026-01-03", "gold"),
        ("c4", None, "2026-01-04", None),
    ]
    assert "lack column(s) ['email']" in caplog.text and "bring new column(s) ['tier']" in caplog.text
    quarantined = tables.read(spark, ctx.root, tables.QUARANTINE).where("source = 'crm'").collect()
    assert [r["raw"] for r in quarantined] == ["c5,e@example.com,2026-01-05,extra,cells"]


IDENTITY = """
record_id: record_id
identifiers:
  - {name: email, column: email, priority: 1, limit: 5}
hot_value_threshold: 15
"""


def records(spark, rows: list[tuple[str, str]]):
    from cdp_spark.tables import silver_schema as contract_schema

    schema = contract_schema("customer_records")
    return spark.createDataFrame(
        [{**dict.fromkeys(schema.fieldNames()), "record_id": rid, "email": email} for rid, email in rows], schema
    )


def lineage_events(spark, root: str) -> list[tuple]:
    rows = tables.read(spark, root, tables.IDENTITY_LINEAGE).collect()
    return sorted((r["cdp_id"], r["event"], tuple(r["previous_cdp_ids"] or ())) for r in rows)


def record_changes(spark, root: str) -> list[tuple]:
    rows = tables.read(spark, root, tables.IDENTITY_CHANGES).drop("run_id", "recorded_at").collect()
    return sorted(map(tuple, rows), key=str)


def test_a_crash_between_the_change_logs_and_the_identity_map_loses_no_event_and_doubles_none(
    spark, tmp_path, monkeypatch
):

    (tmp_path / "identity.yaml").write_text(IDENTITY)
    day1 = [("crm:1", "a@example.com"), ("crm:2", "a@example.com"), ("crm:3", "b@example.com")]
    day2 = [*day1, ("crm:4", "a@example.com"), ("crm:5", "b@example.com"), ("web:9", None)]
    day2 = [(r, "a@example.com" if r in ("crm:3", "crm:5") else e) for r, e in day2]  # b's records join a: merge

    crash_points = (tables.IDENTITY_MAP, tables.IDENTITY_LINEAGE, tables.IDENTITY_CHANGES)

    def dies_at_the_last_write(write):  # noqa: ANN001, ANN202
        """The process dies at the last of the map, lineage and change log writes, whichever order the job has."""

        def wrapper(*args, **kwargs):
            if args[2] in crash_points:
                writes.append(args[2])
                if len(writes) == len(crash_points):
                    raise SystemExit(9)
            return write(*args, **kwargs)

        return wrapper

    def resolve_days(root: Path, crash: bool) -> None:
        overrides = [f"lakehouse.root={root}", f"files.identity={tmp_path / 'identity.yaml'}"]
        ctx = Context(load_config("conf", None, overrides), argparse.Namespace(), _spark=spark)
        for rows in (day1, day2):
            tables.overwrite(records(spark, rows), str(root), tables.CUSTOMER_RECORDS)
            if crash:
                writes.clear()
                with monkeypatch.context() as patch:
                    patch.setattr(tables, "overwrite_if_changed", dies_at_the_last_write(tables.overwrite_if_changed))
                    patch.setattr(tables, "append", dies_at_the_last_write(tables.append))
                    with contextlib.suppress(SystemExit):
                        run_stage("resolve", ctx)
            run_stage("resolve", ctx)
            run_stage("resolve", ctx)  # and a rerun with nothing new

    writes: list = []
    resolve_days(tmp_path / "clean", crash=False)
    resolve_days(tmp_path / "crashed", crash=True)

    expected = lineage_events(spark, str(tmp_path / "clean"))
    assert {e[1] for e in expected} >= {"created", "merged", "retired"}
    assert lineage_events(spark, str(tmp_path / "crashed")) == expected
    changes = record_changes(spark, str(tmp_path / "clean"))
    assert {c[3] for c in changes} == {"added", "moved"}
    assert record_changes(spark, str(tmp_path / "crashed")) == changes
    maps = [
        sorted(
            map(
                tuple,
                tables.read(spark, str(tmp_path / d), tables.IDENTITY_MAP).select("record_id", "cdp_id").collect(),
            )
        )
        for d in ("clean", "crashed")
    ]
    assert maps[0] == maps[1]
