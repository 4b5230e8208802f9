"""Training the Fellegi-Sunter model: u from random pairs, then m and lambda by EM (Splink's way).

u is counted on random pairs (a sample of records paired within random buckets: cost grows with
``max_pairs_for_u``, not with N^2). m and lambda come from EM on the driver, u held fixed, over the table of
distinct comparison vectors of the candidate pairs with their counts (a few hundred rows): m per blocking rule,
leaving out the comparisons the rule censors, then lambda over all pairs. ``train`` does both and returns the
``model.FittedModel``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from scipy.special import expit

from cdp_spark.identity.blocking import candidate_pairs, pair_columns, record_side, require_columns
from cdp_spark.identity.blocking_rule import BlockingRule, parse_blocking_rule
from cdp_spark.identity.comparisons import NULL_LEVEL, ComparisonConfig
from cdp_spark.identity.model import EmSession, FittedModel, TrainingSummary, fitted_model
from cdp_spark.identity.rules import ProbabilisticConfig
from cdp_spark.identity.vectors import comparison_vectors, vector_counts
from cdp_spark.sampling import keyed_sample, uniform_draw

log = logging.getLogger("cdp_spark")

# Lowest m kept after an EM step: a level no match showed yet must not weigh minus infinity.
_MIN_M = 1e-6
# Random pairs for u are formed within buckets of about this many sampled records: small buckets
# spread the pairs over many records (less variance than pairing a few hundred records all-to-all).
_U_BUCKET_RECORDS = 20


class NoCandidatePairs(ValueError):
    """The blocking rules pair no records at all (tiny or very clean data): there is nothing to score."""


def _random_pairs(records: DataFrame, config: ProbabilisticConfig, id_col: str, seed: int, n: int) -> DataFrame:
    """About ``max_pairs_for_u`` random pairs: sample records, deal them into random buckets, pair within buckets.

    Out: like ``candidate_pairs``. A bucket of k records gives k(k-1)/2 pairs; with all pairs fewer than
    the target, every pair is taken.
    """
    columns = pair_columns(config, [])
    require_columns(records, id_col, columns)
    target = config.max_pairs_for_u
    if n * (n - 1) // 2 <= target:
        sampled, buckets = records, 1
    else:
        rows = min(n, math.ceil(2 * target / (_U_BUCKET_RECORDS - 1)))
        per_bucket = 1 + 2 * target / rows
        buckets = max(1, round(rows / per_bucket))
        sampled = keyed_sample(records, rows / n, seed, [id_col]) if rows < n else records
    sampled = sampled.select(f"`{id_col}`", *[f"`{c}`" for c in columns]).withColumn(
        "_bucket", F.floor(uniform_draw([id_col], seed + 1) * buckets).cast("int")
    )
    left = record_side(sampled, id_col, [*columns, "_bucket"], "l")
    right = record_side(sampled, id_col, [*columns, "_bucket"], "r")
    return (
        left.join(right, F.col("_bucket_l") == F.col("_bucket_r"))
        .where(F.col("id_l") < F.col("id_r"))
        .drop("_bucket_l", "_bucket_r")
    )


def _u_from_counts(counts: pd.DataFrame, config: ProbabilisticConfig) -> dict[str, list[float]]:
    u = {}
    for comparison in config.comparisons:
        n_levels = len(comparison.labels)
        if comparison.u_probabilities is not None:
            u[comparison.name] = list(reversed(comparison.u_probabilities))
            continue
        levels = counts[comparison.gamma_column].to_numpy()
        present = levels != NULL_LEVEL
        per_level = np.bincount(levels[present], weights=counts["count"].to_numpy()[present], minlength=n_levels)
        total = per_level.sum()
        if total == 0:
            log.warning("comparison %s: no random pair has both values; u set uniform", comparison.name)
            u[comparison.name] = [1.0 / n_levels] * n_levels
            continue
        # a level no random pair reached is rarer than one in `total`: count it as half a pair
        floored = np.maximum(per_level, 0.5)
        u[comparison.name] = (floored / floored.sum()).tolist()
    return u


def _estimate_u(
    records: DataFrame, config: ProbabilisticConfig, id_col: str, seed: int, n: int
) -> tuple[dict[str, list[float]], int]:
    counts = vector_counts(comparison_vectors(_random_pairs(records, config, id_col, seed, n), config), config)
    return _u_from_counts(counts, config), int(counts["count"].sum())


def estimate_u(records: DataFrame, config: ProbabilisticConfig, id_col: str, seed: int = 42) -> dict[str, list[float]]:
    """u per comparison from random pairs: ``{name: [u of level 0 (else), level 1, ...]}`` (index = level).

    In: ``id_col`` and the comparison columns. Fixed ``u_probabilities`` in config are returned as given.
    """
    u, _ = _estimate_u(records, config, id_col, seed, records.count())
    return u


def _initial_m(comparison: ComparisonConfig) -> list[float]:
    if comparison.m_probabilities is not None:
        return list(reversed(comparison.m_probabilities))
    # matches mostly agree: each level up is four times as likely as the one below
    raw = [4.0**level for level in range(len(comparison.labels))]
    return [r / sum(raw) for r in raw]


@dataclass(frozen=True)
class EmResult:
    m: dict[str, list[float]]
    match_prior: float
    iterations: int
    converged: bool
    match_mass: dict[str, float]  # expected matches among the pairs where each comparison was not null


def _run_em(
    counts: pd.DataFrame,
    u: Mapping[str, Sequence[float]],
    config: ProbabilisticConfig,
    total_pairs: int | None = None,
    ignore: Collection[str] = (),
    fixed_m: Mapping[str, Sequence[float]] | None = None,
    initial_prior: float | None = None,
) -> EmResult:
    """EM with u fixed; ``ignore``d comparisons count as null, ``fixed_m`` ones keep their m."""
    comparisons = [c for c in config.comparisons if c.name not in ignore]
    levels = counts[[c.gamma_column for c in comparisons]].to_numpy(dtype=np.int64).reshape(len(counts), -1)
    weights = counts["count"].to_numpy(dtype=float)
    observed = float(weights.sum())
    pairs = float(total_pairs) if total_pairs is not None else observed
    if pairs < observed:
        raise ValueError(f"total_pairs ({total_pairs}) is smaller than the pairs counted ({observed:.0f})")
    fixed = {c.name: list(reversed(c.m_probabilities)) for c in comparisons if c.m_probabilities is not None}
    fixed |= {name: list(values) for name, values in (fixed_m or {}).items()}
    m = {c.name: fixed.get(c.name) or _initial_m(c) for c in comparisons}
    prior = initial_prior or config.prior_match_probability or (0.1 * observed / pairs if pairs else 0.1)
    mass = {c.name: 0.0 for c in comparisons}
    if observed == 0:
        return EmResult(m, prior, 0, False, mass)
    present = levels != NULL_LEVEL
    index = np.where(present, levels, 0)

    def log_likelihood(probabilities: Mapping[str, Sequence[float]]) -> np.ndarray:
        total = np.zeros(len(weights))
        for k, comparison in enumerate(comparisons):
            logs = np.log(np.asarray(probabilities[comparison.name], dtype=float))
            total += np.where(present[:, k], logs[index[:, k]], 0.0)
        return total

    log_u = log_likelihood(u)
    converged, iterations = False, 0
    while iterations < config.em_max_iterations:
        iterations += 1
        # E step: expected matches among the pairs of each distinct vector
        logit = math.log(prior) - math.log1p(-prior) + log_likelihood(m) - log_u
        matched = weights * expit(logit)
        # M step: m per level from the expected matches among pairs where the comparison is not null
        new_m = {}
        for k, comparison in enumerate(comparisons):
            mass[comparison.name] = float(matched[present[:, k]].sum())
            if comparison.name in fixed or mass[comparison.name] <= 0:
                new_m[comparison.name] = m[comparison.name]
                continue
            per_level = np.bincount(
                index[present[:, k], k], weights=matched[present[:, k]], minlength=len(comparison.labels)
            )
            per_level = np.maximum(per_level / mass[comparison.name], _MIN_M)
            new_m[comparison.name] = (per_level / per_level.sum()).tolist()
        new_prior = min(max(matched.sum() / pairs, 1e-15), 1 - 1e-9)
        change = max(
            [abs(a - b) for c in comparisons for a, b in zip(new_m[c.name], m[c.name], strict=True)]
            + [abs(new_prior - prior) / prior]
        )
        m, prior = new_m, new_prior
        if change < config.em_tolerance:
            converged = True
            break
    return EmResult(m, prior, iterations, converged, mass)


def estimate_m_em(
    vector_counts_pdf: pd.DataFrame,
    u: Mapping[str, Sequence[float]],
    config: ProbabilisticConfig,
    total_pairs: int | None = None,
) -> tuple[dict[str, list[float]], float]:
    """m per comparison (index = level) and lambda by EM over distinct comparison vectors, u held fixed.

    In: ``gamma_<name>..., count`` (pandas; null levels are ignored). ``total_pairs``: the pairs the
    counts were drawn from; those not counted are taken as non-matches, so lambda is over all of them
    (default: lambda over the counted pairs). One EM over whatever pairs are given: right for pairs
    drawn without regard to the comparisons; for blocked pairs ``fit_m_and_prior`` corrects for blocking.
    """
    result = _run_em(vector_counts_pdf, u, config, total_pairs)
    return result.m, result.match_prior


def _comparisons_read_by(rule: BlockingRule, config: ProbabilisticConfig) -> list[str]:
    read = set(rule.columns)
    return [c.name for c in config.comparisons if read & {*c.source_columns, *c.derived_columns}]


def fit_m_and_prior(
    vector_counts_pdf: pd.DataFrame, u: Mapping[str, Sequence[float]], config: ProbabilisticConfig, total_pairs: int
) -> tuple[dict[str, list[float]], float, list[EmSession]]:
    """m per comparison and lambda over all ``total_pairs``, from the candidate pairs' aggregated vectors.

    In: ``gamma_<name>..., blocked_by, count`` (pandas, from ``vector_counts`` of candidate pairs).
    Blocking hides the matches that disagree on the blocked columns, so one EM over all candidates would
    drive m of disagreement on those columns towards zero. As Splink does, m is estimated per blocking
    rule, over the pairs that rule yields, leaving out the comparisons the rule reads (their levels
    there are censored); a comparison's m is the average of its estimates weighted by expected matches.
    A last EM over all candidates, those m fixed, gives lambda (and m of any comparison every rule reads).
    """
    if "blocked_by" not in vector_counts_pdf.columns:
        raise ValueError("vector counts lack blocked_by: build them from candidate_pairs")
    sessions: list[EmSession] = []
    estimates: dict[str, list[tuple[float, list[float]]]] = {}
    blocked_by = vector_counts_pdf["blocked_by"].to_numpy()
    for i, text in enumerate(config.blocking_rules):
        ignored = _comparisons_read_by(parse_blocking_rule(text), config)
        rows = vector_counts_pdf[(blocked_by & (1 << i)) != 0]
        if rows.empty:  # the rule found no pairs in this data: nothing to learn from it
            log.warning("blocking rule %r yields no candidate pairs: no m estimated from it", text)
            sessions.append(EmSession(blocking_rule=i, pairs=0, ignored=ignored, estimated=[], match_share=0.0,
                                      iterations=0, converged=True))  # fmt: skip
            continue
        result = _run_em(rows, u, config, ignore=ignored, initial_prior=0.1)
        estimated = [
            c.name
            for c in config.comparisons
            if c.name not in ignored and c.m_probabilities is None and result.match_mass[c.name] > 0
        ]
        for name in estimated:
            estimates.setdefault(name, []).append((result.match_mass[name], result.m[name]))
        sessions.append(
            EmSession(
                blocking_rule=i,
                pairs=int(rows["count"].sum()),
                ignored=ignored,
                estimated=estimated,
                match_share=result.match_prior,
                iterations=result.iterations,
                converged=result.converged,
            )
        )
    fixed_m = {
        name: (np.sum([w * np.asarray(m) for w, m in found], axis=0) / sum(w for w, _ in found)).tolist()
        for name, found in estimates.items()
    }
    final = _run_em(vector_counts_pdf, u, config, total_pairs=total_pairs, fixed_m=fixed_m)
    left = [c.name for c in config.comparisons if c.name not in fixed_m and c.m_probabilities is None]
    if left:
        log.warning(
            "comparisons %s are read by every blocking rule: their m comes from all candidate pairs and leans "
            "towards agreement; add a blocking rule that does not read them, or fix m_probabilities",
            left,
        )
    sessions.append(
        EmSession(
            blocking_rule=None,
            pairs=int(vector_counts_pdf["count"].sum()),
            ignored=[],
            estimated=left,
            match_share=final.match_prior,
            iterations=final.iterations,
            converged=final.converged,
        )
    )
    return final.m, final.match_prior, sessions


def train(
    records: DataFrame, config: ProbabilisticConfig, id_col: str, seed: int = 42, vectors: DataFrame | None = None
) -> FittedModel:
    """Fit u (random pairs) then m and lambda (EM over the candidate pairs' aggregated vectors).

    In: ``id_col`` and the columns the config names. ``vectors``: the candidate pairs'
    ``comparison_vectors`` if the caller already has them (cache them and pass the same to
    ``accepted_edges`` to compute them once).
    """
    n = records.count()
    u, u_pairs = _estimate_u(records, config, id_col, seed, n)
    if vectors is None:
        vectors = comparison_vectors(candidate_pairs(records, config, id_col), config)
    counts = vector_counts(vectors, config)
    if counts.empty:
        raise NoCandidatePairs(f"no blocking rule yields a candidate pair among {n} records: nothing to train on")
    total_pairs = n * (n - 1) // 2
    m, match_prior, sessions = fit_m_and_prior(counts, u, config, total_pairs)
    summary = TrainingSummary(
        records=n,
        total_pairs=total_pairs,
        u_pairs=u_pairs,
        candidate_pairs=int(counts["count"].sum()),
        distinct_vectors=len(counts),
        em_converged=all(s.converged for s in sessions),
        em_sessions=sessions,
    )
    if not summary.em_converged:
        log.warning("probabilistic EM: a run did not converge in %d iterations", config.em_max_iterations)
    log.info("probabilistic model trained: lambda=%.3g %s", match_prior, summary.model_dump())
    return fitted_model(config, id_col, m, u, match_prior, summary)
