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
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, DataFrameReader, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cdp_spark import tables
from cdp_spark.lakefiles import LakeFiles
from cdp_spark.quarantine import CORRUPT, quarantine_rows, write_quarantine
from cdp_spark.sources import SourceConfig

log = logging.getLogger("cdp_spark")
# The sources of a run are ingested at once (``ingest.job``); the log they share takes one commit at a time, so
# that two first writes do not race to create it (the quarantine does the same). Reentrant: planning a batch holds
# it around its log append.
_SHARED_WRITES = threading.RLock()

RESCUED = "_rescued_data"
LINEAGE = tuple(tables.BRONZE_LINEAGE.fieldNames())


@dataclass(frozen=True)
class Batch:
    source: str
    version: int
    files: tuple[str, ...] = ()
    watermark_from: str | None = None
    watermark_to: str | None = None

    @property
    def batch_id(self) -> str:
        return tables.batch_id(self.source, self.version)


@dataclass(frozen=True)
class BatchResult:
    rows_read: int  # new rows: rows_written + rows_quarantined
    rows_written: int
    rows_quarantined: int
    rows_reread: int = 0  # JDBC look-back and NULL updated-at rows bronze already held unchanged: not written


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
        return tables.rows_frame(spark, [], empty)
    return functools.reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)


def _jdbc_reader(spark: SparkSession, source: SourceConfig) -> DataFrameReader:
    jdbc = source.jdbc
    loader = spark.sparkContext._jvm.java.lang.Thread.currentThread().getContextClassLoader()
    try:
        spark.sparkContext._jvm.java.lang.Class.forName(jdbc.driver, False, loader)
    except Exception as exc:
        package = jdbc.driver_package()
        hint = f"--packages {package}" if package else "the driver's jar (set jdbc.package to its Maven coordinates)"
        raise RuntimeError(
            f"source {source.name}: the JDBC driver {jdbc.driver} is not on the classpath; under spark-submit add "
            f"{hint}"
        ) from exc
    reader = spark.read.format("jdbc").option("url", jdbc.url).option("driver", jdbc.driver)
    if jdbc.user:
        reader = reader.option("user", jdbc.user)
    if jdbc.password:
        reader = reader.option("password", jdbc.password)
    return reader


@dataclass(frozen=True)
class JdbcWatermarks:
    low: str | None  # the oldest updated-at in the table
    high: str | None  # the newest: the end of the next batch
    nulls: int  # rows without an updated-at


def jdbc_watermarks(spark: SparkSession, source: SourceConfig) -> JdbcWatermarks:
    """The source's updated-at range and its count of NULLs: one aggregate query, one row read on the driver."""
    column = source.updated_at
    row = (
        _jdbc_reader(spark, source)
        .option(
            "query",
            f"SELECT CAST(MIN({column}) AS VARCHAR(40)) AS low, CAST(MAX({column}) AS VARCHAR(40)) AS high, "
            f"COUNT(*) - COUNT({column}) AS nulls FROM {source.jdbc.table}",
        )
        .load()
        .first()
    )
    return JdbcWatermarks(row["low"], row["high"], int(row["nulls"] or 0))


def _timestamp(value: str, source: SourceConfig) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(
            f"source {source.name}: updated_at {source.updated_at} holds {value!r}, not a timestamp"
        ) from exc


def jdbc_read_from(source: SourceConfig, batch: Batch) -> str | None:
    """Where the batch's read starts (exclusive): the last watermark minus the look-back window."""
    if batch.watermark_from is None or not source.jdbc.lookback_seconds:
        return batch.watermark_from
    start = _timestamp(batch.watermark_from, source) - timedelta(seconds=source.jdbc.lookback_seconds)
    return start.isoformat(sep=" ")


def jdbc_predicates(source: SourceConfig, read_from: str | None, high: str, oldest: str | None) -> list[str]:
    """One WHERE condition per parallel read: ``(read_from, high]`` in ``num_partitions`` equal time slices (the
    first open below when there is no ``read_from``), plus the NULL updated-ats unless the source skips them."""
    column, slices = source.updated_at, source.jdbc.num_partitions
    start = read_from or oldest
    bounds: list[str] = []
    if slices > 1 and start is not None:
        first, last = _timestamp(start, source), _timestamp(high, source)
        step = (last - first) / slices
        bounds = [(first + step * i).isoformat(sep=" ") for i in range(1, slices)] if step > timedelta(0) else []
    edges = [read_from, *bounds, high]
    predicates = []
    for i, (lo, hi) in enumerate(zip(edges, edges[1:], strict=False)):
        condition = f"{column} <= TIMESTAMP '{hi}'"
        if lo is not None:
            condition = f"{column} > TIMESTAMP '{lo}' AND {condition}"
        elif i > 0:
            raise AssertionError("only the first slice is open below")
        predicates.append(condition)
    if source.jdbc.null_updated_at == "ingest_once":
        predicates.append(f"{column} IS NULL")
    return predicates


