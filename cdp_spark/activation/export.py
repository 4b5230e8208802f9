"""Segment exports: who is sent (members, consent, suppression), what (hashed identifiers), and how (files + manifest).

An export is identified by ``export_id``, derived from the destination's definition, the as-of and the
hash of the segment definitions, so the same export asked for twice is the same export. Its files go
to ``<destination path>/<export_id>/`` with a ``_manifest.json`` (counts, per-file SHA-256, the segment
definitions' hash). The order of writes makes it restartable:

1. data files (a partial folder from a failed run is deleted first);
2. the manifest;
3. the state commit: one Delta overwrite of the destination's slice of ``ops.export_state`` (the
   exported rows, for the next delta, and a marker row per committed export id);
4. an ``ops.audit_log`` row (action ``export``).

People erased since the last export are in the state as tombstones (:func:`cdp_spark.exports.tombstones`): SHA-256 identifiers
only. The next export sends them in an ``erasures`` file (full and delta mode alike) and drops them.

An export is done when its marker is in the state; a rerun then writes nothing. A folder without a
committed marker is a failed attempt and is redone whole.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cdp_spark import tables
from cdp_spark.activation.config import Destination
from cdp_spark.exports import ERASED, ERASURE_SCHEMA, EXTENSIONS, MANIFEST, SPARK_FORMATS, read_export_file
from cdp_spark.hashing import identifier_hash, normalized_identifier
from cdp_spark.lakefiles import LakeFiles
from cdp_spark.segment_history import members_at
from cdp_spark.suppression import Suppression, without_suppressed

ROWS_PER_FILE = 1_000_000  # customer-match uploads cap file sizes; parts beyond this are split


def destination_folder(root: str, destination: Destination) -> str:
    """Absolute paths and URIs as given; relative ones under the lakehouse root."""
    path = destination.path
    if path.startswith("/") or "://" in path:
        return path.rstrip("/")
    return f"{root.rstrip('/')}/{path.strip('/')}"


# --------------------------------------------------------------------------------------------
# Who and what is exported
# --------------------------------------------------------------------------------------------


def current_members(history: DataFrame, segments: list[str], as_of: date) -> DataFrame:
    """Customers in any of ``segments`` at ``as_of``. In: ``gold.segment_membership``. Out: ``cdp_id`` (distinct)."""
    return members_at(history, as_of).where(F.col("segment").isin(segments)).select("cdp_id").distinct()


ADDRESS_KINDS = ("email", "phone")


def audience(
    members: DataFrame,
    profile: DataFrame,
    scores: DataFrame,
    suppression: Suppression | None,
    destination: Destination,
    addresses: DataFrame,
) -> DataFrame:
    """The rows a destination receives: consented per address, not erased, with its identifier and attributes.

    In: ``members`` (``cdp_id``), ``gold.customer_profile``, ``gold.customer_scores`` at the export's as-of
    (``cdp_id`` + score columns), the suppression list, ``gold.address_consent``. Out: ``cdp_id`` +
    ``destination.columns`` (once). Consent is decided per exported address: an email or phone is sent only
    if the latest statement about that address grants the destination's channel (no statement = no; a
    shared household phone's grant does not override the person's own withdrawal: see
    ``gold.profiles.address_consent``); an address that may not be used is left empty, and a row with no
    usable address is not sent. A destination keyed by ``cdp_id`` alone uses the person's consent column.
    """
    score_columns = [c for c in scores.columns if c not in profile.columns and c != "as_of"]
    people = members.join(profile, "cdp_id").join(scores.select("cdp_id", *score_columns), "cdp_id", "left")
    people = without_suppressed(people, suppression)
    kinds = [k for k in destination.identifiers if k in ADDRESS_KINDS]
    if not kinds:
        people = people.where(F.coalesce(F.col(destination.consent_column), F.lit(False)))
    for kind in kinds:
        usable = (
            addresses.where(
                (F.col("channel") == destination.channel) & (F.col("identifier_type") == kind) & F.col("granted")
            )
            .select("cdp_id", F.col("identifier").alias(kind), F.lit(True).alias("_usable"))
            .distinct()
        )
        people = (
            people.join(usable, ["cdp_id", kind], "left")
            .withColumn(kind, F.when(F.col("_usable"), F.col(kind)))
            .drop("_usable")
        )
    identifiers = {}
    for kind, column in zip(destination.identifiers, destination.identifier_columns, strict=True):
        if kind == "cdp_id":
            identifiers[column] = F.col("cdp_id")
        elif destination.hash_identifiers:
            identifiers[column] = identifier_hash(kind, F.col(kind))
        else:
            identifiers[column] = normalized_identifier(kind, F.col(kind))
    reachable = F.lit(False)
    for kind, column in zip(destination.identifiers, destination.identifier_columns, strict=True):
        if kind in kinds or not kinds:
            reachable = reachable | identifiers[column].isNotNull()
    return people.where(reachable).select(
        "cdp_id",
        *[value.alias(name) for name, value in identifiers.items() if name != "cdp_id"],
        *[F.col(a) for a in destination.attributes],
    )


def exported(destination: Destination) -> list[str]:
    """The file columns of a destination that are not already the ``cdp_id`` key every audience row carries."""
    return [c for c in destination.columns if c != "cdp_id"]


def with_row(rows: DataFrame, columns: list[str]) -> DataFrame:
    """Add ``row``: the exported columns as JSON, the unit a delta export compares."""
    return rows.withColumn("row", F.to_json(F.struct(*[F.col(f"`{c}`") for c in columns])))


def delta(current: DataFrame, previous: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Adds and removes between two exported sets (``cdp_id, row``); a changed row is a remove plus an add."""
    keys = ["cdp_id", "row"]
    adds = current.join(previous.select(*keys), keys, "left_anti")
    removes = previous.select(*keys).join(current.select(*keys), keys, "left_anti")
    return adds, removes


