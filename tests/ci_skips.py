"""No silent skips in CI: under ``CI=true`` a skipped test fails the run unless its file is allowed below.

A test that skips when something is missing (a PostgreSQL server, the CDNOW data) passes vacuously on a
machine without it; in CI that machine is ours, so a skip means coverage quietly lost. Loaded by
``tests/conftest.py``.
"""

from __future__ import annotations

import os

import pytest

# The skips CI accepts: test file -> the skip reason it may give. Keep it short: every entry is coverage
# this run does not check.
CI_ALLOWED_SKIPS = {
    # The Airflow DAG tests need Airflow, which pins its own dependencies: .ci/workflows.sh runs this file
    # again in its own virtualenv, where nothing skips.
    "tests/test_workflows.py": "Airflow is not installed",
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # noqa: ANN001, ANN201 - pytest hook
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") != "true" or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    allowed = CI_ALLOWED_SKIPS.get(item.nodeid.split("::")[0])
    if allowed is not None and allowed in reason:
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped under CI=true ({reason}); a CI skip is lost coverage: make the test run, or add its file "
        "and reason to CI_ALLOWED_SKIPS in tests/ci_skips.py with why"
    )
