"""The fixed cost of a Python task: Spark's own worker daemon against ``cdp_spark.worker_daemon`` (not a test).

    python benchmarks/python_tasks.py [--rounds 2] [--queries 5] [--rows 20000] [--tasks 2 16]

A daemon is chosen when a SparkContext starts, so each way runs in its own process, the two alternating round by
round. Each process runs ``--queries`` times, per task count, a ``s + 1`` pandas UDF over ``--rows`` rows (summed,
so only a number comes back) and prints the mean seconds per query. On Python 3.11 Spark's worker re-reads
``pyspark.zip`` before every task (``cdp_spark/worker_daemon.py``); the difference per task is that re-read.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import pandas as pd

DAEMONS = {"pyspark.daemon": "Spark's", "cdp_spark.worker_daemon": "cdp-spark's"}


def child(daemon: str, queries: int, rows: int, tasks: list[int]) -> dict[int, float]:
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    from cdp_spark.config import LakehouseConfig, SparkConfig
    from cdp_spark.session import build_session

    config = SparkConfig(master="local[2]", shuffle_partitions=1, conf={"spark.python.daemon.module": daemon})
    spark = build_session(config, LakehouseConfig(root=tempfile.mkdtemp(prefix="python-tasks-")))

    @pandas_udf("long")
    def plus_one(s: pd.Series) -> pd.Series:
        return s + 1

    def query(n: int) -> None:
        spark.range(rows, numPartitions=n).select(plus_one("id").alias("x")).agg(F.sum("x")).collect()

    query(max(tasks))  # workers started and the code warm before anything is timed
    seconds = {}
    for n in tasks:
        start = time.perf_counter()
        for _ in range(queries):
            query(n)
        seconds[n] = (time.perf_counter() - start) / queries
    spark.stop()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 16])
    parser.add_argument("--child", choices=sorted(DAEMONS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.queries, args.rows, args.tasks)))
        return

    results: dict[str, list[dict[str, float]]] = {daemon: [] for daemon in DAEMONS}
    for round_ in range(1, args.rounds + 1):
        for daemon in DAEMONS:
            command = [sys.executable, __file__, "--child", daemon, "--queries", str(args.queries)]
            command += ["--rows", str(args.rows), "--tasks", *map(str, args.tasks)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            seconds = json.loads(done.stdout.strip().splitlines()[-1])
            results[daemon].append(seconds)
            shown = ", ".join(f"{n} tasks {s:.3f} s" for n, s in seconds.items())
            print(f"round {round_} {DAEMONS[daemon]:12} daemon: {shown}", flush=True)
    for n in map(str, args.tasks):
        spark_s = [r[n] for r in results["pyspark.daemon"]]
        ours = [r[n] for r in results["cdp_spark.worker_daemon"]]
        ratios = " / ".join(f"{o / s:.2f}x" for s, o in zip(spark_s, ours, strict=True))
        print(f"{n} tasks per query: cdp-spark's daemon / Spark's = {ratios}")


if __name__ == "__main__":
    main()
