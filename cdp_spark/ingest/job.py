"""`cdp-spark ingest`: every source in conf/sources.yaml -> bronze.<source>, only what is new since the last run.

Each source is ingested on its own, several at once (``lakehouse.table_parallelism``): one that fails (unreadable
files, a mistyped path) is reported and the others are still ingested; the stage then fails, naming every failed
source.
"""

from __future__ import annotations

import logging

from cdp_spark.ingest.bronze import ingest_log_by_source, plan_batch, run_batch
from cdp_spark.ops import StageRun, failure_reason
from cdp_spark.parallel import run_concurrently
from cdp_spark.pipeline import Context
from cdp_spark.sources import SourceConfig, load_sources

log = logging.getLogger("cdp_spark")


class SourcesFailed(RuntimeError):
    """Some sources could not be ingested; the others were. ``failures`` maps each to its exception."""

    def __init__(self, failures: dict[str, Exception], total: int):
        listed = "; ".join(f"{name}: {type(exc).__name__}: {failure_reason(exc)}" for name, exc in failures.items())
        super().__init__(f"{len(failures)} of {total} sources failed (the others were ingested): {listed}")
        self.failures = failures


def run(ctx: Context, stage: StageRun) -> None:
    """Every source's new batch, ``lakehouse.table_parallelism`` sources at once (each its own bronze table)."""
    sources = load_sources(ctx.config.files.sources)
    log_rows = ingest_log_by_source(ctx.spark, ctx.root)  # one read plans every source

    def ingest(source: SourceConfig) -> Exception | None:
        try:
            with stage.step(f"ingest {source.name}") as counts:
                batch = plan_batch(
                    ctx.spark, ctx.root, source, ctx.config.landing, stage.run_id, log_rows.get(source.name, [])
                )
                if batch is None:
                    counts.update(rows_read=0, rows_written=0, rows_quarantined=0, files=0)
                    return None
                result = run_batch(ctx.spark, ctx.root, source, batch, stage.run_id)
                counts.update(
                    rows_read=result.rows_read,
                    rows_written=result.rows_written,
                    rows_quarantined=result.rows_quarantined,
                    files=len(batch.files),
                    batch_version=batch.version,
                )
                if source.format == "jdbc":
                    counts.update(rows_reread=result.rows_reread)
        except Exception as exc:  # noqa: BLE001 - reported below, after the healthy sources
            log.error("[ingest] %s failed, going on with the other sources: %s", source.name, failure_reason(exc))
            return exc
        return None

    outcomes = run_concurrently(ctx.spark, ingest, sources.sources, ctx.config.lakehouse.table_parallelism)
    failures = {s.name: exc for s, exc in zip(sources.sources, outcomes, strict=True) if exc is not None}
    if failures:
        raise SourcesFailed(failures, len(sources.sources))
