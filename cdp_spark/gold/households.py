"""Households: people at the same normalized address (plus a shared surname or phone), never from junk values.

Every profile with an eligible address gets a row, a one-person household included: its ``household_id`` depends
only on the address key (and surname or phone), so it does not change when a second person moves in, and a
downstream join always finds each addressable person's household (``household_size`` tells singles apart).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from cdp_spark.gold.survivorship import HouseholdRules


def _normalized(value: Column) -> Column:
    collapsed = F.trim(F.regexp_replace(F.lower(value), r"\s+", " "))
    return F.when(collapsed != "", collapsed)


def address_key(address: Column, postcode: Column) -> Column:
    """Lowercased address and postcode, whitespace collapsed, ``|``-joined; null unless both are present."""
    street, code = _normalized(address), _normalized(postcode)
    return F.when(street.isNotNull() & code.isNotNull(), F.concat_ws("|", street, code))


def households(profiles: DataFrame, hot_identifiers: DataFrame, rules: HouseholdRules) -> DataFrame:
    """Group profiles into households.

    In: ``profiles`` (``cdp_id``, ``last_name``, ``phone``, ``address``, ``postcode``), ``hot_identifiers``
    (``value_hash`` = sha2(value, 256) of hot or blocked identifier values). Out: ``household_id``, ``cdp_id``,
    ``address_key``, ``household_size``. An address key is skipped when any profile's spelling of it (raw,
    normalized, or the key itself) is hot, when it is in ``blocked_addresses``, or when more than
    ``max_household_size`` profiles share it; with ``also_require: phone`` a hot or blocked phone joins no
    household either.
    """
    people = profiles.select(
        "cdp_id",
        address_key(F.col("address"), F.col("postcode")).alias("address_key"),
        _normalized(F.col("address")).alias("_street"),
        F.col("address").alias("_address"),
        _normalized(F.col("last_name")).alias("_surname"),
        F.col("phone").alias("_phone"),
    ).where(F.col("address_key").isNotNull())

    hot = F.broadcast(hot_identifiers.select("value_hash").where(F.col("value_hash").isNotNull()).distinct())
    # One hot spelling condemns the whole address key: the other spellings are the same junk place.
    hot_keys = None
    for column in ("_address", "_street", "address_key"):
        found = people.join(hot, F.sha2(people[column], 256) == hot["value_hash"], "left_semi").select("address_key")
        hot_keys = found if hot_keys is None else hot_keys.unionByName(found)
    people = people.join(hot_keys.distinct(), on="address_key", how="left_anti")
    blocked = [v.strip().lower() for v in rules.blocked_addresses]
    blocked = [" ".join(v.split()) for v in blocked]
    if blocked:
        people = people.where(~F.col("_street").isin(blocked))

    sharing = F.count(F.lit(1)).over(Window.partitionBy("address_key"))
    people = people.withColumn("_sharing", sharing).where(F.col("_sharing") <= rules.max_household_size)

    if rules.also_require == "surname":
        people = people.where(F.col("_surname").isNotNull())
        group = F.concat_ws("|", "address_key", "_surname")
    elif rules.also_require == "phone":
        people = people.where(F.col("_phone").isNotNull())
        people = people.join(hot, F.sha2(people["_phone"], 256) == hot["value_hash"], "left_anti")
        if rules.blocked_phones:
            people = people.where(~F.col("_phone").isin(list(rules.blocked_phones)))
        group = F.concat_ws("|", "address_key", "_phone")
    else:
        group = F.col("address_key")

    household_id = F.concat(F.lit("hh-"), F.substring(F.sha2(group, 256), 1, 20))
    return (
        people.withColumn("household_id", household_id)
        .withColumn("household_size", F.count(F.lit(1)).over(Window.partitionBy("household_id")))
        .select("household_id", "cdp_id", "address_key", F.col("household_size").cast("long"))
    )
