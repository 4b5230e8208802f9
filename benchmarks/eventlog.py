"""Where a Spark application's time went, from its event log (not a test).

    python benchmarks/eventlog.py EVENT_LOG [--top 25]

Enable the log for a run with ``benchmarks/run.py --event-log DIR`` (or any Spark app with
``spark.eventLog.enabled=true``, ``spark.eventLog.dir=DIR``). Prints, for each job group (the cdp-spark
step and the Python line that started the job), wall seconds of its jobs, task seconds, shuffle bytes
and, summed over all tasks, the SQL metrics that show Python work (Arrow UDF time, rows sent to Python).
The total driver time outside any job is the application's wall time minus the union of job intervals:
planning, Delta log work on the driver, Python on the driver.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
from collections import defaultdict
from pathlib import Path

_PYTHON_METRICS = re.compile(r"python|arrow|udf", re.IGNORECASE)
_METHOD = re.compile(r"org\.apache\.spark\.sql\.(?:classic\.)?([\w.]+)\(")


def _operation(properties: dict, executions: dict[int, str]) -> str:
    """The Python call site when Spark recorded one, else the Dataset/Writer method of the SQL execution."""
    site = properties.get("callSite.short")
    if site:
        return site.split("\n")[0]
    details = executions.get(int(properties.get("spark.sql.execution.id", -1)), "")
    match = _METHOD.match(details)
    return match.group(1) if match else "?"


def _group(properties: dict, executions: dict[int, str]) -> str:
    """Jobs are grouped by the cdp-spark step that ran them (their job description) and the operation."""
    step = properties.get("spark.job.description") or "-"
    return f"{step[:60]} | {_operation(properties, executions)[:70]}"


def _lines(path: Path):
    """JSON lines of a plain event log file, or of every file of a rolling log folder (zstd via the CLI)."""
    files = sorted(p for p in path.iterdir() if p.name.startswith("events_")) if path.is_dir() else [path]
    for file in files:
        if file.suffix == ".zstd":
            text = subprocess.run(["zstd", "-dc", str(file)], check=True, capture_output=True, text=True).stdout
            yield from text.splitlines()
        else:
            with file.open() as handle:
                yield from handle


def summarize(path: Path, top: int) -> None:
    jobs: dict[int, dict] = {}
    stage_job: dict[int, int] = {}
    per_site: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    python_metrics: dict[str, float] = defaultdict(float)
    executions: dict[int, str] = {}
    app_start = app_end = None
    for line in _lines(path):
        event = json.loads(line)
        kind = event["Event"]
        if kind == "SparkListenerApplicationStart":
            app_start = event["Timestamp"]
        elif kind == "SparkListenerApplicationEnd":
            app_end = event["Timestamp"]
        elif kind.endswith("SparkListenerSQLExecutionStart"):
            executions[event["executionId"]] = event.get("details", "")
        elif kind == "SparkListenerJobStart":
            site = _group(event.get("Properties") or {}, executions)
            jobs[event["Job ID"]] = {"site": site, "start": event["Submission Time"]}
            for stage_id in event.get("Stage IDs", []):
                stage_job[stage_id] = event["Job ID"]
        elif kind == "SparkListenerJobEnd":
            job = jobs.get(event["Job ID"])
            if job:
                job["end"] = event["Completion Time"]
        elif kind == "SparkListenerTaskEnd":
            job = jobs.get(stage_job.get(event["Stage ID"], -1))
            info, metrics = event.get("Task Info", {}), event.get("Task Metrics") or {}
            if job is None:
                continue
            site = per_site[job["site"]]
            site["task_s"] += (info.get("Finish Time", 0) - info.get("Launch Time", 0)) / 1000
            site["tasks"] += 1
            site["shuffle_write_mb"] += (metrics.get("Shuffle Write Metrics") or {}).get(
                "Shuffle Bytes Written", 0
            ) / 1e6
            read = metrics.get("Shuffle Read Metrics") or {}
            site["shuffle_read_mb"] += (read.get("Remote Bytes Read", 0) + read.get("Local Bytes Read", 0)) / 1e6
            for acc in info.get("Accumulables", []):
                name = acc.get("Name") or ""
                if _PYTHON_METRICS.search(name) and isinstance(acc.get("Update"), (int, float, str)):
                    with contextlib.suppress(ValueError):  # a non-numeric update: not a metric to sum
                        python_metrics[name] += float(acc["Update"])
    intervals = []
    for job in jobs.values():
        if "end" in job:
            site = per_site[job["site"]]
            site["jobs"] += 1
            site["wall_s"] += (job["end"] - job["start"]) / 1000
            intervals.append((job["start"], job["end"]))
    busy, last = 0.0, None
    for start, end in sorted(intervals):
        if last is None or start > last:
            busy += end - start
            last = end
        elif end > last:
            busy += end - last
            last = end
    total = ((app_end or (last or 0)) - (app_start or 0)) / 1000
    print(
        f"application {total:.1f} s; inside Spark jobs {busy / 1000:.1f} s; outside (driver) {total - busy / 1000:.1f} s"
    )
    print(f"{len(jobs)} jobs")
    print(f"{'wall_s':>8} {'jobs':>5} {'tasks':>6} {'task_s':>8} {'shufW_MB':>9} {'shufR_MB':>9}  call site")
    ranked = sorted(per_site.items(), key=lambda kv: -kv[1]["wall_s"])
    for site, s in ranked[:top]:
        print(
            f"{s['wall_s']:8.1f} {int(s['jobs']):5d} {int(s['tasks']):6d} {s['task_s']:8.1f} "
            f"{s['shuffle_write_mb']:9.1f} {s['shuffle_read_mb']:9.1f}  {site}"
        )
    if python_metrics:
        print("Python-side SQL metrics, summed over tasks:")
        for name, value in sorted(python_metrics.items()):
            print(f"  {name}: {value:,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("event_log", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    summarize(args.event_log, args.top)


if __name__ == "__main__":
    main()
