"""Comparisons of the probabilistic matcher: how closely two records agree on one attribute, as a level.

One class per kind of comparison, each with its levels (Splink's comparisons and comparison levels):
``ExactComparison``, ``StringComparison``, ``DateComparison``, ``NumericComparison``; ``ComparisonConfig`` is any
of them, told apart by ``kind`` in ``conf/identity.yaml``.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

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
# Options only some kinds take: given to another kind they are an error, not silently ignored.
_KIND_OPTIONS = {"jaro_winkler", "levenshtein", "date_levels", "date_format", "abs_differences"}


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


@dataclass(frozen=True)
class Level:
    """A level above else: its label, and when a pair is at it (a condition on the pair's two compared values)."""

    label: str
    holds: Callable[[Column, Column], Column]


def _exact_level() -> Level:
    return Level("exact", lambda left, right: left == right)


class Comparison(Strict):
    """What every comparison has: which column(s), and optionally fixed m/u probabilities."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="names the gamma_<name> column")
    column: str | None = Field(None, description="the record column compared")
    columns: list[str] | None = Field(
        None, min_length=2, description="several columns compared as one string, joined by spaces (exact/string)"
    )
    exact: bool = Field(True, description="string/numeric: whether exact agreement is a level of its own")
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

    options: ClassVar[frozenset[str]] = frozenset()  # the kind's own options among _KIND_OPTIONS
    single_column: ClassVar[bool] = False

    @model_validator(mode="before")
    @classmethod
    def _options_of_this_kind(cls, data: Any) -> Any:
        """Another kind's option is an error; left empty (null) it is nothing, as in a config written for any kind."""
        if not isinstance(data, dict):
            return data
        others = _KIND_OPTIONS - cls.options
        foreign = sorted(key for key, value in data.items() if key in others and value is not None)
        if foreign:
            raise ValueError(f"comparison {data.get('name')!r}: {foreign} do not apply to kind {data.get('kind')!r}")
        return {key: value for key, value in data.items() if key not in others}

    @model_validator(mode="after")
    def _consistent(self) -> Comparison:
        if (self.column is None) == (self.columns is None):
            raise ValueError(f"comparison {self.name!r}: give exactly one of column or columns")
        if self.columns is not None and self.single_column:
            raise ValueError(f"comparison {self.name!r}: a {self.kind} comparison takes one column, not columns")
        self._check_options()
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

    def _check_options(self) -> None:
        """The kind's own checks of its options (ranges, repeats)."""

    def _no_repeats(self, option: str) -> None:
        values = getattr(self, option)
        if values is not None and len(set(values)) != len(values):
            raise ValueError(f"comparison {self.name!r}: {option} has repeated values {values}")

    # ---------------------------------------------------------------------------------------------
    # Levels
    # ---------------------------------------------------------------------------------------------

    def levels(self) -> list[Level]:
        """Every level above else, best first. Pure data until a condition is called: no Spark needed."""
        raise NotImplementedError

    @property
    def source_columns(self) -> list[str]:
        return [self.column] if self.column is not None else list(self.columns or [])

    @property
    def gamma_column(self) -> str:
        return f"gamma_{self.name}"

    @property
    def labels(self) -> list[str]:
        """Level labels from the best down to ``else``; the label at index i is level ``len - 1 - i``."""
        return [level.label for level in self.levels()] + ["else"]

    def label_of(self, level: int) -> str:
        return "null" if level == NULL_LEVEL else self.labels[len(self.labels) - 1 - level]

    # ---------------------------------------------------------------------------------------------
    # Spark expressions over a pairs DataFrame (columns <column>_l, <column>_r)
    # ---------------------------------------------------------------------------------------------

    def _side_columns(self, side: str) -> list[Column]:
        return [F.col(f"`{c}_{side}`") for c in self.source_columns]

    def value(self, side: str) -> Column:
        """The compared value of one side of the pair (``side`` is ``l`` or ``r``); null when missing."""
        cols = self._side_columns(side)
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
        return []

    def gamma(self) -> Column:
        """The integer level of each pair, as ``gamma_<name>``; needs ``helper_columns`` computed first."""
        left, right = self.value("l"), self.value("r")
        level = F.when(left.isNull() | right.isNull(), F.lit(NULL_LEVEL))
        levels = self.levels()
        for rank, above_else in enumerate(levels):
            level = level.when(above_else.holds(left, right), F.lit(len(levels) - rank))
        return level.otherwise(F.lit(ELSE_LEVEL)).cast("int").alias(self.gamma_column)


class ExactComparison(Comparison):
    """Exact agreement or not."""

    kind: Literal["exact"]

    def levels(self) -> list[Level]:
        return [_exact_level()]


class StringComparison(Comparison):
    """Exact, then Jaro-Winkler similarity thresholds (highest first), then Levenshtein distances (smallest first)."""

    kind: Literal["string"]
    jaro_winkler: list[float] | None = Field(None, description="string: similarity thresholds, e.g. [0.95, 0.88]")
    levenshtein: list[int] | None = Field(None, description="string: edit-distance thresholds, e.g. [1, 2]")

    options: ClassVar[frozenset[str]] = frozenset({"jaro_winkler", "levenshtein"})

    def _check_options(self) -> None:
        if self.jaro_winkler is not None and not all(0 < t < 1 for t in self.jaro_winkler):
            raise ValueError(f"comparison {self.name!r}: jaro_winkler thresholds must lie in (0, 1)")
        if self.levenshtein is not None and not all(d >= 1 for d in self.levenshtein):
            raise ValueError(f"comparison {self.name!r}: levenshtein thresholds must be at least 1")
        self._no_repeats("jaro_winkler")
        self._no_repeats("levenshtein")

    def levels(self) -> list[Level]:
        jw, lev = self._helper("jw"), self._helper("lev")
        levels = [_exact_level()] if self.exact else []
        levels += [
            Level(f"jaro_winkler>={t:g}", lambda _l, _r, t=t: F.col(jw) >= t - _THRESHOLD_EPSILON)
            for t in sorted(self.jaro_winkler or [], reverse=True)
        ]
        levels += [
            Level(f"levenshtein<={d}", lambda _l, _r, d=d: (F.col(lev) >= 0) & (F.col(lev) <= d))
            for d in sorted(self.levenshtein or [])
        ]
        return levels

    def helper_columns(self) -> list[Column]:
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


class DateComparison(Comparison):
    """Exact, then the ``date_levels`` in the order given (default off by one day, then day and month swapped)."""

    kind: Literal["date"]
    date_levels: list[DateLevel] | None = Field(
        None, description="date: levels below exact, best first; default off_by_one_day, day_month_swapped"
    )
    date_format: str | None = Field(None, description="date: pattern of string dates; default ISO yyyy-MM-dd")

    options: ClassVar[frozenset[str]] = frozenset({"date_levels", "date_format"})
    single_column: ClassVar[bool] = True

    def _check_options(self) -> None:
        self._no_repeats("date_levels")

    def levels(self) -> list[Level]:
        names = self.date_levels if self.date_levels is not None else ["off_by_one_day", "day_month_swapped"]
        return [_exact_level()] + [
            Level(name, lambda left, right, n=name: _date_condition(n, left, right)) for name in names
        ]

    def value(self, side: str) -> Column:
        # without a format, try_to_date casts: ISO strings, dates and timestamps all become dates, and
        # a malformed string becomes null rather than failing the job under ANSI mode
        column = self._side_columns(side)[0]
        if self.date_format:
            return F.try_to_date(column.cast("string"), self.date_format)
        return F.try_to_date(column)


class NumericComparison(Comparison):
    """Exact, then absolute differences (smallest first)."""

    kind: Literal["numeric"]
    abs_differences: list[float] | None = Field(None, description="numeric: absolute-difference thresholds")

    options: ClassVar[frozenset[str]] = frozenset({"abs_differences"})
    single_column: ClassVar[bool] = True

    def _check_options(self) -> None:
        if self.abs_differences is not None and not all(d > 0 for d in self.abs_differences):
            raise ValueError(f"comparison {self.name!r}: abs_differences must be positive")
        self._no_repeats("abs_differences")

    def levels(self) -> list[Level]:
        levels = [_exact_level()] if self.exact else []
        return levels + [
            Level(f"abs_difference<={d:g}", lambda left, right, d=d: F.abs(left - right) <= d + _THRESHOLD_EPSILON)
            for d in sorted(self.abs_differences or [])
        ]

    def value(self, side: str) -> Column:
        return self._side_columns(side)[0].cast("double")


ComparisonConfig = Annotated[
    ExactComparison | StringComparison | DateComparison | NumericComparison, Field(discriminator="kind")
]


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