def read_jdbc(spark: SparkSession, source: SourceConfig, batch: Batch, oldest: str | None = None) -> DataFrame:
    """The batch's rows, read in parallel: ``updated_at`` in ``(watermark_from - lookback, watermark_to]`` (from the
    start when there is no ``watermark_from``), and the rows without an updated-at unless the source skips them.
    ``oldest``: the table's oldest updated-at, to slice a first batch evenly."""
    jdbc = source.jdbc
    predicates = jdbc_predicates(source, jdbc_read_from(source, batch), batch.watermark_to, oldest)
    reader = _jdbc_reader(spark, source).option("fetchsize", str(jdbc.fetch_size))
    # DataFrameReader.jdbc with predicates: one partition (one query, one connection) per condition.
    properties = {k: v for k, v in (("user", jdbc.user), ("password", jdbc.password)) if v}
    df = reader.jdbc(jdbc.url, jdbc.table, predicates=predicates, properties={**properties, "driver": jdbc.driver})
    return df.withColumn("_source_file", F.lit(f"jdbc:{jdbc.table}"))


def drop_already_ingested(
    spark: SparkSession, root: str, source: SourceConfig, batch: Batch, rows: DataFrame, recent_batches: list[str]
) -> DataFrame:
    """Rows bronze does not hold unchanged yet: the look-back window and the NULL updated-at rows re-read rows
    earlier batches took. A row is a duplicate when every column bronze shares with it has the same value
    (SHA-256 of them as JSON); the same key with a change is a new version and kept. Only the bronze rows that can
    match are read: those of ``recent_batches`` (the look-back window) and those without an updated-at."""
    bronze_table = tables.bronze(source.name)
    if not tables.exists(spark, root, bronze_table):
        return rows
    bronze = tables.read(spark, root, bronze_table)
    types = {f.name: f.dataType for f in bronze.schema.fields}
    shared = sorted(c for c in rows.columns if c in types and c not in (*LINEAGE, RESCUED, CORRUPT))
    updated = F.col(source.updated_at)
    candidates = bronze.where(
        (F.col("_batch_id") != batch.batch_id)
        & (F.col("_batch_id").isin(recent_batches) | updated.isNull() if recent_batches else updated.isNull())
    )

    def digest(df: DataFrame, cast: bool) -> Column:
        values = [F.col(c).try_cast(types[c]).alias(c) if cast else F.col(c) for c in shared]
        return F.sha2(F.to_json(F.struct(*values)), 256)

    seen = candidates.select(digest(candidates, cast=False).alias("_digest")).distinct()
    marked = rows.withColumn("_digest", digest(rows, cast=True))
    return marked.join(seen, "_digest", "left_anti").drop("_digest")


# --------------------------------------------------------------------------------------------
# The batch log and one source's run
# --------------------------------------------------------------------------------------------


def _log_rows(spark: SparkSession, root: str, source: str) -> list:
    if not tables.exists(spark, root, tables.INGEST_LOG):
        return []
    return tables.read(spark, root, tables.INGEST_LOG).where(F.col("source") == source).collect()


def ingest_log_by_source(spark: SparkSession, root: str) -> dict[str, list]:
    """Every source's ``ops.ingest_log`` rows, in one read (a run plans all its sources from it)."""
    by_source: dict[str, list] = {}
    if tables.exists(spark, root, tables.INGEST_LOG):
        for row in tables.read(spark, root, tables.INGEST_LOG).collect():
            by_source.setdefault(row["source"], []).append(row)
    return by_source


class BatchPlanConflict(RuntimeError):
    """Another ingest planned the same batch number of a source first (two ingests at once without the lease)."""


