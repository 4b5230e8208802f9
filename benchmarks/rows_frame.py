"""Small driver-side frames: ``spark.createDataFrame(rows)`` against ``tables.rows_frame`` (not a test).

    python benchmarks/rows_frame.py [--rounds 3] [--calls 10] [--rows 10]

Every stage appends a few rows the driver holds (run metrics, the ingest log, audit entries, markers).
``createDataFrame`` ships a Python list through a Python worker per partition when the frame is read;
``rows_frame`` hands an Arrow table to the JVM. Per round and alternating, in one session: ``--calls`` reads
(``collect``) and ``--calls`` Delta appends of an ``ops.run_metrics``-shaped frame of ``--rows`` rows, each way.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime

from cdp_spark import tables
from cdp_spark.config import LakehouseConfig, SparkConfig
from cdp_spark.session import build_session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="rows-frame-")
    spark = build_session(SparkConfig(master=args.master, shuffle_partitions=1), LakehouseConfig(root=work))
    now = datetime.now(UTC)
    rows = [("run-1", "ingest", f"step {i}", "rows", float(i), now) for i in range(args.rows)]
    ways = {
        "createDataFrame": lambda: spark.createDataFrame(rows, tables.RUN_METRICS.schema),
        "rows_frame": lambda: tables.rows_frame(spark, rows, tables.RUN_METRICS.schema),
    }
    assert sorted(ways["createDataFrame"]().collect()) == sorted(ways["rows_frame"]().collect())
    seconds: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds):
        for name, build in ways.items():
            started = time.perf_counter()
            for _ in range(args.calls):
                build().collect()
            read = time.perf_counter() - started
            started = time.perf_counter()
            for _ in range(args.calls):
                tables.append(build(), f"{work}/{name}", tables.RUN_METRICS)
            appended = time.perf_counter() - started
            seconds.setdefault((name, "read"), []).append(read / args.calls)
            seconds.setdefault((name, "append"), []).append(appended / args.calls)
            print(f"round {round_} {name:16s} read {read / args.calls:.3f} s  append {appended / args.calls:.3f} s")
    for what in ("read", "append"):
        before = statistics.median(seconds[("createDataFrame", what)])
        after = statistics.median(seconds[("rows_frame", what)])
        print(f"median per {what}: createDataFrame {before:.3f} s, rows_frame {after:.3f} s ({after / before:.2f}x)")
    spark.stop()


if __name__ == "__main__":
    main()
