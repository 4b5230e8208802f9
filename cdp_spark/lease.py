"""One run at a time writes a lakehouse: a lease with an owner, a heartbeat and an expiry.

The lease lives beside the tables, in ``<root>/_lease``, as numbered files ``lease-000000001.json`` ...; the
holder is the owner of the highest number, unless that file says it was released or its heartbeat is older
than ``expiry_seconds`` (a driver that died without releasing it). A run takes the lease by creating the next
number with an exclusive create (atomic on a local disk, HDFS, ABFS and GCS; on S3, as for Delta's own log,
concurrent writers need an external coordinator): of two runs racing for the same number one wins, and the
loser looks again. A holder renews its heartbeat every ``heartbeat_seconds`` from a background thread; if it
finds a higher number (its lease expired and another run took it over) it cancels its Spark jobs and the
stage fails with :class:`LeaseLost` instead of writing beside the new holder.

A holder on this machine whose process is gone is stale at once, so a run killed on a laptop does not make
the next wait for the expiry.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import socket
import threading
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

from pyspark.sql import SparkSession

from cdp_spark.config import LeaseConfig
from cdp_spark.lakefiles import LakeFiles

log = logging.getLogger("cdp_spark")

LEASE_DIR = "_lease"
_NAME = re.compile(r"lease-(\d{9})\.json")
KEEP = 20  # lease files kept as history (who ran when)


class LakehouseBusy(RuntimeError):
    """Another run holds the lakehouse's lease."""

    def __init__(self, root: str, holder: LeaseRecord, waited: float):
        self.holder = holder
        super().__init__(
            f"lakehouse {root} is in use by {holder.describe()}; waited {waited:.0f} s "
            "(set lakehouse.lease.wait_seconds to wait longer; a crashed holder's lease expires "
            f"{holder.expires_in():.0f} s from now)"
        )


class LeaseLost(RuntimeError):
    """This run's lease expired and another run took the lakehouse over: this run stopped writing."""


