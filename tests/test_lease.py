"""Concurrent runs (issue 19 item 6): one run at a time holds a lakehouse's lease; a second waits or fails naming
the holder; a stale lease is taken over; two ingests can never plan the same batch."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_bad_input import CRM, context, write

from cdp_spark import tables
from cdp_spark.cli import EXIT_BUSY, main
from cdp_spark.config import LeaseConfig
from cdp_spark.ingest.bronze import Batch, BatchPlanConflict, record_plan
from cdp_spark.lease import LakehouseBusy, LakehouseLease, LeaseLost
from cdp_spark.pipeline import run_stage

REPO = Path(__file__).resolve().parents[1]
FAST = LeaseConfig(expiry_seconds=60, heartbeat_seconds=1)


def lease_files(root: str) -> dict[int, dict]:
    folder = Path(root) / "_lease"
    return {int(p.stem.split("-")[1]): json.loads(p.read_text()) for p in sorted(folder.glob("lease-*.json"))}


def plant(root: str, generation: int, **fields) -> None:
    """A lease file as another run would have left it."""
    now = time.time()
    record = {"generation": generation, "owner": "etl@worker-7", "host": "worker-7", "pid": 4242,
              "command": "cdp-spark run", "application": "app-1", "acquired_at": now, "heartbeat_at": now,
              "expiry_seconds": 60, "released_at": None, **fields}  # fmt: skip
    folder = Path(root) / "_lease"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"lease-{generation:09d}.json").write_text(json.dumps(record))


def test_a_held_lease_makes_a_second_run_fail_naming_the_holder_and_a_stale_one_is_taken_over(spark, tmp_path, caplog):
    root = str(tmp_path / "lakehouse")
    first = LakehouseLease(spark, root, FAST, "cdp-spark run ingest -> activate")
    held = first.acquire()
    assert held.generation == 1 and held.pid == os.getpid()

    with pytest.raises(LakehouseBusy, match=r"in use by cdp-spark run ingest -> activate \(owner .*pid \d+"):
        LakehouseLease(spark, root, FAST, "cdp-spark ingest").acquire()
    time.sleep(2.5)  # two heartbeats
    assert lease_files(root)[1]["heartbeat_at"] > held.heartbeat_at
    first.release()
    assert lease_files(root)[1]["released_at"] is not None

    # Released: the next run takes number 2.
    with LakehouseLease(spark, root, FAST, "cdp-spark score") as second:
        assert second.generations() == [1, 2]

    # A holder on another machine silent for longer than the expiry (its driver died): taken over, with a warning.
    plant(root, 3, heartbeat_at=time.time() - 61)
    with caplog.at_level(logging.WARNING, logger="cdp_spark"), LakehouseLease(spark, root, FAST, "cdp-spark segment"):
        assert lease_files(root)[4]["command"] == "cdp-spark segment"
    assert "taking over from cdp-spark run (owner etl@worker-7" in caplog.text
    assert "heartbeat is 61 s old" in caplog.text

    # A holder on this machine whose process is gone: taken over at once, whatever its heartbeat.
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    plant(root, 5, host=socket.gethostname(), pid=int(gone.stdout))
    with LakehouseLease(spark, root, FAST, "cdp-spark activate"):
        assert max(lease_files(root)) == 6

    # A live holder elsewhere: busy.
    plant(root, 7)
    with pytest.raises(LakehouseBusy, match="etl@worker-7"):
        LakehouseLease(spark, root, FAST, "cdp-spark ingest").acquire()


def test_a_holder_whose_lease_was_taken_over_stops(spark, tmp_path):
    root = str(tmp_path / "lakehouse")
    lease = LakehouseLease(spark, root, LeaseConfig(expiry_seconds=60, heartbeat_seconds=30), "cdp-spark resolve")
    lease.acquire()
    plant(root, 2)  # its heartbeat stalled past the expiry, and another run took the lakehouse
    with pytest.raises(LeaseLost, match="lease 1 of cdp-spark resolve expired and lease 2 was taken"):
        lease.renew()
    lease.release()
    assert lease_files(root)[1]["released_at"] is None  # it writes nothing more, not even its release


def test_two_ingests_cannot_plan_the_same_batch(spark, tmp_path):
    root = str(tmp_path / "lakehouse")
    batch = Batch("crm", 0, files=("a.csv",))
    record_plan(spark, root, batch, "run-a")
    # A second ingest that read the log before run-a's plan landed plans the same number: Delta's transaction id
    # lets only one plan row land, and the loser stops instead of reading files it never recorded.
    with pytest.raises(BatchPlanConflict, match="batch 0 was planned by run run-a"):
        record_plan(spark, root, Batch("crm", 0, files=("a.csv", "b.csv")), "run-b")
    planned = tables.read(spark, root, tables.INGEST_LOG).collect()
    assert [(r["run_id"], r["files"]) for r in planned] == [("run-a", ["a.csv"])]


def test_a_second_ingest_process_waits_for_the_lease_then_ingests_once(spark, tmp_path):
    write(tmp_path, "crm", "crm.csv", "customer_id,email,updated_at\nc1,a@example.com,2026-01-01\n")
    ctx = context(spark, tmp_path, [CRM])
    root = ctx.root
    overrides = [
        f"lakehouse.root={root}",
        f"landing={tmp_path / 'sample'}",
        f"files.sources={tmp_path / 'sources.yaml'}",
    ]
    holder = LakehouseLease(spark, root, FAST, "test holder")
    holder.acquire()

    # In this process (its own pid holds the lease): a second `cdp-spark ingest` fails at once, exit 3, one line.
    argv = [arg for o in overrides for arg in ("--set", o)]
    assert main([*argv, "ingest"]) == EXIT_BUSY
    assert not tables.exists(spark, root, tables.bronze("crm"))

    # Another process told to wait: it waits while the lease is held, then takes it and ingests.
    log_path = tmp_path / "second.log"
    waiting = [*argv, "--set", "lakehouse.lease.wait_seconds=300", "--set", "spark.master=local[1]",
               "--set", "spark.driver_memory=1g", "--set", "spark.shuffle_partitions=1"]  # fmt: skip
    with log_path.open("w") as out:
        second = subprocess.Popen(
            [sys.executable, "-m", "cdp_spark", *waiting, "ingest"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.time() + 240
        while "lakehouse lease: waiting for test holder" not in log_path.read_text():
            assert second.poll() is None, log_path.read_text()
            assert time.time() < deadline, log_path.read_text()
            time.sleep(0.5)
        time.sleep(3)  # it keeps waiting
        assert second.poll() is None and not tables.exists(spark, root, tables.bronze("crm"))
        holder.release()
        assert second.wait(timeout=240) == 0, log_path.read_text()
    finally:
        if second.poll() is None:
            second.kill()

    leases = lease_files(root)
    assert [(g, r["command"], r["released_at"] is not None) for g, r in leases.items()] == [
        (1, "test holder", True),
        (2, "cdp-spark ingest", True),
    ]
    assert leases[2]["pid"] == second.pid and leases[2]["acquired_at"] >= leases[1]["released_at"]
    assert tables.read(spark, root, tables.bronze("crm")).count() == 1

    # And a run after it, in this process: nothing new, exactly once.
    run_stage("ingest", ctx)
    assert tables.read(spark, root, tables.bronze("crm")).count() == 1
