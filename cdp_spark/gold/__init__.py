"""Gold layer for notebooks: golden profiles, households and point-in-time features, read from the lakehouse.

from cdp_spark import gold
gold.profiles(spark, "lakehouse").where("record_count > 3").show()
view = gold.profile_of(spark, "lakehouse", "cdp-0123")
view.profile, view.records.show()
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from cdp_spark import tables

# The submodules share their names with the functions below; importing them first lets the functions win the
# package attributes (``gold.profiles(...)`` is the function; ``from cdp_spark.gold.profiles import ...`` works).
from cdp_spark.gold import households as _households_module  # noqa: F401
from cdp_spark.gold import profiles as _profiles_module  # noqa: F401


class ProfileView(NamedTuple):
    """One person: the golden profile row and every source record behind it (customer_records columns)."""

    profile: Row
    records: DataFrame


def profiles(spark: SparkSession, root: str) -> DataFrame:
    """gold.customer_profile."""
    return tables.read(spark, root, tables.CUSTOMER_PROFILE)


def households(spark: SparkSession, root: str) -> DataFrame:
    """gold.households."""
    return tables.read(spark, root, tables.HOUSEHOLDS)


def features(spark: SparkSession, root: str, as_of: dt.date | str | None = None) -> DataFrame:
    """gold.customer_features of one as_of date (the latest one when None)."""
    snapshots = tables.read(spark, root, tables.CUSTOMER_FEATURES)
    if as_of is None:
        as_of = snapshots.agg(F.max("as_of")).first()[0]
        if as_of is None:
            raise LookupError("gold.customer_features holds no snapshot yet: run `cdp-spark profiles`")
    if isinstance(as_of, str):
        as_of = dt.date.fromisoformat(as_of)
    return snapshots.where(F.col("as_of") == F.lit(as_of))


def profile_of(spark: SparkSession, root: str, cdp_id: str) -> ProfileView:
    """The profile of ``cdp_id`` and its records (anonymous ones as bare ``record_id`` rows with null attributes)."""
    row = profiles(spark, root).where(F.col("cdp_id") == cdp_id).first()
    if row is None:
        raise LookupError(f"no profile with cdp_id {cdp_id!r} in gold.customer_profile")
    members = (
        tables.read(spark, root, tables.IDENTITY_MAP).where(F.col("cdp_id") == cdp_id).select("record_id", "cdp_id")
    )
    records = members.join(tables.read(spark, root, tables.CUSTOMER_RECORDS), on="record_id", how="left")
    return ProfileView(row, records)
