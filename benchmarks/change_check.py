"""The change check of a derived table's rewrite (issue 16; not a test): is the new content the table's?

    python benchmarks/change_check.py [--rows 1000000] [--rounds 3]

A ``gold.customer_profile`` of ``--rows`` synthetic rows (every column filled, ``provenance`` a map) is written
once; then, alternating in one process, each way of asking whether the same rows are already there:
``tables.overwrite_if_changed`` (one full outer join on the key, values compared null-safe) and ``exceptAll``
both ways (how profiles asked before 70f887c: two shuffles of both sides). Neither writes: the rows are the
table's. Prints seconds per round and the ratio of the medians.

Then what the identity change log adds to a resolve: for an identity map of ``--rows`` records of which 1% moved to
another ``cdp_id``, the change log's rows (``record_changes``, materialized and counted, as resolve does) beside
the map's own change check and rewrite, which resolve ran before the log existed.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cdp_spark import tables
from cdp_spark.config import LakehouseConfig, SparkConfig
from cdp_spark.identity.stable_ids import record_changes
from cdp_spark.session import build_session


def except_all_both_ways(df: DataFrame, root: str, table: tables.Table) -> bool:
    """The check profiles made before: ``exceptAll`` each way, maps as sorted entries."""

    def comparable(frame: DataFrame) -> DataFrame:
        return frame.select(
            *[
                F.array_sort(F.map_entries(f.name)).alias(f.name) if isinstance(f.dataType, T.MapType) else f.name
                for f in frame.schema.fields
            ]
        )

    new, old = comparable(df), comparable(tables.read(df.sparkSession, root, table))
    return new.exceptAll(old).limit(1).count() == 0 and old.exceptAll(new).limit(1).count() == 0


def profiles(spark, rows: int) -> DataFrame:
    columns = []
    for field in tables.CUSTOMER_PROFILE.schema.fields:
        if field.name == "cdp_id":
            value = F.concat(F.lit("cdp-"), F.col("id").cast("string"))
        elif field.name == "provenance":
            won = F.struct(
                F.lit("crm").alias("source"),
                F.concat(F.lit("crm:"), F.col("id").cast("string")).alias("record_id"),
                F.lit("most_recent").alias("rule"),
            )
            value = F.create_map(F.lit("email"), won, F.lit("phone"), won)
        elif isinstance(field.dataType, T.StringType):
            value = F.sha2(F.concat(F.lit(field.name), F.col("id").cast("string")), 256)
        elif isinstance(field.dataType, T.ArrayType):
            value = F.array(F.sha2(F.col("id").cast("string"), 224)).cast(field.dataType)
        elif isinstance(field.dataType, (T.LongType, T.IntegerType)):
            value = F.col("id").cast(field.dataType)
        else:
            value = F.lit(None).cast(field.dataType)
        columns.append(value.alias(field.name))
    return spark.range(rows).select(*columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="change-check-") + "/lakehouse"
    spark = build_session(
        SparkConfig(master="local[2]", driver_memory="4g", shuffle_partitions=4), LakehouseConfig(root=root)
    )
    tables.overwrite(profiles(spark, args.rows), root, tables.CUSTOMER_PROFILE)
    same = tables.read(spark, root, tables.CUSTOMER_PROFILE).checkpoint()
    ways = {
        "overwrite_if_changed": lambda: tables.overwrite_if_changed(same, root, tables.CUSTOMER_PROFILE) == 0,
        "exceptAll both ways": lambda: except_all_both_ways(same, root, tables.CUSTOMER_PROFILE),
    }
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for round_ in range(args.rounds):
        for name, check in ways.items():
            start = time.perf_counter()
            unchanged = check()
            seconds[name].append(time.perf_counter() - start)
            assert unchanged, f"{name} found a change in the table's own rows"
            print(f"round {round_}: {name} {seconds[name][-1]:.2f} s", flush=True)
    report(args.rows, seconds, "overwrite_if_changed", "exceptAll both ways")

    def cdp_id(moved: bool) -> F.Column:
        return F.concat(F.lit("cdp-"), ((F.col("id") / 3).cast("long") + F.lit(7 if moved else 0)).cast("string"))

    before = spark.range(args.rows).select(
        F.concat(F.lit("r"), F.col("id").cast("string")).alias("record_id"),
        cdp_id(False).alias("cdp_id"),
        F.lit(3).cast("long").alias("component_size"),
    )
    tables.overwrite(before, root, tables.IDENTITY_MAP)
    previous = tables.read(spark, root, tables.IDENTITY_MAP).select("record_id", "cdp_id")
    after = (
        spark.range(args.rows)
        .select(
            F.concat(F.lit("r"), F.col("id").cast("string")).alias("record_id"),
            cdp_id(True).alias("moved"),
            cdp_id(False).alias("cdp_id"),
            F.lit(3).cast("long").alias("component_size"),
            (F.col("id") % 100 == 0).alias("_moves"),
        )
        .select("record_id", F.when(F.col("_moves"), F.col("moved")).otherwise(F.col("cdp_id")).alias("cdp_id"),
                "component_size")
        .checkpoint()
    )  # fmt: skip
    ways = {
        "change log": lambda: record_changes(previous, after).checkpoint().count() == math.ceil(args.rows / 100),
        "map check and rewrite": lambda: tables.overwrite_if_changed(after, root, tables.IDENTITY_MAP) == 1,
    }
    seconds = {name: [] for name in ways}
    for round_ in range(args.rounds):
        for name, step in ways.items():
            start = time.perf_counter()
            assert step(), name
            seconds[name].append(time.perf_counter() - start)
            print(f"round {round_}: {name} {seconds[name][-1]:.2f} s", flush=True)
            if name == "map check and rewrite":  # it wrote the moved map: put the map back for the next round
                tables.overwrite(before, root, tables.IDENTITY_MAP)
    report(args.rows, seconds, "change log", "map check and rewrite")


def report(rows: int, seconds: dict[str, list[float]], first: str, second: str) -> None:
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    print(f"{rows} rows: " + ", ".join(f"{n} {m:.2f} s" for n, m in medians.items()))
    print(f"ratio {first} / {second}: {medians[first] / medians[second]:.2f}x", flush=True)


if __name__ == "__main__":
    main()
