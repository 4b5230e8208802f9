"""Churn: will a customer make no purchase in the next ``horizon_days``? Labels and examples in Spark, the model on
the driver over a stated sample, evaluated on a later, time-separated holdout, tracked and gated in MLflow.

Dates. ``holdout_as_of`` is the latest as-of whose labels are observable (latest fact date - H). Training as-ofs are
``holdout_as_of - H - k * snapshot_every_days``: every training label window ``(as_of, as_of + H]`` ends on or before
the holdout as-of, so training never sees a purchase the holdout is labelled with.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import skops.io
from matplotlib.figure import Figure
from mlflow.models import infer_signature
from numpy.typing import ArrayLike, NDArray
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from scipy.special import expit, logit
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import calibration_curve
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score, roc_curve
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

from cdp_spark.ml import tracking
from cdp_spark.ml.config import ESTIMATORS, ChurnConfig, ChurnEstimator, Hyperparameter
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
    as_of_dates = spark.createDataFrame([(d,) for d in sorted(set(as_ofs))], "as_of date")
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


# --------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------


def build_estimator(model: ChurnEstimator, hyperparameters: Mapping[str, Hyperparameter], seed: int) -> Pipeline:
    """Median imputation with missing-value indicators (a null often means "never"), then the estimator."""
    estimator_class = ESTIMATORS[model]
    params = dict(hyperparameters)
    if "random_state" in estimator_class().get_params():
        params.setdefault("random_state", seed)
    steps: list[tuple[str, Any]] = [
        ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True))
    ]
    if model == "logistic_regression":
        steps.append(("scale", StandardScaler()))
    steps.append(("model", estimator_class(**params)))
    return Pipeline(steps)


class BalancedChurnClassifier(ClassifierMixin, BaseEstimator):
    """Fits ``estimator`` (a Pipeline ending in step ``model``) with class-balanced sample weights, then reports
    probabilities at the population's class prior.

    Balanced weights (``class_weight='balanced'``) make the fit pay equal attention to both classes but shift its
    probabilities towards 0.5; multiplying the fitted odds by ``prior_odds`` (churned : not churned among all
    examples, before any sampling) restores calibrated probabilities without changing the ranking.
    """

    def __init__(self, estimator: Pipeline, prior_odds: float | None = None) -> None:
        self.estimator = estimator
        self.prior_odds = prior_odds

    def fit(self, X: pd.DataFrame, y: ArrayLike) -> BalancedChurnClassifier:
        y = np.asarray(y).astype(int)
        if len(np.unique(y)) != 2:
            raise ValueError("churn training needs both churned and retained customers among the examples")
        weights = compute_sample_weight("balanced", y)
        self.estimator_ = clone(self.estimator).fit(X, y, model__sample_weight=weights)
        self.classes_ = self.estimator_.classes_
        self.feature_names_in_ = np.asarray(list(X.columns), dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.prior_odds_ = float(self.prior_odds if self.prior_odds is not None else y.mean() / (1 - y.mean()))
        return self

    def predict_proba(self, X: pd.DataFrame) -> NDArray[np.float64]:
        balanced = self.estimator_.predict_proba(X[list(self.feature_names_in_)])[:, 1]
        # With balanced weights the fitted prior odds are 1: shift the log-odds to the population's prior.
        churned = expit(logit(np.clip(balanced, 1e-12, 1 - 1e-12)) + math.log(max(self.prior_odds_, 1e-12)))
        return np.column_stack([1.0 - churned, churned])

    def predict(self, X: pd.DataFrame) -> NDArray[np.int64]:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)


def fit_churn_model(
    frame: pd.DataFrame, columns: Sequence[str], model: Pipeline, prior_odds: float
) -> BalancedChurnClassifier:
    """Fit on ``frame[columns]`` against ``frame.churned``."""
    return BalancedChurnClassifier(model, prior_odds=prior_odds).fit(frame[list(columns)], frame[LABEL])


# --------------------------------------------------------------------------------------------
# Metrics and plots
# --------------------------------------------------------------------------------------------


def top_fraction_lift(y_true: ArrayLike, score: ArrayLike, fraction: float = 0.1) -> tuple[float, float]:
    """Lift and capture rate of the ``fraction`` highest scores: (churn rate there / overall, share of churners)."""
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    if y.sum() == 0:
        return float("nan"), float("nan")
    n_top = max(1, math.ceil(fraction * len(y)))
    top = y[np.argsort(-s, kind="stable")[:n_top]]
    return float(top.mean() / y.mean()), float(top.sum() / y.sum())


def classification_metrics(y_true: ArrayLike, churn_probability: ArrayLike) -> dict[str, float]:
    """ROC AUC, PR AUC, Brier score, and lift and capture rate in the top decile."""
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(churn_probability, dtype=np.float64)
    if len(np.unique(y)) != 2:
        raise ValueError("the churn holdout needs both churned and retained customers to be evaluated")
    lift, capture = top_fraction_lift(y, p, 0.1)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "top_decile_lift": lift,
        "top_decile_capture": capture,
    }


def calibration_figure(y_true: ArrayLike, curves: Mapping[str, ArrayLike]) -> Figure:
    figure = Figure(figsize=(6, 5))
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for name, probability in curves.items():
        observed, predicted = calibration_curve(y_true, probability, n_bins=10, strategy="quantile")
        axes.plot(predicted, observed, marker="o", label=name)
    axes.set(xlabel="predicted churn probability", ylabel="observed churn rate", title="Calibration on the holdout")
    axes.legend()
    return figure


def ranking_figure(y_true: ArrayLike, curves: Mapping[str, ArrayLike]) -> Figure:
    """ROC curves and cumulative gains (share of churners captured by targeting the top x%)."""
    y = np.asarray(y_true, dtype=np.float64)
    figure = Figure(figsize=(11, 5))
    roc_axes, gains_axes = figure.subplots(1, 2)
    roc_axes.plot([0, 1], [0, 1], linestyle="--", color="grey")
    gains_axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random")
    share = np.arange(1, len(y) + 1) / len(y)
    for name, score in curves.items():
        s = np.asarray(score, dtype=np.float64)
        fpr, tpr, _ = roc_curve(y, s)
        roc_axes.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, s):.3f})")
        captured = np.cumsum(y[np.argsort(-s, kind="stable")]) / max(y.sum(), 1)
        gains_axes.plot(share, captured, label=name)
    roc_axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC on the holdout")
    gains_axes.set(xlabel="share of customers targeted", ylabel="share of churners captured", title="Cumulative gains")
    roc_axes.legend()
    gains_axes.legend()
    return figure


def feature_importances(
    model: BalancedChurnClassifier, holdout: pd.DataFrame, columns: Sequence[str], max_rows: int, seed: int
) -> pd.Series:
    """The estimator's own importances when it has them, else permutation importance (ROC AUC) on a holdout sample."""
    pipeline = model.estimator_
    estimator = pipeline.named_steps["model"]
    native = getattr(estimator, "feature_importances_", None)
    if native is None and hasattr(estimator, "coef_"):
        native = np.abs(np.ravel(estimator.coef_))
    if native is not None:
        names = pipeline[:-1].get_feature_names_out(list(columns))
        return pd.Series(native, index=names).sort_values(ascending=False)
    sample = holdout.sample(n=min(max_rows, len(holdout)), random_state=seed)
    result = permutation_importance(
        model, sample[list(columns)], sample[LABEL], scoring="roc_auc", n_repeats=3, random_state=seed
    )
    return pd.Series(result.importances_mean, index=list(columns)).sort_values(ascending=False)


