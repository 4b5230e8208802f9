"""Sources -> bronze: incremental, exactly-once, schema-drift tolerant, nothing silently dropped.

Exactly once, per source, through a plan/commit log (``ops.ingest_log``) and Delta idempotent writes:

1. *plan*: the files not yet in a committed batch (or, for JDBC, the watermark range ``(last, max]``)
   are recorded as batch ``v`` before anything is written;
2. *write*: good rows append to ``bronze.<source>`` and malformed rows to ``silver.quarantine``, both
   with ``txnAppId=cdp-ingest-<source>`` / ``txnVersion=v``, so a write Delta has already committed is
   skipped if the run is repeated;
3. *commit*: batch ``v`` is marked committed with its counts.

A run killed anywhere is completed by the next run, which first redoes a planned-but-uncommitted batch
with exactly the same files or range. This is the mechanism of a streaming file source with a
checkpoint, kept as a Delta table so that each batch can use the full batch readers (corrupt-record
capture, per-batch JSON inference for schemaless sources, schema merge) and so it is queryable.
"""

from __future__ import annotations

import csv
import functools
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.sql import Column, DataFrame, DataFrameReader, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cdp_spark import tables
from cdp_spark.ingest.sources import SourceConfig
from cdp_spark.lakefiles import LakeFiles

log = logging.getLogger("cdp_spark")

CORRUPT = "_corrupt_record"
RESCUED = "_rescued_data"
LINEAGE = ("_ingested_at", "_source_file", "_batch_id")

INGEST_LOG_SCHEMA = T.StructType(
    [
        T.StructField("source", T.StringType(), False),
        T.StructField("batch_version", T.LongType(), False),
        T.StructField("status", T.StringType(), False),
        T.StructField("files", T.ArrayType(T.StringType()), True),
        T.StructField("watermark_from", T.StringType(), True),
        T.StructField("watermark_to", T.StringType(), True),
        T.StructField("rows_read", T.LongType(), True),
        T.StructField("rows_written", T.LongType(), True),
        T.StructField("rows_quarantined", T.LongType(), True),
        T.StructField("run_id", T.StringType(), False),
        T.StructField("logged_at", T.TimestampType(), False),
    ]
)

QUARANTINE_SCHEMA = T.StructType(
    [
        T.StructField("source", T.StringType(), False),
        T.StructField("stage", T.StringType(), False),
        T.StructField("rule", T.StringType(), False),
        T.StructField("reason", T.StringType(), False),
        T.StructField("record_key", T.StringType(), True),
        T.StructField("source_file", T.StringType(), True),
        T.StructField("raw", T.StringType(), True),
        T.StructField("run_id", T.StringType(), False),
        T.StructField("quarantined_at", T.TimestampType(), False),
    ]
)


@dataclass(frozen=True)
class Batch:
    source: str
    version: int
    files: tuple[str, ...] = ()
    watermark_from: str | None = None
    watermark_to: str | None = None

    @property
    def batch_id(self) -> str:
        return f"{self.source}-{self.version:06d}"


@dataclass(frozen=True)
class BatchResult:
    rows_read: int
    rows_written: int
    rows_quarantined: int


# --------------------------------------------------------------------------------------------
# Pure transformations
# --------------------------------------------------------------------------------------------


def _rescue_value(column: Column, data_type: T.DataType) -> Column:
    """The raw value as text, for the rescued-data column."""
    if isinstance(data_type, T.StructType | T.ArrayType | T.MapType):
        return F.to_json(column)
    return column.cast("string")


