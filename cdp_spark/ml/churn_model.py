"""Churn in MLflow: one training run fits the model (:mod:`cdp_spark.ml.churn`) on the driver sample of labelled
examples (:mod:`cdp_spark.ml.churn_examples`), evaluates it and a one-feature baseline on a later, time-separated
holdout, logs parameters, metrics and plots (:mod:`cdp_spark.ml.churn_plots`), registers the model and gates it
against the champion (higher holdout ROC AUC wins).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import mlflow
import mlflow.sklearn
import pandas as pd
import skops.io
from mlflow.models import infer_signature
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from sklearn.metrics import roc_auc_score

from cdp_spark import tracking
from cdp_spark.ml.churn import (
    BalancedChurnClassifier,
    build_estimator,
    classification_metrics,
    feature_importances,
    fit_churn_model,
)
from cdp_spark.ml.churn_examples import (
    KEY_COLUMNS,
    LABEL,
    ChurnDates,
    churn_labels,
    feature_columns,
    labeled_examples,
    random_sample,
    stratified_sample,
)
from cdp_spark.ml.churn_plots import calibration_figure, importance_figure, ranking_figure
from cdp_spark.ml.config import ChurnConfig

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
