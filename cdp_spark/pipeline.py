"""The stages of the pipeline, in the order data flows, and what runs each.

The CLI (`cdp-spark <stage>`) and the spark-submit entry points (`jobs/<stage>.py`) both call
:func:`run_stage`, so there is one way to run a stage.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import SparkSession

from cdp_spark.config import CdpConfig, ConfigError
from cdp_spark.lease import LakehouseLease, LeaseLost
from cdp_spark.ops import StageRun, failure_reason, new_run_id
from cdp_spark.report import RunReport, StageOutcome
from cdp_spark.session import build_session

log = logging.getLogger("cdp_spark")


@dataclass
class Context:
    """What a stage receives: the validated config, its arguments and a lazily built SparkSession."""

    config: CdpConfig
    args: argparse.Namespace = field(default_factory=argparse.Namespace)
    _spark: SparkSession | None = None
    _lease: LakehouseLease | None = None
    _config_checked: bool = False

    @property
    def spark(self) -> SparkSession:
        if self._spark is None:
            self._spark = build_session(self.config.spark, self.config.lakehouse, self._jdbc_packages())
        return self._spark

    def _jdbc_packages(self) -> tuple[str, ...]:
        """The JDBC drivers the configured sources read with: one session serves every stage of a run."""
        from cdp_spark.sources import jdbc_packages, load_sources

        path = self.config.files.sources
        return tuple(jdbc_packages(load_sources(path))) if Path(path).exists() else ()

    @property
    def root(self) -> str:
        return self.config.lakehouse.root

    @contextmanager
    def lease(self, command: str) -> Iterator[None]:
        """Hold the lakehouse's lease (:mod:`cdp_spark.lease`) for ``command``; inside a run, its stages share the
        run's lease."""
        if self._lease is not None or not self.config.lakehouse.lease.enabled:
            yield
            return
        lease = LakehouseLease(self.spark, self.root, self.config.lakehouse.lease, command)
        lease.acquire()
        self._lease = lease
        try:
            yield
            lease.check()
        finally:
            self._lease = None
            lease.release()

    def check_config(self) -> None:
        """Every config file and their cross-references (:mod:`cdp_spark.check`), once per context: a typo in
        destinations.yaml fails the run before ingest, not after training."""
        if not self._config_checked:
            from cdp_spark.check import raise_if_invalid  # imports every stage's config models

            raise_if_invalid(self.config)
            self._config_checked = True

    def check_lease(self) -> None:
        if self._lease is not None:
            self._lease.check()


StageFn = Callable[[Context, StageRun], None]


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    target: str  # "module:function"

    def load(self) -> StageFn:
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)


STAGES: dict[str, Stage] = {
    s.name: s
    for s in [
        Stage("generate", "write seeded sample data for every source", "cdp_spark.generate.stage:run"),
        Stage("ingest", "sources -> bronze, incrementally", "cdp_spark.ingest.job:run"),
        Stage("standardize", "bronze -> silver: standardize, check, merge", "cdp_spark.standardize.job:run"),
        Stage("resolve", "silver -> identity graph and stable cdp_id", "cdp_spark.identity.job:run"),
        Stage("profiles", "golden profiles, households, features", "cdp_spark.gold.job:run"),
        Stage("train", "train churn and CLV models in MLflow", "cdp_spark.ml.train_job:run"),
        Stage("score", "score every customer with the champion models", "cdp_spark.ml.score_job:run"),
        Stage("segment", "segment membership with history", "cdp_spark.segments.job:run"),
        Stage("activate", "consent-filtered segment exports", "cdp_spark.activation.job:run"),
        Stage("erase", "right-to-erasure across every layer", "cdp_spark.privacy.job:erase_run"),
        Stage(
            "maintain",
            "purge deleted rows, OPTIMIZE / Z-order, VACUUM, table statistics",
            "cdp_spark.privacy.job:maintain_run",
        ),
        Stage("evaluate", "compare identity clusters with ground truth", "cdp_spark.identity.job:run_evaluate"),
    ]
}

