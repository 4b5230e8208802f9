"""`cdp-spark ingest`: every source in conf/sources.yaml -> bronze.<source>, only what is new since the last run."""

from __future__ import annotations

from cdp_spark.ingest.bronze import plan_batch, run_batch
from cdp_spark.ingest.sources import load_sources
from cdp_spark.ops import StageRun
from cdp_spark.pipeline import Context


def run(ctx: Context, stage: StageRun) -> None:
    sources = load_sources(ctx.config.files.sources)
    for source in sources.sources:
        with stage.step(f"ingest {source.name}") as counts:
            batch = plan_batch(ctx.spark, ctx.root, source, ctx.config.sample.path, stage.run_id)
            if batch is None:
                counts.update(rows_read=0, rows_written=0, rows_quarantined=0, files=0)
                continue
            result = run_batch(ctx.spark, ctx.root, source, batch, stage.run_id)
            counts.update(
                rows_read=result.rows_read,
                rows_written=result.rows_written,
                rows_quarantined=result.rows_quarantined,
                files=len(batch.files),
                batch_version=batch.version,
            )
