"""Deterministic links: records that share an identifier value, guarded against blocked and hot values."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from cdp_spark import tables
from cdp_spark.identity.rules import IdentityConfig

VALUES_SCHEMA = "record_id string, identifier string, value string"


def identifier_values(records: DataFrame, config: IdentityConfig) -> DataFrame:
    """One row per (record, identifier, value) from the identifier columns named in config (arrays exploded).

    In: ``config.record_id`` and each identifier's column. Out: ``record_id, identifier, value``.
    """
    parts = []
    for rule in config.identifiers:
        if rule.column is None:
            continue
        column = F.col(f"`{rule.column}`")
        if isinstance(records.schema[rule.column].dataType, T.ArrayType):
            column = F.explode_outer(column)
        parts.append(
            records.select(
                F.col(f"`{config.record_id}`").cast("string").alias("record_id"),
                F.lit(rule.name).alias("identifier"),
                F.trim(column.cast("string")).alias("value"),
            )
        )
    if not parts:
        return tables.rows_frame(records.sparkSession, [], VALUES_SCHEMA)
    values = parts[0]
    for part in parts[1:]:
        values = values.unionByName(part)
    return values.where(F.col("value").isNotNull() & (F.col("value") != "")).distinct()


def anonymous_records(facts: dict[str, DataFrame], config: IdentityConfig) -> DataFrame | None:
    """Identifiers seen together in fact rows, as anonymous records keyed by the anchor (e.g. ``cookie:c1``).

    A login event with cookie c1, account a1 and an email makes record ``cookie:c1`` carry all three,
    so it links to the account's and the email's records like any other record.
    Out: ``record_id, identifier, value``.
    """
    parts = []
    for fact in config.facts:
        if fact.table not in facts:
            continue
        table = facts[fact.table]
        anchor = F.col(f"`{fact.identifiers[fact.anchor]}`").cast("string")
        rows = table.where(anchor.isNotNull() & (F.trim(anchor) != ""))
        stacked = F.explode(
            F.array(
                *[
                    F.struct(F.lit(name).alias("identifier"), F.trim(F.col(f"`{col}`").cast("string")).alias("value"))
                    for name, col in fact.identifiers.items()
                ]
            )
        )
        parts.append(
            rows.select(
                F.concat(F.lit(f"{fact.anchor}:"), F.trim(anchor)).alias("record_id"), stacked.alias("v")
            ).select("record_id", "v.identifier", "v.value")
        )
    if not parts:
        return None
    values = parts[0]
    for part in parts[1:]:
        values = values.unionByName(part)
    return values.where(F.col("value").isNotNull() & (F.col("value") != "")).distinct()


def guard_values(values: DataFrame, config: IdentityConfig) -> tuple[DataFrame, DataFrame]:
    """Split identifier values into usable ones and the guarded ones (blocked or hot), with a reason.

    Out: (``record_id, identifier, value`` usable, ``identifier, value, records, reason`` guarded).
    """
    blocked_rows = [(rule.name, v.strip().lower()) for rule in config.identifiers for v in rule.blocked]
    spark = values.sparkSession
    blocked = tables.rows_frame(spark, blocked_rows or [("", "")], "identifier string, blocked_value string")
    per_value = values.groupBy("identifier", "value").agg(F.countDistinct("record_id").alias("records"))
    per_value = per_value.join(
        F.broadcast(blocked),
        (per_value.identifier == blocked.identifier) & (F.lower(per_value.value) == blocked.blocked_value),
        "left",
    ).select(per_value["*"], blocked.blocked_value.isNotNull().alias("is_blocked"))
    reason = (
        F.when(F.col("is_blocked"), F.lit("blocked"))
        .when(F.col("records") > config.hot_value_threshold, F.lit("hot"))
        .otherwise(F.lit(None))
    )
    per_value = per_value.withColumn("reason", reason)
    guarded = per_value.where(F.col("reason").isNotNull()).select("identifier", "value", "records", "reason")
    usable = values.join(
        per_value.where(F.col("reason").isNull()).select("identifier", "value"),
        ["identifier", "value"],
        "left_semi",
    )
    return usable, guarded


def deterministic_edges(usable_values: DataFrame) -> DataFrame:
    """Link every record of a shared value to the group's smallest record id (a star: n-1 edges, not n^2).

    In: ``record_id, identifier, value``. Out: ``src_record_id, dst_record_id, rule, score, identifier``
    (the value itself stays with the records, so the edge table holds no personal data).
    """
    group = Window.partitionBy("identifier", "value")
    return (
        usable_values.withColumn("dst_record_id", F.min("record_id").over(group))
        .where(F.col("record_id") != F.col("dst_record_id"))
        .select(
            F.col("record_id").alias("src_record_id"),
            "dst_record_id",
            F.concat(F.lit("deterministic:"), F.col("identifier")).alias("rule"),
            F.lit(1.0).alias("score"),
            "identifier",
        )
    )
