"""`cdp-spark erase [--requests FILE_OR_FOLDER]` and `cdp-spark maintain`."""

from __future__ import annotations

import logging
from functools import reduce
from pathlib import Path

from pyspark.sql import DataFrame

from cdp_spark import tables
from cdp_spark.config import ConfigError, MaintenanceConfig
from cdp_spark.hashing import load_hash_key
from cdp_spark.lakefiles import LakeFiles
from cdp_spark.ops import StageRun
from cdp_spark.parallel import run_concurrently
from cdp_spark.pipeline import Context
from cdp_spark.privacy.erase import delta_tables, erase
from cdp_spark.privacy.maintain import clean_checkpoints, maintain_table
from cdp_spark.privacy.plan import read_requests
from cdp_spark.sources import SourcesConfig, load_sources

log = logging.getLogger("cdp_spark")


def _sources(ctx: Context) -> SourcesConfig | None:
    path = ctx.config.files.sources
    if not Path(path).is_file():
        log.warning("[erase] %s not found: bronze tables are matched by column names only", path)
        return None
    return load_sources(path)


REQUEST_FILES = (".csv", ".jsonl", ".json")


def request_files(ctx: Context) -> list[str]:
    """The request files to read: ``--requests`` (must exist), else every CSV/JSON file in ``privacy.requests``
    (relative to the lakehouse root; hidden and ``_`` files skipped; a folder not created yet has none)."""
    files = LakeFiles(ctx.spark)
    given = getattr(ctx.args, "requests", None)
    if given:
        if not files.exists(given):
            raise ConfigError(f"erase --requests: {given} does not exist")
        path = given
    else:
        configured = ctx.config.privacy.requests
        path = configured if configured.startswith("/") or "://" in configured else f"{ctx.root}/{configured}"
        if not files.exists(path):
            log.warning("[erase] no requests folder at %s (privacy.requests): nothing to erase", path)
            return []
    if path.lower().endswith(REQUEST_FILES):
        return [path]
    names = [n for n in files.names(path) if n.lower().endswith(REQUEST_FILES) and not n.startswith((".", "_"))]
    return [f"{path.rstrip('/')}/{name}" for name in names]


def erase_run(ctx: Context, stage: StageRun) -> None:
    spark, root = ctx.spark, ctx.root
    paths = request_files(ctx)
    with stage.step("erase") as counts:
        if not paths:
            log.info("[erase] no request files: nothing to erase")
            counts.update(requests=0)
            return
        key = load_hash_key(spark, root, ctx.config.privacy.hash_key)
        requests = reduce(DataFrame.unionByName, [read_requests(spark, p, key) for p in paths])
        summary = erase(
            spark, root, requests, _sources(ctx), stage.run_id, key, stage.step, ctx.config.lakehouse.table_parallelism
        )
        counts.update(
            requests=summary.requests,
            already_erased=summary.already_done,
            refused=summary.refused,
            erased=summary.planned,
            rows_deleted=summary.rows_deleted,
            export_rows_removed=summary.export_rows_removed,
        )
    if not getattr(ctx.args, "requests", None):
        # Request files name people by their raw identifiers: once the plan (hashes only) holds every request
        # and the run completed them, the files go. A run that died kept them; its plan is completed anyway.
        files = LakeFiles(spark)
        for path in paths:
            files.delete(path)
        log.info("[erase] %d request file(s) processed and deleted", len(paths))
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
    with stage.step("checkpoint folders") as counts:
        deleted = clean_checkpoints(spark, ctx.config.lakehouse.checkpoint("spark"), config.checkpoint_retention_hours)
        counts["deleted"] = len(deleted)
        for path in deleted:
            log.info(
                "[maintain] deleted the checkpoint folder %s (older than %d h)", path, config.checkpoint_retention_hours
            )

    def maintain(table: tables.Table) -> None:
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

    run_concurrently(spark, maintain, delta_tables(spark, root), ctx.config.lakehouse.table_parallelism)