def importance_figure(importances: pd.Series, top: int = 25) -> Figure:
    shown = importances.head(top)[::-1]
    figure = Figure(figsize=(7, max(3.0, 0.3 * len(shown) + 1)))
    axes = figure.subplots()
    axes.barh(list(shown.index), shown.to_numpy())
    axes.set(xlabel="importance", title="Feature importance")
    figure.tight_layout()
    return figure


# --------------------------------------------------------------------------------------------
# Training run: fit, evaluate, log, register, gate
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChurnTrainingResult:
    run_id: str
    version: str
    decision: tracking.GateDecision
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    dates: ChurnDates
    rows: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, float | int]:
        """What the stage logs and records in ops.run_metrics."""
        return {
            **self.rows,
            "model_version": int(self.version),
            "promoted": int(self.decision.promoted),
            **{f"holdout_{k}": round(v, 6) for k, v in self.metrics.items()},
            "baseline_roc_auc": round(self.baseline_metrics["roc_auc"], 6),
        }


def skops_trusted_types(model: BalancedChurnClassifier) -> list[str]:
    """The types the skops format must be told to trust: this classifier and numpy/scikit-learn/scipy internals.

    MLflow stores sklearn models with skops, which loads only types it trusts; anything else in the model is left
    untrusted, and logging then fails loudly.
    """
    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    return [name for name in untrusted if name.split(".")[0] in ("cdp_spark", "numpy", "sklearn", "scipy")]


