"""CLV as an MLflow model: fitted BG/NBD + Gamma-Gamma parameters behind a pyfunc that scores day-based summaries.

The fit and the formulas are ``cdp_spark.ml.clv``. This module wraps the fitted parameters (a JSON artifact, with
the time unit, horizon and discount rate they go with), evaluates them on a holdout period after the calibration
period, and logs, registers and gates the model (lower holdout MAE of purchases wins).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow.models import infer_signature
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cdp_spark import tracking
from cdp_spark.ml.clv import (
    DAYS_PER_MONTH,
    BetaGeoParams,
    GammaGammaParams,
    clv,
    fit_bg_nbd_summary,
    fit_gamma_gamma_summary,
    rfm_summary,
)
from cdp_spark.ml.config import ClvConfig
from cdp_spark.sampling import keyed_sample

INPUT_COLUMNS = ("bgnbd_frequency", "bgnbd_recency_days", "bgnbd_t_days", "bgnbd_monetary")
OUTPUT_COLUMNS = ("p_alive", "expected_purchases", "clv")
PARAMS_ARTIFACT = "clv_params"
DAYS_PER_YEAR = 365.25


@dataclass(frozen=True)
class ClvParams:
    """Everything a CLV prediction needs: the fitted parameters and the units and horizon they are used with."""

    bg_nbd: BetaGeoParams
    gamma_gamma: GammaGammaParams
    time_unit_days: float
    horizon_days: int
    discount_rate: float  # annual

    def to_json(self) -> str:
        return json.dumps(
            {
                "bg_nbd": self.bg_nbd.to_dict(),
                "gamma_gamma": self.gamma_gamma.to_dict(),
                "time_unit_days": self.time_unit_days,
                "horizon_days": self.horizon_days,
                "discount_rate": self.discount_rate,
            },
            indent=2,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> ClvParams:
        values = json.loads(text)
        return cls(
            bg_nbd=BetaGeoParams.from_dict(values["bg_nbd"]),
            gamma_gamma=GammaGammaParams.from_dict(values["gamma_gamma"]),
            time_unit_days=float(values["time_unit_days"]),
            horizon_days=int(values["horizon_days"]),
            discount_rate=float(values["discount_rate"]),
        )

    def periods(self) -> tuple[int, float, float]:
        """Monthly discounting periods covering exactly ``horizon_days``: count, length in time units, rate each."""
        n_periods = max(1, round(self.horizon_days / DAYS_PER_MONTH))
        period_days = self.horizon_days / n_periods
        rate = (1.0 + self.discount_rate) ** (period_days / DAYS_PER_YEAR) - 1.0
        return n_periods, period_days / self.time_unit_days, rate


def predict_clv(params: ClvParams, summary: pd.DataFrame) -> pd.DataFrame:
    """P(alive), expected purchases and discounted CLV over ``params.horizon_days`` per customer.

    In: ``bgnbd_frequency`` (repeat purchase days), ``bgnbd_recency_days`` (first to last purchase),
    ``bgnbd_t_days`` (first purchase to the as-of), ``bgnbd_monetary`` (mean value of repeat purchase days).
    Out: ``p_alive``, ``expected_purchases``, ``clv``; NaN for rows with a missing input (no purchase yet).
    """
    values = summary[list(INPUT_COLUMNS)].astype("float64").to_numpy()
    known = ~np.isnan(values).any(axis=1)
    # Rows without a history are filled with a harmless placeholder, computed, then blanked.
    frequency, recency_days, t_days, monetary = np.where(known[:, None], values, 0.0).T
    unit = params.time_unit_days
    recency, T_ = recency_days / unit, t_days / unit
    n_periods, period_length, rate = params.periods()
    p_alive = params.bg_nbd.p_alive(frequency, recency, T_)
    expected = params.bg_nbd.expected_purchases(params.horizon_days / unit, frequency, recency, T_)
    value = clv(
        params.bg_nbd,
        params.gamma_gamma,
        frequency,
        recency,
        T_,
        monetary,
        horizon_periods=n_periods,
        period_length=period_length,
        discount_rate=rate,
    )
    out = {"p_alive": p_alive, "expected_purchases": expected, "clv": value}
    return pd.DataFrame({name: np.where(known, out[name], np.nan) for name in OUTPUT_COLUMNS}, index=summary.index)


class ClvModel(mlflow.pyfunc.PythonModel):
    """The pyfunc served from the registry: parameters from the ``clv_params`` JSON artifact, then ``predict_clv``."""

    params: ClvParams

    def load_context(self, context: Any) -> None:
        self.params = ClvParams.from_json(Path(context.artifacts[PARAMS_ARTIFACT]).read_text(encoding="utf-8"))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return predict_clv(self.params, model_input)


def log_clv_model(params: ClvParams, registered_model: str) -> str:
    """Log the pyfunc (signature, input example) in the active run and register it; returns the new version."""
    example = pd.DataFrame(
        {
            "bgnbd_frequency": [0.0, 2.0, 7.0],
            "bgnbd_recency_days": [0.0, 120.0, 300.0],
            "bgnbd_t_days": [30.0, 200.0, 320.0],
            "bgnbd_monetary": [0.0, 25.0, 60.0],
        }
    )
    with tempfile.TemporaryDirectory() as folder:
        params_path = Path(folder) / "clv_params.json"
        params_path.write_text(params.to_json(), encoding="utf-8")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ClvModel(),
            artifacts={PARAMS_ARTIFACT: str(params_path)},
            signature=infer_signature(example, predict_clv(params, example)),
            input_example=example,
            registered_model_name=registered_model,
            pip_requirements=tracking.requirements("cdp-spark", "numpy", "pandas", "scipy"),
        )
    return str(info.registered_model_version)


def load_clv_params(model_uri: str) -> ClvParams:
    """The parameters inside a registered CLV model (``models:/cdp_clv/3``)."""
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().params


# --------------------------------------------------------------------------------------------
# Holdout evaluation
# --------------------------------------------------------------------------------------------

HOLDOUT_SCHEMA = T.StructType(
    [
        T.StructField("cdp_id", T.StringType()),
        T.StructField("frequency", T.LongType()),
        T.StructField("actual_purchases", T.DoubleType()),
        T.StructField("predicted_purchases", T.DoubleType()),
        T.StructField("actual_spend", T.DoubleType()),
        T.StructField("predicted_spend", T.DoubleType()),
    ]
)


def holdout_predictions(summary: DataFrame, params: ClvParams, summary_unit_days: float) -> DataFrame:
    """Predicted vs actual purchases and spend per customer in the holdout period after the calibration period.

    In: an ``rfm_summary`` with holdout columns (``cdp_id``, ``frequency``, ``recency``, ``T``, ``monetary_value``,
    ``frequency_holdout``, ``monetary_holdout``, ``duration_holdout``) in units of ``summary_unit_days``.
    Out: ``cdp_id``, ``frequency``, ``actual_purchases``, ``predicted_purchases``, ``actual_spend``,
    ``predicted_spend``. ``params`` may use another time unit (a champion fitted in days scored on weeks).
    """
    scale = summary_unit_days / params.time_unit_days
    bg_nbd, gamma_gamma = params.bg_nbd, params.gamma_gamma

    def predict(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            x = batch["frequency"].to_numpy(dtype=np.float64)
            expected = bg_nbd.expected_purchases(
                batch["duration_holdout"].to_numpy() * scale,
                x,
                batch["recency"].to_numpy() * scale,
                batch["T"].to_numpy() * scale,
            )
            spend = gamma_gamma.conditional_expected_spend(x, batch["monetary_value"].to_numpy())
            yield pd.DataFrame(
                {
                    "cdp_id": batch["cdp_id"],
                    "frequency": batch["frequency"],
                    "actual_purchases": batch["frequency_holdout"].astype("float64"),
                    "predicted_purchases": expected,
                    "actual_spend": batch["frequency_holdout"] * batch["monetary_holdout"],
                    "predicted_spend": expected * spend,
                }
            )

    columns = ["frequency", "recency", "T", "monetary_value", "frequency_holdout", "monetary_holdout"]
    return summary.select(F.col("cdp_id").cast("string").alias("cdp_id"), *columns, "duration_holdout").mapInPandas(
        predict, HOLDOUT_SCHEMA
    )


def holdout_metrics(predictions: DataFrame) -> dict[str, float]:
    """MAE, correlation and totals of predicted vs actual holdout purchases and spend (one small aggregate)."""
    row = predictions.agg(
        F.avg(F.abs(F.col("predicted_purchases") - F.col("actual_purchases"))).alias("mae_purchases"),
        F.corr("predicted_purchases", "actual_purchases").alias("corr_purchases"),
        F.sum("predicted_purchases").alias("predicted_purchases_total"),
        F.sum("actual_purchases").alias("actual_purchases_total"),
        F.avg(F.abs(F.col("predicted_spend") - F.col("actual_spend"))).alias("mae_spend"),
        F.corr("predicted_spend", "actual_spend").alias("corr_spend"),
        F.sum("predicted_spend").alias("predicted_spend_total"),
        F.sum("actual_spend").alias("actual_spend_total"),
    ).first()
    return {name: float("nan") if value is None else float(value) for name, value in row.asDict().items()}


def holdout_by_frequency(predictions: DataFrame, max_frequency: int = 7) -> pd.DataFrame:
    """Mean actual and predicted holdout purchases by calibration repeat purchases (capped): a few rows."""
    bucket = F.least(F.col("frequency"), F.lit(max_frequency)).alias("frequency")
    return (
        predictions.groupBy(bucket)
        .agg(
            F.count(F.lit(1)).alias("customers"),
            F.avg("actual_purchases").alias("actual"),
            F.avg("predicted_purchases").alias("predicted"),
        )
        .toPandas()
        .sort_values("frequency")
    )


def holdout_figure(by_frequency: pd.DataFrame, max_frequency: int = 7) -> Figure:
    figure = Figure(figsize=(7, 5))
    axes = figure.subplots()
    labels = [f"{int(f)}+" if f >= max_frequency else str(int(f)) for f in by_frequency["frequency"]]
    axes.plot(labels, by_frequency["actual"], marker="o", label="actual")
    axes.plot(labels, by_frequency["predicted"], marker="s", linestyle="--", label="BG/NBD expected")
    axes.set(
        xlabel="repeat purchases in the calibration period",
        ylabel="mean purchases in the holdout period",
        title="Conditional expectations on the holdout",
    )
    axes.legend()
    return figure


# --------------------------------------------------------------------------------------------
# Training run
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClvTrainingResult:
    run_id: str
    version: str
    decision: tracking.GateDecision
    params: ClvParams
    metrics: dict[str, float]
    rows: dict[str, int]

    def counts(self) -> dict[str, float | int]:
        return {
            **self.rows,
            "model_version": int(self.version),
            "promoted": int(self.decision.promoted),
            **{f"holdout_{k}": round(v, 6) for k, v in self.metrics.items() if not math.isnan(v)},
        }


def train_clv(
    purchases: DataFrame,
    latest: date,
    config: ClvConfig,
    tracker: tracking.Tracking,
    tags: Mapping[str, str] | None = None,
) -> ClvTrainingResult:
    """Fit BG/NBD + Gamma-Gamma up to ``latest - holdout_days``, evaluate on the rest, log, register and gate.

    In: ``purchases`` (``cdp_id``, ``order_ts``, ``amount``), facts up to ``latest`` (inclusive).
    """
    calibration_end = latest - timedelta(days=config.holdout_days)
    summary = rfm_summary(
        purchases.where(F.col("cdp_id").isNotNull()),
        "cdp_id",
        "order_ts",
        "amount",
        calibration_end,
        config.time_unit_days,
        observation_end=latest,
    ).cache()
    try:
        n_customers = summary.count()
        if n_customers == 0:
            raise ValueError(f"clv: no customer with a purchase on or before the calibration end {calibration_end}")
        fraction = config.max_fit_customers / n_customers if n_customers > config.max_fit_customers else None
        fit_on = summary if fraction is None else keyed_sample(summary, fraction, config.seed)
        params = ClvParams(
            bg_nbd=fit_bg_nbd_summary(fit_on, penalizer_coef=config.penalizer_coef),
            gamma_gamma=fit_gamma_gamma_summary(fit_on, penalizer_coef=config.penalizer_coef),
            time_unit_days=config.time_unit_days,
            horizon_days=config.horizon_days,
            discount_rate=config.discount_rate,
        )
        predictions = holdout_predictions(summary, params, config.time_unit_days)
        metrics = holdout_metrics(predictions)
        by_frequency = holdout_by_frequency(predictions)
        rows = {"customers": n_customers, "customers_fitted": params.bg_nbd.n_customers}

        with mlflow.start_run(experiment_id=tracker.experiment_id, run_name=f"clv to {latest}") as run:
            mlflow.set_tags({"cdp.model": "clv", **(tags or {})})
            mlflow.log_params(
                {
                    "calibration_end": calibration_end.isoformat(),
                    "observation_end": latest.isoformat(),
                    "holdout_days": config.holdout_days,
                    "time_unit_days": config.time_unit_days,
                    "horizon_days": config.horizon_days,
                    "discount_rate": config.discount_rate,
                    "penalizer_coef": config.penalizer_coef,
                    "fit_sampled": fraction is not None,
                    "fit_sample_fraction": "none" if fraction is None else round(fraction, 6),
                    **{f"bgnbd_{k}": v for k, v in params.bg_nbd.to_dict().items()},
                    **{f"gg_{k}": v for k, v in params.gamma_gamma.to_dict().items()},
                }
            )
            mlflow.log_metrics(
                {
                    **{k: float(v) for k, v in rows.items()},
                    "repeat_customers_fitted": float(params.gamma_gamma.n_customers),
                    "bgnbd_log_likelihood": params.bg_nbd.log_likelihood,
                    "gg_log_likelihood": params.gamma_gamma.log_likelihood,
                    **{f"holdout_{k}": v for k, v in metrics.items() if not math.isnan(v)},
                }
            )
            mlflow.log_figure(holdout_figure(by_frequency), "plots/holdout_purchases.png")
            version = log_clv_model(params, config.registered_model)

            current = tracking.version_by_alias(tracker.client, config.registered_model, tracking.CHAMPION)
            champion_mae = None
            if current is not None:
                champion_params = load_clv_params(f"models:/{config.registered_model}/{current.version}")
                champion_mae = holdout_metrics(holdout_predictions(summary, champion_params, config.time_unit_days))[
                    "mae_purchases"
                ]
            decision = tracking.decide(
                "holdout_mae_purchases",
                metrics["mae_purchases"],
                None if current is None else str(current.version),
                champion_mae,
                higher_is_better=False,
            )
            mlflow.log_params(decision.as_params())
            mlflow.set_tag("gate_decision", decision.alias)
            tracking.apply_gate(tracker.client, config.registered_model, version, decision)
    finally:
        summary.unpersist()
    return ClvTrainingResult(run.info.run_id, version, decision, params, metrics, rows)