def _now() -> float:
    return time.time()


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class LeaseRecord:
    generation: int
    owner: str  # user@host
    host: str
    pid: int
    command: str
    application: str | None  # the Spark application id (cluster UIs list it)
    acquired_at: float
    heartbeat_at: float
    expiry_seconds: int
    released_at: float | None = None

    def to_json(self) -> str:
        readable = {"acquired": _iso(self.acquired_at), "heartbeat": _iso(self.heartbeat_at)}
        return json.dumps({**asdict(self), **readable}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> LeaseRecord:
        data = json.loads(text)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def describe(self) -> str:
        age = _now() - self.heartbeat_at
        return (
            f"{self.command} (owner {self.owner}, pid {self.pid}, Spark app {self.application or '-'}, lease "
            f"{self.generation} since {_iso(self.acquired_at)}, last heartbeat {age:.0f} s ago)"
        )

    def expires_in(self) -> float:
        return max(self.heartbeat_at + self.expiry_seconds - _now(), 0.0)

    def stale(self) -> str | None:
        """Why this unreleased lease no longer holds the lakehouse, or None while it does."""
        if self.expires_in() == 0:
            return f"its heartbeat is {_now() - self.heartbeat_at:.0f} s old (expiry {self.expiry_seconds} s)"
        if self.host == socket.gethostname() and self.pid != os.getpid() and not _alive(self.pid):
            return f"process {self.pid} on this host is gone"
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


class LakehouseLease:
    """The lease of one lakehouse for one command: :meth:`acquire`, then :meth:`release` (or use ``with``)."""

    def __init__(self, spark: SparkSession, root: str, config: LeaseConfig, command: str):
        self._spark, self._root, self._config, self._command = spark, root, config, command
        self._files = LakeFiles(spark)
        self._dir = f"{root.rstrip('/')}/{LEASE_DIR}"
        self._record: LeaseRecord | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None

    # ---- the files ---------------------------------------------------------------------------------------

    def _path(self, generation: int) -> str:
        return f"{self._dir}/lease-{generation:09d}.json"

    def generations(self) -> list[int]:
        return sorted(int(m.group(1)) for name in self._files.names(self._dir) if (m := _NAME.fullmatch(name)))

    def read(self, generation: int) -> LeaseRecord:
        path = self._path(generation)
        try:
            return LeaseRecord.from_json(self._files.read_text(path))
        except (ValueError, KeyError, TypeError):
            # Being written this instant, or left empty by a holder that died while creating it: held until the
            # file is older than the expiry.
            modified = self._files.last_modified(path)
            return LeaseRecord(generation, "unknown (lease file being written)", "?", -1, "?", None,
                               modified, modified, self._config.expiry_seconds)  # fmt: skip

    # ---- taking, renewing and giving back ----------------------------------------------------------------

    def acquire(self) -> LeaseRecord:
        """Take the lease, waiting up to ``wait_seconds`` for a live holder; raises :class:`LakehouseBusy`."""
        started, announced = _now(), 0.0
        while True:
            generations = self.generations()
            top = generations[-1] if generations else 0
            holder = self.read(top) if top else None
            why_free = None if holder is None else "released" if holder.released_at else holder.stale()
            if holder is None or why_free:
                if holder is not None and not holder.released_at:
                    log.warning("lakehouse lease: taking over from %s: %s", holder.describe(), why_free)
                mine = self._claim(top + 1)
                if mine is not None:
                    return mine
                continue  # another run took this number first: look again
            waited = _now() - started
            if waited >= self._config.wait_seconds:
                raise LakehouseBusy(self._root, holder, waited)
            if _now() - announced >= 60:
                log.info("lakehouse lease: waiting for %s", holder.describe())
                announced = _now()
            time.sleep(min(2.0, self._config.wait_seconds - waited, max(holder.expires_in(), 0.1)))

    def _claim(self, generation: int) -> LeaseRecord | None:
        now = _now()
        record = LeaseRecord(
            generation=generation,
            owner=f"{getpass.getuser()}@{socket.gethostname()}",
            host=socket.gethostname(),
            pid=os.getpid(),
            command=self._command,
            application=self._spark.sparkContext.applicationId,
            acquired_at=now,
            heartbeat_at=now,
            expiry_seconds=self._config.expiry_seconds,
        )
        if not self._files.create_new(self._path(generation), record.to_json()):
            return None
        if self.generations()[-1] != generation:
            # A run that listed long ago created a number far below the top (history cleaned up in between):
            # the higher number decides; give this one back.
            self._files.overwrite(self._path(generation), replace(record, released_at=_now()).to_json())
            return None
        self._record = record
        for old in self.generations()[:-KEEP]:
            self._files.delete(self._path(old))
        self._thread = threading.Thread(target=self._heartbeat, name="cdp-lease-heartbeat", daemon=True)
        self._thread.start()
        log.info("lakehouse lease %d taken by %s", generation, record.owner)
        return record

    def _heartbeat(self) -> None:
        while not self._stop.wait(self._config.heartbeat_seconds):
            try:
                self.renew()
            except LeaseLost as exc:
                self.lost = str(exc)
                log.error("%s: cancelling this run's Spark jobs", exc)
                self._spark.sparkContext.cancelAllJobs()
                return
            except Exception as exc:  # noqa: BLE001 - a missed heartbeat is retried; the expiry allows several
                log.warning("lakehouse lease: heartbeat failed (retrying): %s", exc)

    def renew(self) -> None:
        """Write a new heartbeat; raises :class:`LeaseLost` if another run holds a newer lease."""
        record = self._record
        if record is None:
            return
        top = self.generations()[-1:] or [0]
        if top[0] != record.generation:
            raise LeaseLost(
                f"lakehouse lease {record.generation} of {record.command} expired and lease {top[0]} was taken: "
                "another run writes the lakehouse now"
            )
        self._record = replace(record, heartbeat_at=_now())
        self._files.overwrite(self._path(record.generation), self._record.to_json())

    def check(self) -> None:
        """Raise :class:`LeaseLost` if the heartbeat found the lease taken over."""
        if self.lost:
            raise LeaseLost(self.lost)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        record, self._record = self._record, None
        if record is None or self.lost:
            return
        if self.generations()[-1:] == [record.generation]:
            self._files.overwrite(self._path(record.generation), replace(record, released_at=_now()).to_json())
            log.info("lakehouse lease %d released", record.generation)

    def __enter__(self) -> LakehouseLease:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
