"""Incremental vs full resolve on a day-2 drop (issue 21; not a test).

    python benchmarks/incremental.py --lakehouse WORKDIR/lakehouse-100000 [--share 0.01] [--workdir DIR]

Build the lakehouse first (``python benchmarks/run.py --people 100000 --stages ingest standardize``). The
lakehouse is copied and resolved in full once (which trains and registers the model and writes
``silver.identity_state``); then a drop changes ``--share`` of ``silver.customer_records`` (half of it records
whose email and surname change, half new records: copies of others under new ids with a first-name typo,
seeded), and two copies of the result are resolved in this process: incrementally, and in full with the same
model (``--full --model <the JSON>``). Prints each one's seconds, the ratio, the vertices the incremental run
re-resolved, and whether the two identity maps are identical.
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
from cdp_spark.sampling import uniform_draw


def context(root: Path, master: str, **args) -> Context:
    overrides = [
        f"lakehouse.root={root}",
        f"spark.master={master}",
        "spark.driver_memory=8g",
        f"mlflow.tracking_uri=sqlite:///{root}/mlruns.db",
        f"mlflow.artifact_root={root}/mlartifacts",
        f"reports_dir={root}/reports",
    ]
    namespace = argparse.Namespace(**{"model": None, "force": False, "full": False, **args})
    return Context(load_config("conf", None, overrides), namespace)


def resolve(ctx: Context) -> tuple[float, dict]:
    from cdp_spark.identity import job as identity_job

    stage = StageRun("resolve")
    start = time.perf_counter()
    identity_job.run(ctx, stage)
    seconds = time.perf_counter() - start
    return seconds, {metric: value for step, metric, value in stage.metrics if step == "resolve"}


def apply_drop(spark, root: str, share: float, seed: int = 21) -> dict[str, int]:
    """Change ``share / 2`` of the records (email and surname) and add as many new ones (typo'd copies)."""
    records = tables.read(spark, root, tables.CUSTOMER_RECORDS)
    draw = uniform_draw(["record_id"], seed)
    changed_ids = records.where(draw < share / 2).select("record_id")
    copied = records.where((draw >= share / 2) & (draw < share))
    changed = records.join(changed_ids, "record_id", "left_semi").withColumns(
        {"email": F.concat(F.lit("moved."), F.col("email")), "last_name": F.concat(F.col("last_name"), F.lit("x"))}
    )
    new = copied.withColumns(
        {
            "record_id": F.concat(F.lit("drop:"), F.col("record_id")),
            "first_name": F.concat(F.substring("first_name", 1, 3), F.lit("y")),
        }
    )
    result = records.join(changed_ids, "record_id", "left_anti").unionByName(changed).unionByName(new).checkpoint()
    tables.overwrite(result, root, tables.CUSTOMER_RECORDS)
    return {"changed": changed.count(), "new": new.count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lakehouse", required=True, help="a lakehouse with silver (left untouched)")
    parser.add_argument("--share", type=float, default=0.01, help="share of the records the drop changes or adds")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--workdir", default=None, help="where the copies go (default: a temp folder)")
    args = parser.parse_args()
    configure_logging()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cdp-incremental-bench-"))
    base = work / "base"
    shutil.rmtree(work, ignore_errors=True)
    # silver and ops only (resolve reads nothing else), and no model or MLflow store of earlier runs
    skipped = ("_lease", "_models", "bronze", "gold", "exports", "mlruns.db", "mlflow.db", "mlartifacts")
    shutil.copytree(args.lakehouse, base, ignore=shutil.ignore_patterns(*skipped))
    ctx = context(base, args.master, full=True)
    day_one_s, _ = resolve(ctx)
    drop = apply_drop(ctx.spark, str(base), args.share)
    (model,) = (base / "_models" / "identity").glob("*.json")
    copies = {}
    for name in ("incremental", "full"):
        copies[name] = work / name
        shutil.copytree(base, copies[name])
    ctx.spark.catalog.clearCache()
    incremental_s, incremental = resolve(context(copies["incremental"], args.master))
    full_s, full = resolve(context(copies["full"], args.master, full=True, model=str(model)))
    maps = [tables.read(ctx.spark, str(copies[n]), tables.IDENTITY_MAP) for n in ("incremental", "full")]
    differ = maps[0].exceptAll(maps[1]).count() + maps[1].exceptAll(maps[0]).count()
    print(
        json.dumps(
            {
                "records": full.get("vertices"),
                "drop": drop,
                "first_full_s": round(day_one_s, 1),
                "incremental_s": round(incremental_s, 1),
                "full_s": round(full_s, 1),
                "incremental_over_full": round(incremental_s / full_s, 3),
                "dirty_vertices": incremental.get("dirty_vertices"),
                "resolved_vertices": incremental.get("resolved_vertices"),
                "maps_identical": differ == 0,
            }
        )
    )


if __name__ == "__main__":
    main()
