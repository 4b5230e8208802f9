"""Churn plots logged with every training run: calibration, ROC and cumulative gains, feature importance."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from numpy.typing import ArrayLike
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score, roc_curve


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


def importance_figure(importances: pd.Series, top: int = 25) -> Figure:
    shown = importances.head(top)[::-1]
    figure = Figure(figsize=(7, max(3.0, 0.3 * len(shown) + 1)))
    axes = figure.subplots()
    axes.barh(list(shown.index), shown.to_numpy())
    axes.set(xlabel="importance", title="Feature importance")
    figure.tight_layout()
    return figure
