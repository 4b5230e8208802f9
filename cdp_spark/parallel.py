"""Independent work on several tables at once, from driver threads.

A stage that touches many tables one after the other (erasure, maintenance) spends most of each table's time on
the driver: reading the Delta log, planning, committing. Meanwhile the executors wait, and on a cluster they are
what is paid for. Spark schedules the jobs of several driver threads at once, and Delta commits to different
tables independently, so such a stage hands its tables to a few threads (``lakehouse.table_parallelism``).

Each thread runs with the Spark local properties and job tags of the caller (job descriptions), through
:func:`pyspark.inheritable_thread_target`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TypeVar

from pyspark import inheritable_thread_target
from pyspark.sql import SparkSession

Item = TypeVar("Item")
Result = TypeVar("Result")


def run_concurrently(
    spark: SparkSession, work: Callable[[Item], Result], items: Sequence[Item], parallelism: int
) -> list[Result]:
    """``work(item)`` for every item, at most ``parallelism`` at a time; the results in the order of ``items``.

    When one fails, items not yet started are not started, those running finish (nothing is left half done in
    the background when the error reaches the caller), and the first failure is raised.
    """
    if parallelism < 1:
        raise ValueError(f"parallelism must be at least 1, got {parallelism}")
    if parallelism == 1 or len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(parallelism, len(items)), thread_name_prefix="cdp-table") as pool:
        target = inheritable_thread_target(spark)(work)
        futures = [pool.submit(target, item) for item in items]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f in done and f.exception() is not None), None)
        if failed is not None:
            for future in pending:
                future.cancel()
            wait(pending)
            raise failed.exception()
        return [f.result() for f in futures]