def conform(batch: DataFrame, target: T.StructType | None, hints: dict[str, str]) -> DataFrame:
    """Cast columns to the schema hints and to the existing bronze types; values that do not fit go to ``_rescued_data``.

    In: any columns. Out: the same columns (new ones kept, so the table can evolve) with types that
    the bronze table accepts, plus ``_rescued_data`` (JSON object column -> raw text, or null).
    """
    wanted: dict[str, T.DataType] = {}
    for name, ddl in hints.items():
        wanted[name] = T._parse_datatype_string(ddl)
    if target is not None:
        for field in target.fields:
            if field.name not in (*LINEAGE, RESCUED, CORRUPT):
                wanted[field.name] = field.dataType
    current = {f.name: f.dataType for f in batch.schema.fields}
    casts: dict[str, Column] = {}
    rescued_entries: list[Column] = []
    for name, data_type in wanted.items():
        if name not in current or current[name] == data_type:
            continue
        raw = F.col(f"`{name}`")
        if isinstance(data_type, T.StringType) and isinstance(current[name], T.StructType | T.ArrayType | T.MapType):
            cast = F.lit(None).cast(data_type)  # an object where text was expected: keep it only as rescued data
        else:
            cast = raw.try_cast(data_type)
        rescued_entries += [F.lit(name), F.when(raw.isNotNull() & cast.isNull(), _rescue_value(raw, current[name]))]
        casts[name] = cast
    if rescued_entries:
        rescued_map = F.map_filter(F.create_map(*rescued_entries), lambda _k, v: v.isNotNull())
        rescued = F.when(F.size(rescued_map) > 0, F.to_json(rescued_map))
    else:
        rescued = F.lit(None).cast("string")
    columns = [casts[c].alias(c) if c in casts else F.col(f"`{c}`") for c in batch.columns]
    return batch.select(*columns, rescued.alias(RESCUED))


# Characters Delta refuses in a column name (without column mapping), and the names the ingest adds itself.
_INVALID_NAME = re.compile(r"[ ,;{}()\n\t=`]")
INTERNAL = (*LINEAGE, RESCUED, CORRUPT, "_metadata")
SOURCE_PREFIX = "src"


def _has_invalid_names(data_type: T.DataType) -> bool:
    if isinstance(data_type, T.StructType):
        return any(_INVALID_NAME.search(f.name) or _has_invalid_names(f.dataType) for f in data_type.fields)
    if isinstance(data_type, T.ArrayType):
        return _has_invalid_names(data_type.elementType)
    if isinstance(data_type, T.MapType):
        return _has_invalid_names(data_type.valueType)
    return False


def safe_name(name: str, taken: set[str]) -> str:
    """A source column's name as bronze keeps it: ``_`` for each character Delta refuses (space, comma,
    backtick ...), ``src`` before a name the ingest uses itself (``_rescued_data`` -> ``src_rescued_data``),
    ``_`` appended while it clashes with another column. Adds the name to ``taken``."""
    new = _INVALID_NAME.sub("_", name)
    if new in INTERNAL or new.startswith(f"{SOURCE_PREFIX}_") and new[len(SOURCE_PREFIX) :] in INTERNAL:
        new = SOURCE_PREFIX + new
    while new != name and new in taken:
        new += "_"
    taken.add(new)
    return new


def safe_columns(df: DataFrame, keep: tuple[str, ...] = ()) -> list[Column]:
    """``df``'s columns under :func:`safe_name`; a nested object holding names Delta refuses is kept as its JSON
    text. ``keep``: columns the reader added itself."""
    taken = set(df.columns)
    columns = []
    for name in df.columns:
        column = F.col(f"`{name.replace('`', '``')}`")
        if name in keep:
            columns.append(column)
            continue
        if _has_invalid_names(df.schema[name].dataType):
            column = F.to_json(column)
        columns.append(column.alias(safe_name(name, taken)))
    return columns


def with_lineage(df: DataFrame, batch: Batch, ingested_at: datetime) -> DataFrame:
    """Add ``_ingested_at``, ``_source_file`` (kept if the reader set it) and ``_batch_id``."""
    if "_source_file" not in df.columns:
        df = df.withColumn("_source_file", F.lit(None).cast("string"))
    return df.withColumn("_ingested_at", F.lit(ingested_at).cast("timestamp")).withColumn(
        "_batch_id", F.lit(batch.batch_id)
    )


