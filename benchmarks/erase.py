"""Erasure benchmark: one request vs a batch, on copies of a built lakehouse (not a test).

    python benchmarks/erase.py --lakehouse WORKDIR/lakehouse-100000 --requests 1 1000 [--workdir DIR]

Build the lakehouse first (``python benchmarks/run.py --people 100000 --workdir WORKDIR``). For each batch
size the lakehouse is copied, that many customers' emails (a seeded hash sample of silver.customer_records)
are written as one request file, and ``cdp-spark erase`` runs on the copy in this process. Prints the wall
seconds of the erase, the seconds of each table's pass (from the run's steps) and the rows deleted; a
batch is one pass per table, so 1,000 requests should cost about what one does.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from pyspark.sql import functions as F

from cdp_spark import tables
from cdp_spark.config import load_config
from cdp_spark.ops import StageRun, configure_logging
from cdp_spark.pipeline import Context
from cdp_spark.privacy import job as privacy_job
from cdp_spark.sampling import uniform_draw


def request_file(spark, root: str, n: int, out: Path) -> Path:
    """``n`` distinct customer emails, the same ones on every run (seeded hash order), as a requests CSV."""
    records = tables.read(spark, root, tables.CUSTOMER_RECORDS).where(F.col("email").isNotNull())
    emails = records.select("email").distinct().orderBy(uniform_draw(["email"], 7)).limit(n).collect()
    lines = ["request_id,identifier_type,value,requested_by"]
    lines += [f"BENCH-{i:05d},email,{r['email']},benchmark" for i, r in enumerate(emails)]
    out.write_text("\n".join(lines) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lakehouse", required=True, help="a lakehouse built by benchmarks/run.py (left untouched)")
    parser.add_argument("--requests", type=int, nargs="+", default=[1, 1000])
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--workdir", default=None, help="where the copies go (default: a temp folder)")
    args = parser.parse_args()
    configure_logging()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cdp-erase-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for n in args.requests:
        root = work / f"lakehouse-erase-{n}"
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(args.lakehouse, root)
        config = load_config(
            "conf", None, [f"lakehouse.root={root}", f"spark.master={args.master}", "spark.shuffle_partitions=4"]
        )
        ctx = Context(config, argparse.Namespace())
        path = request_file(ctx.spark, str(root), n, work / f"requests-{n}.csv")
        ctx.args = argparse.Namespace(requests=str(path))
        stage = StageRun("erase")
        started = time.perf_counter()
        privacy_job.erase_run(ctx, stage)
        seconds = time.perf_counter() - started
        per_table = {step: v for step, m, v in stage.metrics if m == "seconds" and step.startswith("erase ")}
        counts = {m: v for step, m, v in stage.metrics if step == "erase" and m != "seconds"}
        result = {"requests": n, "seconds": round(seconds, 1), **counts, "table_seconds": per_table}
        results.append(result)
        print(json.dumps(result, indent=2), flush=True)
        ctx.spark.stop()
    if len(results) > 1:
        first, last = results[0], results[-1]
        print(
            f"{last['requests']} requests / {first['requests']}: {last['seconds'] / first['seconds']:.2f}x the wall "
            f"time ({first['seconds']} s vs {last['seconds']} s)"
        )


if __name__ == "__main__":
    main()