def log_churn_model(model: BalancedChurnClassifier, example: pd.DataFrame, registered_model: str) -> str:
    """Log the model (signature, input example) in the active run and register it; returns the new version."""
    columns = list(model.feature_names_in_)
    inputs = example[columns].head(100)
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        skops_trusted_types=skops_trusted_types(model),
        signature=infer_signature(inputs, model.predict_proba(inputs)),
        input_example=inputs.head(5),
        registered_model_name=registered_model,
        pyfunc_predict_fn="predict_proba",
        pip_requirements=tracking.requirements("cdp-spark", "scikit-learn", "numpy", "pandas", "scipy", "cloudpickle"),
    )
    return str(info.registered_model_version)


def champion_score(client: mlflow.MlflowClient, name: str, holdout: pd.DataFrame) -> tuple[str | None, float | None]:
    """The current champion's version and its ROC AUC on ``holdout`` (None if it needs columns the holdout lacks)."""
    current = tracking.version_by_alias(client, name, tracking.CHAMPION)
    if current is None:
        return None, None
    champion = mlflow.sklearn.load_model(f"models:/{name}/{current.version}")
    columns = list(getattr(champion, "feature_names_in_", []))
    if not columns or any(c not in holdout.columns for c in columns):
        return str(current.version), None
    return str(current.version), float(roc_auc_score(holdout[LABEL], champion.predict_proba(holdout[columns])[:, 1]))


