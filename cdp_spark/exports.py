"""Export folders as activation writes them and erasure rewrites them, and the tombstones of erased people.

An export is ``<destination folder>/<export id>/`` with data files named ``<kind>-<nnnnn>.<ext>`` and a
``_manifest.json`` (see :mod:`cdp_spark.activation.export`). Erasure reads the folders back from ``ops.audit_log``
and the file names from manifests, so both are checked here before a path is built from them (:class:`UnsafePath`).
"""

from __future__ import annotations

import re

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp_spark import tables
from cdp_spark.hashing import identifier_hash

MANIFEST = "_manifest.json"
EXTENSIONS = {"csv": "csv", "parquet": "parquet", "jsonl": "jsonl"}
SPARK_FORMATS = {"csv": "csv", "parquet": "parquet", "jsonl": "json"}

EXPORT_FOLDER = re.compile(r"\d{8}-[0-9a-f]{12}")  # see activation.export.export_id
EXPORT_FILE = re.compile(r"(members|adds|removes|erasures)-\d{5}\.(csv|parquet|jsonl)")


class UnsafePath(ValueError):
    """A path read from a file (a manifest, the audit log) that would leave the folder it belongs to."""


def export_file(folder: str, name: object, manifest_path: str) -> str:
    """``<folder>/<name>`` for a file name a manifest lists; anything but an export file's own name is refused."""
    if not isinstance(name, str) or not EXPORT_FILE.fullmatch(name):
        raise UnsafePath(f"{manifest_path}: file name {name!r} is not an export file of this folder; refused")
    return f"{folder}/{name}"


def export_folder(folder: str) -> str:
    """An export folder read back from ``ops.audit_log``: ``<destination folder>/<export id>``, no ``..``."""
    parts = folder.split("://", 1)[-1].split("/")
    if ".." in parts or "." in parts or not EXPORT_FOLDER.fullmatch(parts[-1]):
        raise UnsafePath(f"{tables.AUDIT_LOG.full_name}: {folder!r} is not an export folder; refused")
    return folder


def read_export_file(spark: SparkSession, path: str, file_format: str, schema: str | None) -> DataFrame:
    reader = spark.read.format(SPARK_FORMATS[file_format])
    if file_format == "csv":
        reader = reader.option("header", "true")
    if schema and file_format != "parquet":
        reader = reader.schema(schema)
    return reader.load(path)


# --------------------------------------------------------------------------------------------
# Tombstones
# --------------------------------------------------------------------------------------------


# ops.export_state rows of an erased person become tombstones: the person's exported identifiers as SHA-256
# only, under this marker instead of their cdp_id, until the destination's next export sends them as erasures.
ERASED = "erased"
ERASURE_SCHEMA = "cdp_id_sha256 string, email_sha256 string, phone_sha256 string"


def tombstones(state: DataFrame) -> DataFrame:
    """Erased people's ``ops.export_state`` rows as tombstones, carrying SHA-256 identifiers and nothing else.

    In: state rows (``destination, export_id, as_of, cdp_id, row, exported_at``) of people being erased.
    Out: the same columns, ``cdp_id`` = ``erased`` and ``row`` = JSON of ``cdp_id_sha256, email_sha256,
    phone_sha256`` (the SHA-256 a customer-match destination already holds, or can compute from the plain
    value it was sent). A destination's next export sends them in its ``erasures`` file, then drops them.
    """
    exported = F.from_json("row", "email string, phone string, email_sha256 string, phone_sha256 string")
    hashed = F.struct(
        identifier_hash("cdp_id", F.col("cdp_id")).alias("cdp_id_sha256"),
        F.coalesce(exported["email_sha256"], identifier_hash("email", exported["email"])).alias("email_sha256"),
        F.coalesce(exported["phone_sha256"], identifier_hash("phone", exported["phone"])).alias("phone_sha256"),
    )
    return state.where(F.col("cdp_id").isNotNull() & (F.col("cdp_id") != ERASED)).select(
        "destination",
        "export_id",
        "as_of",
        F.lit(ERASED).alias("cdp_id"),
        F.to_json(hashed).alias("row"),
        "exported_at",
    )