def quarantine_rows(
    rejected: DataFrame, source: str, stage: str, rule: str, reason: Column | str, key: Column | None, run_id: str
) -> DataFrame:
    """Shape rejected rows as ``silver.quarantine`` rows; ``raw`` keeps the whole row (or the corrupt text) as JSON."""
    if CORRUPT in rejected.columns:
        raw = F.col(CORRUPT)
    elif "_raw" in rejected.columns:  # the bronze row, kept as JSON by the silver mapping
        raw = F.col("_raw")
    else:
        raw = F.to_json(F.struct(*[F.col(f"`{c}`") for c in rejected.columns]))
    source_file = F.col("_source_file") if "_source_file" in rejected.columns else F.lit(None).cast("string")
    return rejected.select(
        F.lit(source).alias("source"),
        F.lit(stage).alias("stage"),
        F.lit(rule).alias("rule"),
        (F.lit(reason) if isinstance(reason, str) else reason).alias("reason"),
        (key if key is not None else F.lit(None).cast("string")).alias("record_key"),
        source_file.alias("source_file"),
        raw.alias("raw"),
        F.lit(run_id).alias("run_id"),
        F.current_timestamp().alias("quarantined_at"),
    )


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def list_files(spark: SparkSession, location: str) -> list[str]:
    """Data files under ``location`` (recursively), skipping hidden and ``_``-prefixed files and folders."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(location)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(path):
        return []
    found = []
    iterator = fs.listFiles(path, True)
    root = path.toString().rstrip("/")
    while iterator.hasNext():
        file_path = iterator.next().getPath().toString()
        relative = file_path[len(root) :].lstrip("/") if file_path.startswith(root) else file_path
        if any(part.startswith(("_", ".")) for part in relative.split("/")):
            continue
        found.append(file_path)
    return sorted(found)


def read_files(spark: SparkSession, source: SourceConfig, files: list[str]) -> DataFrame:
    """Read the batch's files with the source's reader; malformed rows land in ``_corrupt_record``."""
    reader = spark.read.options(**source.options)
    if source.format in ("csv", "json"):
        reader = reader.option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT)
    if source.schema_ddl:
        schema = T._parse_datatype_string(source.schema_ddl)
        if source.format in ("csv", "json"):
            schema = schema.add(CORRUPT, T.StringType())
        reader = reader.schema(schema)
    if source.format == "csv" and source.options.get("header", "false").lower() == "true" and source.schema_ddl:
        return read_csv_by_header(spark, source, reader, files)
    if source.format == "csv":
        df = reader.csv(files)
    elif source.format == "json":
        df = reader.json(files)
        if df.columns == [CORRUPT]:
            # Not one line parsed (a single truncated line: an interrupted upload). Spark refuses queries on the
            # corrupt-record column alone; every non-empty line is malformed, so read the lines as they are.
            lines = spark.read.text(files)
            path = lines.metadataColumn("_metadata").getField("file_path")
            df = lines.select(F.col("value").alias(CORRUPT), path.alias("_source_file"))
            return df.where(F.trim(CORRUPT) != "")
    else:
        df = reader.option("mergeSchema", "true").parquet(*files)
    # The file path from the scan's metadata column, even when the data has a field named _metadata.
    source_file = df.metadataColumn("_metadata").getField("file_path")
    return df.select(*safe_columns(df, keep=(CORRUPT,)), source_file.alias("_source_file"))


def csv_header(spark: SparkSession, path: str, options: dict[str, str]) -> list[str]:
    """The column names in the first line of a CSV file (compressed files too): one short read on the driver."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    stream = hadoop_path.getFileSystem(conf).open(hadoop_path)
    try:
        codec = jvm.org.apache.hadoop.io.compress.CompressionCodecFactory(conf).getCodec(hadoop_path)
        if codec is not None:
            stream = codec.createInputStream(stream)
        encoding = options.get("encoding") or options.get("charset") or "UTF-8"
        line = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(stream, encoding)).readLine()
    finally:
        stream.close()
    if line is None:
        return []
    line = line.lstrip("\ufeff")
    sep = options.get("sep") or options.get("delimiter") or ","
    if len(sep) != 1:
        return line.split(sep)
    return next(csv.reader([line], delimiter=sep, quotechar=options.get("quote", '"') or None), [])