def export_id(destination: Destination, as_of: date, segments_hash: str) -> str:
    """``<yyyymmdd>-<12 hex>``: the same destination definition, as-of and segment logic give the same id."""
    key = f"{destination.definition_hash()}|{as_of.isoformat()}|{segments_hash}"
    return f"{as_of:%Y%m%d}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


# --------------------------------------------------------------------------------------------
# Writing an export
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportResult:
    destination: str
    export_id: str
    folder: str
    status: str  # "written" or "skipped" (already exported)
    adds: int
    removes: int
    total: int
    erasures: int = 0


class ExportOutOfOrder(ValueError):
    """An as-of older than the destination's last committed export."""


def write_data_files(df: DataFrame, folder: str, kind: str, file_format: str, rows: int) -> list[dict]:
    """Write ``df`` as ``<folder>/<kind>-00000.<ext>`` ...; returns the manifest entries (name, kind, rows, sha256)."""
    spark = df.sparkSession
    files = LakeFiles(spark)
    tmp = f"{folder}/_tmp_{kind}"
    writer = df.coalesce(max(1, math.ceil(rows / ROWS_PER_FILE))).write.mode("overwrite")
    writer = writer.format(SPARK_FORMATS[file_format])
    if file_format == "csv":
        writer = writer.option("header", "true")
    writer.save(tmp)
    parts = [n for n in files.names(tmp) if n.startswith("part-")]
    entries = []
    for i, part in enumerate(parts):
        name = f"{kind}-{i:05d}.{EXTENSIONS[file_format]}"
        files.rename(f"{tmp}/{part}", f"{folder}/{name}")
        entries.append({"name": name, "kind": kind})
    files.delete(tmp)
    for entry in entries:
        path = f"{folder}/{entry['name']}"
        entry["rows"] = read_export_file(spark, path, file_format, None).count()
        entry["sha256"] = files.sha256(path)
    return entries


def read_state(spark: SparkSession, root: str, destination: str) -> DataFrame:
    if not tables.exists(spark, root, tables.EXPORT_STATE):
        return tables.rows_frame(spark, [], tables.EXPORT_STATE.schema)
    return tables.read(spark, root, tables.EXPORT_STATE).where(F.col("destination") == destination)


def _audit_export(spark: SparkSession, root: str, run_id: str, result: ExportResult, as_of: date) -> None:
    details = json.dumps(
        {
            "destination": result.destination,
            "export_id": result.export_id,
            "folder": result.folder,
            "as_of": as_of.isoformat(),
            "adds": result.adds,
            "removes": result.removes,
            "erasures": result.erasures,
            "total": result.total,
        },
        sort_keys=True,
    )
    target = f"{result.destination}/{result.export_id}"
    row = (run_id, "export", target, tables.EXPORT_STATE.full_name, result.adds + result.removes, details)
    tables.audit(spark, root, [row])


def _audited(spark: SparkSession, root: str, target: str) -> bool:
    if not tables.exists(spark, root, tables.AUDIT_LOG):
        return False
    log = tables.read(spark, root, tables.AUDIT_LOG)
    return log.where((F.col("action") == "export") & (F.col("target") == target)).limit(1).count() > 0


