"""The CI skip guard (tests/ci_skips.py), run on a throwaway test file in a child pytest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent

SKIPPING = """
import pytest

def test_runs():
    assert True

def test_needs_a_server():
    pytest.skip("no server here")
"""


def run_pytest(folder: Path, ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": ci} if ci else {})
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "pytest", "-p", "ci_skips", "-p", "no:cacheprovider", "-q", "-c", os.devnull]
    return subprocess.run([*command, str(folder)], cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_a_skip_fails_the_run_under_ci_and_is_only_reported_elsewhere(tmp_path):
    (tmp_path / "test_example.py").write_text(SKIPPING)
    outside = run_pytest(tmp_path, None)
    assert outside.returncode == 0 and "1 passed, 1 skipped" in outside.stdout
    in_ci = run_pytest(tmp_path, "true")
    assert in_ci.returncode == 1 and "1 failed, 1 passed" in in_ci.stdout
    assert "skipped under CI=true (Skipped: no server here)" in in_ci.stdout and "CI_ALLOWED_SKIPS" in in_ci.stdout