def read_csv_by_header(
    spark: SparkSession, source: SourceConfig, reader: DataFrameReader, files: list[str]
) -> DataFrame:
    """CSV files read by the names in their headers, not by position: a file whose columns come in another order
    loads each value into its own column. A declared column a file lacks is null (a warning); a column the
    schema does not declare is kept as text (schema drift: bronze gains the column, a warning). Files are grouped
    by header, one read per layout."""
    declared = T._parse_datatype_string(source.schema_ddl)
    by_lower = {f.name.lower(): f for f in declared.fields}
    layouts: dict[tuple[str, ...], list[str]] = {}
    for path in files:
        layouts.setdefault(tuple(csv_header(spark, path, source.options)), []).append(path)
    frames = []
    for header, group in layouts.items():
        if not header:
            continue  # empty files: nothing to read
        names = [name.strip() or f"_c{i}" for i, name in enumerate(header)]
        if len({n.lower() for n in names}) != len(names):
            raise ValueError(f"source {source.name}: {group[0]} repeats a column name in its header: {names}")
        present = {n.lower(): n for n in names}
        missing = [f.name for f in declared.fields if f.name.lower() not in present]
        extra = [n for n in names if n.lower() not in by_lower]
        if missing:
            log.warning("[ingest] %s: %d file(s) lack column(s) %s: read as null (e.g. %s)",
                        source.name, len(group), missing, group[0])  # fmt: skip
        if extra:
            log.warning("[ingest] %s: %d file(s) bring new column(s) %s: kept as text (e.g. %s)",
                        source.name, len(group), extra, group[0])  # fmt: skip
        schema = T.StructType(
            [T.StructField(n, by_lower[n.lower()].dataType if n.lower() in by_lower else T.StringType()) for n in names]
        ).add(CORRUPT, T.StringType())
        df = reader.schema(schema).csv(group)
        source_file = df.metadataColumn("_metadata").getField("file_path")

        def col(name: str) -> Column:
            return F.col(f"`{name.replace('`', '``')}`")

        taken = {f.name for f in declared.fields} | set(INTERNAL)
        frames.append(
            df.select(
                *[
                    col(present[f.name.lower()]).alias(f.name)
                    if f.name.lower() in present
                    else F.lit(None).cast(f.dataType).alias(f.name)
                    for f in declared.fields
                ],
                *[col(n).alias(safe_name(n, taken)) for n in extra],
                CORRUPT,
                source_file.alias("_source_file"),
            )
        )
    if not frames:
        empty = T.StructType(
            [*declared.fields, T.StructField(CORRUPT, T.StringType()), T.StructField("_source_file", T.StringType())]
        )
        return spark.createDataFrame([], empty)
    return functools.reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)


def read_jdbc(spark: SparkSession, source: SourceConfig, low: str | None, high: str) -> DataFrame:
    """Rows of the JDBC table with ``low < updated_at <= high`` (``low`` None: everything up to ``high``)."""
    jdbc = source.jdbc
    column = source.updated_at
    condition = f"{column} <= TIMESTAMP '{high}'"
    if low is not None:
        condition = f"{column} > TIMESTAMP '{low}' AND " + condition
    reader = (
        spark.read.format("jdbc")
        .option("url", jdbc.url)
        .option("driver", jdbc.driver)
        .option("query", f"SELECT * FROM {jdbc.table} WHERE {condition}")
        .option("fetchsize", str(jdbc.fetch_size))
    )
    if jdbc.user:
        reader = reader.option("user", jdbc.user)
    if jdbc.password:
        reader = reader.option("password", jdbc.password)
    return reader.load().withColumn("_source_file", F.lit(f"jdbc:{jdbc.table}"))


def jdbc_high_watermark(spark: SparkSession, source: SourceConfig) -> str | None:
    """The current maximum of the source's updated-at column (one value, read on the driver)."""
    jdbc = source.jdbc
    reader = (
        spark.read.format("jdbc")
        .option("url", jdbc.url)
        .option("driver", jdbc.driver)
        .option("query", f"SELECT CAST(MAX({source.updated_at}) AS VARCHAR(40)) AS high FROM {jdbc.table}")
    )
    if jdbc.user:
        reader = reader.option("user", jdbc.user)
    if jdbc.password:
        reader = reader.option("password", jdbc.password)
    return reader.load().first()["high"]


# --------------------------------------------------------------------------------------------
# The batch log and one source's run
# --------------------------------------------------------------------------------------------


def _log_rows(spark: SparkSession, root: str, source: str) -> list:
    if not tables.exists(spark, root, tables.INGEST_LOG):
        return []
    return tables.read(spark, root, tables.INGEST_LOG).where(F.col("source") == source).collect()


def _append_log(
    spark: SparkSession, root: str, batch: Batch, status: str, run_id: str, result: BatchResult | None
) -> None:
    row = (
        batch.source,
        batch.version,
        status,
        list(batch.files),
        batch.watermark_from,
        batch.watermark_to,
        result.rows_read if result else None,
        result.rows_written if result else None,
        result.rows_quarantined if result else None,
        run_id,
        datetime.now(UTC).replace(tzinfo=None),
    )
    tables.append(spark.createDataFrame([row], INGEST_LOG_SCHEMA), root, tables.INGEST_LOG)


