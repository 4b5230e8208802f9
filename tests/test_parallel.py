"""Tables worked on from several driver threads: results in order, failures whole, Spark properties inherited."""

from __future__ import annotations

import threading
import time

import pytest

from cdp_spark.ops import job_description
from cdp_spark.parallel import run_concurrently


def test_items_run_at_once_up_to_the_parallelism_and_results_keep_the_order_of_the_items(spark):
    both_running = threading.Barrier(2, timeout=30)  # broken (an error) unless two items run at the same time

    def work(item: int) -> int:
        both_running.wait()
        return item * 10

    assert run_concurrently(spark, work, [1, 2, 3, 4], parallelism=2) == [10, 20, 30, 40]


def test_one_by_one_stops_at_the_first_failure(spark):
    ran = []

    def work(item: int) -> int:
        ran.append(item)
        if item == 2:
            raise RuntimeError("table 2 failed")
        return item

    with pytest.raises(RuntimeError, match="table 2 failed"):
        run_concurrently(spark, work, [1, 2, 3, 4], parallelism=1)
    assert ran == [1, 2]


def test_a_failure_reaches_the_caller_only_after_the_running_items_finished(spark):
    second_started, first_failing = threading.Event(), threading.Event()
    finished = []

    def work(item: int) -> int:
        if item == 0:
            second_started.wait(timeout=30)
            first_failing.set()
            raise RuntimeError("table 0 failed")
        second_started.set()
        first_failing.wait(timeout=30)  # still running when the failure is raised in the other thread,
        time.sleep(0.2)  # and for a while after: a caller told of the failure at once would see it unfinished
        finished.append(item)
        return item

    with pytest.raises(RuntimeError, match="table 0 failed"):
        run_concurrently(spark, work, [0, 1], parallelism=2)
    assert finished == [1]


def test_parallelism_below_one_is_an_error(spark):
    with pytest.raises(ValueError, match="at least 1"):
        run_concurrently(spark, str, ["a"], parallelism=0)


def test_threads_run_their_spark_jobs_with_the_callers_job_description(spark):
    context = spark.sparkContext

    def work(item: int) -> tuple[str, int]:
        return context.getLocalProperty("spark.job.description"), spark.range(item).count()

    with job_description("cdp-spark erase: erase gold"):
        described = run_concurrently(spark, work, [1, 2, 3], parallelism=3)
    assert described == [("cdp-spark erase: erase gold", n) for n in (1, 2, 3)]
