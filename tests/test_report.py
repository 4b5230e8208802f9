"""The run report: a summary row per stage with totals, a verdict, and every metric in detail."""

from __future__ import annotations

from cdp_spark.ops import ReportSection, StageRun
from cdp_spark.report import RunReport, StageOutcome


def ingest_run() -> StageRun:
    run = StageRun(stage="ingest", run_id="r1")
    run.record("ingest crm", "rows_read", 10)
    run.record("ingest crm", "rows_written", 9)
    run.record("ingest crm", "rows_quarantined", 1)
    run.record("ingest crm", "seconds", 1.5)
    run.record("ingest pos", "rows_read", 5)
    run.record("ingest pos", "rows_written", 5)
    run.record("ingest pos", "seconds", 0.5)
    return run


def test_totals_verdict_and_details(tmp_path):
    report = RunReport(run_id="r1")
    report.add(StageOutcome("ingest", ingest_run(), "ok"))
    report.add(StageOutcome("standardize", None, "failed", "DataQualityError: orders: expectation 'x' failed"))
    report.add(StageOutcome("resolve", None, "not run"))
    text = report.markdown()
    assert "| ingest | ok | 2 | 15 | 14 | 1 |" in text
    assert "**standardize failed**; rerun `cdp-spark run` to resume." in text
    assert "Error: `DataQualityError: orders: expectation 'x' failed`" in text
    assert "| ingest pos | rows_written | 5 |" in text
    path = report.write(str(tmp_path))
    assert path.read_text() == (tmp_path / "latest-run.md").read_text()


def test_error_shows_no_url_password_or_email():
    report = RunReport(run_id="r1")
    report.add(
        StageOutcome("ingest", None, "failed", "cannot read postgresql://u:s3cr3t-Pa55@db/x for jane@example.com")
    )
    text = report.markdown()
    assert "Error: `cannot read postgresql://u:***@db/x for ***@example.com`" in text
    assert "s3cr3t-Pa55" not in text and "jane@example.com" not in text


def test_a_stage_section_is_shown_with_its_images_written_beside_the_report_even_when_the_stage_failed(tmp_path):
    run = StageRun(stage="resolve", run_id="s1")
    run.record("identity health", "failures", 1)
    run.sections.append(ReportSection("identity health", "Verdict: **failed**", {"chart.png": b"\x89PNG..."}))
    report = RunReport(run_id="r1")
    report.add(StageOutcome("resolve", run, "failed", "IdentityHealthFailed: max_cluster_size"))
    text = report.markdown()
    assert "### identity health\n\nVerdict: **failed**\n\n![chart.png](run-r1-chart.png)\n" in text
    assert "| identity health | failures | 1 |" in text
    report.write(str(tmp_path))
    assert (tmp_path / "run-r1-chart.png").read_bytes() == b"\x89PNG..."
    assert "(run-r1-chart.png)" in (tmp_path / "latest-run.md").read_text()