def plan_batch(spark: SparkSession, root: str, source: SourceConfig, sample_path: str, run_id: str) -> Batch | None:
    """The batch to run now: an unfinished planned one, else the new files / watermark range, else None."""
    log_rows = _log_rows(spark, root, source.name)
    committed = {r["batch_version"] for r in log_rows if r["status"] == "committed"}
    planned = [r for r in log_rows if r["status"] == "planned" and r["batch_version"] not in committed]
    if planned:
        r = max(planned, key=lambda r: r["batch_version"])
        log.info("[ingest] %s: resuming unfinished batch %d", source.name, r["batch_version"])
        return Batch(source.name, r["batch_version"], tuple(r["files"] or ()), r["watermark_from"], r["watermark_to"])
    version = max((r["batch_version"] for r in log_rows), default=-1) + 1
    if source.format == "jdbc":
        last = max((r for r in log_rows if r["status"] == "committed"), key=lambda r: r["batch_version"], default=None)
        low = last["watermark_to"] if last else None
        high = jdbc_high_watermark(spark, source)
        if high is None or high == low:
            return None
        batch = Batch(source.name, version, watermark_from=low, watermark_to=high)
    else:
        done = {f for r in log_rows if r["status"] == "committed" for f in (r["files"] or ())}
        location = source.location(sample_path)
        if not source.allow_missing and not LakeFiles(spark).exists(location):
            raise FileNotFoundError(
                f"source {source.name}: path {location} does not exist (a mistyped path? set allow_missing: true "
                "on the source if it may not exist yet)"
            )
        new_files = tuple(f for f in list_files(spark, location) if f not in done)
        if not new_files:
            return None
        batch = Batch(source.name, version, files=new_files)
    _append_log(spark, root, batch, "planned", run_id, None)
    return batch


def run_batch(spark: SparkSession, root: str, source: SourceConfig, batch: Batch, run_id: str) -> BatchResult:
    """Read the batch, write good rows to bronze and malformed rows to quarantine (idempotently), commit it."""
    if source.format == "jdbc":
        raw = read_jdbc(spark, source, batch.watermark_from, batch.watermark_to)
    else:
        try:
            raw = read_files(spark, source, list(batch.files))
        except Exception as exc:
            # Only a failed read pays a look at every file: was one deleted between planning and reading?
            files = LakeFiles(spark)
            gone = [f for f in batch.files if not files.exists(f)]
            if not gone:
                raise
            raise FileNotFoundError(
                f"source {source.name}: {len(gone)} file(s) of batch {batch.version}, planned and not yet read, are "
                f"gone: {', '.join(gone[:3])}{' ...' if len(gone) > 3 else ''}; restore them (the batch is read as "
                "planned, so nothing is ingested twice or skipped)"
            ) from exc
    raw = raw.persist()
    try:
        has_corrupt = CORRUPT in raw.columns
        # One pass counts what was read and what is malformed (it also materializes the persisted batch).
        malformed = F.count_if(F.col(CORRUPT).isNotNull()) if has_corrupt else F.lit(0)
        counted = raw.agg(F.count("*").alias("read"), malformed.alias("malformed")).first()
        rows_read, rows_quarantined = counted["read"], counted["malformed"]
        rows_written = rows_read - rows_quarantined
        good = raw.where(F.col(CORRUPT).isNull()).drop(CORRUPT) if has_corrupt else raw
        bad = raw.where(F.col(CORRUPT).isNotNull()) if has_corrupt else raw.limit(0)
        bronze_table = tables.bronze(source.name)
        target_schema = (
            tables.read(spark, root, bronze_table).schema if tables.exists(spark, root, bronze_table) else None
        )
        ingested_at = datetime.now(UTC).replace(tzinfo=None)
        bronze_rows = with_lineage(conform(good, target_schema, source.schema_hints), batch, ingested_at)
        txn = {"txnAppId": f"cdp-ingest-{source.name}", "txnVersion": str(batch.version)}
        tables.append(bronze_rows, root, bronze_table, merge_schema=True, options=txn)
        if rows_quarantined:
            reason = F.lit(f"malformed {source.format} row: could not be parsed with the source's schema")
            rejected = quarantine_rows(bad, source.name, "ingest", "malformed", reason, None, run_id)
            tables.append(rejected, root, tables.QUARANTINE, options=txn)
    finally:
        raw.unpersist()
    result = BatchResult(rows_read, rows_written, rows_quarantined)
    _append_log(spark, root, batch, "committed", run_id, result)
    return result
