"""Keyed hash (HMAC from sha2, key in a broadcast frame) vs plain SHA-256 per value, side by side (not a test).

    python benchmarks/keyed_hash.py [--rows 4000000] [--repeat 3] [--master local[2]]

What standardize pays per identifier once an erasure exists (every new row's identifiers are keyed before
the suppression join) and what erasure pays per candidate value. Each variant hashes the same generated
emails and sums a hash prefix so nothing is skipped; runs alternate, best of ``--repeat`` is reported.
"""

from __future__ import annotations

import argparse
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from cdp_spark.hashing import HashKey, identifier_hash, keyed_identifier, with_keyed


def timed(df) -> float:  # noqa: ANN001
    started = time.perf_counter()
    df.agg(F.sum(F.conv(F.substring("h", 1, 6), 16, 10).cast("long"))).collect()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()
    spark = SparkSession.builder.master(args.master).config("spark.ui.enabled", "false").getOrCreate()
    emails = spark.range(args.rows).select(F.concat(F.lit("Person."), F.col("id"), F.lit("@Example.com")).alias("e"))
    key = HashKey(b"benchmark-key-0123456789")
    variants = {
        "plain sha256": emails.select(identifier_hash("email", F.col("e")).alias("h")),
        "keyed (hmac)": with_keyed(emails, key, {"h": keyed_identifier("email", F.col("e"))}),
    }
    timed(variants["plain sha256"])  # warm-up
    best = {name: float("inf") for name in variants}
    for _ in range(args.repeat):
        for name, df in variants.items():
            best[name] = min(best[name], timed(df))
    for name, seconds in best.items():
        print(f"{name}: {seconds:.2f} s, {seconds / args.rows * 1e6:.2f} us/value")
    print(f"keyed / plain: {best['keyed (hmac)'] / best['plain sha256']:.2f}x")


if __name__ == "__main__":
    main()