def run_export(
    rows: DataFrame,
    root: str,
    destination: Destination,
    as_of: date,
    segments_hash: str,
    run_id: str,
) -> ExportResult:
    """Export ``rows`` (from :func:`audience`) for one destination; skip it if this export is already committed."""
    spark = rows.sparkSession
    files = LakeFiles(spark)
    eid = export_id(destination, as_of, segments_hash)
    folder = f"{destination_folder(root, destination)}/{eid}"
    state = read_state(spark, root, destination.name).persist()
    try:
        markers = state.where(F.col("cdp_id").isNull())
        committed = {r["export_id"]: r["as_of"] for r in markers.select("export_id", "as_of").collect()}
        if eid in committed and files.exists(f"{folder}/{MANIFEST}"):
            manifest = json.loads(files.read_text(f"{folder}/{MANIFEST}"))
            counts = manifest["counts"]
            result = ExportResult(
                destination.name,
                eid,
                folder,
                "skipped",
                counts["adds"],
                counts["removes"],
                counts["total"],
                counts.get("erasures", 0),
            )
            if not _audited(spark, root, f"{destination.name}/{eid}"):
                _audit_export(spark, root, run_id, result, as_of)  # the run that exported died before auditing
            return result
        if committed and as_of < max(committed.values()):
            raise ExportOutOfOrder(
                f"destination {destination.name}: as-of {as_of} is older than its last export "
                f"({max(committed.values())}); exports only move forward"
            )
        # A folder without a committed export is what a failed run left: start it again from nothing.
        files.delete(folder)
        current = with_row(rows, destination.columns).select("cdp_id", "row", *exported(destination)).persist()
        previous = state.where(F.col("cdp_id").isNotNull()).select("cdp_id", "row")
        adds, removes = delta(current, previous)
        erasures = removes.where(F.col("cdp_id") == ERASED).select(F.from_json("row", ERASURE_SCHEMA).alias("r"))
        erasures = erasures.select("r.*").distinct().persist()
        removes = removes.where(F.col("cdp_id") != ERASED)
        adds, removes = adds.persist(), removes.persist()
        n_total, n_adds, n_removes, n_erasures = current.count(), adds.count(), removes.count(), erasures.count()
        schema = T.StructType([current.schema[c] for c in destination.columns])
        if destination.mode == "full":
            entries = write_data_files(
                current.select(*destination.columns), folder, "members", destination.format, n_total
            )
        else:
            parsed = removes.select(F.from_json("row", schema).alias("r")).select("r.*")
            entries = write_data_files(adds.select(*destination.columns), folder, "adds", destination.format, n_adds)
            entries += write_data_files(parsed, folder, "removes", destination.format, n_removes)
        if n_erasures:
            # Full and delta destinations alike: an erased person must be deleted there, not just left out.
            entries += write_data_files(erasures, folder, "erasures", destination.format, n_erasures)
        manifest = {
            "destination": destination.name,
            "export_id": eid,
            "as_of": as_of.isoformat(),
            "mode": destination.mode,
            "format": destination.format,
            "channel": destination.channel,
            "hash_identifiers": destination.hash_identifiers,
            "segments": destination.segments,
            "segment_definitions_sha256": segments_hash,
            "destination_definition_sha256": destination.definition_hash(),
            "columns": ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in schema.fields),
            "counts": {"adds": n_adds, "removes": n_removes, "erasures": n_erasures, "total": n_total},
            "files": entries,
            "run_id": run_id,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        files.write_text(f"{folder}/{MANIFEST}", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        now = datetime.now(UTC).replace(tzinfo=None)
        new_state = current.select(
            F.lit(destination.name).alias("destination"),
            F.lit(eid).alias("export_id"),
            F.lit(as_of).cast("date").alias("as_of"),
            "cdp_id",
            "row",
            F.lit(now).cast("timestamp").alias("exported_at"),
        )
        marker = tables.rows_frame(spark, [(destination.name, eid, as_of, None, None, now)], tables.EXPORT_STATE.schema)
        new_state = new_state.unionByName(marker).unionByName(markers)
        # The commit: one Delta overwrite of this destination's slice, after the files and the manifest.
        # (Delta reads the slice at a pinned version, so deriving the new slice from the old one is safe.)
        tables.replace_where(new_state, root, tables.EXPORT_STATE, f"destination = '{destination.name}'")
        result = ExportResult(destination.name, eid, folder, "written", n_adds, n_removes, n_total, n_erasures)
        _audit_export(spark, root, run_id, result, as_of)
        for cached in (current, adds, removes, erasures):
            cached.unpersist()
        return result
    finally:
        state.unpersist()
