"""No secret or personal value leaks into text the project writes: config errors, stderr, logs, the run report."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from pyspark.errors import NumberFormatException
from pyspark.sql import functions as F

from cdp_spark import pipeline
from cdp_spark.cli import EXIT_FAILED, main
from cdp_spark.config import ConfigError
from cdp_spark.ops import configure_logging
from cdp_spark.redact import redact, redact_value
from cdp_spark.sources import load_sources
from cdp_spark.standardize.expectations import (
    DataQualityError,
    Expectation,
    count_results,
    enforce,
    evaluate,
    merged_results,
)

SECRET = "s3cr3t-Pa55"
EMAIL = "jane.doe@example.com"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("connect to postgresql://u:s3cr3t-Pa55@db/x failed", "connect to postgresql://u:***@db/x failed"),
        ("https://admin:p%40ss@mlflow.internal:5000/api", "https://admin:***@mlflow.internal:5000/api"),
        ("https://:token@host/x", "https://:***@host/x"),
        (
            "jdbc:postgresql://db/x?user=u&password=s3cr3t-Pa55&ssl=true",
            "jdbc:postgresql://db/x?user=u&password=***&ssl=true",
        ),
        ("no user: jane.doe@example.com", "no user: ***@example.com"),
        ("JANE+news@mail.example.co.uk, bob@x.io", "***@mail.example.co.uk, ***@x.io"),
        ("call +44 20 7946 0958 now", "call +** ** **** **58 now"),
        (
            "http://mlflow.internal:5000 and /mnt/lake/2026-01-01",
            "http://mlflow.internal:5000 and /mnt/lake/2026-01-01",
        ),
        ("rows_read=1,234,567 in 12.5s", "rows_read=1,234,567 in 12.5s"),
    ],
)
def test_redact_masks_passwords_emails_and_phones(text, expected):
    assert redact(text) == expected


def test_redact_masks_the_given_secrets_longest_first():
    assert redact("token abc and abcdef", ["abc", "abcdef", ""]) == "token *** and ***"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("o2", "o2"),
        ("C000123", "C000123"),
        ("jane.doe@example.com", "***@example.com"),
        ("+15551234567", "+*********67"),
        ("(555) 123-4567", "(***) ***-**67"),
        (12, "12"),
    ],
)
def test_redact_value_keeps_examples_useful(value, expected):
    assert redact_value(value) == expected


def test_config_error_of_a_jdbc_source_shows_no_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("CDP_TEST_DB_PASSWORD", SECRET)
    path = tmp_path / "sources.yaml"
    path.write_text(
        "sources:\n"
        "  - name: accounts\n"
        "    format: jdbc\n"
        "    business_key: [id]\n"
        "    jdbc: {url: 'jdbc:postgresql://db/x', table: accounts, user: u, password: '${env:CDP_TEST_DB_PASSWORD}'}\n"
        "  - name: billing\n"
        "    format: jdbc\n"
        "    business_key: [id]\n"
        "    updated_at: changed_at\n"
        "    jdbc: {url: 'jdbc:postgresql://db/x', table: billing, fetch_size: '${env:CDP_TEST_DB_PASSWORD}'}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_sources(str(path))
    message = str(err.value)
    assert "sources.0: Value error, a jdbc source needs updated_at" in message
    assert "sources.1.jdbc.fetch_size: Input should be a valid integer" in message
    assert SECRET not in message


def test_failed_expectation_masks_email_and_phone_keys(spark):
    rows = [(EMAIL, -1.0), ("+15551234567", -2.0), ("o3", 5.0)]
    expectations = [Expectation(name="positive_amount", expr="amount > 0", action="fail")]
    flagged = evaluate(spark.createDataFrame(rows, "customer_key string, amount double"), expectations)
    results = merged_results(count_results(flagged, "orders", expectations), "orders", expectations)
    with pytest.raises(DataQualityError) as err:
        enforce(flagged, "orders", expectations, results, "customer_key")
    message = str(err.value)
    assert EMAIL not in message and "5551234567" not in message
    assert sorted(message.rsplit(": ", 1)[1].split(", ")) == ["***@example.com", "+*********67"]


@pytest.fixture
def root_log() -> Iterator[io.StringIO]:
    """What a plain handler on the root logger writes (as the CLI's does). Not ``caplog``: once PySpark has logged
    a Spark error, pytest also attaches caplog's handler to PySpark's own loggers, which turns its format to JSON
    without tracebacks for the rest of the session."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        yield stream
    finally:
        logging.getLogger().removeHandler(handler)


def test_failed_run_writes_no_secret_or_email(tmp_path, monkeypatch, capsys, caplog, root_log):
    def leaking_stage(ctx, run):
        with run.step("read accounts") as counts:
            counts["rows_read"] = 3
            raise RuntimeError(f"cannot read postgresql://u:{SECRET}@db/x for {EMAIL}")

    monkeypatch.setattr(pipeline, "PIPELINE", ["ingest", "standardize"])
    monkeypatch.setitem(pipeline.STAGES, "ingest", SimpleNamespace(help="leaks", load=lambda: leaking_stage))
    reports = tmp_path / "reports"
    (tmp_path / "base.yaml").write_text(f"lakehouse: {{root: {tmp_path / 'lakehouse'}}}\nreports_dir: {reports}\n")
    caplog.set_level(logging.DEBUG, logger="cdp_spark")  # the level only (-v does not lower a configured root's)

    assert main(["--conf-dir", str(tmp_path), "-v", "run"]) == EXIT_FAILED

    stderr = capsys.readouterr().err
    report = (reports / "latest-run.md").read_text()
    logged = root_log.getvalue()
    assert "postgresql://u:***@db/x for ***@example.com" in stderr
    assert "Error: `cannot read postgresql://u:***@db/x for ***@example.com`" in report
    assert "Traceback" in logged and "RuntimeError: cannot read postgresql://u:***@db/x" in logged  # -v
    for written in (stderr, report, logged):
        assert SECRET not in written and EMAIL not in written


def test_a_spark_error_quoting_a_value_reaches_pyspark_own_log_redacted(spark):
    configure_logging()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)  # PySpark's loggers format what they get as JSON
    logger = logging.getLogger("DataFrameQueryContextLogger")
    logger.addHandler(handler)
    try:
        with pytest.raises(NumberFormatException, match="jane"):  # the exception itself: the caller's to handle
            spark.range(1).select(F.lit(EMAIL).cast("int")).collect()
    finally:
        logger.removeHandler(handler)
    logged = stream.getvalue()
    assert "CAST_INVALID_INPUT" in logged and "***@example.com" in logged
    assert EMAIL not in logged