def train_churn(
    features: DataFrame,
    purchases: DataFrame,
    dates: ChurnDates,
    config: ChurnConfig,
    tracker: tracking.Tracking,
    tags: Mapping[str, str] | None = None,
) -> ChurnTrainingResult:
    """Train, evaluate on the holdout, log to MLflow, register and gate one churn model version.

    In: ``features`` with snapshots at every date of ``dates`` (``cdp_id``, ``as_of``, features), ``purchases``
    (``cdp_id``, ``order_ts``). Out: the run, the registered version and the gate's decision.
    """
    columns = feature_columns(features.schema, config.features)
    every_numeric = feature_columns(features.schema, None)
    if config.baseline_feature not in every_numeric:
        raise ValueError(f"churn.baseline_feature {config.baseline_feature!r} is not a numeric feature column")
    labels = churn_labels(purchases, dates.all_as_ofs, dates.horizon_days)
    # The holdout keeps every numeric feature: the champion may use other columns than this model.
    examples = labeled_examples(features, labels, every_numeric)
    training_columns = list(dict.fromkeys([*columns, config.baseline_feature]))
    training = stratified_sample(
        examples.where(F.col("as_of").isin(list(dates.training_as_ofs))).select(*KEY_COLUMNS, *training_columns, LABEL),
        config.max_training_rows,
        config.seed,
    )
    holdout = random_sample(
        examples.where(F.col("as_of") == F.lit(dates.holdout_as_of)), config.max_holdout_rows, config.seed
    )
    if training.total_rows == 0 or holdout.total_rows == 0:
        raise ValueError(
            f"churn: no labelled examples for training ({training.total_rows}) or holdout ({holdout.total_rows}): "
            f"no customer with a purchase on or before the as-of dates {[str(d) for d in dates.all_as_ofs]}"
        )

    model = fit_churn_model(
        training.frame,
        columns,
        build_estimator(config.model, config.hyperparameters.for_estimator(config.model), config.seed),
        training.population_odds,
    )
    baseline = fit_churn_model(
        training.frame,
        [config.baseline_feature],
        build_estimator("logistic_regression", {}, config.seed),
        training.population_odds,
    )
    y_holdout = holdout.frame[LABEL].to_numpy()
    predicted = model.predict_proba(holdout.frame)[:, 1]
    baseline_predicted = baseline.predict_proba(holdout.frame)[:, 1]
    metrics = classification_metrics(y_holdout, predicted)
    baseline_metrics = classification_metrics(y_holdout, baseline_predicted)
    rows = {
        "training_examples": training.total_rows,
        "training_rows_used": len(training.frame),
        "holdout_examples": holdout.total_rows,
        "holdout_rows_used": len(holdout.frame),
    }

    with mlflow.start_run(experiment_id=tracker.experiment_id, run_name=f"churn as of {dates.holdout_as_of}") as run:
        mlflow.set_tags({"cdp.model": "churn", **(tags or {})})
        mlflow.log_params(
            {
                "model": config.model,
                **{f"hp_{k}": v for k, v in config.hyperparameters.for_estimator(config.model).items()},
                "n_features": len(columns),
                "horizon_days": dates.horizon_days,
                "holdout_as_of": dates.holdout_as_of.isoformat(),
                "training_as_ofs": ",".join(d.isoformat() for d in dates.training_as_ofs),
                "training_sampled": training.sampled,
                "training_sample_fractions": json.dumps(training.fractions) if training.sampled else "none",
                "holdout_sampled": holdout.sampled,
                "class_weight": "balanced, probabilities at the population prior",
                "prior_odds": round(training.population_odds, 6),
                "baseline": f"logistic regression on {config.baseline_feature}",
                "seed": config.seed,
            }
        )
        mlflow.log_dict({"features": columns}, "features.json")
        mlflow.log_metrics(
            {
                **{k: float(v) for k, v in rows.items()},
                "training_churn_rate": training.class_counts.get(1, 0) / training.total_rows,
                "holdout_churn_rate": float(y_holdout.mean()),
                **{f"holdout_{k}": v for k, v in metrics.items()},
                **{f"baseline_{k}": v for k, v in baseline_metrics.items()},
            }
        )
        curves = {config.model: predicted, f"baseline ({config.baseline_feature})": baseline_predicted}
        importances = feature_importances(model, holdout.frame, columns, config.importance_rows, config.seed)
        for figure, path in [
            (calibration_figure(y_holdout, curves), "plots/calibration.png"),
            (ranking_figure(y_holdout, curves), "plots/roc_and_gains.png"),
            (importance_figure(importances), "plots/feature_importance.png"),
        ]:
            mlflow.log_figure(figure, path)
        version = log_churn_model(model, training.frame, config.registered_model)

        champion_version, champion_auc = champion_score(tracker.client, config.registered_model, holdout.frame)
        decision = tracking.decide("holdout_roc_auc", metrics["roc_auc"], champion_version, champion_auc, True)
        mlflow.log_params(decision.as_params())
        mlflow.set_tag("gate_decision", decision.alias)
        tracking.apply_gate(tracker.client, config.registered_model, version, decision)

    return ChurnTrainingResult(run.info.run_id, version, decision, metrics, baseline_metrics, dates, rows)
