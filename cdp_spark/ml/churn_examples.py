"""Churn examples in Spark: the as-of dates of a training run, labels, labelled feature rows, and the sample brought
to the driver for training.

Dates. ``holdout_as_of`` is the latest as-of whose labels are observable (latest fact date - H). Training as-ofs are
``holdout_as_of - H - k * snapshot_every_days``: every training label window ``(as_of, as_of + H]`` ends on or before
the holdout as-of, so training never sees a purchase the holdout is labelled with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cdp_spark import tables
from cdp_spark.sampling import keyed_sample

LABEL = "churned"
KEY_COLUMNS = ("cdp_id", "as_of")
_NUMERIC_TYPES = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType, T.DecimalType)


# --------------------------------------------------------------------------------------------
# Dates and labels
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChurnDates:
    """The holdout as-of and the training as-ofs (newest first) of one training run."""

    holdout_as_of: date
    training_as_ofs: tuple[date, ...]
    horizon_days: int

    @property
    def all_as_ofs(self) -> tuple[date, ...]:
        return (*self.training_as_ofs, self.holdout_as_of)


def churn_dates(
    latest: date,
    horizon_days: int,
    n_snapshots: int,
    snapshot_every_days: int,
    holdout_as_of: date | None = None,
) -> ChurnDates:
    """Holdout and training as-of dates for facts up to ``latest`` (inclusive); see the module docstring."""
    if horizon_days < 1 or n_snapshots < 1 or snapshot_every_days < 1:
        raise ValueError(
            "churn_dates: horizon_days, n_snapshots and snapshot_every_days must be positive, got "
            f"{horizon_days}, {n_snapshots}, {snapshot_every_days}"
        )
    horizon = timedelta(days=horizon_days)
    observable = latest - horizon
    if holdout_as_of is None:
        holdout_as_of = observable
    elif holdout_as_of > observable:
        raise ValueError(
            f"churn.holdout_as_of {holdout_as_of} is too late: its {horizon_days}-day label window ends after the "
            f"latest fact date {latest}; use {observable} or earlier"
        )
    training = tuple(holdout_as_of - horizon - timedelta(days=k * snapshot_every_days) for k in range(n_snapshots))
    return ChurnDates(holdout_as_of=holdout_as_of, training_as_ofs=training, horizon_days=horizon_days)


def churn_labels(purchases: DataFrame, as_ofs: Sequence[date], horizon_days: int) -> DataFrame:
    """Churn label per customer and as-of: 1 if no purchase in ``(as_of, as_of + horizon_days]``, else 0.

    In: ``cdp_id``, ``order_ts`` (timestamp or date; rows without a cdp_id are anonymous and ignored).
    Out: ``cdp_id``, ``as_of`` date, ``churned`` int, for customers with a purchase on or before ``as_of``.
    """
    spark = purchases.sparkSession
    purchase_days = (
        purchases.select("cdp_id", F.to_date("order_ts").alias("purchase_date"))
        .where(F.col("cdp_id").isNotNull() & F.col("purchase_date").isNotNull())
        .distinct()
    )
    as_of_dates = tables.rows_frame(spark, [(d,) for d in sorted(set(as_ofs))], "as_of date")
    window_end = F.date_add(F.col("as_of"), horizon_days)
    return (
        purchase_days.join(F.broadcast(as_of_dates), F.col("purchase_date") <= window_end)
        .groupBy("cdp_id", "as_of")
        .agg(
            F.min("purchase_date").alias("first_purchase"),
            F.max((F.col("purchase_date") > F.col("as_of")).cast("int")).alias("bought"),
        )
        .where(F.col("first_purchase") <= F.col("as_of"))
        .select("cdp_id", "as_of", (F.lit(1) - F.col("bought")).alias(LABEL))
    )


# --------------------------------------------------------------------------------------------
# Examples and the driver sample
# --------------------------------------------------------------------------------------------


def feature_columns(schema: T.StructType, configured: Sequence[str] | None = None) -> list[str]:
    """The model's feature columns: the configured ones (checked), or every numeric/boolean non-key column."""
    usable = {
        f.name
        for f in schema.fields
        if f.name not in KEY_COLUMNS and isinstance(f.dataType, (*_NUMERIC_TYPES, T.BooleanType))
    }
    if configured is None:
        return [f.name for f in schema.fields if f.name in usable]
    missing = [name for name in configured if name not in usable]
    if missing:
        raise ValueError(
            f"churn.features: {missing} are not numeric or boolean columns of gold.customer_features "
            f"(available: {', '.join(sorted(usable))})"
        )
    return list(configured)


