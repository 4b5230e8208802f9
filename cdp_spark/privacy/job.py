"""`cdp-spark erase --requests FILE` and `cdp-spark maintain`."""

from __future__ import annotations

import logging
from pathlib import Path

from cdp_spark.config import ConfigError, MaintenanceConfig
from cdp_spark.ingest.sources import SourcesConfig, load_sources
from cdp_spark.ops import StageRun
from cdp_spark.pipeline import Context
from cdp_spark.privacy.erase import delta_tables, erase, read_requests
from cdp_spark.privacy.maintain import maintain_table

log = logging.getLogger("cdp_spark")


def _sources(ctx: Context) -> SourcesConfig | None:
    path = ctx.config.files.sources
    if not Path(path).is_file():
        log.warning("[erase] %s not found: bronze tables are matched by column names only", path)
        return None
    return load_sources(path)


def erase_run(ctx: Context, stage: StageRun) -> None:
    path = getattr(ctx.args, "requests", None)
    if not path:
        raise ConfigError(
            "erase needs --requests FILE (CSV or JSON lines: identifier_type, value[, request_id, requested_by])"
        )
    spark, root = ctx.spark, ctx.root
    with stage.step("erase") as counts:
        summary = erase(spark, root, read_requests(spark, path), _sources(ctx), stage.run_id)
        counts.update(
            requests=summary.requests,
            already_erased=summary.already_done,
            refused=summary.refused,
            erased=summary.planned,
            rows_deleted=summary.rows_deleted,
            export_rows_removed=summary.export_rows_removed,
        )
    if summary.refused:
        log.warning(
            "[erase] %d request(s) refused (see ops.audit_log, action 'erase'): they need a person", summary.refused
        )


def maintenance_config(ctx: Context) -> MaintenanceConfig:
    """``maintenance:`` of the config; ``--retention-hours`` overrides the retention."""
    config = ctx.config.maintenance
    hours = getattr(ctx.args, "retention_hours", None)
    return config if hours is None else config.model_copy(update={"retention_hours": int(hours)})


def maintain_run(ctx: Context, stage: StageRun) -> None:
    spark, root = ctx.spark, ctx.root
    config = maintenance_config(ctx)
    for table in delta_tables(spark, root):
        with stage.step(f"maintain {table.full_name}") as counts:
            done = maintain_table(spark, root, table, config)
            counts.update(
                files_before=done.files_before,
                bytes_before=done.bytes_before,
                files_after=done.files_after,
                bytes_after=done.bytes_after,
                purged=int(done.purged),
                optimized=int(done.optimized),
            )
