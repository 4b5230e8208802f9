"""The one place that builds the SparkSession.

Embedded default (no master given from outside): ``local[*]`` with the Delta SQL extension and catalog,
the Delta and GraphFrames jars resolved from Maven coordinates through Spark's own packages mechanism
(cached in an Ivy folder, so later runs need no network), a checkpoint directory and the memory and
shuffle settings of ``conf/base.yaml``.

Under ``spark-submit`` (a master is already in the Spark conf) it keeps the master, packages and
settings it is given, and only adds the Delta extension/catalog if they are missing and the
checkpoint directory.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

from cdp_spark.config import LakehouseConfig, SparkConfig

log = logging.getLogger(__name__)

DELTA_PACKAGE = "io.delta:delta-spark_4.1_2.13:4.4.0"
GRAPHFRAMES_PACKAGE = "io.graphframes:graphframes-spark4_2.13:0.11.0"
REQUIRED_PACKAGES = (DELTA_PACKAGE, GRAPHFRAMES_PACKAGE)
JARS_REPOSITORIES_ENV = "CDP_SPARK_JARS_REPOSITORIES"

# The driver JVM's log: Spark's console log with passwords, e-mails and phone numbers masked (a failed task's
# exception can quote a row's value). The file says how to use it on a cluster.
LOG4J2_CONF = Path(__file__).resolve().with_name("log4j2.properties")

_DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
_DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"


class JarsUnavailableError(RuntimeError):
    """The JVM packages could not be resolved; the message says which and how to provide them."""


def _submitted_conf() -> SparkConf | None:
    """The conf spark-submit passed in, or None when we are the ones who decide (plain ``python``)."""
    if SparkContext._active_spark_context is not None:
        return SparkContext._active_spark_context.getConf()
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return None  # no JVM started us: nothing was submitted
    # spark-submit started this interpreter from its JVM, whose system properties hold the submitted conf
    # (--master, --packages, --conf ...). Without this JVM, SparkConf(loadDefaults=True) is an empty dict.
    SparkContext._ensure_initialized()
    conf = SparkConf(loadDefaults=True)
    return conf if conf.contains("spark.master") else None


def _extra_repositories() -> list[str]:
    raw = os.environ.get(JARS_REPOSITORIES_ENV, "")
    return [url.strip() for url in raw.split(",") if url.strip()]


# lower(), upper() and initcap() use ICU's case mappings by default in Spark 4, and the first call in a JVM
# loads them: 12 s measured on our machines (docs/performance.md), paid by every session and every executor.
# The JVM's own case mappings agree with ICU's on the names, emails and codes we case-fold.
FAST_CASE_MAPPING = {"spark.sql.icu.caseMappings.enabled": "false"}


def local_python_workers() -> dict[str, str]:
    """Python workers of a local master started by :mod:`cdp_spark.worker_daemon`, which saves 0.1-0.3 s of CPU per
    Python task on Python 3.11; the daemon finds this package where the driver found it. A ``spark.conf`` that sets
    either key wins (``spark.python.daemon.module: pyspark.daemon`` turns it off)."""
    package_root = str(Path(__file__).resolve().parents[1])
    return {"spark.python.daemon.module": "cdp_spark.worker_daemon", "spark.executorEnv.PYTHONPATH": package_root}


def embedded_conf(spark_cfg: SparkConfig, packages: tuple[str, ...] = ()) -> dict[str, str]:
    """The Spark settings of the embedded (local) runtime, before user ``spark.conf`` overrides; ``packages``:
    Maven coordinates the configuration needs besides ``spark.packages`` (a JDBC source's driver)."""
    conf = {
        "spark.master": spark_cfg.master,
        "spark.app.name": spark_cfg.app_name,
        "spark.driver.memory": spark_cfg.driver_memory,
        "spark.sql.shuffle.partitions": str(spark_cfg.shuffle_partitions),
        # Delta rebuilds table snapshots in 50 tasks by default (sized for clusters); on one machine that is
        # most of the cost of every small read, MERGE and commit.
        "spark.databricks.delta.snapshotPartitions": str(spark_cfg.shuffle_partitions),
        # VACUUM lists a table's folders in this many tasks, Spark's default 10,000 (sized for file listings of
        # clusters): maintain on a 300-person lakehouse took 12 minutes, 2:43 with 2 (docs/performance.md).
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(spark_cfg.shuffle_partitions),
        "spark.default.parallelism": str(spark_cfg.shuffle_partitions),
        "spark.sql.extensions": _DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": _DELTA_CATALOG,
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.extraJavaOptions": f"-Duser.timezone=UTC -Dlog4j2.configurationFile={LOG4J2_CONF.as_uri()}",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.ui.showConsoleProgress": "false",
        # Checkpointed data (graph iterations, MERGE sources) is deleted once nothing refers to it.
        "spark.cleaner.referenceTracking.cleanCheckpoints": "true",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        "spark.sql.adaptive.enabled": "true",
        **FAST_CASE_MAPPING,
    }
    if spark_cfg.master.startswith("local"):
        conf.update(local_python_workers())
    if spark_cfg.jars_dir:
        jars_dir = Path(spark_cfg.jars_dir).expanduser()
        jars = sorted(str(p.resolve()) for p in jars_dir.glob("*.jar"))
        if not jars:
            raise JarsUnavailableError(f"spark.jars_dir {jars_dir}: no .jar files there")
        conf["spark.jars"] = ",".join(jars)
    else:
        conf["spark.jars.packages"] = ",".join(dict.fromkeys([*REQUIRED_PACKAGES, *spark_cfg.packages, *packages]))
        conf["spark.jars.ivy"] = str(Path(spark_cfg.ivy_dir).expanduser())
        repositories = _extra_repositories()
        if repositories:
            conf["spark.jars.repositories"] = ",".join(repositories)
    return conf


def build_session(spark_cfg: SparkConfig, lakehouse: LakehouseConfig, packages: tuple[str, ...] = ()) -> SparkSession:
    """Build (or join) the SparkSession for a cdp-spark run and set its checkpoint directory; ``packages``: see
    :func:`embedded_conf` (under spark-submit, ``--packages`` decides)."""
    submitted = _submitted_conf()
    builder = SparkSession.builder
    if submitted is None:
        # Arrow UDFs (phones, names, string similarity) run in Python workers: make them this
        # interpreter, which has the project's packages, not whatever python3 is first on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        for key, value in {**embedded_conf(spark_cfg, packages), **spark_cfg.conf}.items():
            builder = builder.config(key, value)
    else:
        log.info(
            "running under an existing Spark conf (master %s): keeping its settings", submitted.get("spark.master")
        )
        if not submitted.contains("spark.sql.extensions"):
            builder = builder.config("spark.sql.extensions", _DELTA_EXTENSION)
        if not submitted.contains("spark.sql.catalog.spark_catalog"):
            builder = builder.config("spark.sql.catalog.spark_catalog", _DELTA_CATALOG)
        builder = builder.config("spark.sql.session.timeZone", "UTC")
        for key, value in FAST_CASE_MAPPING.items():
            if not submitted.contains(key):
                builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # the JVM dies before Python sees a useful error when packages fail to resolve
        raise JarsUnavailableError(_jars_help(exc)) from exc
    _check_jars(spark)
    spark.sparkContext.setCheckpointDir(lakehouse.checkpoint("spark"))
    spark.sparkContext.setLogLevel("WARN")
    return spark


def _jars_help(exc: Exception) -> str:
    coords = ", ".join(REQUIRED_PACKAGES)
    return (
        f"Spark could not start ({type(exc).__name__}: {str(exc).strip()[:300]}).\n"
        f"cdp-spark needs the JVM packages {coords}. Provide them one of these ways:\n"
        f"  - let Spark fetch them from Maven Central (network access on first run; cached after);\n"
        f"  - add a Maven repository that has them: export {JARS_REPOSITORIES_ENV}=file:///path/to/maven-repo "
        "(or https://your.mirror/...), comma-separated;\n"
        "  - download the jars into a folder and set spark.jars_dir in conf (or --set spark.jars_dir=PATH);\n"
        "  - under spark-submit: --packages " + ",".join(REQUIRED_PACKAGES) + " (plus --repositories) or --jars."
    )


def _check_jars(spark: SparkSession) -> None:
    jvm = spark.sparkContext._jvm
    missing = []
    for coord, cls in (
        (DELTA_PACKAGE, "io.delta.tables.DeltaTable"),
        (GRAPHFRAMES_PACKAGE, "org.graphframes.GraphFrame"),
    ):
        try:
            jvm.java.lang.Class.forName(cls, False, jvm.java.lang.Thread.currentThread().getContextClassLoader())
        except Exception:
            missing.append(coord)
    if missing:
        raise JarsUnavailableError(_jars_help(RuntimeError("classes not found for " + ", ".join(missing))))
