"""Probabilistic record linkage (Fellegi-Sunter) over any person attributes named in config.

The flow, one function each:
``candidate_pairs`` (blocking rules as equi-joins) -> ``comparison_vectors`` (one integer level per
comparison, see ``comparisons``) -> ``train`` (``estimate_u`` from random pairs, then
``fit_m_and_prior`` over the aggregated vectors) -> ``score_pairs`` (match weight and probability)
-> ``accepted_edges``. ``explain`` shows why one pair scored as it did.

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

Training: u is counted on random pairs (a sample of records paired within random buckets: cost grows
with ``max_pairs_for_u``, not with N^2). m and lambda come from EM on the driver, u held fixed, over the
table of distinct comparison vectors of the candidate pairs with their counts (a few hundred rows):
m per blocking rule, leaving out the comparisons the rule censors, then lambda over all pairs.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, model_validator
from pyspark.errors import AnalysisException, ParseException
from pyspark.sql import Column, DataFrame, Row
from pyspark.sql import functions as F
from scipy.special import expit

from cdp_spark.config import ConfigError, Strict
from cdp_spark.identity.comparisons import NULL_LEVEL, ComparisonConfig
from cdp_spark.sampling import keyed_sample, uniform_draw

log = logging.getLogger("cdp_spark")

EDGE_RULE = "probabilistic"
# Lowest m kept after an EM step: a level no match showed yet must not weigh minus infinity.
_MIN_M = 1e-6
# Random pairs for u are formed within buckets of about this many sampled records: small buckets
# spread the pairs over many records (less variance than pairing a few hundred records all-to-all).
_U_BUCKET_RECORDS = 20


class NoCandidatePairs(ValueError):
    """The blocking rules pair no records at all (tiny or very clean data): there is nothing to score."""


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


# --------------------------------------------------------------------------------------------------
# Blocking
# --------------------------------------------------------------------------------------------------

_SIDE_REF = re.compile(r"(?<![\w.`])([lrLR])\.(`(?:[^`]|``)+`|[A-Za-z_][A-Za-z0-9_]*)")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LOOSER_THAN_EQUALS = {"not", "or", "and", "is", "in", "like", "ilike", "rlike", "regexp", "between", "case"}


@dataclass(frozen=True)
class BlockingRule:
    """A parsed blocking rule: equi-join keys (expression over l., expression over r.) and other filters."""

    text: str
    keys: tuple[tuple[str, str], ...]
    filters: tuple[str, ...]

    @property
    def columns(self) -> list[str]:
        """Record columns the rule reads, in order of appearance."""
        return list(dict.fromkeys(col for part in _parts(self) for _, col in _references(part)))

    def join_keys(self) -> list[Column]:
        return [F.expr(_to_pair_columns(left)) == F.expr(_to_pair_columns(right)) for left, right in self.keys]

    def condition(self) -> str:
        """The whole rule as SQL over the pair columns (``<column>_l``, ``<column>_r``)."""
        return " AND ".join(
            [f"({_to_pair_columns(a)}) = ({_to_pair_columns(b)})" for a, b in self.keys]
            + [f"({_to_pair_columns(f)})" for f in self.filters]
        )

    def mirrored(self) -> BlockingRule | None:
        """The rule with l and r swapped, or None when its keys are symmetric (``l.x = r.x``).

        Pairs are emitted once, with ``id_l < id_r``; an asymmetric key such as ``l.email = r.alt_email``
        must also be tried the other way round or pairs whose larger id holds the email are lost.
        Filters are taken to be symmetric (documented for users).
        """
        swapped = tuple((_swap_sides(b), _swap_sides(a)) for a, b in self.keys)
        if {_normal(k) for k in self.keys} == {_normal(k) for k in swapped}:
            return None
        return BlockingRule(self.text, swapped, tuple(_swap_sides(f) for f in self.filters))


def _parts(rule: BlockingRule) -> list[str]:
    return [side for key in rule.keys for side in key] + list(rule.filters)


def _normal(key: tuple[str, str]) -> tuple[str, str]:
    return tuple(" ".join(side.split()).lower() for side in key)


def _code_segments(text: str) -> list[tuple[bool, str]]:
    """Split SQL into (is_code, text) pieces; string literals ('..' or "..") are not code."""
    pieces, start, i, quote = [], 0, 0, None
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                pieces.append((False, text[start : i + 1]))
                start, quote = i + 1, None
        elif ch in "'\"":
            pieces.append((True, text[start:i]))
            start, quote = i, ch
        i += 1
    if quote:
        raise ConfigError(f"blocking rule {text!r}: unterminated string literal")
    pieces.append((True, text[start:]))
    return [p for p in pieces if p[1]]


def _map_code(text: str, fn) -> str:
    return "".join(fn(piece) if is_code else piece for is_code, piece in _code_segments(text))


def _references(text: str) -> list[tuple[str, str]]:
    """(side, column) of every ``l.col`` / ``r.col`` outside string literals."""
    refs = []
    for is_code, piece in _code_segments(text):
        if is_code:
            for match in _SIDE_REF.finditer(piece):
                name = match.group(2)
                if name.startswith("`"):
                    name = name[1:-1].replace("``", "`")
                refs.append((match.group(1).lower(), name))
    return refs


def _to_pair_columns(text: str) -> str:
    """Rewrite ``l.x`` / ``r.x`` to the pair columns `` `x_l` `` / `` `x_r` ``."""

    def rewrite(piece: str) -> str:
        def one(match: re.Match) -> str:
            name = match.group(2)
            name = name[1:-1].replace("``", "`") if name.startswith("`") else name
            return "`" + f"{name}_{match.group(1).lower()}".replace("`", "``") + "`"

        return _SIDE_REF.sub(one, piece)

    return _map_code(text, rewrite)


def _swap_sides(text: str) -> str:
    return _map_code(
        text,
        lambda piece: _SIDE_REF.sub(lambda m: ("r" if m.group(1).lower() == "l" else "l") + "." + m.group(2), piece),
    )


def _scan_top_level(text: str) -> tuple[list[str], set[str], list[tuple[int, int]]]:
    """Conjuncts split at top-level AND (not the AND of BETWEEN), the words outside parentheses and
    quotes (lower case), and the positions (start, length) of top-level ``=`` / ``==`` operators."""
    conjuncts, equals, words = [], [], set()
    start, depth, i, quote, between = 0, 0, 0, None, False
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\" and quote != "`":
                i += 2
                continue
            if ch == quote:
                quote = None
            i += 1
            continue
        if ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"blocking rule {text!r}: unbalanced parentheses")
        elif depth == 0 and ch == "=":
            before, after = text[i - 1] if i else "", text[i + 1] if i + 1 < len(text) else ""
            if before not in "<>!=" and after != ">":
                equals.append((i, 2 if after == "=" else 1))
                i += 2 if after == "=" else 1
                continue
        elif (
            depth == 0
            and (ch.isalpha() or ch == "_")
            and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] in "_.`"))
        ):
            word = _WORD.match(text, i).group(0)
            lowered = word.lower()
            words.add(lowered)
            if lowered == "between":
                between = True
            elif lowered == "and":
                if between:
                    between = False
                else:
                    conjuncts.append(text[start:i])
                    start = i + len(word)
            i += len(word)
            continue
        i += 1
    if quote or depth:
        raise ConfigError(f"blocking rule {text!r}: unbalanced quotes or parentheses")
    conjuncts.append(text[start:])
    return [c.strip() for c in conjuncts], words, equals


def _strip_parentheses(text: str) -> str:
    while text.startswith("(") and text.endswith(")"):
        depth = 0
        for i, ch in enumerate(text):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(text) - 1:
                return text  # "(a) = (b)": the first parenthesis closes before the end
        text = text[1:-1].strip()
    return text


def parse_blocking_rule(text: str) -> BlockingRule:
    """Parse ``l.a = r.a and <filter> ...`` into equi-join keys and filters; a ConfigError if no key."""
    if not text.strip():
        raise ConfigError("blocking rule is empty")
    conjuncts, words, _ = _scan_top_level(text)
    if "or" in words:
        # AND binds tighter than OR: with a top-level OR no conjunct constrains every pair
        conjuncts = [text.strip()]
    keys, filters = [], []
    for conjunct in conjuncts:
        if not conjunct:
            raise ConfigError(f"blocking rule {text!r}: an AND with nothing on one side")
        conjunct = _strip_parentheses(conjunct)
        _, words, equals = _scan_top_level(conjunct)
        key = None
        # an operator binding looser than = (NOT, OR, IS, IN, LIKE ...) would change what the = compares
        if len(equals) == 1 and not words & _LOOSER_THAN_EQUALS:
            at, width = equals[0]
            left, right = conjunct[:at].strip(), conjunct[at + width :].strip()
            sides_left = {side for side, _ in _references(left)}
            sides_right = {side for side, _ in _references(right)}
            if sides_left == {"l"} and sides_right == {"r"}:
                key = (left, right)
            elif sides_left == {"r"} and sides_right == {"l"}:
                key = (right, left)
        if key:
            keys.append(key)
        else:
            filters.append(conjunct)
    if not keys:
        raise ConfigError(
            f"blocking rule {text!r} has no equality term like 'l.x = r.x' joined by AND: it would compare "
            "every record with every other (a cross join). Add an equality on a column both sides share."
        )
    return BlockingRule(text, tuple(keys), tuple(filters))


def _side(records: DataFrame, id_col: str, columns: list[str], side: str) -> DataFrame:
    return records.select(
        F.col(f"`{id_col}`").alias(f"id_{side}"), *[F.col(f"`{c}`").alias(f"{c}_{side}") for c in columns]
    )


def _pair_columns(config: ProbabilisticConfig, rules: Sequence[BlockingRule]) -> list[str]:
    columns = [c for comparison in config.comparisons for c in comparison.source_columns]
    columns += [c for rule in rules for c in rule.columns]
    return list(dict.fromkeys(columns))


def _require_columns(records: DataFrame, id_col: str, columns: list[str]) -> None:
    missing = [c for c in [id_col, *columns] if c not in records.columns]
    if missing:
        raise ConfigError(
            f"records lack column(s) {missing} named by the probabilistic config (id column, comparisons or "
            f"blocking rules); the records have {records.columns}"
        )
    if "id" in columns and id_col != "id":
        raise ConfigError("a record column named 'id' clashes with the pair columns id_l/id_r; rename it")


def candidate_pairs(records: DataFrame, config: ProbabilisticConfig, id_col: str) -> DataFrame:
    """Pairs of records that satisfy at least one blocking rule, each pair once with ``id_l < id_r``.

    In: ``id_col`` and the columns the comparisons and rules name. Out: ``id_l, id_r``,
    ``<column>_l, <column>_r`` for each of those columns, and ``blocked_by`` (bit i set when the pair
    satisfies rule i). Each rule is an equi-join on its equality
    terms plus a filter for the rest; a pair an earlier rule already produced is filtered out of the
    later ones (cheaper than a distinct over all pairs, which would shuffle them all again).
    """
    parsed = [parse_blocking_rule(text) for text in config.blocking_rules]
    columns = _pair_columns(config, parsed)
    _require_columns(records, id_col, columns)
    left, right = _side(records, id_col, columns, "l"), _side(records, id_col, columns, "r")
    earlier: list[str] = []
    parts = []
    for rule in parsed:
        for variant in [rule, rule.mirrored()]:
            if variant is None:
                continue
            try:
                keep = F.col("id_l") < F.col("id_r")
                for condition in variant.filters:
                    keep = keep & F.expr(_to_pair_columns(condition))
                for condition in earlier:
                    keep = keep & ~F.coalesce(F.expr(condition), F.lit(False))
                parts.append(left.join(right, variant.join_keys(), "inner").where(keep))
            except (AnalysisException, ParseException) as exc:
                raise ConfigError(f"blocking rule {rule.text!r}: {str(exc).splitlines()[0]}") from None
            earlier.append(variant.condition())
    ordered = ["id_l", "id_r", *[f"{c}_l" for c in columns], *[f"{c}_r" for c in columns]]
    # every rule a pair satisfies, not just the first that produced it: training estimates m per rule
    holds = []
    for i, rule in enumerate(parsed):
        variants = [v.condition() for v in [rule, rule.mirrored()] if v is not None]
        condition = F.coalesce(F.expr(" OR ".join(f"({v})" for v in variants)), F.lit(False))
        holds.append(F.when(condition, F.lit(1 << i)).otherwise(F.lit(0)))
    blocked_by = reduce(Column.__add__, holds).alias("blocked_by")
    return reduce(DataFrame.unionByName, parts).select(*[f"`{c}`" for c in ordered], blocked_by)


# --------------------------------------------------------------------------------------------------
# Comparison vectors
# --------------------------------------------------------------------------------------------------


def comparison_vectors(pairs: DataFrame, config: ProbabilisticConfig, keep_values: bool = False) -> DataFrame:
    """The level of every comparison for every pair.

    In: ``id_l, id_r, <column>_l, <column>_r`` (and ``blocked_by``, carried along). Out: ``id_l, id_r,
    gamma_<name>...`` (integers: -1 null, 0 else, higher is closer), ``blocked_by`` if given; with
    ``keep_values`` also ``<name>_l, <name>_r``, the compared values.
    """
    helpers = [h for comparison in config.comparisons for h in comparison.helper_columns()]
    if helpers:
        pairs = pairs.select("*", *helpers)
    values = []
    if keep_values:
        for comparison in config.comparisons:
            for side in ("l", "r"):
                values.append(comparison.value(side).cast("string").alias(f"{comparison.name}_{side}"))
    carried = ["blocked_by"] if "blocked_by" in pairs.columns else []
    return pairs.select("id_l", "id_r", *[c.gamma() for c in config.comparisons], *carried, *values)


def vector_counts(vectors: DataFrame, config: ProbabilisticConfig) -> pd.DataFrame:
    """Distinct comparison vectors and how many pairs show each (small: at most the product of level counts).

    In: ``gamma_<name>...`` (and ``blocked_by``). Out (pandas): ``gamma_<name>..., [blocked_by,] count``.
    """
    keys = [c.gamma_column for c in config.comparisons] + (["blocked_by"] if "blocked_by" in vectors.columns else [])
    counts = vectors.groupBy(*keys).count().toPandas()
    return counts.astype({k: "int64" for k in [*keys, "count"]})


# --------------------------------------------------------------------------------------------------
# Training: u from random pairs, m and lambda by EM
# --------------------------------------------------------------------------------------------------


def _random_pairs(records: DataFrame, config: ProbabilisticConfig, id_col: str, seed: int, n: int) -> DataFrame:
    """About ``max_pairs_for_u`` random pairs: sample records, deal them into random buckets, pair within buckets.

    Out: like ``candidate_pairs``. A bucket of k records gives k(k-1)/2 pairs; with all pairs fewer than
    the target, every pair is taken.
    """
    columns = _pair_columns(config, [])
    _require_columns(records, id_col, columns)
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
    left = _side(sampled, id_col, [*columns, "_bucket"], "l")
    right = _side(sampled, id_col, [*columns, "_bucket"], "r")
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


class EmSession(Strict):
    """One EM run: over the pairs of one blocking rule (m), or over all candidate pairs (lambda)."""

    blocking_rule: int | None = Field(description="index in blocking_rules; None: the final run over all pairs")
    pairs: int
    ignored: list[str] = Field(description="comparisons left out: the rule reads their columns")
    estimated: list[str] = Field(description="comparisons whose m this run estimated")
    match_share: float = Field(description="lambda of this run: over its own pairs, or over all pairs (final)")
    iterations: int
    converged: bool


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


# --------------------------------------------------------------------------------------------------
# The fitted model
# --------------------------------------------------------------------------------------------------


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
    """m, u and lambda with the config they were fitted for; stored as JSON alongside a run."""

    config: ProbabilisticConfig
    id_col: str
    match_prior: float = Field(gt=0, lt=1, description="lambda: P(two random records are the same person)")
    comparisons: list[FittedComparison]
    training: TrainingSummary | None = None

    @model_validator(mode="after")
    def _matches_config(self) -> FittedModel:
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


# --------------------------------------------------------------------------------------------------
# Scoring and explaining
# --------------------------------------------------------------------------------------------------


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
    fitted = [(c.name, c.labels) for c in model.config.comparisons]
    wanted = [(c.name, c.labels) for c in config.comparisons]
    if fitted != wanted:
        raise ConfigError(f"the model was fitted for comparisons {fitted}, the config has {wanted}; retrain it")
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
    columns = _pair_columns(model.config, [])
    _require_columns(records, model.id_col, columns)
    id_col = F.col(f"`{model.id_col}`")
    left = _side(records.where(id_col == F.lit(low)), model.id_col, columns, "l")
    right = _side(records.where(id_col == F.lit(high)), model.id_col, columns, "r")
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
