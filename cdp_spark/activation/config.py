"""Destinations as data (`conf/destinations.yaml`): which segments go where, with which identifiers and consent."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from cdp_spark import tables
from cdp_spark.config import ConfigError, Strict, load_model_file
from cdp_spark.segments.config import SegmentsConfig

IDENTIFIERS = ("email", "phone", "cdp_id")
CONSENT_COLUMN = {"email": "consent_email", "sms": "consent_sms", "ads": "consent_ads"}


class Destination(Strict):
    name: str
    segments: list[str] = Field(min_length=1, description="customers in any of these segments are exported")
    identifiers: list[Literal[IDENTIFIERS]] = Field(min_length=1)  # type: ignore[valid-type]
    attributes: list[str] = Field(default_factory=list, description="profile or score columns to export")
    format: Literal["csv", "parquet", "jsonl"] = "csv"
    path: str = Field(description="folder of this destination's exports; relative paths are under the lakehouse root")
    channel: Literal["email", "sms", "ads"] = Field(description="the consent a customer must have given")
    hash_identifiers: bool = Field(False, description="export SHA-256 of normalized email and phone (customer match)")
    mode: Literal["full", "delta"] = "full"

    @field_validator("name")
    @classmethod
    def _identifier(cls, name: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError("must be lower_snake_case (it names the export folder and the state)")
        return name

    @field_validator("path")
    @classmethod
    def _contained(cls, path: str) -> str:
        # Erasure rewrites and deletes files under this folder: it must not reach a table or leave its tree.
        parts = [p for p in re.split(r"[/\\]", path.split("://", 1)[-1]) if p]
        if not parts or any(p in ("..", ".") for p in parts):
            raise ValueError(f"must be a folder path without '.' or '..' segments, got {path!r}")
        relative = not (path.startswith("/") or "://" in path)
        if relative and (parts[0] in tables.LAYERS or parts[0].startswith(("_", "."))):
            raise ValueError(
                f"a relative path must not start in a table layer ({', '.join(tables.LAYERS)}) or a hidden "
                f"folder of the lakehouse, got {path!r}"
            )
        return path

    @model_validator(mode="after")
    def _columns(self) -> Destination:
        if len(set(self.identifiers)) != len(self.identifiers):
            raise ValueError(f"identifiers repeat a value: {self.identifiers}")
        clash = sorted(set(self.attributes) & set(self.identifier_columns))
        if clash or len(set(self.attributes)) != len(self.attributes):
            raise ValueError(f"attributes must be distinct and not identifier columns, got {self.attributes}")
        return self

    @property
    def identifier_columns(self) -> list[str]:
        """Exported identifier columns: ``email``/``phone`` or ``email_sha256``/``phone_sha256``, ``cdp_id``."""
        hashed = self.hash_identifiers
        return [f"{i}_sha256" if hashed and i != "cdp_id" else i for i in self.identifiers]

    @property
    def columns(self) -> list[str]:
        return [*self.identifier_columns, *self.attributes]

    @property
    def consent_column(self) -> str:
        return CONSENT_COLUMN[self.channel]

    def definition_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()


class DestinationsConfig(Strict):
    destinations: list[Destination] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> DestinationsConfig:
        names = [d.name for d in self.destinations]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"destination names must be unique, repeated: {', '.join(dupes)}")
        return self


def load_destinations(path: str) -> DestinationsConfig:
    return load_model_file(DestinationsConfig, path)


def check_destinations(config: DestinationsConfig, segments: SegmentsConfig, available: list[str], source: str) -> None:
    """Fail naming the destination when it exports an unknown segment or attribute (``available`` columns)."""
    problems = []
    for d in config.destinations:
        unknown = sorted(set(d.segments) - set(segments.names))
        if unknown:
            problems.append(f"{source}: destinations[{d.name}].segments: unknown segment(s) {unknown}")
        missing = sorted(set(d.attributes) - set(available))
        if missing:
            problems.append(
                f"{source}: destinations[{d.name}].attributes: unknown column(s) {missing}; "
                f"profile and score columns are {sorted(available)}"
            )
    if problems:
        raise ConfigError("\n".join(problems))
