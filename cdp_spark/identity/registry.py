"""The identity model kept and found again: a JSON file beside the lakehouse, a version in the MLflow registry.

Train once, resolve many: ``cdp-spark resolve`` trains, writes the model to ``<root>/_models/identity/<run_id>.json``
and registers it (``probabilistic.registered_model``); ``cdp-spark resolve --model REF`` scores with a saved model
instead of training. ``REF`` is a registry reference (``NAME``, meaning ``NAME@champion``; ``NAME@alias``;
``models:/NAME@alias``; ``models:/NAME/<version>``) or a path to a JSON file (local or any Hadoop file system: it
contains a ``/`` or ends in ``.json``).

A new version becomes ``champion`` only when ``model_change`` finds it close enough to the champion on this run's
candidate pairs (``probabilistic.retrain_gate``); otherwise it is ``challenger``, with the reason in its tags.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from pydantic import ValidationError

from cdp_spark import tracking
from cdp_spark.config import ConfigError
from cdp_spark.identity.comparisons import ELSE_LEVEL
from cdp_spark.identity.model import FittedModel, predict_match
from cdp_spark.identity.model_change import ModelChange, gate_breaches
from cdp_spark.identity.rules import ProbabilisticConfig, RetrainGate
from cdp_spark.lakefiles import LakeFiles
from cdp_spark.redact import redact

log = logging.getLogger("cdp_spark")

MODEL_ARTIFACT = "identity_model"


def model_path(root: str, run_id: str) -> str:
    """Where resolve writes the model it trained: ``<root>/_models/identity/<run_id>.json``."""
    return f"{root.rstrip('/')}/_models/identity/{run_id}.json"


def save_model_file(files: LakeFiles, path: str, model: FittedModel) -> None:
    files.write_text(path, model.to_json())


def load_model_file(files: LakeFiles, path: str) -> FittedModel:
    """A model from its JSON file; a ConfigError naming the path when it is missing or not an identity model."""
    if not files.exists(path):
        raise ConfigError(f"--model {path}: no such file (a model JSON written by `cdp-spark resolve`)")
    try:
        return FittedModel.from_json(files.read_text(path))
    except ValidationError as exc:
        first = str(exc).splitlines()
        raise ConfigError(f"--model {path}: not a cdp-spark identity model: {' '.join(first[:3])}") from None


def is_registry_reference(ref: str) -> bool:
    return ref.startswith("models:/") or ("/" not in ref and "\\" not in ref and not ref.endswith(".json"))


def registry_uri(ref: str) -> str:
    """``NAME`` -> ``models:/NAME@champion``; ``NAME@alias`` -> ``models:/NAME@alias``; ``models:/...`` unchanged."""
    if ref.startswith("models:/"):
        return ref
    return f"models:/{ref}" if "@" in ref else f"models:/{ref}@{tracking.CHAMPION}"


class IdentityModel(mlflow.pyfunc.PythonModel):
    """The pyfunc in the registry: the model from its JSON artifact; it scores comparison vectors (``gamma_*``)."""

    model: FittedModel

    def load_context(self, context: Any) -> None:
        self.model = FittedModel.from_json(Path(context.artifacts[MODEL_ARTIFACT]).read_text(encoding="utf-8"))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return predict_match(self.model, model_input)


def load_registered(tracker: tracking.Tracking, ref: str) -> FittedModel:
    """The model of a registry reference; a ConfigError naming it and the store when there is none."""
    uri = registry_uri(ref)
    try:
        return mlflow.pyfunc.load_model(uri).unwrap_python_model().model
    except MlflowException as exc:
        raise ConfigError(
            f"--model {ref}: no such registered identity model ({uri}) in the MLflow store "
            f"{redact(tracker.tracking_uri)}: {str(exc).splitlines()[0]}. `cdp-spark resolve` without --model "
            "trains and registers one"
        ) from None
    except AttributeError:
        raise ConfigError(f"--model {ref}: {uri} is not an identity model") from None


def load_model(
    ref: str, settings: ProbabilisticConfig, source: str, files: LakeFiles, tracker: tracking.Tracking | None
) -> FittedModel:
    """The model ``--model REF`` names, checked against the comparisons of ``settings`` (read from ``source``)."""
    if is_registry_reference(ref):
        if tracker is None:
            raise ConfigError(f"--model {ref}: a registered model needs MLflow (mlflow: in the config)")
        model = load_registered(tracker, ref)
    else:
        model = load_model_file(files, ref)
    differ = model.comparisons_differ(settings)
    if differ:
        raise ConfigError(
            f"--model {ref}: {differ} in {source}. Resolve with a model trained for these comparisons, or train one "
            "(`cdp-spark resolve` without --model)"
        )
    return model


# --------------------------------------------------------------------------------------------------
# A trained model: logged, registered, gated
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrainDecision:
    """Whether a retrained model replaces the champion, and why (recorded on the registered version)."""

    promoted: bool
    reason: str
    champion_version: str | None
    change: ModelChange | None

    @property
    def alias(self) -> str:
        return tracking.CHAMPION if self.promoted else tracking.CHALLENGER

    def as_params(self) -> dict[str, str]:
        change = self.change
        return {
            "gate_metric": "changed_links, max_weight_change",
            "gate_champion_version": self.champion_version or "none",
            "gate_changed_links": "none" if change is None else f"{change.changed_links:.6f}",
            "gate_max_weight_change": "none" if change is None else f"{change.max_weight_change:.6f}",
            "gate_decision": self.alias,
            "gate_reason": self.reason,
        }


def decide(change: ModelChange | None, champion_version: str | None, gate: RetrainGate) -> RetrainDecision:
    """Promote the first version, one the champion cannot be compared with, and one within the gate's limits."""
    if champion_version is None:
        return RetrainDecision(True, "first version: no champion yet", None, None)
    against = f"against champion version {champion_version}"
    if change is None:
        reason = f"the champion (version {champion_version}) was fitted for other comparisons: it cannot be compared"
        return RetrainDecision(True, reason, champion_version, None)
    breaches = gate_breaches(change, gate)
    if breaches:
        return RetrainDecision(False, "; ".join(breaches) + f" ({against})", champion_version, change)
    reason = (
        f"{change.changed_links:.2%} of the links change, no level weight moves more than "
        f"{change.max_weight_change:.2f} bits ({against}): within the gate"
    )
    return RetrainDecision(True, reason, champion_version, change)


