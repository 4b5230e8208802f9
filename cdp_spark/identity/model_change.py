"""How much a retrained identity model changes from the champion, without labels, and whether it may replace it.

Identity has no holdout with known answers, so a retrain is not scored against truth: it is compared with the
champion on the same candidate pairs. Two measures, both read off in ``conf/identity.yaml``'s ``retrain_gate``:

- ``changed_links``: of the links (pairs that either model accepts at ``match_threshold``), the share whose accept
  decision differs between the two models (1 - Jaccard similarity of the two accepted sets). It is what the
  identity map would feel: 0 means the same edges.
- ``max_weight_change``: the largest change, in bits, of any comparison level's match weight log2(m/u). It catches a
  model that moved a lot where this run's pairs did not look (a rare level).

lambda is not compared: it is over all N(N-1)/2 pairs and falls as the data grows, by design.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cdp_spark.identity.model import FittedModel, score_pairs
from cdp_spark.identity.rules import RetrainGate


@dataclass(frozen=True)
class ModelChange:
    """The new model against the champion on the same candidate pairs."""

    pairs: int  # candidate pairs both scored
    links_new: int  # accepted by the new model
    links_champion: int  # accepted by the champion
    links_either: int  # accepted by at least one of them
    links_changed: int  # accepted by exactly one of them
    max_weight_change: float  # bits, over every comparison level
    weight_changes: dict[str, float]  # "<comparison>/<level label>" -> |new weight - champion weight|

    @property
    def changed_links(self) -> float:
        """Share of the links (accepted by either model) that only one model accepts; 0 when neither accepts any."""
        return self.links_changed / self.links_either if self.links_either else 0.0

    def as_metrics(self) -> dict[str, float]:
        return {
            "gate_candidate_pairs": float(self.pairs),
            "gate_links_new": float(self.links_new),
            "gate_links_champion": float(self.links_champion),
            "gate_links_either": float(self.links_either),
            "gate_links_changed": float(self.links_changed),
            "gate_changed_links": self.changed_links,
            "gate_max_weight_change": self.max_weight_change,
        }


def weight_changes(new: FittedModel, champion: FittedModel) -> dict[str, float]:
    """|new - champion| match weight of every comparison level both models have, by ``<comparison>/<level>``."""
    old = champion.level_weights()
    return {
        f"{comparison}/{label}": abs(weight - old[(comparison, label)])
        for (comparison, label), weight in new.level_weights().items()
        if (comparison, label) in old
    }


def model_change(vectors: DataFrame, new: FittedModel, champion: FittedModel, threshold: float) -> ModelChange:
    """Score the same comparison vectors with both models and count the accept decisions they share and not.

    In: ``gamma_<name>...`` of the candidate pairs (the comparisons of both models must be the same). One
    aggregate over the pairs: nothing but four counts reaches the driver.
    """
    differ = champion.comparisons_differ(new.config)
    if differ:
        raise ValueError(f"the champion cannot score these pairs: {differ}")
    gammas = [f"gamma_{c.name}" for c in new.comparisons]
    new_accepts = score_pairs(vectors.select(*gammas), new).select(
        *gammas, (F.col("match_probability") >= threshold).alias("accepted_new")
    )
    both = score_pairs(new_accepts, champion).select(
        "accepted_new", (F.col("match_probability") >= threshold).alias("accepted_champion")
    )
    row = both.agg(
        F.count(F.lit(1)).alias("pairs"),
        F.count_if("accepted_new").alias("links_new"),
        F.count_if("accepted_champion").alias("links_champion"),
        F.count_if(F.col("accepted_new") | F.col("accepted_champion")).alias("links_either"),
        F.count_if(F.col("accepted_new") != F.col("accepted_champion")).alias("links_changed"),
    ).first()
    changes = weight_changes(new, champion)
    return ModelChange(
        pairs=int(row["pairs"]),
        links_new=int(row["links_new"]),
        links_champion=int(row["links_champion"]),
        links_either=int(row["links_either"]),
        links_changed=int(row["links_changed"]),
        max_weight_change=max(changes.values(), default=0.0),
        weight_changes=changes,
    )


def gate_breaches(change: ModelChange, gate: RetrainGate) -> list[str]:
    """The limits of ``gate`` the change exceeds, each said in words; empty when the new model may replace the old."""
    breaches = []
    if change.changed_links > gate.max_changed_links:
        breaches.append(
            f"{change.links_changed} of {change.links_either} links ({change.changed_links:.2%}) change, more than "
            f"max_changed_links {gate.max_changed_links:.2%}"
        )
    if change.max_weight_change > gate.max_weight_change:
        moved = max(change.weight_changes, key=change.weight_changes.__getitem__)
        breaches.append(
            f"the weight of {moved} moves {change.max_weight_change:.2f} bits, more than max_weight_change "
            f"{gate.max_weight_change:g}"
        )
    return breaches
