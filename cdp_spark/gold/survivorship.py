"""Survivorship as data (`conf/profiles.yaml`): which record's value becomes a profile's golden value, and why.

Every rule is an ordering of a person's candidate records, computed with aggregates and window functions only
(``min_by`` over a comparable ordering struct), and every tie is broken the same way in the end: the more recent
``updated_at`` first (where the rule has not already used it), then the smaller ``record_id``. So the same records
always give the same profile, whatever the partitioning.

Rules:

- ``source_priority``: the best-ranked source in ``sources`` that has a value (sources not listed rank after all
  listed ones, so a value is never lost because a source was forgotten); ties -> most recent.
- ``most_recent``: the value of the most recently updated record.
- ``most_frequent``: the value held by most records; ties -> the value of the most recent such record.
- ``first_non_null``: the value of the earliest updated record (birth dates: the first statement is the careful one).
- ``union``: every distinct value, most frequent first, then most recent, then the value itself; at most ``limit``.

A single-valued attribute may take several ``columns`` together (the address group: address, city, postcode,
country), so the parts always come from one record; a record is a candidate when the group's first column is
not null. Each chosen single value records its provenance: ``struct<source, record_id, rule>``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from cdp_spark.config import Strict, load_model_file

RuleName = Literal["source_priority", "most_recent", "most_frequent", "first_non_null", "union"]

# The golden columns docs/tables.md promises in gold.customer_profile; the config must produce each one.
CONTRACT_SINGLE_COLUMNS = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "address",
    "city",
    "postcode",
    "country",
    "birth_date",
)
CONTRACT_MULTI_COLUMNS = ("emails", "phones", "loyalty_ids", "account_ids")

_NEVER = 2**63 - 1  # ordering value of a missing updated_at: after every real one


class AttributeRule(Strict):
    """How one golden attribute survives. ``columns`` are columns of silver.customer_records."""

    rule: RuleName
    columns: list[str] | None = Field(
        None, min_length=1, description="record columns taken together (default: the attribute's own name)"
    )
    sources: list[str] = Field(default_factory=list, description="source_priority: sources, best first")
    limit: int | None = Field(None, gt=0, description="union: most values kept")

    @model_validator(mode="after")
    def _consistent(self) -> AttributeRule:
        if self.rule == "source_priority" and not self.sources:
            raise ValueError("rule source_priority needs a non-empty list of sources, best first")
        if self.rule != "source_priority" and self.sources:
            raise ValueError(f"sources is only for rule source_priority, not {self.rule}")
        if self.rule == "union":
            if self.limit is None:
                raise ValueError("rule union needs a limit (the most values kept)")
            if not self.columns or len(self.columns) != 1:
                raise ValueError("rule union takes exactly one record column, e.g. columns: [email]")
        elif self.limit is not None:
            raise ValueError(f"limit is only for rule union, not {self.rule}")
        return self


class HouseholdRules(Strict):
    """Who shares a household: the same normalized address key, plus ``also_require``."""

    also_require: Literal["surname", "phone", "none"] = "surname"
    max_household_size: int = Field(8, gt=1, description="an address key shared by more profiles is junk")
    blocked_addresses: list[str] = Field(default_factory=list, description="never a household (compared normalized)")
    blocked_phones: list[str] = Field(default_factory=list, description="E.164; never joins a household")


class ProfilesConfig(Strict):
    attributes: dict[str, AttributeRule]
    households: HouseholdRules = Field(default_factory=HouseholdRules)

    @model_validator(mode="after")
    def _covers_contract(self) -> ProfilesConfig:
        produced: list[str] = []
        for name, rule in self.attributes.items():
            produced.extend(output_columns(name, rule))
        duplicated = sorted({c for c in produced if produced.count(c) > 1})
        if duplicated:
            raise ValueError(f"attributes produce these profile columns more than once: {duplicated}")
        singles = {c for n, r in self.attributes.items() if r.rule != "union" for c in output_columns(n, r)}
        multis = {n for n, r in self.attributes.items() if r.rule == "union"}
        missing = [c for c in CONTRACT_SINGLE_COLUMNS if c not in singles]
        missing += [c for c in CONTRACT_MULTI_COLUMNS if c not in multis]
        if missing:
            raise ValueError(
                f"gold.customer_profile needs these columns, which no attribute produces: {missing} "
                "(single values need a non-union rule, the plural arrays rule union)"
            )
        return self


def load_profiles(path: str) -> ProfilesConfig:
    return load_model_file(ProfilesConfig, path)


def output_columns(name: str, rule: AttributeRule) -> list[str]:
    """The profile columns an attribute produces: its record columns (single), or its own name (union array)."""
    if rule.rule == "union":
        return [name]
    return record_columns(name, rule)


def record_columns(name: str, rule: AttributeRule) -> list[str]:
    return list(rule.columns or [name])


def _recent_first(updated_at: str) -> Column:
    return F.coalesce(-F.unix_micros(F.col(updated_at)), F.lit(_NEVER))


def _oldest_first(updated_at: str) -> Column:
    return F.coalesce(F.unix_micros(F.col(updated_at)), F.lit(_NEVER))


def prepare(candidates: DataFrame, attributes: dict[str, AttributeRule], updated_at: str = "updated_at") -> DataFrame:
    """Add the per-value counts that most_frequent and union rank by (one window per such attribute).

    In: one row per (cdp_id, record) with ``cdp_id``, ``record_id``, ``source``, ``updated_at`` and the record
    columns the attributes name. Out: the same plus ``_n_<attribute>`` (records of this person with this value)
    and, for union, ``_last_<attribute>`` (the value's most recent updated_at).
    """
    needed = {c for n, r in attributes.items() for c in record_columns(n, r)}
    missing = sorted(needed - set(candidates.columns))
    if missing:
        raise ValueError(f"survivorship: the records have no column(s) {missing} named in the attributes")
    out = candidates
    for name, rule in attributes.items():
        if rule.rule not in ("most_frequent", "union"):
            continue
        columns = record_columns(name, rule)
        by_value = Window.partitionBy("cdp_id", *columns)
        present = F.col(columns[0]).isNotNull()
        out = out.withColumn(f"_n_{name}", F.when(present, F.count(F.lit(1)).over(by_value)))
        if rule.rule == "union":
            out = out.withColumn(f"_last_{name}", F.when(present, F.max(updated_at).over(by_value)))
    return out


def _ordering(name: str, rule: AttributeRule, updated_at: str) -> Column:
    """A struct whose minimum is the winning record (null for records that are no candidate)."""
    record_id = F.col("record_id").alias("record_id")
    if rule.rule == "source_priority":
        position = F.array_position(F.array(*[F.lit(s) for s in rule.sources]), F.col("source"))
        rank = F.when(position > 0, position).otherwise(F.lit(len(rule.sources) + 1))
        keys = [rank.alias("rank"), _recent_first(updated_at).alias("recency"), record_id]
    elif rule.rule == "most_recent":
        keys = [_recent_first(updated_at).alias("recency"), record_id]
    elif rule.rule == "most_frequent":
        keys = [(-F.col(f"_n_{name}")).alias("frequency"), _recent_first(updated_at).alias("recency"), record_id]
    elif rule.rule == "first_non_null":
        keys = [_oldest_first(updated_at).alias("age"), record_id]
    else:
        raise ValueError(f"rule {rule.rule} is not single-valued")
    first = record_columns(name, rule)[0]
    return F.when(F.col(first).isNotNull(), F.struct(*keys))


def aggregations(
    attributes: dict[str, AttributeRule], updated_at: str = "updated_at"
) -> tuple[list[Column], list[Column], Column]:
    """Aggregate expressions over ``prepare``'s output grouped by cdp_id, and the columns to select after them.

    Returns ``(aggregates, golden, provenance)``: ``aggregates`` go into ``groupBy("cdp_id").agg``; ``golden``
    (one column per profile output column) and ``provenance`` (``map<attribute, struct<source, record_id,
    rule>>``, only attributes that have a value) are selected from its result.
    """
    aggregates: list[Column] = []
    golden: list[Column] = []
    entries: list[Column] = []
    for name, rule in attributes.items():
        columns = record_columns(name, rule)
        if rule.rule == "union":
            column = columns[0]
            ranked = F.when(
                F.col(column).isNotNull(),
                F.struct(
                    (-F.col(f"_n_{name}")).alias("frequency"),
                    _recent_first(f"_last_{name}").alias("recency"),
                    F.col(column).alias("value"),
                ),
            )
            aggregates.append(F.collect_set(ranked).alias(f"_union_{name}"))
            values = F.transform(F.array_sort(F.col(f"_union_{name}")), lambda v: v["value"])
            golden.append(F.slice(values, 1, rule.limit).alias(name))
            continue
        chosen = F.struct(*[F.col(c) for c in columns], F.col("source"), F.col("record_id"))
        aggregates.append(F.min_by(chosen, _ordering(name, rule, updated_at)).alias(f"_chosen_{name}"))
        winner = F.col(f"_chosen_{name}")
        golden.extend(winner[c].alias(c) for c in columns)
        origin = F.struct(
            winner["source"].alias("source"), winner["record_id"].alias("record_id"), F.lit(rule.rule).alias("rule")
        )
        entries.append(F.struct(F.lit(name).alias("key"), F.when(winner.isNotNull(), origin).alias("value")))
    provenance = F.map_from_entries(F.filter(F.array(*entries), lambda e: e["value"].isNotNull()))
    return aggregates, golden, provenance.alias("provenance")
