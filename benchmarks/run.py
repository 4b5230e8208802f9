"""Pipeline benchmark: generate N people, then time every stage of `cdp-spark run` (not a test).

    python benchmarks/run.py --people 100000 1000000 [--days 3] [--master local[2]] [--stages ingest ...]
    python benchmarks/run.py --people 1000000 --workdir DIR --resume-at resolve   # later stages of a kept run

Prints, per size and stage as soon as it finishes, wall seconds, rows in, rows/s and rows/s per core, the peak
resident memory so far of the driver JVM and of the Python driver (rows
are source rows read for ingest and standardize, silver customer records for resolve, and customers, the rows
of gold.customer_profile, for every later stage), the identity metrics
against ground truth, a plain Spark read-standardize-write baseline of the same CRM rows (the ratio the
product brief asks for), and how time grows from one size to the next. One SparkSession for everything.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

from pyspark.sql import functions as F

from cdp_spark import tables
from cdp_spark.config import load_config
from cdp_spark.ops import configure_logging
from cdp_spark.pipeline import PIPELINE, Context, run_stage


def rows_in(ctx: Context, run, stage: str) -> float:
    """Rows the stage consumed: rows read by ingest/standardize, silver customer records by resolve, customers after."""
    if stage in ("ingest", "standardize"):
        return sum(v for _, m, v in run.metrics if m == "rows_read" and v is not None)
    if stage == "resolve":
        return sum(v for step, m, v in run.metrics if step == "read silver" and m == "records")
    return tables.read(ctx.spark, ctx.root, tables.CUSTOMER_PROFILE).count()


def driver_peak_mb(spark) -> dict[str, int]:
    """Peak resident memory so far (MiB) of the driver JVM (with local[N] it runs the executors too) and
    of this Python process; Linux only (``VmHWM`` of ``/proc/<pid>/status``)."""
    peak = {"python_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}
    pid = spark.sparkContext._gateway.proc.pid  # spark-submit execs the JVM, so this is its pid
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        kib = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
        peak["jvm_peak_rss_mb"] = kib // 1024
    return peak


def baseline(spark, sample: str, out: str) -> tuple[float, int]:
    """Plain Spark: read the CRM CSVs, four string standardizations, write Delta."""
    started = time.perf_counter()
    df = spark.read.option("header", "true").csv(f"{sample}/crm")
    df = df.select(
        F.lower(F.trim("email")).alias("email"),
        F.regexp_replace("phone", r"\D", "").alias("phone"),
        F.initcap(F.trim("first_name")).alias("first_name"),
        F.lower(F.regexp_replace("address", r"\s+", " ")).alias("address"),
    )
    df.write.format("delta").mode("overwrite").save(out)
    rows = spark.read.format("delta").load(out).count()
    return time.perf_counter() - started, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--workdir", default=None, help="where data and lakehouses go (default: a temp folder)")
    parser.add_argument("--stages", nargs="+", default=PIPELINE, choices=PIPELINE, help="a prefix of the pipeline")
    parser.add_argument(
        "--resume-at",
        choices=PIPELINE[1:],
        help="keep the data and lakehouse of an earlier run in --workdir and time the stages from this one on",
    )
    parser.add_argument(
        "--cores", type=int, help="cores the master offers (default: N of local[N]; give it for spark://)"
    )
    parser.add_argument(
        "--spark-conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra Spark setting (repeatable), e.g. spark.executor.memory=6g for a cluster master",
    )
    parser.add_argument(
        "--driver-memory", default="8g", help="spark.driver.memory: the 10^6-people run must fit 8g (default)"
    )
    parser.add_argument("--event-log", help="write Spark's event log here (read it with benchmarks/eventlog.py)")
    args = parser.parse_args()
    if args.stages != PIPELINE[: len(args.stages)]:
        parser.error(f"--stages must be a prefix of the pipeline: {' '.join(PIPELINE)}")
    if args.resume_at and not args.workdir:
        parser.error("--resume-at needs the --workdir of the run it resumes")
    configure_logging()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cdp-bench-")).resolve()
    local_cores = args.master.removeprefix("local[").removesuffix("]")
    if args.cores is None and not local_cores.isdigit():
        parser.error(f"--cores is needed with --master {args.master} (how many cores run the tasks)")
    cores = args.cores or int(local_cores)
    if bad := [kv for kv in args.spark_conf if "=" not in kv]:
        parser.error(f"--spark-conf takes KEY=VALUE, got {bad}")
    extra_conf = dict(kv.split("=", 1) for kv in args.spark_conf)
    results = []
    for people in args.people:
        sample, root = work / f"sample-{people}", work / f"lakehouse-{people}"
        stages = args.stages[args.stages.index(args.resume_at) :] if args.resume_at else args.stages
        if args.resume_at and not (root / "silver").is_dir():
            parser.error(f"--resume-at {args.resume_at}: no earlier run's lakehouse in {root}")
        if not args.resume_at:
            shutil.rmtree(root, ignore_errors=True)
        config = load_config(
            "conf",
            None,
            [f"spark.master={args.master}", f"landing={sample}", f"lakehouse.root={root}",
             f"spark.driver_memory={args.driver_memory}", f"spark.shuffle_partitions={max(4, cores * 4)}",
             f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db", f"mlflow.artifact_root={root}/mlartifacts"],
        )  # fmt: skip
        config.spark.conf.update(extra_conf)
        if args.event_log:
            Path(args.event_log).mkdir(parents=True, exist_ok=True)
            config.spark.conf.update(
                {
                    "spark.eventLog.enabled": "true",
                    "spark.eventLog.dir": Path(args.event_log).resolve().as_uri(),
                    "spark.eventLog.compress": "false",  # plain JSON lines for benchmarks/eventlog.py
                    "spark.eventLog.rolling.enabled": "false",
                }
            )
        ctx = Context(config, argparse.Namespace(people=people, days=args.days, seed=42, out=str(sample)))
        row = {"people": people}
        if not args.resume_at:
            started = time.perf_counter()
            run_stage("generate", ctx)
            row["generate_s"] = round(time.perf_counter() - started, 1)
            print(json.dumps({"people": people, "generate_s": row["generate_s"]}), flush=True)
        for stage in stages:
            ctx.args = argparse.Namespace()
            started = time.perf_counter()
            run = run_stage(stage, ctx)
            seconds = time.perf_counter() - started
            n = rows_in(ctx, run, stage)
            row[stage] = {
                "seconds": round(seconds, 1),
                "rows": int(n),
                "rows_per_s": round(n / seconds),
                "rows_per_s_per_core": round(n / seconds / cores),
                **driver_peak_mb(ctx.spark),
            }
            print(json.dumps({"people": people, stage: row[stage]}), flush=True)
            if stage == "resolve":  # identity against the generator's truth: asked for, not part of resolve's time
                ctx.args = argparse.Namespace(truth=None)
                evaluation = run_stage("evaluate", ctx)
                row["identity"] = {m: v for step, m, v in evaluation.metrics if step == "evaluate identity"}
        if "standardize" in row:
            # Per-row cost against plain Spark: the stage's rows/s (every source row into every silver table)
            # over the rows/s of a plain read-standardize-write of the CRM rows.
            base_s, base_rows = baseline(ctx.spark, str(sample), str(work / f"baseline-{people}"))
            row["baseline_crm"] = {"seconds": round(base_s, 1), "rows": base_rows}
            row["standardize_per_row_vs_plain_spark"] = round(base_rows / base_s / row["standardize"]["rows_per_s"], 2)
        results.append(row)
        print(json.dumps(row, indent=2), flush=True)
    for small, big in zip(results, results[1:], strict=False):
        growth = {s: round(big[s]["seconds"] / small[s]["seconds"], 2) for s in stages}
        print(f"time growth {small['people']:,} -> {big['people']:,} people (x{big['people'] / small['people']:g}):",
              json.dumps(growth))  # fmt: skip


if __name__ == "__main__":
    main()