def labeled_examples(features: DataFrame, labels: DataFrame, columns: Sequence[str]) -> DataFrame:
    """Feature rows of labelled customers, features as doubles (booleans 0/1, nulls kept for the imputer).

    In: features (``cdp_id``, ``as_of``, ``columns``), labels (``cdp_id``, ``as_of``, ``churned``).
    Out: ``cdp_id``, ``as_of``, ``columns`` as double, ``churned``.
    """
    return features.join(labels, on=list(KEY_COLUMNS), how="inner").select(
        *KEY_COLUMNS, *[F.col(c).cast("double").alias(c) for c in columns], LABEL
    )


def sample_fractions(class_counts: Mapping[int, int], max_rows: int) -> dict[int, float]:
    """Per-class sampling fractions keeping about ``max_rows`` rows, the budget shared equally between classes.

    A class smaller than its share is kept whole and its unused share goes to the others, so the rare class
    keeps every example it can. Balanced sample weights later undo the change of class ratio.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be positive, got {max_rows}")
    if sum(class_counts.values()) <= max_rows:
        return {label: 1.0 for label in class_counts}
    budget, remaining = float(max_rows), len(class_counts)
    fractions = {}
    for label, count in sorted(class_counts.items(), key=lambda item: (item[1], item[0])):
        keep = min(float(count), budget / remaining)
        fractions[label] = keep / count if count else 1.0
        budget -= keep
        remaining -= 1
    return fractions


@dataclass(frozen=True)
class DriverSample:
    """Rows brought to the driver and how they were chosen."""

    frame: pd.DataFrame
    total_rows: int
    class_counts: dict[int, int]
    fractions: dict[int, float] | None  # None: every row

    @property
    def sampled(self) -> bool:
        return self.fractions is not None

    @property
    def population_odds(self) -> float:
        """Churned to not-churned odds of all examples (before sampling): the prior the model must report."""
        return self.class_counts.get(1, 0) / max(self.class_counts.get(0, 0), 1)


def stratified_sample(examples: DataFrame, max_rows: int, seed: int) -> DriverSample:
    """All examples, or above ``max_rows`` a seeded sample stratified on the label, as pandas sorted by key."""
    class_counts = {int(row[LABEL]): int(row["count"]) for row in examples.groupBy(LABEL).count().collect()}
    total = sum(class_counts.values())
    fractions = None
    if total > max_rows:
        fractions = sample_fractions(class_counts, max_rows)
        examples = _keep(examples, fractions, seed)
    return DriverSample(_to_pandas(examples, max_rows, seed), total, class_counts, fractions)


def random_sample(examples: DataFrame, max_rows: int, seed: int) -> DriverSample:
    """All examples, or a seeded random sample of about ``max_rows`` of them, as pandas sorted by key."""
    class_counts = {int(row[LABEL]): int(row["count"]) for row in examples.groupBy(LABEL).count().collect()}
    total = sum(class_counts.values())
    fractions = None
    if total > max_rows:
        fraction = max_rows / total
        fractions = {label: fraction for label in class_counts}
        examples = _keep(examples, fractions, seed)
    return DriverSample(_to_pandas(examples, max_rows, seed), total, class_counts, fractions)


def _keep(examples: DataFrame, fractions: Mapping[int, float], seed: int) -> DataFrame:
    """Each example kept with its label's rate, drawn from its key: the same rows on every run and cluster."""
    rate = F.lit(0.0)
    for label, fraction in fractions.items():
        rate = F.when(F.col(LABEL) == F.lit(label), F.lit(fraction)).otherwise(rate)
    return keyed_sample(examples, rate, seed, KEY_COLUMNS)


def _to_pandas(examples: DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """At most ``max_rows`` rows (Bernoulli sampling can overshoot by a little: a seeded random trim), key-sorted.

    The fixed row order makes the fit reproducible whatever order the partitions arrive in.
    """
    frame = examples.toPandas().sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)
    if len(frame) > max_rows:
        frame = frame.sample(n=max_rows, random_state=seed).sort_index().reset_index(drop=True)
    return frame
