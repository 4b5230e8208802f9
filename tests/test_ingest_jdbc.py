"""JDBC incremental extraction by updated-at watermark, against a real PostgreSQL server started on loopback."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from cdp_spark import tables
from cdp_spark.config import CdpConfig
from cdp_spark.ingest.bronze import Batch, jdbc_predicates, jdbc_read_from, plan_batch, read_jdbc, run_batch
from cdp_spark.pipeline import Context
from cdp_spark.session import embedded_conf
from cdp_spark.sources import SourceConfig


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(args: list[str]) -> list[str]:
    return args if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *args]


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1; yields (port, run_sql)."""
    bin_dir = _pg_bin()
    if bin_dir is None or shutil.which("psql") is None:
        pytest.skip("no PostgreSQL server binaries on this machine (install Debian's postgresql package)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: initdb refuses to run as root")
    workdir = Path(tempfile.mkdtemp(prefix="cdp-pg-"))
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres", "postgres")
    data, port = workdir / "data", _free_port()
    subprocess.run(
        _as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "cdp"]),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1"
    subprocess.run(
        _as_postgres(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(workdir / "log"), "-w", "start"]
        ),
        check=True,
        capture_output=True,
    )

    def run_sql(sql: str) -> None:
        subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "cdp",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
        )

    try:
        yield port, run_sql
    finally:
        subprocess.run(
            _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]), capture_output=True
        )
        shutil.rmtree(workdir, ignore_errors=True)


def test_jdbc_incremental_extraction_by_watermark(spark, postgres, lakehouse):
    port, run_sql = postgres
    run_sql(
        "CREATE TABLE crm_customers (customer_id text primary key, email text, updated_at timestamp not null);"
        "INSERT INTO crm_customers VALUES ('1', 'ann@example.com', '2026-01-01 10:00:00'),"
        " ('2', 'bob@example.com', '2026-01-01 11:00:00');"
    )
    source = SourceConfig.model_validate(
        {
            "name": "crm_db",
            "format": "jdbc",
            "jdbc": {"url": f"jdbc:postgresql://127.0.0.1:{port}/postgres", "table": "crm_customers", "user": "cdp"},
            "business_key": ["customer_id"],
            "updated_at": "updated_at",
        }
    )
    root = lakehouse.root

    def ingest():
        batch = plan_batch(spark, root, source, "unused", "run")
        return None if batch is None else (batch, run_batch(spark, root, source, batch, "run"))

    first_batch, first = ingest()
    assert (first.rows_read, first_batch.watermark_from, first_batch.watermark_to) == (2, None, "2026-01-01 11:00:00")
    assert ingest() is None  # nothing changed since the watermark

    # One row updated after the watermark, one new row; row 1 untouched.
    run_sql(
        "UPDATE crm_customers SET email = 'robert@example.com', updated_at = '2026-01-02 09:00:00' WHERE customer_id = '2';"
        "INSERT INTO crm_customers VALUES ('3', 'cy@example.com', '2026-01-02 10:00:00');"
    )
    second_batch, second = ingest()
    assert second.rows_read == 2 and second_batch.watermark_from == "2026-01-01 11:00:00"
    rows = tables.read(spark, root, tables.bronze("crm_db")).collect()
    assert sorted((r["customer_id"], r["email"], r["_batch_id"]) for r in rows) == [
        ("1", "ann@example.com", "crm_db-000000"),
        ("2", "bob@example.com", "crm_db-000000"),
        ("2", "robert@example.com", "crm_db-000001"),
        ("3", "cy@example.com", "crm_db-000001"),
    ]
    assert {r["_source_file"] for r in rows} == {"jdbc:crm_customers"}


