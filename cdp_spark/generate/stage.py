"""`cdp-spark generate`: write the sample data where the sources read it (``landing``), unless told otherwise."""

from __future__ import annotations

import json
import logging

from cdp_spark.generate import generate
from cdp_spark.ops import StageRun
from cdp_spark.pipeline import Context

log = logging.getLogger("cdp_spark")


def run(ctx: Context, stage: StageRun) -> None:
    sample = ctx.config.sample
    args = ctx.args

    def arg(name: str, default):
        value = getattr(args, name, None)
        return default if value is None else value

    people, days, seed = arg("people", sample.people), arg("days", sample.days), arg("seed", sample.seed)
    out = arg("out", ctx.config.sample_path)
    if people <= 0 or days <= 0:
        raise ValueError(f"--people and --days must be positive, got {people} and {days}")
    with stage.step(f"generate {people:,} people x {days} days -> {out}") as counts:
        manifest = generate(ctx.spark, out, people, days, seed, sample)
        for source, per_day in manifest["rows"].items():
            counts[f"rows:{source}"] = sum(per_day.values())
    log.info("[generate] manifest: %s", json.dumps(manifest["rows"])[:1000])
