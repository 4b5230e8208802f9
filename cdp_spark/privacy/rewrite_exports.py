"""Erasure in the files already exported: every export file that holds a planned person is rewritten without
them, and its manifest's checksums and counts are updated. A crash between the rewrite and the move is
completed by the rerun."""

from __future__ import annotations

import json

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp_spark import tables
from cdp_spark.exports import (
    MANIFEST,
    SPARK_FORMATS,
    UnsafePath,
    export_file,
    export_folder,
    read_export_file,
)
from cdp_spark.lakefiles import LakeFiles
from cdp_spark.privacy.matching import Erasure, identifier_candidates, row_fingerprint, rows_per_request

EXPORT_COLUMNS = {
    "cdp_id": ("cdp_id", False),
    "email": ("email", False),
    "phone": ("phone", False),
    "email_sha256": ("email", True),
    "phone_sha256": ("phone", True),
    "cdp_id_sha256": ("cdp_id", True),
}


def export_folders(spark: SparkSession, root: str) -> list[str]:
    """Folders of every export ever written, from the ``export`` rows of ``ops.audit_log``."""
    if not tables.exists(spark, root, tables.AUDIT_LOG):
        return []
    rows = (
        tables.read(spark, root, tables.AUDIT_LOG)
        .where(F.col("action") == "export")
        .select(F.get_json_object("details", "$.folder").alias("folder"))
        .where(F.col("folder").isNotNull())
        .distinct()
        .collect()
    )
    return sorted(export_folder(r["folder"]) for r in rows)


def _replace_file(spark: SparkSession, kept: DataFrame, path: str, file_format: str) -> None:
    """Write ``kept`` as one file at ``path``, via a temporary folder next to it (see :func:`_finish_replace`)."""
    files = LakeFiles(spark)
    tmp = _tmp_folder(path)
    writer = kept.coalesce(1).write.mode("overwrite").format("json" if file_format == "jsonl" else file_format)
    if file_format == "csv":
        writer = writer.option("header", "true")
    writer.save(tmp)
    _finish_replace(files, path)


def _tmp_folder(path: str) -> str:
    folder, _, name = path.rpartition("/")
    return f"{folder}/_erase_tmp_{name}"


def _finish_replace(files: LakeFiles, path: str) -> bool:
    """Move the rewritten file over the original; also completes a replacement a crash interrupted."""
    tmp = _tmp_folder(path)
    parts = [n for n in files.names(tmp) if n.startswith("part-")]
    if not parts:
        files.delete(tmp)
        return False
    files.delete(path)
    files.rename(f"{tmp}/{parts[0]}", path)
    files.delete(tmp)
    return True


def erase_exports(job: Erasure) -> int:
    """Rewrite every export file that holds a planned person without them; update manifests. Returns rows removed."""
    spark, files = job.spark, LakeFiles(job.spark)
    removed_total = 0
    for folder in export_folders(spark, job.root):
        manifest_path = f"{folder}/{MANIFEST}"
        if not files.exists(manifest_path):
            continue  # an export that never finished holds nothing a consumer could have received
        manifest = json.loads(files.read_text(manifest_path))
        if manifest.get("format") not in SPARK_FORMATS:
            raise UnsafePath(f"{manifest_path}: unknown format {manifest.get('format')!r}; refused")
        # Every path is checked before any file is touched: a crafted manifest must not make erasure delete
        # or rewrite anything outside its export folder.
        paths = [export_file(folder, entry.get("name"), manifest_path) for entry in manifest["files"]]
        changed = False
        removed_adds = 0
        for entry, path in zip(manifest["files"], paths, strict=True):
            if _finish_replace(files, path):
                changed = True
            df = read_export_file(spark, path, manifest["format"], manifest.get("columns"))
            spec = [(kind, F.col(f"`{c}`"), hashed) for c, (kind, hashed) in EXPORT_COLUMNS.items() if c in df.columns]
            if spec:
                fingerprinted = df.withColumn("_fp", row_fingerprint(df.columns))
                pairs = job.match(identifier_candidates(fingerprinted, spec)).persist()
                per_request = rows_per_request(pairs)
                if per_request:
                    kept = fingerprinted.join(pairs.select("_fp").distinct(), "_fp", "left_anti").drop("_fp")
                    _replace_file(spark, kept, path, manifest["format"])
                    job.record(f"export {manifest['destination']}/{manifest['export_id']}/{entry['name']}", per_request)
                    changed = True
                pairs.unpersist()
            checksum = files.sha256(path)
            if checksum != entry["sha256"]:
                rows = read_export_file(spark, path, manifest["format"], manifest.get("columns")).count()
                removed = entry["rows"] - rows
                removed_total += removed
                if entry["kind"] in ("members", "adds"):
                    removed_adds += removed
                entry.update(rows=rows, sha256=checksum)
                changed = True
        if changed:
            counts = manifest["counts"]
            counts["adds"] = sum(e["rows"] for e in manifest["files"] if e["kind"] in ("members", "adds"))
            counts["removes"] = sum(e["rows"] for e in manifest["files"] if e["kind"] == "removes")
            counts["erasures"] = sum(e["rows"] for e in manifest["files"] if e["kind"] == "erasures")
            counts["total"] = max(0, counts["total"] - removed_adds)
            manifest.setdefault("amended_by_erasure", []).append(job.run_id)
            files.write_text(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return removed_total
