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
from cdp_spark.ingest.bronze import plan_batch, run_batch
from cdp_spark.ingest.sources import SourceConfig


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