def champion(tracker: tracking.Tracking, settings: ProbabilisticConfig) -> tuple[str | None, FittedModel | None]:
    """The champion's version and model, the model None when it was fitted for other comparisons than ``settings``."""
    current = tracking.version_by_alias(tracker.client, settings.registered_model, tracking.CHAMPION)
    if current is None:
        return None, None
    model = load_registered(tracker, f"models:/{settings.registered_model}/{current.version}")
    differ = model.comparisons_differ(settings)
    if differ:
        log.warning("identity champion version %s cannot be compared with a retrain: %s", current.version, differ)
        return str(current.version), None
    return str(current.version), model


def _key(label: str) -> str:
    """A level label as an MLflow key part (letters, digits, ``_ - . /`` and spaces only): ``jaro_winkler>=0.95`` ->
    ``jaro_winkler_ge_0.95``."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", label.replace(">=", "_ge_").replace("<=", "_le_"))


def model_params(model: FittedModel) -> dict[str, Any]:
    """MLflow params of a model: lambda, the EM runs, m, u and the weight of every comparison level."""
    params: dict[str, Any] = {"match_prior": model.match_prior, "match_threshold": model.config.match_threshold}
    for comparison in model.comparisons:
        for level in comparison.levels:
            key = f"{comparison.name}.{_key(level.label)}"
            params[f"m.{key}"] = round(level.m, 8)
            params[f"u.{key}"] = round(level.u, 8)
    return params


def model_metrics(model: FittedModel) -> dict[str, float]:
    metrics = {"match_prior": model.match_prior, "prior_weight": model.prior_weight}
    for comparison in model.comparisons:
        for level in comparison.levels:
            metrics[f"weight.{comparison.name}.{_key(level.label)}"] = level.weight
    training = model.training
    if training is not None:
        metrics |= {
            "records": float(training.records),
            "candidate_pairs": float(training.candidate_pairs),
            "u_pairs": float(training.u_pairs),
            "distinct_vectors": float(training.distinct_vectors),
            "em_converged": float(training.em_converged),
            "em_iterations": float(sum(s.iterations for s in training.em_sessions)),
            "em_iterations_final": float(training.em_sessions[-1].iterations) if training.em_sessions else 0.0,
        }
    return metrics


def _log_pyfunc(model: FittedModel, registered_model: str) -> str:
    example = pd.DataFrame({f"gamma_{c.name}": [c.levels[0].level, ELSE_LEVEL] for c in model.comparisons})
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{MODEL_ARTIFACT}.json"
        path.write_text(model.to_json(), encoding="utf-8")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=IdentityModel(),
            artifacts={MODEL_ARTIFACT: str(path)},
            signature=infer_signature(example, predict_match(model, example)),
            input_example=example,
            registered_model_name=registered_model,
            pip_requirements=tracking.requirements("cdp-spark", "numpy", "pandas", "scipy"),
        )
        mlflow.log_artifact(str(path))  # the plain JSON too, for `--model` from a download
    return str(info.registered_model_version)


@dataclass(frozen=True)
class RegisteredModel:
    run_id: str
    version: str
    decision: RetrainDecision


def register(
    tracker: tracking.Tracking,
    model: FittedModel,
    champion_version: str | None,
    change: ModelChange | None,
    tags: Mapping[str, str] | None = None,
    saved_at: str | None = None,
) -> RegisteredModel:
    """Log a trained model (params, metrics, the JSON) in a run, register it and move the alias the gate decides."""
    settings = model.config
    decision = decide(change, champion_version, settings.retrain_gate)
    with mlflow.start_run(experiment_id=tracker.experiment_id, run_name="identity") as run:
        mlflow.set_tags({"cdp.model": "identity", **(tags or {}), **({"cdp.model_file": saved_at} if saved_at else {})})
        mlflow.log_params(model_params(model))
        mlflow.log_metrics(model_metrics(model) | ({} if change is None else change.as_metrics()))
        version = _log_pyfunc(model, settings.registered_model)
        mlflow.log_params(decision.as_params())
        mlflow.set_tag("gate_decision", decision.alias)
        tracking.apply_gate(tracker.client, settings.registered_model, version, decision)
    return RegisteredModel(run.info.run_id, version, decision)