def test_jdbc_reads_late_commits_and_null_updated_ats_once_in_parallel_slices(spark, postgres, lakehouse):
    port, run_sql = postgres
    run_sql(
        "CREATE TABLE accounts (account_id text primary key, plan text, updated_at timestamp);"
        "INSERT INTO accounts VALUES ('1', 'basic', '2026-01-01 10:15:00'), ('2', 'basic', '2026-01-01 11:00:00'),"
        " ('4', 'gold', NULL);"
    )
    source = SourceConfig.model_validate(
        {
            "name": "accounts_db",
            "format": "jdbc",
            "jdbc": {
                "url": f"jdbc:postgresql://127.0.0.1:{port}/postgres",
                "table": "accounts",
                "user": "cdp",
                "num_partitions": 3,
                "lookback_seconds": 3600,
            },
            "business_key": ["account_id"],
            "updated_at": "updated_at",
        }
    )
    root = lakehouse.root

    def ingest():
        batch = plan_batch(spark, root, source, "unused", "run")
        return None if batch is None else (batch, run_batch(spark, root, source, batch, "run"))

    first_batch, first = ingest()
    assert (first.rows_read, first.rows_written, first.rows_reread) == (3, 3, 0)
    # Three time slices and the NULL updated-ats: four queries, one partition each.
    assert read_jdbc(spark, source, first_batch, "2026-01-01 10:15:00").rdd.getNumPartitions() == 4

    # Committed late: row 5 carries an updated-at below the watermark (11:00) but inside the hour of look-back;
    # row 2 changes; row 6 has no updated-at; rows 1 (inside the look-back) and 4 (NULL) are read again unchanged.
    run_sql(
        "INSERT INTO accounts VALUES ('5', 'basic', '2026-01-01 10:30:00'), ('6', 'gold', NULL);"
        "UPDATE accounts SET plan = 'gold', updated_at = '2026-01-01 12:00:00' WHERE account_id = '2';"
    )
    second_batch, second = ingest()
    assert second_batch.watermark_from == "2026-01-01 11:00:00"
    assert (second.rows_read, second.rows_written, second.rows_reread) == (3, 3, 2)
    assert ingest() is None  # the watermark did not move: nothing to read
    rows = tables.read(spark, root, tables.bronze("accounts_db")).collect()
    assert sorted((r["account_id"], r["plan"], r["_batch_id"]) for r in rows) == [
        ("1", "basic", "accounts_db-000000"),
        ("2", "basic", "accounts_db-000000"),
        ("2", "gold", "accounts_db-000001"),
        ("4", "gold", "accounts_db-000000"),
        ("5", "basic", "accounts_db-000001"),
        ("6", "gold", "accounts_db-000001"),
    ]

    # A rerun of the second batch (a crash before its commit) reads the same rows and writes nothing twice.
    again = run_batch(spark, root, source, second_batch, "rerun")
    assert (again.rows_read, again.rows_reread) == (3, 2)
    assert tables.read(spark, root, tables.bronze("accounts_db")).count() == 6


def _jdbc_source(**jdbc) -> SourceConfig:
    return SourceConfig.model_validate(
        {
            "name": "db",
            "format": "jdbc",
            "jdbc": {"url": "jdbc:postgresql://db/x", "table": "t", **jdbc},
            "business_key": ["id"],
            "updated_at": "changed",
        }
    )


def test_jdbc_predicates_slice_the_batch_range_and_take_or_skip_nulls():
    source = _jdbc_source(num_partitions=2, lookback_seconds=1800)
    batch = Batch("db", 3, watermark_from="2026-01-01 10:00:00", watermark_to="2026-01-01 12:00:00")
    read_from = jdbc_read_from(source, batch)
    assert read_from == "2026-01-01 09:30:00"
    assert jdbc_predicates(source, read_from, batch.watermark_to, None) == [
        "changed > TIMESTAMP '2026-01-01 09:30:00' AND changed <= TIMESTAMP '2026-01-01 10:45:00'",
        "changed > TIMESTAMP '2026-01-01 10:45:00' AND changed <= TIMESTAMP '2026-01-01 12:00:00'",
        "changed IS NULL",
    ]
    # A first batch: open below, sliced from the oldest value; NULLs skipped when the source says so.
    skip = _jdbc_source(num_partitions=2, null_updated_at="skip")
    assert jdbc_predicates(skip, None, "2026-01-03 00:00:00+00", "2026-01-01 00:00:00+00") == [
        "changed <= TIMESTAMP '2026-01-02 00:00:00+00:00'",
        "changed > TIMESTAMP '2026-01-02 00:00:00+00:00' AND changed <= TIMESTAMP '2026-01-03 00:00:00+00'",
    ]
    assert jdbc_predicates(_jdbc_source(), None, "2026-01-03 00:00:00", None) == [
        "changed <= TIMESTAMP '2026-01-03 00:00:00'",
        "changed IS NULL",
    ]


def test_the_runtime_adds_the_driver_a_jdbc_source_names(tmp_path):
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        "sources:\n"
        "  - {name: crm_db, format: jdbc, business_key: [id], updated_at: changed,\n"
        "     jdbc: {url: 'jdbc:postgresql://db/x', table: t}}\n"
        "  - {name: erp, format: jdbc, business_key: [id], updated_at: changed,\n"
        "     jdbc: {url: 'jdbc:sqlserver://db', table: t, driver: com.microsoft.sqlserver.jdbc.SQLServerDriver,\n"
        "            package: 'com.microsoft.sqlserver:mssql-jdbc:12.8.1.jre11'}}\n"
    )
    config = CdpConfig.model_validate({"files": {"sources": str(sources)}})
    packages = Context(config)._jdbc_packages()
    assert packages == ("com.microsoft.sqlserver:mssql-jdbc:12.8.1.jre11", "org.postgresql:postgresql:42.7.4")
    coordinates = embedded_conf(config.spark, packages)["spark.jars.packages"].split(",")
    assert coordinates[-2:] == list(packages) and len(coordinates) == 4  # after Delta and GraphFrames
    with pytest.raises(ValueError, match="must name a timestamp column"):
        _jdbc_source().model_validate({**_jdbc_source().model_dump(by_alias=True), "updated_at": "coalesce(a, b)"})
