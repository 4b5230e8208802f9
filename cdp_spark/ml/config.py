"""Model settings as data (`conf/models.yaml`): churn snapshots, estimator and sampling; CLV units and horizon."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field, field_validator, model_validator
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from cdp_spark.config import Strict, load_model_file

ChurnEstimator = Literal["gradient_boosting", "logistic_regression", "random_forest"]
Hyperparameter = bool | int | float | str | None

ESTIMATORS: dict[str, type[BaseEstimator]] = {
    "gradient_boosting": HistGradientBoostingClassifier,
    "logistic_regression": LogisticRegression,
    "random_forest": RandomForestClassifier,
}


def _check_hyperparameters(estimator: str, values: dict[str, Hyperparameter]) -> dict[str, Hyperparameter]:
    """Reject names the estimator does not have now, not after an hour of feature computation."""
    known = ESTIMATORS[estimator]().get_params()
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(
            f"{ESTIMATORS[estimator].__name__} has no hyperparameter(s) {unknown}; known: {', '.join(sorted(known))}"
        )
    return values


class Hyperparameters(Strict):
    """Keyword arguments of each estimator; only the one named by ``churn.model`` is used."""

    gradient_boosting: dict[str, Hyperparameter] = Field(default_factory=dict)
    logistic_regression: dict[str, Hyperparameter] = Field(default_factory=dict)
    random_forest: dict[str, Hyperparameter] = Field(default_factory=dict)

    @field_validator("gradient_boosting", "logistic_regression", "random_forest")
    @classmethod
    def _known(cls, values: dict[str, Hyperparameter], info) -> dict[str, Hyperparameter]:
        return _check_hyperparameters(info.field_name, values)

    def for_estimator(self, estimator: ChurnEstimator) -> dict[str, Hyperparameter]:
        return dict(getattr(self, estimator))


class ChurnConfig(Strict):
    """Churn = no purchase in the ``horizon_days`` after an as-of date; trained on past snapshots of features."""

    registered_model: str = "cdp_churn"
    horizon_days: int = Field(90, gt=0)
    n_snapshots: int = Field(4, gt=0, description="training as-of dates")
    snapshot_every_days: int = Field(30, gt=0, description="days between training as-of dates")
    holdout_as_of: date | None = Field(
        None, description="None: the latest fact date minus horizon_days, the latest as-of whose labels are known"
    )
    model: ChurnEstimator = "gradient_boosting"
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    features: list[str] | None = Field(
        None, description="None: every numeric or boolean column of gold.customer_features except cdp_id and as_of"
    )
    baseline_feature: str = Field("recency_days", description="the one-feature baseline every model must beat")
    max_training_rows: int = Field(200_000, gt=0, description="stratified driver sample above this")
    max_holdout_rows: int = Field(200_000, gt=0, description="random driver sample of the holdout above this")
    importance_rows: int = Field(5_000, gt=0, description="holdout rows for permutation importance")
    seed: int = 42

    @field_validator("features")
    @classmethod
    def _features_listed_once(cls, features: list[str] | None) -> list[str] | None:
        if features is not None:
            if not features:
                raise ValueError("list at least one feature, or null for every numeric feature")
            if len(set(features)) != len(features):
                raise ValueError("features must not repeat")
        return features


class ClvConfig(Strict):
    """BG/NBD + Gamma-Gamma fitted on a calibration period, checked on the ``holdout_days`` after it."""

    registered_model: str = "cdp_clv"
    time_unit_days: float = Field(7.0, gt=0, description="the models' time unit (7: weeks)")
    horizon_days: int = Field(365, gt=0, description="CLV and expected purchases over this many days")
    discount_rate: float = Field(0.1, gt=-1, description="annual discount rate")
    holdout_days: int = Field(180, gt=0, description="the calibration period ends this many days before the data")
    max_fit_customers: int = Field(1_000_000, gt=0, description="fit on a seeded sample of customers above this")
    penalizer_coef: float = Field(0.0, ge=0)
    seed: int = 42


class ModelsConfig(Strict):
    churn: ChurnConfig = Field(default_factory=ChurnConfig)
    clv: ClvConfig = Field(default_factory=ClvConfig)

    @model_validator(mode="after")
    def _distinct_names(self) -> ModelsConfig:
        if self.churn.registered_model == self.clv.registered_model:
            raise ValueError("churn.registered_model and clv.registered_model must differ")
        return self


def load_models(path: str) -> ModelsConfig:
    return load_model_file(ModelsConfig, path)
