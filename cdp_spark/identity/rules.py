"""Identity rules as data (`conf/identity.yaml`): identifiers, limits, blocked and hot values, clustering."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cdp_spark.config import Strict, load_model_file
from cdp_spark.identity.probabilistic import ProbabilisticConfig


class IdentifierRule(Strict):
    """Records that share a value of this identifier are the same person (unless guarded)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    column: str | None = Field(None, description="column of the records; None: seen only in fact tables")
    priority: int = Field(ge=1, description="1 = strongest; when a limit is exceeded the weakest type gives way")
    limit: int | None = Field(None, gt=0, description="most distinct values of this identifier in one profile")
    blocked: list[str] = Field(default_factory=list)


class FactIdentifiers(Strict):
    """A fact table whose rows show identifiers together (a login: cookie + account + email)."""

    table: Literal["orders", "events", "support_tickets", "email_engagement"]
    anchor: str = Field(description="the identifier whose value becomes an anonymous record (e.g. cookie)")
    identifiers: dict[str, str] = Field(description="identifier name -> column of the fact table")


class ClusteringConfig(Strict):
    algorithm: Literal["graphx", "graphframes", "two_phase", "randomized_contraction"] = "graphx"
    max_iterations: int = Field(100, gt=0)
    broadcast_threshold: int = -1
    checkpoint_interval: int = Field(2, gt=0)
    max_component_size: int = Field(50, gt=1)


class IdentityConfig(Strict):
    record_id: str = "record_id"
    identifiers: list[IdentifierRule] = Field(default_factory=list)
    hot_value_threshold: int = Field(20, gt=1, description="a value shared by more distinct records is not a link")
    facts: list[FactIdentifiers] = Field(default_factory=list)
    probabilistic: ProbabilisticConfig | None = None
    clustering: ClusteringConfig = Field(default_factory=ClusteringConfig)

    @model_validator(mode="after")
    def _consistent(self) -> IdentityConfig:
        names = [i.name for i in self.identifiers]
        if len(set(names)) != len(names):
            raise ValueError("identifier names must be unique")
        for fact in self.facts:
            unknown = [n for n in [fact.anchor, *fact.identifiers] if n not in names]
            if unknown:
                raise ValueError(f"facts[{fact.table}] names identifiers not declared under identifiers: {unknown}")
            if fact.anchor not in fact.identifiers:
                raise ValueError(f"facts[{fact.table}]: anchor {fact.anchor!r} must be one of its identifiers")
        if not self.identifiers and self.probabilistic is None:
            raise ValueError("configure at least one identifier or a probabilistic section")
        return self

    def rule(self, name: str) -> IdentifierRule:
        return next(i for i in self.identifiers if i.name == name)


def load_identity(path: str) -> IdentityConfig:
    return load_model_file(IdentityConfig, path)
