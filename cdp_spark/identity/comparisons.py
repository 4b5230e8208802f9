"""Comparisons of the probabilistic matcher: how closely two records agree on one attribute, as a level.

Every comparison maps a candidate pair to an integer level (Splink's convention):
- ``-1`` (null): either value is missing or blank; it is no evidence either way and weighs 0;
- ``0`` (else): the values disagree;
- ``1 .. K``: ever closer agreement, ``K`` the best (``exact`` unless turned off).

Levels are tried from the best down; the first that holds wins. The order per kind:
- ``exact``: exact;
- ``string``: exact, then each Jaro-Winkler threshold (highest first), then each Levenshtein distance
  (smallest first);
- ``date``: exact, then the ``date_levels`` in the order given;
- ``numeric``: exact, then each absolute difference (smallest first).

Pairs carry each record column twice, as ``<column>_l`` and ``<column>_r`` (see
``blocking.candidate_pairs``); a comparison reads only those.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import DoubleType
from rapidfuzz.distance import JaroWinkler
from rapidfuzz.process import cpdist

from cdp_spark.config import Strict

NULL_LEVEL = -1
ELSE_LEVEL = 0
# Thresholds are inclusive; a similarity computed as 0.9499999999 for a threshold written 0.95 still counts.
_THRESHOLD_EPSILON = 1e-9

DateLevel = Literal["off_by_one_day", "day_month_swapped", "same_year_month", "same_year"]
_KIND_OPTIONS = {
    "exact": set(),
    "string": {"jaro_winkler", "levenshtein"},
    "date": {"date_levels", "date_format"},
    "numeric": {"abs_differences"},
}
_ALL_OPTIONS = set().union(*_KIND_OPTIONS.values())


@pandas_udf(DoubleType())
def jaro_winkler_similarity(left: pd.Series, right: pd.Series) -> pd.Series:
    """Jaro-Winkler similarity (prefix weight 0.1) of each pair of strings; null where either side is null.

    Jaro-Winkler is not built into Spark. rapidfuzz's ``cpdist`` scores a whole Arrow batch in one C++
    call, which beats a Spark SQL higher-order expression (character loops over arrays, interpreted
    per row) by a wide margin; pass nulls for pairs that need no score to keep the batches light.
    """
    both = (left.notna() & right.notna()).to_numpy()
    scores = np.full(len(left), np.nan)
    if both.any():
        scores[both] = cpdist(
            left[both].tolist(), right[both].tolist(), scorer=JaroWinkler.similarity, dtype=np.float64, workers=1
        )
    return pd.Series(scores)


class ComparisonConfig(Strict):
    """One comparison: which column(s), how to grade agreement, optionally fixed m/u probabilities."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="names the gamma_<name> column")
    column: str | None = Field(None, description="the record column compared")
    columns: list[str] | None = Field(
        None, min_length=2, description="several columns compared as one string, joined by spaces (exact/string)"
    )
    kind: Literal["exact", "string", "date", "numeric"]
    exact: bool = Field(True, description="string/numeric: whether exact agreement is a level of its own")
    jaro_winkler: list[float] | None = Field(None, description="string: similarity thresholds, e.g. [0.95, 0.88]")
    levenshtein: list[int] | None = Field(None, description="string: edit-distance thresholds, e.g. [1, 2]")
    date_levels: list[DateLevel] | None = Field(
        None, description="date: levels below exact, best first; default off_by_one_day, day_month_swapped"
    )
    date_format: str | None = Field(None, description="date: pattern of string dates; default ISO yyyy-MM-dd")
    abs_differences: list[float] | None = Field(None, description="numeric: absolute-difference thresholds")
    derived_columns: list[str] = Field(
        default_factory=list,
        description="columns derived from the compared one (birth_year of birth_date): a blocking rule reading "
        "them censors this comparison too, so EM leaves it out of that rule's session",
    )
    m_probabilities: list[float] | None = Field(
        None, description="fixed m per level, best level first and else last; EM leaves them alone"
    )
    u_probabilities: list[float] | None = Field(
        None, description="fixed u per level, best level first and else last; not estimated from random pairs"
    )

    @model_validator(mode="after")
    def _consistent(self) -> ComparisonConfig:
        if (self.column is None) == (self.columns is None):
            raise ValueError(f"comparison {self.name!r}: give exactly one of column or columns")
        if self.columns is not None and self.kind in ("date", "numeric"):
            raise ValueError(f"comparison {self.name!r}: a {self.kind} comparison takes one column, not columns")
        given = {option for option in _ALL_OPTIONS if getattr(self, option) is not None}
        foreign = sorted(given - _KIND_OPTIONS[self.kind])
        if foreign:
            raise ValueError(f"comparison {self.name!r}: {foreign} do not apply to kind {self.kind!r}")
        if self.jaro_winkler is not None and not all(0 < t < 1 for t in self.jaro_winkler):
            raise ValueError(f"comparison {self.name!r}: jaro_winkler thresholds must lie in (0, 1)")
        if self.levenshtein is not None and not all(d >= 1 for d in self.levenshtein):
            raise ValueError(f"comparison {self.name!r}: levenshtein thresholds must be at least 1")
        if self.abs_differences is not None and not all(d > 0 for d in self.abs_differences):
            raise ValueError(f"comparison {self.name!r}: abs_differences must be positive")
        for option in ("jaro_winkler", "levenshtein", "date_levels", "abs_differences"):
            values = getattr(self, option)
            if values is not None and len(set(values)) != len(values):
                raise ValueError(f"comparison {self.name!r}: {option} has repeated values {values}")
        if len(self.labels) < 2:
            raise ValueError(f"comparison {self.name!r}: it needs at least one level above else")
        for option in ("m_probabilities", "u_probabilities"):
            values = getattr(self, option)
            if values is None:
                continue
            if len(values) != len(self.labels):
                raise ValueError(
                    f"comparison {self.name!r}: {option} needs {len(self.labels)} values for levels "
                    f"{self.labels}, got {len(values)}"
                )
            if not all(0 < p <= 1 for p in values) or not math.isclose(sum(values), 1.0, abs_tol=1e-3):
                raise ValueError(f"comparison {self.name!r}: {option} must be in (0, 1] and sum to 1, got {values}")
        return self

    # ---------------------------------------------------------------------------------------------
    # Levels
    # ---------------------------------------------------------------------------------------------

    @property
    def source_columns(self) -> list[str]:
        return [self.column] if self.column is not None else list(self.columns or [])

    @property
    def gamma_column(self) -> str:
        return f"gamma_{self.name}"

    @property
    def labels(self) -> list[str]:
        """Level labels from the best down to ``else``; the label at index i is level ``len - 1 - i``."""
        return [label for label, _, _ in self._level_specs()] + ["else"]

    def label_of(self, level: int) -> str:
        return "null" if level == NULL_LEVEL else self.labels[len(self.labels) - 1 - level]

    def _level_specs(self) -> list[tuple[str, str, Any]]:
        """(label, test, parameter) of every level above else, best first. Pure data: no Spark needed."""
        specs: list[tuple[str, str, Any]] = []
        if self.kind in ("exact", "date") or self.exact:
            specs.append(("exact", "exact", None))
        if self.kind == "string":
            specs += [
                (f"jaro_winkler>={t:g}", "jaro_winkler", t) for t in sorted(self.jaro_winkler or [], reverse=True)
            ]
            specs += [(f"levenshtein<={d}", "levenshtein", d) for d in sorted(self.levenshtein or [])]
        elif self.kind == "date":
            names = self.date_levels if self.date_levels is not None else ["off_by_one_day", "day_month_swapped"]
            specs += [(name, "date", name) for name in names]
        elif self.kind == "numeric":
            specs += [(f"abs_difference<={d:g}", "abs_difference", d) for d in sorted(self.abs_differences or [])]
        return specs

    def _condition(self, test: str, parameter: Any, left: Column, right: Column) -> Column:
        if test == "exact":
            return left == right
        if test == "jaro_winkler":
            return F.col(self._helper("jw")) >= parameter - _THRESHOLD_EPSILON
        if test == "levenshtein":
            lev = F.col(self._helper("lev"))
            return (lev >= 0) & (lev <= parameter)
        if test == "date":
            return _date_condition(parameter, left, right)
        if test == "abs_difference":
            return F.abs(left - right) <= parameter + _THRESHOLD_EPSILON
        raise ValueError(f"unknown level test {test!r}")

    # ---------------------------------------------------------------------------------------------
    # Spark expressions over a pairs DataFrame (columns <column>_l, <column>_r)
    # ---------------------------------------------------------------------------------------------

    def value(self, side: str) -> Column:
        """The compared value of one side of the pair (``side`` is ``l`` or ``r``); null when missing."""
        cols = [F.col(f"`{c}_{side}`") for c in self.source_columns]
        if self.kind == "date":
            # without a format, try_to_date casts: ISO strings, dates and timestamps all become dates, and
            # a malformed string becomes null rather than failing the job under ANSI mode
            if self.date_format:
                return F.try_to_date(cols[0].cast("string"), self.date_format)
            return F.try_to_date(cols[0])
        if self.kind == "numeric":
            return cols[0].cast("double")
        if len(cols) == 1:
            text = F.trim(cols[0].cast("string"))
        else:
            # concat_ws skips nulls; all parts missing leaves an empty string, made null below
            text = F.concat_ws(" ", *[F.trim(c.cast("string")) for c in cols])
        return F.when(text != "", text)

    def _helper(self, what: str) -> str:
        return f"_{what}_{self.name}"

    def helper_columns(self) -> list[Column]:
        """Scores that several levels read, computed once before the levels (a pandas UDF runs once per row)."""
        if self.kind != "string":
            return []
        left, right = self.value("l"), self.value("r")
        differ = left != right
        helpers = []
        if self.jaro_winkler:
            # equal values never reach a Jaro-Winkler level when exact is a level: do not ship them to Python
            skip = differ if self.exact else F.lit(True)
            helpers.append(jaro_winkler_similarity(F.when(skip, left), F.when(skip, right)).alias(self._helper("jw")))
        if self.levenshtein:
            # the threshold form stops early and returns -1 beyond the largest distance of interest
            helpers.append(F.levenshtein(left, right, max(self.levenshtein)).alias(self._helper("lev")))
        return helpers

    def gamma(self) -> Column:
        """The integer level of each pair, as ``gamma_<name>``; needs ``helper_columns`` computed first."""
        left, right = self.value("l"), self.value("r")
        level = F.when(left.isNull() | right.isNull(), F.lit(NULL_LEVEL))
        specs = self._level_specs()
        for rank, (_, test, parameter) in enumerate(specs):
            level = level.when(self._condition(test, parameter, left, right), F.lit(len(specs) - rank))
        return level.otherwise(F.lit(ELSE_LEVEL)).cast("int").alias(self.gamma_column)


def _date_condition(name: str, left: Column, right: Column) -> Column:
    same_year = F.year(left) == F.year(right)
    if name == "off_by_one_day":
        return F.abs(F.datediff(left, right)) == 1
    if name == "day_month_swapped":
        return same_year & (F.month(left) == F.dayofmonth(right)) & (F.dayofmonth(left) == F.month(right))
    if name == "same_year_month":
        return same_year & (F.month(left) == F.month(right))
    if name == "same_year":
        return same_year
    raise ValueError(f"unknown date level {name!r}")
