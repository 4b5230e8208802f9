"""Identity rules as data (`conf/identity.yaml`): identifiers, limits, blocked and hot values, probabilistic
matching (blocking rules, comparisons, training knobs), clustering, and the health checks of each run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cdp_spark.config import Strict, load_model_file
from cdp_spark.identity.blocking_rule import parse_blocking_rule
from cdp_spark.identity.comparisons import ComparisonConfig


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


class RetrainGate(Strict):
    """How far a retrained model may move from the champion, on the same candidate pairs, and still replace it.

    Without labels: what matters is whether the links change. A model that flips many accept decisions, or moves a
    level's weight by several bits, is a different model: it stays ``challenger`` until someone looks at it.
    """

    max_changed_links: float = Field(
        0.05,
        ge=0,
        le=1,
        description="most share of the links (pairs either model accepts) whose accept decision differs",
    )
    max_weight_change: float = Field(
        2.0, ge=0, description="most change, in bits, of any comparison level's match weight log2(m/u)"
    )


class ProbabilisticConfig(Strict):
    """Blocking rules, comparisons, the acceptance threshold and the training knobs."""

    blocking_rules: list[str] = Field(
        min_length=1,
        max_length=31,
        description="SQL over l. and r. columns, e.g. 'l.last_name = r.last_name and l.year = r.year'",
    )
    comparisons: list[ComparisonConfig] = Field(min_length=1)
    match_threshold: float = Field(
        0.99, gt=0, lt=1, description="a match PROBABILITY: pairs with match_probability >= this become edges"
    )
    max_pairs_for_u: int = Field(1_000_000, gt=0, description="random record pairs counted to estimate u")
    seed: int = Field(42, description="seeds the random pairs of u: the same records train the same model")
    em_max_iterations: int = Field(1000, gt=0, description="EM runs on the driver over a few hundred rows: cheap")
    em_tolerance: float = Field(
        1e-4, gt=0, description="stop when no m moves by more than this and lambda by less than this, relatively"
    )
    prior_match_probability: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="initial lambda (over all pairs) of the final EM; default: a tenth of the candidate pairs match",
    )
    registered_model: str = Field(
        "cdp_identity",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="the MLflow registered model resolve registers each trained model under (`--model NAME` loads it)",
    )
    retrain_gate: RetrainGate = Field(default_factory=RetrainGate)

    @model_validator(mode="after")
    def _consistent(self) -> ProbabilisticConfig:
        names = [c.name for c in self.comparisons]
        if len(set(names)) != len(names):
            raise ValueError(f"comparison names must be unique, got {names}")
        if "id" in names:
            raise ValueError("'id' is reserved (id_l, id_r); name the comparison after what it compares")
        for text in self.blocking_rules:
            parse_blocking_rule(text)
        return self


class ClusteringConfig(Strict):
    algorithm: Literal["graphx", "graphframes", "two_phase", "randomized_contraction"] = "graphx"
    max_iterations: int = Field(100, gt=0)
    broadcast_threshold: int = -1
    checkpoint_interval: int = Field(2, gt=0)
    max_component_size: int = Field(50, gt=1)


class Threshold(Strict):
    """The limits of one health check: above ``warn`` the run logs a warning and records it; above ``fail`` resolve
    stops before it publishes the identity map. Either may be left out, not both."""

    warn: float | None = Field(None, ge=0)
    fail: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Threshold:
        if self.warn is None and self.fail is None:
            raise ValueError("give warn, fail or both (or null to turn the check off)")
        if self.warn is not None and self.fail is not None and self.warn > self.fail:
            raise ValueError(f"warn {self.warn:g} is above fail {self.fail:g}: a run would fail before it warns")
        return self


class HealthConfig(Strict):
    """Health checks of every resolve run, without labels (:mod:`cdp_spark.identity.health`); null turns one off.

    The defaults pass the generated sample; a check whose metric a run cannot know (a drift on the first run) is
    skipped.
    """

    max_cluster_size: Threshold | None = Field(
        Threshold(warn=40, fail=200), description="records in the largest cluster (metric cluster_size_max)"
    )
    max_share_in_large_clusters: Threshold | None = Field(
        Threshold(warn=0.01, fail=0.05),
        description="share of the records in clusters of more than 20 records (metric records_share_over_20)",
    )
    max_bridged_share: Threshold | None = Field(
        Threshold(warn=0.5),
        description="share of the clusters of 3+ records held together by single links (metric bridged_share)",
    )
    max_rule_share_change: Threshold | None = Field(
        Threshold(warn=0.1, fail=0.3),
        description="largest change of a rule's share of the links since the last run (metric link_share_change_max)",
    )
    max_weight_change: Threshold | None = Field(
        Threshold(warn=2.0),
        description="bits: largest change of a level's match weight from the last accepted model (weight_change_max)",
    )
    max_new_hot_values: Threshold | None = Field(
        Threshold(warn=10), description="values guarded as hot that the last run did not guard (hot_values_new)"
    )


class IdentityConfig(Strict):
    record_id: str = "record_id"
    identifiers: list[IdentifierRule] = Field(default_factory=list)
    hot_value_threshold: int = Field(20, gt=1, description="a value shared by more distinct records is not a link")
    facts: list[FactIdentifiers] = Field(default_factory=list)
    probabilistic: ProbabilisticConfig | None = None
    clustering: ClusteringConfig = Field(default_factory=ClusteringConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    full_rebuild_days: int | None = Field(
        7,
        ge=1,
        description="an incremental resolve goes full (and retrains) when the last full one is this many days old; "
        "null: only on --full, the first run or a change",
    )

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