def _append_log(
    spark: SparkSession,
    root: str,
    batch: Batch,
    status: str,
    run_id: str,
    result: BatchResult | None,
    options: dict[str, str] | None = None,
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
    with _SHARED_WRITES:
        tables.append(
            tables.rows_frame(spark, [row], tables.INGEST_LOG.schema), root, tables.INGEST_LOG, options=options
        )


def record_plan(spark: SparkSession, root: str, batch: Batch, run_id: str) -> None:
    """Record ``batch`` as planned, atomically: the plan's log row is a Delta transaction numbered by the batch
    (``cdp-ingest-plan-<source>``), so of two ingests planning the same number only one row lands (Delta skips
    or refuses the other); the loser finds its commit missing from the table's history and raises
    :class:`BatchPlanConflict` instead of reading files it never recorded. (The history is read, not the table:
    reading the table again would rebuild its snapshot once more per source.)"""
    marker = f"cdp-ingest plan {batch.batch_id} run {run_id}"
    txn = {"txnAppId": f"cdp-ingest-plan-{batch.source}", "txnVersion": str(batch.version), "userMetadata": marker}
    with _SHARED_WRITES:  # the sources of this run commit no plan in between: the marker is in the last few
        try:
            _append_log(spark, root, batch, "planned", run_id, None, options=txn)
        except Exception as exc:
            if "ConcurrentTransaction" not in type(exc).__name__ + str(exc):
                raise
        history = DeltaTable.forPath(spark, tables.INGEST_LOG.path(root)).history(20).select("userMetadata")
        if any(r["userMetadata"] == marker for r in history.collect()):
            return
    winners = {
        r["run_id"]
        for r in _log_rows(spark, root, batch.source)
        if r["batch_version"] == batch.version and r["status"] == "planned"
    }
    raise BatchPlanConflict(
        f"source {batch.source}: batch {batch.version} was planned by run {', '.join(sorted(winners))} at the same "
        "time (two ingests without the lakehouse lease?); rerun: it resumes that plan"
    )


def _recent_batches(spark: SparkSession, root: str, source: SourceConfig, batch: Batch) -> list[str]:
    """The committed batches that may hold rows of this batch's look-back window (their range ends inside it)."""
    read_from = jdbc_read_from(source, batch)
    if read_from is None or read_from == batch.watermark_from:
        return []
    start = _timestamp(read_from, source)
    return [
        Batch(source.name, r["batch_version"]).batch_id
        for r in _log_rows(spark, root, source.name)
        if r["status"] == "committed"
        and r["batch_version"] != batch.version
        and r["watermark_to"] is not None
        and _timestamp(r["watermark_to"], source) > start
    ]


def plan_batch(
    spark: SparkSession, root: str, source: SourceConfig, landing: str, run_id: str, log_rows: list | None = None
) -> Batch | None:
    """The batch to run now: an unfinished planned one, else the new files / watermark range, else None.
    ``log_rows``: the source's ``ops.ingest_log`` rows if already read (:func:`ingest_log_by_source`)."""
    if log_rows is None:
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
        marks = jdbc_watermarks(spark, source)
        if marks.nulls:
            if source.jdbc.null_updated_at == "skip":
                log.warning("[ingest] %s: %d row(s) without %s are skipped (null_updated_at: skip)",
                            source.name, marks.nulls, source.updated_at)  # fmt: skip
            else:
                log.info("[ingest] %s: %d row(s) without %s are read with each batch, kept once",
                         source.name, marks.nulls, source.updated_at)  # fmt: skip
        if marks.high is None or marks.high == low:
            return None
        batch = Batch(source.name, version, watermark_from=low, watermark_to=marks.high)
    else:
        done = {f for r in log_rows if r["status"] == "committed" for f in (r["files"] or ())}
        location = source.location(landing)
        if not source.allow_missing and not LakeFiles(spark).exists(location):
            raise FileNotFoundError(
                f"source {source.name}: path {location} does not exist (a mistyped path? set allow_missing: true "
                "on the source if it may not exist yet)"
            )
        new_files = tuple(f for f in list_files(spark, location) if f not in done)
        if not new_files:
            return None
        batch = Batch(source.name, version, files=new_files)
    record_plan(spark, root, batch, run_id)
    return batch


def run_batch(spark: SparkSession, root: str, source: SourceConfig, batch: Batch, run_id: str) -> BatchResult:
    """Read the batch, write good rows to bronze and malformed rows to quarantine (idempotently), commit it."""
    rows_reread, everything = 0, None
    if source.format == "jdbc":
        slice_first = batch.watermark_from is None and source.jdbc.num_partitions > 1
        raw = read_jdbc(spark, source, batch, jdbc_watermarks(spark, source).low if slice_first else None)
        recent = _recent_batches(spark, root, source, batch)
        if recent or source.jdbc.null_updated_at == "ingest_once":
            everything = raw.persist()  # read from the database once
            seen = everything.agg(F.count("*"), F.count_if(F.col(source.updated_at).isNull())).first()
            rows_reread = seen[0]  # for now: every row read; less the new ones below
            if recent or seen[1]:
                raw = drop_already_ingested(spark, root, source, batch, everything, recent)
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
        rows_reread = max(rows_reread - rows_read, 0)
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
            write_quarantine(rejected, root, txn)
    finally:
        raw.unpersist()
        if everything is not None:
            everything.unpersist()
    result = BatchResult(rows_read, rows_written, rows_quarantined, rows_reread)
    _append_log(spark, root, batch, "committed", run_id, result)
    return result
