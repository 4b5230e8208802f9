"""The fitted Fellegi-Sunter model: m, u and lambda per comparison level, scoring pairs, explaining a score.

The model (Splink's formulation):
- ``m`` = P(level | same person), ``u`` = P(level | different people), per comparison and level;
- ``match_weight`` = sum over comparisons of log2(m/u) at the pair's level (a null level adds 0): the
  evidence in bits, whatever the size of the data set;
- ``match_prior`` (lambda) = P(two records drawn at random are the same person), over all N(N-1)/2
  pairs, so ``match_probability`` = 1 / (1 + 2^-(match_weight + log2(lambda / (1 - lambda)))).
  Blocking only chooses which pairs get scored; when whether a pair is blocked depends only on its
  comparison levels, the posterior over all pairs is also the right one for the blocked pairs. A
  bigger data set has a smaller lambda, so the same evidence yields a lower probability: it has more
  look-alikes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from functools import reduce
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, model_validator
from pyspark.sql import Column, DataFrame, Row
from pyspark.sql import functions as F
from scipy.special import expit

from cdp_spark.config import ConfigError, Strict
from cdp_spark.identity.blocking import candidate_pairs, pair_columns, record_side, require_columns
from cdp_spark.identity.rules import ProbabilisticConfig
from cdp_spark.identity.vectors import comparison_vectors

EDGE_RULE = "probabilistic"
# Of the JSON document ``FittedModel.to_json`` writes: raise it when a saved model no longer means the same.
MODEL_FORMAT_VERSION = 1


class EmSession(Strict):
    """One EM run: over the pairs of one blocking rule (m), or over all candidate pairs (lambda)."""

    blocking_rule: int | None = Field(description="index in blocking_rules; None: the final run over all pairs")
    pairs: int
    ignored: list[str] = Field(description="comparisons left out: the rule reads their columns")
    estimated: list[str] = Field(description="comparisons whose m this run estimated")
    match_share: float = Field(description="lambda of this run: over its own pairs, or over all pairs (final)")
    iterations: int
    converged: bool


class FittedLevel(Strict):
    level: int
    label: str
    m: float = Field(gt=0, le=1)
    u: float = Field(gt=0, le=1)

    @property
    def weight(self) -> float:
        """log2(m / u): the bits of evidence for a match this level gives."""
        return math.log2(self.m / self.u)


class FittedComparison(Strict):
    name: str
    levels: list[FittedLevel] = Field(description="best level first, else last")

    def at(self, level: int) -> FittedLevel | None:
        return next((fitted for fitted in self.levels if fitted.level == level), None)


class TrainingSummary(Strict):
    records: int
    total_pairs: int
    u_pairs: int
    candidate_pairs: int
    distinct_vectors: int
    em_converged: bool
    em_sessions: list[EmSession]


class FittedModel(Strict):
    """m, u and lambda with the config they were fitted for; saved and loaded as JSON (``to_json``/``from_json``)."""

    format_version: int = Field(MODEL_FORMAT_VERSION, description="of the JSON document; another one is refused")
    config: ProbabilisticConfig
    id_col: str
    match_prior: float = Field(gt=0, lt=1, description="lambda: P(two random records are the same person)")
    comparisons: list[FittedComparison]
    training: TrainingSummary | None = None

    @model_validator(mode="after")
    def _matches_config(self) -> FittedModel:
        if self.format_version != MODEL_FORMAT_VERSION:
            raise ValueError(
                f"format_version {self.format_version}: this cdp-spark reads identity models of format version "
                f"{MODEL_FORMAT_VERSION}; retrain the model"
            )
        expected = [(c.name, c.labels) for c in self.config.comparisons]
        fitted = [(c.name, [level.label for level in c.levels]) for c in self.comparisons]
        if expected != fitted:
            raise ValueError(f"fitted comparisons {fitted} do not match the config's {expected}")
        return self

    @property
    def prior_weight(self) -> float:
        """log2(lambda / (1 - lambda)): the bits a pair starts from before any comparison."""
        return math.log2(self.match_prior / (1 - self.match_prior))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FittedModel:
        return cls.model_validate(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> FittedModel:
        return cls.model_validate_json(text)

    def comparisons_differ(self, config: ProbabilisticConfig) -> str | None:
        """Why this model cannot score pairs compared as ``config`` says (names, kinds and levels), or None."""
        fitted = [(c.name, c.kind, c.labels) for c in self.config.comparisons]
        wanted = [(c.name, c.kind, c.labels) for c in config.comparisons]
        if fitted == wanted:
            return None
        return f"the model was fitted for comparisons (name, kind, levels) {fitted}, the config has {wanted}"

    def level_weights(self) -> dict[tuple[str, str], float]:
        """The match weight of every comparison level, by (comparison, level label)."""
        return {(c.name, level.label): level.weight for c in self.comparisons for level in c.levels}


def fitted_model(
    config: ProbabilisticConfig,
    id_col: str,
    m: Mapping[str, Sequence[float]],
    u: Mapping[str, Sequence[float]],
    match_prior: float,
    training: TrainingSummary | None = None,
) -> FittedModel:
    """Assemble a FittedModel from m and u per comparison (index = level) and lambda."""
    comparisons = []
    for comparison in config.comparisons:
        labels = comparison.labels
        top = len(labels) - 1
        comparisons.append(
            FittedComparison(
                name=comparison.name,
                levels=[
                    FittedLevel(
                        level=top - i, label=label, m=m[comparison.name][top - i], u=u[comparison.name][top - i]
                    )
                    for i, label in enumerate(labels)
                ],
            )
        )
    return FittedModel(
        config=config, id_col=id_col, match_prior=match_prior, comparisons=comparisons, training=training
    )


def _weight_expr(comparison: FittedComparison) -> Column:
    gamma = F.col(f"gamma_{comparison.name}")
    expr = None
    for level in comparison.levels:
        expr = (F.when if expr is None else expr.when)(gamma == level.level, F.lit(level.weight))
    return expr.otherwise(F.lit(0.0))  # the null level: no evidence


def score_pairs(vectors: DataFrame, params: FittedModel) -> DataFrame:
    """Add ``match_weight`` (sum of log2(m/u), bits) and ``match_probability`` (with lambda as the prior).

    In: ``gamma_<name>...``. Out: the same plus ``match_weight, match_probability``.
    """
    missing = [f"gamma_{c.name}" for c in params.comparisons if f"gamma_{c.name}" not in vectors.columns]
    if missing:
        raise ValueError(f"vectors lack {missing}; build them with comparison_vectors and the model's config")
    weight = reduce(Column.__add__, [_weight_expr(c) for c in params.comparisons])
    probability = 1.0 / (1.0 + F.pow(F.lit(2.0), -(F.col("match_weight") + F.lit(params.prior_weight))))
    return vectors.withColumn("match_weight", weight).withColumn("match_probability", probability)


def predict_match(model: FittedModel, vectors: pd.DataFrame) -> pd.DataFrame:
    """``score_pairs`` in pandas, for a few vectors on the driver (the MLflow pyfunc of the model scores with it).

    In: ``gamma_<name>...`` (integer levels). Out: ``match_weight, match_probability``, one row per input row.
    """
    weight = np.zeros(len(vectors))
    for comparison in model.comparisons:
        weights = {level.level: level.weight for level in comparison.levels}
        weight += vectors[f"gamma_{comparison.name}"].map(weights).fillna(0.0).to_numpy(dtype=float)
    probability = expit((weight + model.prior_weight) * math.log(2))
    return pd.DataFrame({"match_weight": weight, "match_probability": probability}, index=vectors.index)


def accepted_edges(
    records: DataFrame,
    config: ProbabilisticConfig,
    id_col: str,
    model: FittedModel,
    vectors: DataFrame | None = None,
) -> DataFrame:
    """Candidate pairs whose match probability reaches ``config.match_threshold``, as identity edges.

    In: records (``id_col`` and the configured columns) or their candidate ``vectors``. Out:
    ``src_record_id`` (the larger id), ``dst_record_id``, ``rule`` ('probabilistic'), ``score`` (match
    probability), ``match_weight``.
    """
    differ = model.comparisons_differ(config)
    if differ:
        raise ConfigError(f"{differ}; retrain it")
    if vectors is None:
        vectors = comparison_vectors(candidate_pairs(records, config, id_col), config)
    return (
        score_pairs(vectors, model)
        .where(F.col("match_probability") >= config.match_threshold)
        .select(
            F.col("id_r").alias("src_record_id"),
            F.col("id_l").alias("dst_record_id"),
            F.lit(EDGE_RULE).alias("rule"),
            F.col("match_probability").alias("score"),
            "match_weight",
        )
    )


def _pair_vector(model: FittedModel, records: DataFrame, first: Any, second: Any) -> dict[str, Any]:
    low, high = (first, second) if first < second else (second, first)
    columns = pair_columns(model.config, [])
    require_columns(records, model.id_col, columns)
    id_col = F.col(f"`{model.id_col}`")
    left = record_side(records.where(id_col == F.lit(low)), model.id_col, columns, "l")
    right = record_side(records.where(id_col == F.lit(high)), model.id_col, columns, "r")
    rows = comparison_vectors(left.crossJoin(right), model.config, keep_values=True).collect()
    if len(rows) != 1:
        raise ValueError(f"records {first!r} and {second!r}: expected one pair, found {len(rows)}; is each id unique?")
    return rows[0].asDict()


def explain(
    pair: Row | Mapping[str, Any] | tuple[Any, Any], model: FittedModel, records: DataFrame | None = None
) -> pd.DataFrame:
    """Why a pair scores as it does: one row per comparison, then the total.

    ``pair``: a row of ``comparison_vectors`` (``keep_values=True`` to see the values) or two record ids
    (then ``records`` is needed). Out: ``comparison, level, label, value_l, value_r, m, u, weight`` and a
    last row ``total`` whose weight is the match weight (the sum above) and which carries
    ``match_probability``.
    """
    if isinstance(pair, Row):
        vector = pair.asDict()
    elif isinstance(pair, Mapping):
        vector = dict(pair)
    else:
        if records is None:
            raise ValueError("explain by two record ids needs the records DataFrame")
        first, second = pair
        vector = _pair_vector(model, records, first, second)
    rows = []
    for comparison in model.comparisons:
        level = int(vector[f"gamma_{comparison.name}"])
        fitted = comparison.at(level)
        rows.append(
            {
                "comparison": comparison.name,
                "level": level,
                "label": fitted.label if fitted else "null",
                "value_l": vector.get(f"{comparison.name}_l"),
                "value_r": vector.get(f"{comparison.name}_r"),
                "m": fitted.m if fitted else None,
                "u": fitted.u if fitted else None,
                "weight": fitted.weight if fitted else 0.0,
                "match_probability": None,
            }
        )
    total = sum(row["weight"] for row in rows)
    rows.append(
        {
            "comparison": "total",
            "level": None,
            "label": None,
            "value_l": vector.get("id_l"),
            "value_r": vector.get("id_r"),
            "m": None,
            "u": None,
            "weight": total,
            "match_probability": float(expit((total + model.prior_weight) * math.log(2))),
        }
    )
    return pd.DataFrame(rows)
