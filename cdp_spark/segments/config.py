"""Segments as data (`conf/segments.yaml`): a name, a Spark SQL condition, and an optional exclusive group.

Conditions are checked against the schema of the view they run on (profile + features + scores at
one as-of) before any data is read, so a typo fails with the segment's name and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import re

from pydantic import Field, field_validator, model_validator
from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from cdp_spark import tables
from cdp_spark.config import ConfigError, Strict, load_model_file


class SegmentDefinition(Strict):
    name: str
    description: str = ""
    condition: str = Field(description="Spark SQL boolean over the segment view; null counts as false")
    exclusive_group: str | None = Field(
        None, description="segments sharing a group never overlap: a customer joins the one with the lowest priority"
    )
    priority: int = Field(100, description="lower wins within an exclusive group")

    @field_validator("name")
    @classmethod
    def _identifier(cls, name: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError("must be lower_snake_case (it names the segment in tables and exports)")
        return name

    @field_validator("condition")
    @classmethod
    def _not_blank(cls, condition: str) -> str:
        if not condition.strip():
            raise ValueError("must be a Spark SQL boolean expression, got an empty string")
        return condition.strip()


class SegmentsConfig(Strict):
    segments: list[SegmentDefinition] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> SegmentsConfig:
        names = [s.name for s in self.segments]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"segment names must be unique, repeated: {', '.join(dupes)}")
        return self

    def get(self, name: str) -> SegmentDefinition:
        for segment in self.segments:
            if segment.name == name:
                return segment
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.segments]

    def definitions_hash(self) -> str:
        """SHA-256 of the definitions (order-independent): exports name the segment logic they were built with."""
        canonical = sorted((s.model_dump() for s in self.segments), key=lambda s: s["name"])
        return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def load_segments(path: str) -> SegmentsConfig:
    return load_model_file(SegmentsConfig, path)


def describe_sql_error(exc: AnalysisException) -> str:
    """Spark's analysis/parse error as one sentence a person can act on."""
    condition = exc.getCondition() or ""
    params = exc.getMessageParameters() or {}
    if condition.startswith("UNRESOLVED_COLUMN"):
        proposal = params.get("proposal")
        hint = f"; did you mean one of {proposal}?" if proposal else ""
        return f"unknown column {params.get('objectName', '')}{hint}"
    if condition == "PARSE_SYNTAX_ERROR":
        return f"SQL syntax error at or near {params.get('error', '?')}{params.get('hint', '')}"
    if "NOT_BOOLEAN" in condition or "DATATYPE_MISMATCH" in condition:
        first = str(exc).strip().splitlines()[0]
        return f"not a boolean condition over the view's columns: {first}"
    return str(exc).strip().splitlines()[0]


def check_conditions(spark: SparkSession, config: SegmentsConfig, schema: T.StructType, source: str) -> None:
    """Fail with a ConfigError naming the segment when a condition does not parse or resolve against ``schema``.

    ``source`` names the file in the message. Uses Spark's own parser and analyzer on an empty DataFrame.
    """
    empty = tables.rows_frame(spark, [], schema)
    problems = []
    for segment in config.segments:
        try:
            # .schema forces analysis now, also where analysis would otherwise be lazy (Spark Connect).
            _ = empty.where(segment.condition).schema
        except AnalysisException as exc:
            problems.append(f"{source}: segments[{segment.name}].condition: {describe_sql_error(exc)}")
    if problems:
        raise ConfigError("\n".join(problems))
