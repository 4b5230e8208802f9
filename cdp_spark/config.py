"""Configuration: YAML layers (base, environment overlay, ``--set`` overrides) validated into typed objects.

Everything is validated once, here, before any Spark work starts. Errors name the file and the key:
``ConfigError("conf/env/local.yaml: spark.shuffle_partitions: expected an integer, got 'five'")``.

Values may reference environment variables (for secrets) as ``${env:NAME}``; a reference to an unset
variable is an error naming the variable, the file and the key. Error messages never show a resolved value.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cdp_spark.redact import redact

_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(ValueError):
    """A configuration problem, with a message that names the file and the key."""


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, values are checked strictly."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------
# Models of conf/base.yaml
# --------------------------------------------------------------------------------------------


class LeaseConfig(Strict):
    """One run at a time writes a lakehouse: the lease it holds (``<root>/_lease``) while a stage runs."""

    enabled: bool = True
    expiry_seconds: int = Field(
        300, ge=10, description="a lease whose heartbeat is older is stale: the next run takes it over"
    )
    heartbeat_seconds: int = Field(30, gt=0, description="how often the holder renews its lease")
    wait_seconds: int = Field(
        0, ge=0, description="how long a run waits for a held lease before it fails naming the holder (0: at once)"
    )

    @model_validator(mode="after")
    def _renewed_in_time(self) -> LeaseConfig:
        if self.heartbeat_seconds * 2 > self.expiry_seconds:
            raise ValueError("heartbeat_seconds must be at most half of expiry_seconds, or a live lease looks stale")
        return self


class LakehouseConfig(Strict):
    root: str = "lakehouse"
    checkpoint_dir: str | None = None
    lease: LeaseConfig = Field(default_factory=LeaseConfig)
    table_parallelism: int = Field(
        4, ge=1, description="tables (or sources) worked on at once by ingest, standardize, erase and maintain"
    )

    def checkpoint(self, *parts: str) -> str:
        base = self.checkpoint_dir or f"{self.root.rstrip('/')}/_checkpoints"
        return "/".join([base.rstrip("/"), *parts])


class SparkConfig(Strict):
    master: str = "local[*]"
    app_name: str = "cdp-spark"
    driver_memory: str = "4g"
    shuffle_partitions: int = Field(8, gt=0)
    packages: list[str] = Field(default_factory=list)
    jars_dir: str | None = None
    ivy_dir: str = "~/.cache/cdp-spark/ivy"
    conf: dict[str, str] = Field(default_factory=dict)


class MessRates(Strict):
    """How often each kind of realistic mess appears in the generated sample data (0..1)."""

    name_typo: float = Field(0.05, ge=0, le=1)
    email_variant: float = Field(0.15, ge=0, le=1)
    second_email: float = Field(0.2, ge=0, le=1)
    missing_field: float = Field(0.05, ge=0, le=1)
    household: float = Field(0.3, ge=0, le=1)
    junk_email: float = Field(0.01, ge=0, le=1)
    device_only: float = Field(0.1, ge=0, le=1)
    malformed_row: float = Field(0.002, ge=0, le=1)


class SampleConfig(Strict):
    """The ``sample:`` section: what ``cdp-spark generate`` writes. No stage but generate reads it."""

    path: str | None = Field(None, description="where generate writes (default: landing, where the sources read)")
    people: int = Field(2000, gt=0)
    days: int = Field(3, gt=0)
    seed: int = 42
    start_date: date = date(2026, 1, 1)
    history_days: int = Field(730, gt=0)
    drift_day: int = Field(2, gt=0)
    malformed_day: int = Field(3, gt=0)
    mess: MessRates = Field(default_factory=MessRates)


class MlflowConfig(Strict):
    tracking_uri: str = "sqlite:///mlruns.db"
    artifact_root: str = "mlartifacts"
    experiment: str = "cdp-spark"

    def resolved_tracking_uri(self) -> str:
        """``MLFLOW_TRACKING_URI`` from the environment wins over the config file."""
        return os.environ.get("MLFLOW_TRACKING_URI") or self.tracking_uri


class StageFiles(Strict):
    """Paths of the declarative per-stage files, relative to the working directory."""

    sources: str = "conf/sources.yaml"
    expectations: str = "conf/expectations.yaml"
    identity: str = "conf/identity.yaml"
    profiles: str = "conf/profiles.yaml"
    models: str = "conf/models.yaml"
    segments: str = "conf/segments.yaml"
    destinations: str = "conf/destinations.yaml"


class MaintenanceConfig(Strict):
    """The ``maintenance:`` section of conf/base.yaml."""

    retention_hours: int = Field(168, ge=0, description="VACUUM retention; Delta refuses < 168 unless told otherwise")
    optimize: bool = Field(True, description="compact small files and Z-order by the read keys")
    purge_deletion_vectors: bool = Field(True, description="REORG ... APPLY (PURGE) where deletion vectors are on")
    log_retention_hours: int = Field(
        720,
        ge=0,
        description="how long a table's transaction log keeps old entries (their commit info and file statistics); "
        "maintain checkpoints the log and removes older entries (Delta removes whole days only)",
    )
    checkpoint_retention_hours: int = Field(
        24,
        ge=0,
        description="Spark checkpoint folders of other runs (whole rows, left by crashed runs) untouched this long "
        "are deleted by maintain",
    )


class PrivacyConfig(Strict):
    """The ``privacy:`` section of conf/base.yaml."""

    requests: str = Field(
        "_requests/erasure",
        description="where `cdp-spark erase` reads requests without --requests: a CSV/JSON-lines file or a folder; "
        "relative paths are under the lakehouse root",
    )
    hash_key: str | None = Field(
        None,
        min_length=16,
        description="secret key (at least 16 characters; reference it as ${env:NAME}) of the keyed hashes in the "
        "erasure plan and suppression list; unset: a key generated once in <lakehouse root>/_keys/hash_key",
    )


class CdpConfig(Strict):
    lakehouse: LakehouseConfig = Field(default_factory=LakehouseConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    files: StageFiles = Field(default_factory=StageFiles)
    maintenance: MaintenanceConfig = Field(default_factory=MaintenanceConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    reports_dir: str = "reports"
    landing: str = Field(
        "data/sample",
        description='where the source files arrive: "{landing}" in the paths of conf/sources.yaml; the default '
        "environment lands the generated sample here",
    )

    @property
    def sample_path(self) -> str:
        """Where ``cdp-spark generate`` writes, and ``evaluate`` finds the ground truth by default."""
        return self.sample.path or self.landing


# --------------------------------------------------------------------------------------------
# Layered loading with provenance
# --------------------------------------------------------------------------------------------


@dataclass
class Layers:
    """Merged raw values plus, for every dotted key, the file (or ``--set``) that set it last.

    ``secrets`` are the values read from environment variables: error messages mask them.
    """

    data: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)

    def where(self, dotted: str) -> str:
        parts = dotted.split(".") if dotted else []
        while parts:
            key = ".".join(parts)
            if key in self.origin:
                return self.origin[key]
            parts.pop()
        return " + ".join(self.sources) or "<defaults>"

    def merge(self, values: dict[str, Any], origin: str) -> None:
        if origin not in self.sources:
            self.sources.append(origin)
        _merge_into(self.data, values, origin, "", self.origin)


def _merge_into(target: dict, values: dict, origin: str, prefix: str, origins: dict[str, str]) -> None:
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_into(target[key], value, origin, dotted + ".", origins)
        else:
            target[key] = value
        origins[dotted] = origin
        if isinstance(value, dict):
            for sub in _flatten_keys(value, dotted + "."):
                origins[sub] = origin


def _flatten_keys(values: dict, prefix: str) -> list[str]:
    keys = []
    for key, value in values.items():
        keys.append(f"{prefix}{key}")
        if isinstance(value, dict):
            keys.extend(_flatten_keys(value, f"{prefix}{key}."))
    return keys


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read one YAML mapping; a missing file, bad YAML or a non-mapping is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (working directory: {Path.cwd()})")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {redact(str(exc))}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(loaded).__name__}")
    return loaded


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``--set a.b.c=value``; the value is read as a YAML scalar (so 5 is an int, true a bool)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or not re.fullmatch(r"[A-Za-z0-9_.\-]+", key.strip()):
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. spark.shuffle_partitions=4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def _resolve_env(values: Any, layers: Layers, path: str = "") -> Any:
    if isinstance(values, dict):
        return {k: _resolve_env(v, layers, f"{path}.{k}" if path else str(k)) for k, v in values.items()}
    if isinstance(values, list):
        return [_resolve_env(v, layers, f"{path}[{i}]") for i, v in enumerate(values)]
    if isinstance(values, str):

        def sub(match: re.Match) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(f"{layers.where(path)}: {path}: environment variable {name} is not set")
            layers.secrets.add(os.environ[name])
            return os.environ[name]

        return _ENV_REF.sub(sub, values)
    return values


def load_layers(files: list[str | Path], overrides: list[str] = ()) -> Layers:
    layers = Layers()
    for f in files:
        layers.merge(read_yaml(f), str(f))
    for text in overrides:
        key, value = parse_override(text)
        layers.merge(_nest(key, value), f"--set {key}")
    layers.data = _resolve_env(layers.data, layers)
    return layers


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], layers: Layers, prefix: str = "") -> M:
    """Validate merged raw values into ``model``; the first problems become one ConfigError naming file and key."""
    try:
        return model.model_validate(layers.data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, layers, prefix)) from None


def _describe(exc: ValidationError, layers: Layers, prefix: str) -> str:
    lines = []
    for err in exc.errors()[:5]:
        key = ".".join(str(p) for p in err["loc"])
        full = f"{prefix}{key}"
        where = layers.where(key)
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}: {full}: unknown key")
        elif err["type"] == "missing":
            lines.append(f"{where}: {full}: required key is missing")
        elif isinstance(err.get("input"), dict | list):
            # The input of a whole section (a source with its jdbc password ...) is not worth echoing.
            lines.append(f"{where}: {full}: {err['msg']}")
        else:
            lines.append(f"{where}: {full}: {err['msg']}, got {err.get('input')!r}")
    more = len(exc.errors()) - len(lines)
    if more > 0:
        lines.append(f"... and {more} more problem(s)")
    return redact("\n".join(lines), layers.secrets)


def load_config(conf_dir: str | Path = "conf", env: str | None = None, overrides: list[str] = ()) -> CdpConfig:
    """Load ``conf_dir/base.yaml``, then ``conf_dir/env/<env>.yaml``, then ``--set`` overrides, and validate."""
    conf_dir = Path(conf_dir)
    files: list[str | Path] = [conf_dir / "base.yaml"]
    if env:
        files.append(conf_dir / "env" / f"{env}.yaml")
    return validate(CdpConfig, load_layers(files, overrides))


def load_model_file(model: type[M], path: str | Path) -> M:
    """Load one declarative file (sources, identity rules, segments ...) into its model."""
    return validate(model, load_layers([path]))
