"""The erasure suppression list (``silver.erasure_suppression``): people who must not come back.

Erasure adds the keyed hashes (:class:`cdp_spark.hashing.HashKey`) of a person's identifiers (record ids,
email, phone, loyalty and account ids, ``cdp_id``) to the list. Every place where data enters a layer or
leaves the platform checks it: standardize drops new rows that carry a listed identifier before they
reach silver (so a re-sent CRM file does not re-create the person), and activation never exports a
listed person.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp_spark import tables
from cdp_spark.config import ConfigError
from cdp_spark.hashing import HashKey, keyed_identifier, load_hash_key, with_keyed

# Columns whose value is one of a person's identifiers, under the plan's kind of the same name.
PERSON_KINDS = ("cdp_id", "record_id", "email", "phone", "loyalty_id", "account_id")
# silver.consent names its identifier in two columns.
TYPED_KINDS = ("email", "phone")


@dataclass(frozen=True)
class Suppression:
    """The list's ``kind, value_hash`` rows and the key they were hashed with."""

    listed: DataFrame
    key: HashKey

    def persist(self) -> Suppression:
        return Suppression(self.listed.persist(), self.key)

    def unpersist(self) -> None:
        self.listed.unpersist()


def keyed_rows(rows: DataFrame, key: HashKey, table: str) -> DataFrame:
    """``rows`` (``kind, value_hash[, key_id]``) with every hash keyed by ``key``.

    Rows hashed before keys existed (no or null ``key_id``: plain SHA-256) are keyed on the fly; rows
    hashed with another key are an error, since they would silently match nothing.
    """
    if "key_id" not in rows.columns:
        rows = rows.withColumn("key_id", F.lit(None).cast("string"))
    foreign = [
        r["key_id"]
        for r in rows.where(F.col("key_id").isNotNull() & (F.col("key_id") != key.key_id))
        .select("key_id")
        .distinct()
        .limit(5)
        .collect()
    ]
    if foreign:
        raise ConfigError(
            f"{table} holds hashes made with hash key {', '.join(sorted(foreign))}, but privacy.hash_key is "
            f"{key.key_id}: configure the key those rows were made with (a lost key cannot be recovered; its "
            "rows then match nothing and must be re-requested)"
        )
    keyed = with_keyed(rows.where(F.col("key_id").isNull()), key, {"value_hash": F.col("value_hash")})
    current = rows.where(F.col("key_id").isNotNull())
    return current.unionByName(keyed.withColumn("key_id", F.lit(key.key_id)))


def read_suppression(spark: SparkSession, root: str, hash_key: str | None) -> Suppression | None:
    """The list, or None when nobody was ever erased (nothing to check); ``hash_key``: privacy.hash_key."""
    if not tables.exists(spark, root, tables.ERASURE_SUPPRESSION):
        return None
    key = load_hash_key(spark, root, hash_key)
    stored = tables.read(spark, root, tables.ERASURE_SUPPRESSION)
    listed = keyed_rows(stored, key, tables.ERASURE_SUPPRESSION.full_name).select("kind", "value_hash")
    return None if listed.isEmpty() else Suppression(listed, key)


def _identifiers(columns: list[str]) -> list[tuple[str, Column]]:
    """(kind, value) for every identifier a row with these columns carries."""
    out = [(kind, F.col(kind)) for kind in PERSON_KINDS if kind in columns]
    if {"identifier_type", "identifier"} <= set(columns):
        for kind in TYPED_KINDS:
            out.append((kind, F.when(F.lower(F.col("identifier_type")) == kind, F.col("identifier"))))
    return out


def flag_suppressed(rows: DataFrame, suppression: Suppression | None, flag: str = "_suppressed") -> DataFrame:
    """Add boolean ``flag``: the row carries an identifier on the suppression list.

    In: any rows with some of ``cdp_id, record_id, email, phone, loyalty_id, account_id`` or
    ``identifier_type`` + ``identifier`` (standardized values); the list. Out: the same rows and ``flag``.
    Each identifier is keyed once, then one left join per identifier column against that kind's distinct
    hashes (a small table Spark broadcasts), so no row is multiplied and none is lost.
    """
    identifiers = _identifiers(rows.columns)
    if suppression is None or not identifiers:
        return rows.withColumn(flag, F.lit(False))
    hashed = {f"_sup_value_{i}": keyed_identifier(kind, value) for i, (kind, value) in enumerate(identifiers)}
    out, hits = with_keyed(rows, suppression.key, hashed), []
    for i, (kind, _) in enumerate(identifiers):
        value, listed, hit = f"_sup_value_{i}", f"_sup_listed_{i}", f"_sup_hit_{i}"
        hashes = (
            suppression.listed.where(F.col("kind") == kind)
            .select(F.col("value_hash").alias(listed))
            .distinct()
            .withColumn(hit, F.lit(True))
        )
        out = out.join(hashes, F.col(value) == F.col(listed), "left").drop(value, listed)
        hits.append(F.coalesce(F.col(hit), F.lit(False)))
    return out.withColumn(flag, reduce(lambda a, b: a | b, hits)).drop(*[f"_sup_hit_{i}" for i in range(len(hits))])


def without_suppressed(rows: DataFrame, suppression: Suppression | None) -> DataFrame:
    """The rows of people not on the suppression list (see :func:`flag_suppressed`)."""
    if suppression is None:
        return rows
    return flag_suppressed(rows, suppression).where(~F.col("_suppressed")).drop("_suppressed")
