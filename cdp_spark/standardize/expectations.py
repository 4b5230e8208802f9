"""Data-quality expectations as data (`conf/expectations.yaml`): a name, a SQL boolean and an action per table.

- ``warn``: rows are kept; the failures are counted.
- ``quarantine``: failing rows go to ``silver.quarantine`` with the expectation's name and are not merged.
- ``fail``: the job stops with a message naming the expectation, the count and a few offending keys
  (e-mails and phone numbers among them masked).

A row whose expression is NULL fails it (an expectation is a claim that must be *true*).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from typing import Literal

from pydantic import Field, field_validator
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cdp_spark.config import Strict, load_model_file
from cdp_spark.redact import redact_value


class Expectation(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    expr: str
    action: Literal["warn", "quarantine", "fail"] = "warn"
    description: str | None = None

    @field_validator("expr")
    @classmethod
    def _not_blank(cls, expr: str) -> str:
        if not expr.strip():
            raise ValueError("must be a SQL boolean expression")
        return expr


class ExpectationsConfig(Strict):
    tables: dict[str, list[Expectation]] = Field(default_factory=dict)

    def for_table(self, table: str) -> list[Expectation]:
        return self.tables.get(table, [])


def load_expectations(path: str) -> ExpectationsConfig:
    return load_model_file(ExpectationsConfig, path)


class DataQualityError(RuntimeError):
    """An expectation with action ``fail`` was violated."""


@dataclass(frozen=True)
class ExpectationResult:
    table: str
    expectation: str
    action: str
    passed: int
    failed: int


def _flag(expectation: Expectation) -> str:
    return f"_dq_{expectation.name}"


def _holds(expectation: Expectation) -> Column:
    return F.coalesce(F.expr(expectation.expr).cast("boolean"), F.lit(False))


def evaluate(df: DataFrame, expectations: list[Expectation]) -> DataFrame:
    """Add one boolean column ``_dq_<name>`` per expectation (true = holds)."""
    for expectation in expectations:
        try:
            df = df.withColumn(_flag(expectation), _holds(expectation))
        except Exception as exc:  # an unknown column or a syntax error, found before any data is read
            raise DataQualityError(
                f"expectation {expectation.name!r}: cannot evaluate {expectation.expr!r}: {exc}"
            ) from exc
    return df


def count_results(
    flagged: DataFrame, table: str, expectations: list[Expectation], by: str | None = None
) -> dict[str | None, tuple[list[ExpectationResult], int]]:
    """Pass/fail counts per expectation, and the rows failing any ``quarantine`` one, in one aggregation pass.

    Per value of the column ``by`` (e.g. the source), or under the key None for all rows. A group with no
    rows is absent.
    """
    if not expectations:
        return {}
    aggregates = []
    for expectation in expectations:
        flag = F.col(_flag(expectation))
        aggregates += [
            F.count_if(flag).alias(f"p_{expectation.name}"),
            F.count_if(~flag).alias(f"f_{expectation.name}"),
        ]
    quarantining = [F.col(_flag(e)) for e in expectations if e.action == "quarantine"]
    holds_all = reduce(lambda a, b: a & b, quarantining, F.lit(True))
    group = F.col(by) if by else F.lit(None).cast("string")
    rows = flagged.groupBy(group.alias("_group")).agg(*aggregates, F.count_if(~holds_all).alias("_quarantined"))
    return {
        row["_group"]: (
            [
                ExpectationResult(table, e.name, e.action, int(row[f"p_{e.name}"]), int(row[f"f_{e.name}"]))
                for e in expectations
            ],
            int(row["_quarantined"]),
        )
        for row in rows.collect()
    }


def merged_results(
    counted: dict[str | None, tuple[list[ExpectationResult], int]], table: str, expectations: list[Expectation]
) -> list[ExpectationResult]:
    """The per-group counts of ``count_results`` summed over the groups, one result per expectation."""
    return [
        ExpectationResult(
            table,
            e.name,
            e.action,
            sum(results[i].passed for results, _ in counted.values()),
            sum(results[i].failed for results, _ in counted.values()),
        )
        for i, e in enumerate(expectations)
    ]


def enforce(
    flagged: DataFrame, table: str, expectations: list[Expectation], results: list[ExpectationResult], key_column: str
) -> tuple[DataFrame, DataFrame | None]:
    """Apply the actions: raise for ``fail``; split off rows failing a ``quarantine`` expectation.

    Returns (rows to keep without the flag columns, quarantined rows with a ``_dq_failed`` array of the
    names they broke, or None).
    """
    for expectation, result in zip(expectations, results, strict=True):
        if expectation.action == "fail" and result.failed:
            examples = [r[0] for r in flagged.where(~F.col(_flag(expectation))).select(key_column).limit(5).collect()]
            raise DataQualityError(
                f"{table}: expectation {expectation.name!r} ({expectation.expr}) failed for {result.failed} row(s); "
                f"examples of {key_column}: {', '.join(map(redact_value, examples))}"
            )
    flags = [_flag(e) for e in expectations]
    quarantining = [e for e, r in zip(expectations, results, strict=True) if e.action == "quarantine" and r.failed]
    if not quarantining:
        return flagged.drop(*flags), None
    failed_names = F.filter(
        F.array(*[F.when(~F.col(_flag(e)), F.lit(e.name)) for e in quarantining]), lambda x: x.isNotNull()
    )
    flagged = flagged.withColumn("_dq_failed", failed_names)
    kept = flagged.where(F.size("_dq_failed") == 0).drop(*flags, "_dq_failed")
    rejected = flagged.where(F.size("_dq_failed") > 0).drop(*flags)
    return kept, rejected
