"""Spark's Python worker daemon (``pyspark.daemon``) without a re-read of ``pyspark.zip`` before every task.

Before each task a Spark Python worker calls ``importlib.invalidate_caches()`` (``setup_spark_files`` in
``pyspark.worker_util``), so that ``--py-files`` added since the last task become importable. On Python 3.11 that
call makes every ``zipimporter`` re-read its archive's central directory at once (CPython gh-103200, made lazy in
3.12), and Spark puts two zips on every worker's path: ``pyspark.zip`` (1,300 entries) and py4j's. That re-read is
0.1-0.3 s of CPU per Python task, for any task of any size: most of the time of a small pandas UDF, and the fixed
per-task cost ``docs/performance.md`` lists (Spark 4.2 only invalidates when the path changed, SPARK-54744).

This daemon is ``pyspark.daemon`` with one change, made before it forks the workers: a zip is re-read when its file
changed on disk (size, mtime or inode), which is what the invalidation is for, and not otherwise. Spark starts it
with ``spark.python.daemon.module=cdp_spark.worker_daemon``; :mod:`cdp_spark.session` sets that for local masters,
where this package is importable by the daemon. A cluster's executors can use it when cdp-spark is installed there.
"""

from __future__ import annotations

import os
import sys
import zipimport

_reread = zipimport.zipimporter.invalidate_caches


def _archive_stamp(path: str) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def invalidate_caches_when_changed(importer: zipimport.zipimporter) -> None:
    """``zipimporter.invalidate_caches``, skipped while the archive is the file last read."""
    stamp = _archive_stamp(importer.archive)
    if stamp is None or importer.__dict__.get("_cdp_spark_stamp") != stamp:
        _reread(importer)
        importer._cdp_spark_stamp = stamp


def install() -> None:
    """Make zip re-reads conditional (Python < 3.12 only: later versions re-read lazily already)."""
    if sys.version_info >= (3, 12):
        return
    zipimport.zipimporter.invalidate_caches = invalidate_caches_when_changed
    for importer in list(sys.path_importer_cache.values()):  # read when the daemon imported pyspark: current
        if isinstance(importer, zipimport.zipimporter):
            importer._cdp_spark_stamp = _archive_stamp(importer.archive)


if __name__ == "__main__":
    from pyspark import daemon

    install()
    daemon.manager()
