"""Run bookkeeping: a run id, one log line per step with row counts and durations, and ``ops.run_metrics``."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pyspark import SparkContext
from pyspark.logger import PySparkLogger
from pyspark.sql import SparkSession

from cdp_spark import tables
from cdp_spark.redact import redact

log = logging.getLogger("cdp_spark")

_JOB_DESCRIPTION = "spark.job.description"


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class ReportSection:
    """What a stage adds to the run report besides its metrics: Markdown under ``title``, and images (file name ->
    PNG bytes) the report writes beside itself and shows after the Markdown."""

    title: str
    markdown: str
    images: dict[str, bytes] = field(default_factory=dict)


@dataclass
class StageRun:
    """Collects metrics of one stage run; ``step`` logs a line per step; ``save`` appends them to ops.run_metrics.
    ``sections``: what the stage adds to the run report."""

    stage: str
    run_id: str = field(default_factory=new_run_id)
    metrics: list[tuple[str, str, float | None]] = field(default_factory=list)
    sections: list[ReportSection] = field(default_factory=list)

    def record(self, step: str, metric: str, value: float | int | None) -> None:
        self.metrics.append((step, metric, None if value is None else float(value)))

    @contextmanager
    def step(self, name: str) -> Iterator[dict[str, float | int]]:
        """Time a step; whatever the body puts in the yielded dict is logged and recorded as metrics (a step
        that raises records what it counted so far, its seconds and ``failed`` = 1)."""
        counts: dict[str, float | int] = {}
        started = time.perf_counter()
        log.info("[%s] %s ...", self.stage, name)
        try:
            with job_description(f"cdp-spark {self.stage}: {name}"):
                yield counts
        except Exception:
            self._finish(name, {**counts, "failed": 1}, started, "failed after")
            raise
        self._finish(name, counts, started, "done in")

    def _finish(self, name: str, counts: dict[str, float | int], started: float, verb: str) -> None:
        seconds = time.perf_counter() - started
        for metric, value in counts.items():
            self.record(name, metric, value)
        self.record(name, "seconds", round(seconds, 3))
        detail = " ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in counts.items())
        log.info("[%s] %s %s %.1fs %s", self.stage, name, verb, seconds, detail)

    def save(self, spark: SparkSession, lakehouse_root: str) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        rows = [(self.run_id, self.stage, step, metric, value, now) for step, metric, value in self.metrics]
        if rows:
            tables.append(tables.rows_frame(spark, rows, tables.RUN_METRICS.schema), lakehouse_root, tables.RUN_METRICS)


@contextmanager
def job_description(text: str) -> Iterator[None]:
    """Name the Spark jobs started inside (Spark UI, event log) after the cdp-spark step or phase running them."""
    context = SparkContext._active_spark_context
    if context is None:
        yield
        return
    previous = context.getLocalProperty(_JOB_DESCRIPTION)
    context.setLocalProperty(_JOB_DESCRIPTION, text)
    try:
        yield
    finally:
        context.setLocalProperty(_JOB_DESCRIPTION, previous)


@contextmanager
def progress(what: str) -> Iterator[None]:
    """Log the start and the duration of one phase of a long library call (a stage's steps record metrics)."""
    started = time.perf_counter()
    log.info("%s ...", what)
    with job_description(what):
        yield
    log.info("%s done in %.1fs", what, time.perf_counter() - started)


def failure_reason(exc: BaseException) -> str:
    """An exception as one line for people (stderr, the run report): redacted, then cut to 500 characters."""
    # Redacted before it is cut, so a cut cannot leave half a password unrecognized.
    return redact(" ".join(str(exc).split()))[:500] or type(exc).__name__


class RedactingFilter(logging.Filter):
    """Mask passwords, e-mails and phone numbers in a log record's message and traceback before any handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), ()
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


# PySpark logs each Spark error that carries a query context to one of these loggers of its own (JSON on stderr,
# not passed on to the root's handlers), message and JVM stack trace included: they can quote a row's value.
PYSPARK_ERROR_LOGGERS = ("DataFrameQueryContextLogger", "SQLQueryContextLogger")


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    for name in PYSPARK_ERROR_LOGGERS:  # the logger's own filter: its handler is PySpark's
        logger = PySparkLogger.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
    for noisy in ("py4j", "urllib3", "alembic", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
