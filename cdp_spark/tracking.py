"""MLflow plumbing shared by the models: the experiment, registered versions, and the champion/challenger gate.

Used by the identity model (resolve) and the churn and CLV models (train, score): below both stages.
A new model version becomes ``champion`` only if it passes its gate against the current champion (churn and CLV:
it beats the champion on the same holdout; identity: it changes the accepted links little enough); otherwise it is
aliased ``challenger``. The first version of a model is champion. Scoring loads champions only.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Protocol

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import get_model_info

from cdp_spark.config import MlflowConfig
from cdp_spark.redact import redact

log = logging.getLogger("cdp_spark")

CHAMPION = "champion"
CHALLENGER = "challenger"


class NoChampionError(RuntimeError):
    """A registered model has no champion version to score with."""


@dataclass(frozen=True)
class Tracking:
    """An MLflow tracking store and registry, with the experiment every cdp-spark training run goes to."""

    tracking_uri: str
    experiment_id: str
    client: MlflowClient


def connect(config: MlflowConfig) -> Tracking:
    """Point MLflow at the configured store (``MLFLOW_TRACKING_URI`` wins) and get or create the experiment."""
    uri = config.resolved_tracking_uri()
    # The fluent API (start_run, log_model) reads the global URIs; the client gets them explicitly.
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(config.experiment)
    if experiment is None:
        experiment_id = client.create_experiment(
            config.experiment, artifact_location=artifact_location(config.artifact_root)
        )
    elif experiment.lifecycle_stage == "deleted":
        raise RuntimeError(
            f"MLflow experiment {config.experiment!r} in {redact(uri)} is deleted: restore it or set mlflow.experiment"
        )
    else:
        experiment_id = experiment.experiment_id
    return Tracking(tracking_uri=uri, experiment_id=experiment_id, client=client)


def artifact_location(artifact_root: str) -> str:
    """A URI stays as it is; a local folder becomes an absolute file URI, so runs do not depend on the cwd."""
    if "://" in artifact_root:
        return artifact_root
    return Path(artifact_root).expanduser().resolve().as_uri()


def requirements(*distributions: str) -> list[str]:
    """Pinned pip requirements of the installed distributions (MLflow would otherwise infer them slowly)."""
    return [f"{name}=={metadata.version(name)}" for name in distributions]


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


@dataclass(frozen=True)
class ChampionRef:
    """The champion version of a registered model, pinned by version so an alias move cannot change it mid-job."""

    name: str
    version: str
    input_names: tuple[str, ...]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def champion(tracking: Tracking, name: str) -> ChampionRef:
    """The current champion of ``name``; a NoChampionError saying to train first when there is none."""
    version = version_by_alias(tracking.client, name, CHAMPION)
    if version is None:
        raise NoChampionError(
            f"registered model {name!r} has no '{CHAMPION}' version in the MLflow store {redact(tracking.tracking_uri)}: "
            "run `cdp-spark train` first"
        )
    uri = f"models:/{name}/{version.version}"
    signature = get_model_info(uri).signature
    input_names = tuple(signature.inputs.input_names()) if signature is not None else ()
    return ChampionRef(name=name, version=str(version.version), input_names=input_names)


class Gate(Protocol):
    """What a gate decided: the alias the new version gets, and the params that record why."""

    @property
    def alias(self) -> str: ...

    @property
    def reason(self) -> str: ...

    def as_params(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class GateDecision:
    """The outcome of comparing a new version with the champion on the new version's holdout."""

    metric: str
    new_score: float
    champion_version: str | None
    champion_score: float | None
    promoted: bool
    reason: str

    @property
    def alias(self) -> str:
        return CHAMPION if self.promoted else CHALLENGER

    def as_params(self) -> dict[str, str]:
        return {
            "gate_metric": self.metric,
            "gate_new_score": f"{self.new_score:.6f}",
            "gate_champion_version": self.champion_version or "none",
            "gate_champion_score": "none" if self.champion_score is None else f"{self.champion_score:.6f}",
            "gate_decision": self.alias,
            "gate_reason": self.reason,
        }


def decide(
    metric: str,
    new_score: float,
    champion_version: str | None,
    champion_score: float | None,
    higher_is_better: bool,
) -> GateDecision:
    """Promote when there is no champion, or when the new score strictly beats the champion's on the same holdout."""
    if champion_version is None:
        return GateDecision(metric, new_score, None, None, True, "first version: no champion yet")
    if champion_score is None or math.isnan(champion_score):
        return GateDecision(
            metric, new_score, champion_version, None, True, "the champion could not be evaluated on this holdout"
        )
    beats = new_score > champion_score if higher_is_better else new_score < champion_score
    comparison = ">" if higher_is_better else "<"
    reason = (
        f"new {metric} {new_score:.4f} {'' if beats else 'not '}{comparison} champion's {champion_score:.4f}"
        f" (version {champion_version}) on the same holdout"
    )
    return GateDecision(metric, new_score, champion_version, champion_score, beats, reason)


def apply_gate(client: MlflowClient, name: str, version: str, decision: Gate) -> None:
    """Move the alias the decision names onto ``version`` and record the comparison on the version itself."""
    client.set_registered_model_alias(name, decision.alias, version)
    for key, value in decision.as_params().items():
        client.set_model_version_tag(name, version, key, value)
    log.info("%s version %s -> %s: %s", name, version, decision.alias, decision.reason)
