"""The churn model on the driver: a class-balanced scikit-learn estimator reporting probabilities at the population's
prior, and how it is measured (ROC/PR AUC, Brier, top-decile lift, feature importance).

Examples and the driver sample are :mod:`cdp_spark.ml.churn_examples`; the plots :mod:`cdp_spark.ml.churn_plots`;
training, logging, registering and gating in MLflow :mod:`cdp_spark.ml.churn_model`. A registered model pickles
:class:`BalancedChurnClassifier` under this module's name, so the class stays here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit, logit
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

from cdp_spark.ml.churn_examples import LABEL
from cdp_spark.ml.config import ESTIMATORS, ChurnEstimator, Hyperparameter

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
# Metrics
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
