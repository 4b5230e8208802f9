"""The erasure suppression list (``silver.erasure_suppression``): people who must not come back.

Erasure adds the hashes of a person's identifiers (record ids, email, phone, loyalty and account ids,
``cdp_id``) to the list. Every place where data enters a layer or leaves the platform checks it:
standardize drops new rows that carry a listed identifier before they reach silver (so a re-sent CRM file
does not re-create the person), and activation never exports a listed person.
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp_spark import tables
from cdp_spark.hashing import identifier_hash

# Columns whose value is one of a person's identifiers, under the plan's kind of the same name.
PERSON_KINDS = ("cdp_id", "record_id", "email", "phone", "loyalty_id", "account_id")
# silver.consent names its identifier in two columns.
TYPED_KINDS = ("email", "phone")


def read_suppression(spark: SparkSession, root: str) -> DataFrame | None:
    """The list's ``kind, value_hash`` rows, or None when nobody was ever erased (nothing to check)."""
    if not tables.exists(spark, root, tables.ERASURE_SUPPRESSION):
        return None
    listed = tables.read(spark, root, tables.ERASURE_SUPPRESSION).select("kind", "value_hash")
    return None if listed.isEmpty() else listed


def _identifiers(columns: list[str]) -> list[tuple[str, Column]]:
    """(kind, value) for every identifier a row with these columns carries."""
    out = [(kind, F.col(kind)) for kind in PERSON_KINDS if kind in columns]
    if {"identifier_type", "identifier"} <= set(columns):
        for kind in TYPED_KINDS:
            out.append((kind, F.when(F.lower(F.col("identifier_type")) == kind, F.col("identifier"))))
    return out


def flag_suppressed(rows: DataFrame, suppression: DataFrame | None, flag: str = "_suppressed") -> DataFrame:
    """Add boolean ``flag``: the row carries an identifier on the suppression list.

    In: any rows with some of ``cdp_id, record_id, email, phone, loyalty_id, account_id`` or
    ``identifier_type`` + ``identifier`` (standardized values); the list's ``kind, value_hash``.
    Out: the same rows and ``flag``. One left join per identifier column against that kind's distinct
    hashes (a small table Spark broadcasts), so no row is multiplied and none is lost.
    """
    identifiers = _identifiers(rows.columns)
    if suppression is None or not identifiers:
        return rows.withColumn(flag, F.lit(False))
    out, hits = rows, []
    for i, (kind, value) in enumerate(identifiers):
        hashed, listed, hit = f"_sup_value_{i}", f"_sup_listed_{i}", f"_sup_hit_{i}"
        hashes = (
            suppression.where(F.col("kind") == kind)
            .select(F.col("value_hash").alias(listed))
            .distinct()
            .withColumn(hit, F.lit(True))
        )
        out = (
            out.withColumn(hashed, identifier_hash(kind, value))
            .join(hashes, F.col(hashed) == F.col(listed), "left")
            .drop(hashed, listed)
        )
        hits.append(F.coalesce(F.col(hit), F.lit(False)))
    return out.withColumn(flag, reduce(lambda a, b: a | b, hits)).drop(*[f"_sup_hit_{i}" for i in range(len(hits))])


def without_suppressed(rows: DataFrame, suppression: DataFrame | None) -> DataFrame:
    """The rows of people not on the suppression list (see :func:`flag_suppressed`)."""
    if suppression is None:
        return rows
    return flag_suppressed(rows, suppression).where(~F.col("_suppressed")).drop("_suppressed")