# What `cdp-spark run` executes, in order (generate, erase, maintain and evaluate are run on their own).
PIPELINE = ["ingest", "standardize", "resolve", "profiles", "train", "score", "segment", "activate"]


def run_stage(name: str, ctx: Context, run: StageRun | None = None) -> StageRun:
    """Run one stage and record its metrics in ops.run_metrics (generate has no lakehouse to record in).

    A failed stage records what its steps counted too, with ``failed`` = 1 for the stage, then re-raises (``run``:
    the caller's, to report what a failed stage counted).
    """
    stage_fn = STAGES[name].load()
    run = run or StageRun(stage=name)
    if name == "generate":  # writes sample files, not the lakehouse
        stage_fn(ctx, run)
        return run
    ctx.check_config()
    with ctx.lease(f"cdp-spark {name}"):  # the metrics are written under the lease too
        log.info("stage %s: run %s", name, run.run_id)
        try:
            stage_fn(ctx, run)
            ctx.check_lease()
        except LeaseLost:
            raise  # another run owns the lakehouse now: write nothing more
        except Exception:
            if ctx._spark is not None:
                run.record("stage", "failed", 1)
                try:
                    run.save(ctx.spark, ctx.root)
                except Exception as exc:  # noqa: BLE001 - the stage's own error is the one to raise
                    log.warning("stage %s: its metrics could not be recorded: %s", name, failure_reason(exc))
            raise
        run.save(ctx.spark, ctx.root)
    return run


class PipelineFailed(Exception):
    """`cdp-spark run` stopped at ``stage``; the stage's own exception is ``__cause__``."""

    def __init__(self, stage: str, report: Path):
        super().__init__(f"stage {stage} failed (report: {report})")
        self.stage, self.report = stage, report


def pipeline_stages(first: str | None = None, last: str | None = None) -> list[str]:
    """The pipeline's stages from ``first`` to ``last`` (both included; default: all of them)."""
    for name in (first, last):
        if name is not None and name not in PIPELINE:
            raise ConfigError(f"unknown pipeline stage {name!r}: expected one of {', '.join(PIPELINE)}")
    start = PIPELINE.index(first) if first else 0
    end = PIPELINE.index(last) + 1 if last else len(PIPELINE)
    if start >= end:
        raise ConfigError(f"--from {first} comes after --to {last}: the pipeline runs {' -> '.join(PIPELINE)}")
    return PIPELINE[start:end]


def run_pipeline(ctx: Context) -> list[StageRun]:
    """Run the pipeline's stages in order (``--from``/``--to`` pick a slice); stop at the first failure, leaving
    earlier stages' tables intact.

    Every stage is idempotent, so rerunning after a failure resumes: finished stages change nothing.
    A Markdown run report goes to ``reports_dir`` whether the run succeeds or fails; a failure raises
    :class:`PipelineFailed` naming the stage, from the stage's exception.
    """
    stages = pipeline_stages(getattr(ctx.args, "from_stage", None), getattr(ctx.args, "to_stage", None))
    ctx.check_config()
    with ctx.lease("cdp-spark run " + " -> ".join(stages)):
        return _run_stages(ctx, stages)


def _run_stages(ctx: Context, stages: list[str]) -> list[StageRun]:
    report = RunReport(run_id=new_run_id())
    runs: list[StageRun] = []
    for name in stages:
        run = StageRun(stage=name)
        try:
            runs.append(run_stage(name, ctx, run))
        except Exception as exc:
            report.add(StageOutcome(name, run, "failed", failure_reason(exc)))
            for later in stages[stages.index(name) + 1 :]:
                report.add(StageOutcome(later, None, "not run"))
            path = report.write(ctx.config.reports_dir)
            log.info("run report: %s", path)
            raise PipelineFailed(name, path) from exc
        report.add(StageOutcome(name, runs[-1], "ok"))
    path = report.write(ctx.config.reports_dir)
    log.info("run report: %s", path)
    return runs
