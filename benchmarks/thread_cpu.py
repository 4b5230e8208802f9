"""Where the CPU of a small pipeline run goes, per thread kind (not a test; Linux only).

    python benchmarks/thread_cpu.py [--people 300] [--days 2] [--runs 2] [--stages ingest standardize ...]

Run it from the repository root (the stages read conf/).

Generates a sample, then runs the stages ``--runs`` times in one session, each time into an empty lakehouse
(the later runs are warm: classes loaded, hot code compiled, as in a test worker that has run a few tests). For
each run it prints the wall time per stage and the CPU seconds, from ``/proc/<pid>/task/*/stat`` before and after,
of the driver JVM's threads by name (JIT compilers, GC, task threads, the py4j threads that plan queries and run
Delta's driver work), of this Python process and of Spark's Python workers. On a small run the question is what
besides the tasks keeps the cores busy: in the test suite two such processes share two cores.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from cdp_spark.config import LakehouseConfig, SparkConfig
from cdp_spark.pipeline import PIPELINE
from cdp_spark.session import build_session

_TICKS = os.sysconf("SC_CLK_TCK")


def _threads(pid: int) -> Counter:
    """CPU seconds per thread name (digits folded, 'GC Thread#N', but not C1/C2/G1) of one process."""
    out: Counter = Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[re.sub(r"(?<![CG])\d+", "N", name)] += (int(fields[11]) + int(fields[12])) / _TICKS
    return out


def _python_workers(jvm: int) -> float:
    """CPU seconds of the JVM's Python children (pyspark.daemon and its workers), their reaped children included."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        if b"pyspark.daemon" in cmdline:
            fields = stat[stat.rindex(")") + 2 :].split()
            total += sum(int(f) for f in fields[11:15]) / _TICKS
    return total


def snapshot(jvm: int) -> Counter:
    cpu = Counter({f"jvm: {name}": seconds for name, seconds in _threads(jvm).items()})
    cpu["python: driver"] = sum(_threads(os.getpid()).values())
    cpu["python: Spark's workers"] = _python_workers(jvm)
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=300)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--stages", nargs="+", default=list(PIPELINE), choices=PIPELINE)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument(
        "--conf", action="append", default=[], metavar="KEY=VALUE",
        help="a Spark setting (repeatable); the test suite's: see TINY_DATA_CONF in tests/conftest.py",
    )  # fmt: skip
    args = parser.parse_args()

    from cdp_spark.cli import main as cli

    work = Path(tempfile.mkdtemp(prefix="thread-cpu-"))
    conf = dict(item.split("=", 1) for item in args.conf)
    spark_cfg = SparkConfig(master=args.master, shuffle_partitions=1, conf=conf)
    spark = build_session(spark_cfg, LakehouseConfig(root=str(work)))
    jvm = spark.sparkContext._gateway.proc.pid  # spark-submit execs the JVM, so this is its pid
    sample = ["--set", f"landing={work / 'sample'}"]
    assert cli([*sample, "generate", "--people", str(args.people), "--days", str(args.days)]) == 0
    for run in range(args.runs):
        root = work / f"lakehouse-{run}"
        sets = [*sample, "--set", f"lakehouse.root={root}", "--set", f"reports_dir={work / 'reports'}",
                "--set", f"mlflow.tracking_uri=sqlite:///{work}/mlruns-{run}.db",
                "--set", f"mlflow.artifact_root={work}/mlartifacts-{run}"]  # fmt: skip
        before, started, walls = snapshot(jvm), time.perf_counter(), []
        for stage in args.stages:
            stage_started = time.perf_counter()
            assert cli([*sets, stage]) == 0, f"{stage} failed"
            walls.append(f"{stage} {time.perf_counter() - stage_started:.1f}")
        wall = time.perf_counter() - started
        used = snapshot(jvm)
        used.subtract(before)
        print(f"run {run}: {wall:.1f} s wall ({', '.join(walls)}); {sum(used.values()):.1f} CPU s")
        for name, seconds in used.most_common(args.top):
            print(f"  {seconds:6.1f}  {name}")
        shutil.rmtree(root, ignore_errors=True)
    spark.stop()


if __name__ == "__main__":
    main()
