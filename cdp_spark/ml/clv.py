"""Customer lifetime value: RFM summary in Spark, BG/NBD purchases and Gamma-Gamma spend fitted on the driver.

The models are the standard ones of Fader, Hardie and Lee:

- BG/NBD ("Counting your customers the easy way", 2005): while alive a customer buys as a Poisson process with
  rate lambda ~ Gamma(r, alpha); after each purchase they drop out with probability p ~ Beta(a, b).
- Gamma-Gamma ("The Gamma-Gamma model of monetary value", 2013 note): a customer's transaction values are
  Gamma(p, nu) with nu ~ Gamma(q, gamma), independent of the purchase process.

The summary follows the convention of the papers (and of the ``lifetimes`` package): purchases on the same calendar
day count as one purchase whose value is the day's total, ``frequency`` counts repeat purchase days, and times are
measured in days divided by ``time_unit_days`` (7 for weeks). Only the summary is computed over customer-scale data,
in Spark; fitting runs on the driver over identical rows collapsed into counts (or a stated sample), and every
prediction is a pure numpy function of the fitted parameters, so a serving wrapper needs nothing but the params.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from scipy import optimize
from scipy.special import betaln, expit, gammaln, hyp2f1, logsumexp

from cdp_spark.sampling import keyed_sample

DAYS_PER_MONTH = 365.25 / 12
COUNT_COL = "n_customers"


# --------------------------------------------------------------------------------------------
# RFM summary (Spark)
# --------------------------------------------------------------------------------------------


def rfm_summary(
    transactions: DataFrame,
    customer_col: str,
    ts_col: str,
    amount_col: str,
    calibration_end: date | str,
    time_unit_days: float,
    observation_end: date | str | None = None,
) -> DataFrame:
    """Per customer recency-frequency-monetary summary of the calibration period, plus holdout counts if asked.

    In: one row per transaction with ``customer_col``, ``ts_col`` (date, timestamp or ISO string) and ``amount_col``.
    Out: one row per customer whose first purchase is on or before ``calibration_end``, with ``frequency`` (repeat
    purchase days), ``recency`` (first to last purchase), ``T`` (first purchase to ``calibration_end``),
    ``monetary_value`` (mean value of repeat purchase days, 0 without repeats); with ``observation_end`` also
    ``frequency_holdout``, ``monetary_holdout`` (mean value of holdout purchase days, 0 without) and
    ``duration_holdout``. Times are in units of ``time_unit_days``; both end dates are inclusive.
    """
    if not time_unit_days > 0:
        raise ValueError(f"rfm_summary: time_unit_days must be positive, got {time_unit_days!r}")
    calibration_day = _as_date(calibration_end, "calibration_end")
    observation_day = None if observation_end is None else _as_date(observation_end, "observation_end")
    if observation_day is not None and observation_day <= calibration_day:
        raise ValueError(
            f"rfm_summary: observation_end ({observation_day}) must be after calibration_end ({calibration_day})"
        )
    last_day = observation_day or calibration_day

    # The models count purchase occasions, not order lines: one purchase per customer and day, valued at the total.
    purchase_days = (
        transactions.select(
            F.col(customer_col).alias(customer_col),
            F.to_date(F.col(ts_col)).alias("purchase_date"),
            F.col(amount_col).cast("double").alias("day_value"),
        )
        .where(F.col(customer_col).isNotNull() & F.col("purchase_date").isNotNull())
        .where(F.col("purchase_date") <= F.lit(last_day))
        .groupBy(customer_col, "purchase_date")
        .agg(F.sum("day_value").alias("day_value"))
    )

    calibration_lit = F.lit(calibration_day)
    n_days = F.count(F.lit(1))
    calibration = (
        purchase_days.where(F.col("purchase_date") <= calibration_lit)
        .groupBy(customer_col)
        .agg(
            n_days.alias("n_days"),
            F.min("purchase_date").alias("first_date"),
            F.max("purchase_date").alias("last_date"),
            F.sum("day_value").alias("total_value"),
            F.min_by("day_value", "purchase_date").alias("first_value"),
        )
        .select(
            customer_col,
            (F.col("n_days") - 1).cast("long").alias("frequency"),
            (F.datediff("last_date", "first_date") / F.lit(float(time_unit_days))).alias("recency"),
            (F.datediff(calibration_lit, "first_date") / F.lit(float(time_unit_days))).alias("T"),
            # Mean of the repeat days only: the first purchase is excluded, as in the Gamma-Gamma papers.
            F.when(
                F.col("n_days") > 1,
                (F.col("total_value") - F.col("first_value")) / (F.col("n_days") - 1),
            )
            .otherwise(F.lit(0.0))
            .alias("monetary_value"),
        )
    )
    if observation_day is None:
        return calibration

    holdout = (
        purchase_days.where(F.col("purchase_date") > calibration_lit)
        .groupBy(customer_col)
        .agg(
            F.count(F.lit(1)).cast("long").alias("frequency_holdout"),
            F.avg("day_value").alias("monetary_holdout"),
        )
    )
    duration_holdout = (observation_day - calibration_day).days / float(time_unit_days)
    return calibration.join(holdout, on=customer_col, how="left").select(
        *calibration.columns,
        F.coalesce("frequency_holdout", F.lit(0).cast("long")).alias("frequency_holdout"),
        F.coalesce("monetary_holdout", F.lit(0.0)).alias("monetary_holdout"),
        F.lit(duration_holdout).alias("duration_holdout"),
    )


def rfm_counts(summary: DataFrame, columns: Sequence[str]) -> DataFrame:
    """Identical summary rows collapsed into one with their count: the fitters' input, small enough to collect.

    In: any DataFrame with ``columns``. Out: ``columns`` plus ``n_customers``.
    """
    return summary.groupBy(*columns).agg(F.count(F.lit(1)).alias(COUNT_COL))


def fit_bg_nbd_summary(summary: DataFrame, penalizer_coef: float = 0.0) -> BetaGeoParams:
    """Fit BG/NBD on an ``rfm_summary`` output, collecting only its distinct (frequency, recency, T) counts."""
    counts = rfm_counts(summary, ["frequency", "recency", "T"]).toPandas()
    return fit_bg_nbd(
        counts["frequency"], counts["recency"], counts["T"], weights=counts[COUNT_COL], penalizer_coef=penalizer_coef
    )


def fit_gamma_gamma_summary(
    summary: DataFrame, penalizer_coef: float = 0.0, sample_fraction: float | None = None, seed: int = 0
) -> GammaGammaParams:
    """Fit Gamma-Gamma on the repeat customers of an ``rfm_summary`` output, optionally on a seeded sample of them.

    Mean spends are continuous, so counting barely shrinks them: pass ``sample_fraction`` when repeat customers
    are too many to collect.
    """
    repeat_customers = summary.where((F.col("frequency") > 0) & (F.col("monetary_value") > 0))
    if sample_fraction is not None:
        repeat_customers = keyed_sample(repeat_customers, sample_fraction, seed)
    counts = rfm_counts(repeat_customers, ["frequency", "monetary_value"]).toPandas()
    return fit_gamma_gamma(
        counts["frequency"], counts["monetary_value"], weights=counts[COUNT_COL], penalizer_coef=penalizer_coef
    )


# --------------------------------------------------------------------------------------------
# Fitted parameters
# --------------------------------------------------------------------------------------------


class _Params:
    """Round trip of a fitted-parameter dataclass through a plain dict (MLflow params, JSON)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        names = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
        missing, unknown = sorted(names - values.keys()), sorted(values.keys() - names)
        if missing or unknown:
            raise ValueError(f"{cls.__name__}.from_dict: missing keys {missing}, unknown keys {unknown}")
        return cls(**values)


@dataclass(frozen=True)
class BetaGeoParams(_Params):
    """BG/NBD parameters (purchase rate ~ Gamma(r, alpha), dropout ~ Beta(a, b)), alpha in summary time units."""

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float
    n_customers: int

    def p_alive(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> NDArray[np.float64]:
        """Probability each customer is still alive at T given their history (1 for customers without repeats)."""
        x, t_x, T_ = _as_arrays(frequency, recency, T)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        # 1 / (1 + a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x)) for x > 0, as a logistic of a log-odds so that
        # customers with hundreds of purchases do not overflow the power.
        log_odds_dead = (
            np.log(a) - np.log(b + np.maximum(x, 1) - 1) + (r + x) * (np.log(alpha + T_) - np.log(alpha + t_x))
        )
        return np.where(x > 0, expit(-log_odds_dead), 1.0)

    def expected_purchases(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> NDArray[np.float64]:
        """Expected number of purchases in the next ``t`` time units given each customer's history (FHL 2005, eq. 10).

        E[Y(t) | x, t_x, T] = P(alive) * (a+b+x-1)/(a-1) * [1 - ((alpha+T)/(alpha+T+t))^(r+x)
        * 2F1(r+x, b+x; a+b+x-1; z)], z = t/(alpha+T+t). Euler's transformation rewrites the bracketed product as
        (1-z)^(a-1) * 2F1(a+b-1-r, a-1; a+b+x-1; z), whose series stays tame for large x where the original
        hypergeometric overflows.
        """
        x, t_x, T_ = _as_arrays(frequency, recency, T)
        t_ = np.asarray(t, dtype=np.float64)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        z = t_ / (alpha + T_ + t_)
        bracket = 1.0 - (1.0 - z) ** (a - 1.0) * hyp2f1(a + b - 1.0 - r, a - 1.0, a + b + x - 1.0, z)
        return self.p_alive(x, t_x, T_) * (a + b + x - 1.0) / (a - 1.0) * bracket


@dataclass(frozen=True)
class GammaGammaParams(_Params):
    """Gamma-Gamma spend parameters: transaction value ~ Gamma(p, nu), nu ~ Gamma(q, gamma)."""

    p: float
    q: float
    gamma: float
    log_likelihood: float
    n_customers: int

    def conditional_expected_spend(self, frequency: ArrayLike, monetary_value: ArrayLike) -> NDArray[np.float64]:
        """Expected value of a customer's future transaction: (gamma + x * m_x) * p / (p * x + q - 1).

        A weighted mean of the population mean p * gamma / (q - 1) and the customer's own mean m_x; customers
        without repeats (x = 0) get the population mean.
        """
        x = np.asarray(frequency, dtype=np.float64)
        m_x = np.asarray(monetary_value, dtype=np.float64)
        return (self.gamma + x * m_x) * self.p / (self.p * x + self.q - 1.0)


# --------------------------------------------------------------------------------------------
# Fitting (driver, over counted rows)
# --------------------------------------------------------------------------------------------


def bg_nbd_log_likelihood(
    params: Sequence[float], frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> NDArray[np.float64]:
    """Per-customer BG/NBD log-likelihood at ``params`` = (r, alpha, a, b) (FHL 2005, eq. 6)."""
    r, alpha, a, b = params
    x, t_x, T_ = _as_arrays(frequency, recency, T)
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) - betaln(a, b)
    survived = betaln(a, b + x) - (r + x) * np.log(alpha + T_)
    # The dropped-after-last-purchase term exists only for x > 0; x = 1 is substituted where x = 0 to keep
    # betaln's arguments positive, then the term is removed.
    dropped = np.where(
        x > 0,
        betaln(a + 1.0, b + np.maximum(x, 1) - 1.0) - (r + x) * np.log(alpha + t_x),
        -np.inf,
    )
    return common + logsumexp(np.stack([survived, dropped]), axis=0)


def gamma_gamma_log_likelihood(
    params: Sequence[float], frequency: ArrayLike, monetary_value: ArrayLike
) -> NDArray[np.float64]:
    """Per-customer Gamma-Gamma log-likelihood of mean spend ``m_x`` over ``x`` repeat purchases, params (p, q, gamma)."""
    p, q, gamma = params
    x = np.asarray(frequency, dtype=np.float64)
    m_x = np.asarray(monetary_value, dtype=np.float64)
    px = p * x
    return (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * np.log(gamma)
        + (px - 1.0) * np.log(m_x)
        + px * np.log(x)
        - (px + q) * np.log(gamma + x * m_x)
    )


def fit_bg_nbd(
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    weights: ArrayLike | None = None,
    penalizer_coef: float = 0.0,
) -> BetaGeoParams:
    """Maximum-likelihood BG/NBD fit; ``weights`` counts customers per row (``rfm_counts``), 1 each by default."""
    x, t_x, T_ = _as_arrays(frequency, recency, T)
    _check_rfm(x, t_x, T_)
    (x, t_x, T_), w = _collapse((x, t_x, T_), weights)
    # Start with alpha on the scale of the observation windows so the fit does not depend on the time unit.
    start = np.log([1.0, float(np.average(T_, weights=w)), 1.0, 1.0])
    params, log_likelihood = _maximize(lambda p: bg_nbd_log_likelihood(p, x, t_x, T_), start, w, penalizer_coef)
    r, alpha, a, b = params
    return BetaGeoParams(r=r, alpha=alpha, a=a, b=b, log_likelihood=log_likelihood, n_customers=int(w.sum()))


def fit_gamma_gamma(
    frequency: ArrayLike,
    monetary_value: ArrayLike,
    weights: ArrayLike | None = None,
    penalizer_coef: float = 0.0,
) -> GammaGammaParams:
    """Maximum-likelihood Gamma-Gamma fit on customers with repeat purchases (frequency > 0, monetary_value > 0)."""
    x = np.asarray(frequency, dtype=np.float64)
    m_x = np.asarray(monetary_value, dtype=np.float64)
    if x.size == 0:
        raise ValueError("fit_gamma_gamma: no customers to fit")
    if np.any(x <= 0) or np.any(m_x <= 0):
        raise ValueError(
            "fit_gamma_gamma: every customer needs frequency > 0 and monetary_value > 0 "
            f"({int(np.sum((x <= 0) | (m_x <= 0)))} rows do not); filter them out first"
        )
    (x, m_x), w = _collapse((x, m_x), weights)
    start = np.log([1.0, 1.0, float(np.average(m_x, weights=w))])
    params, log_likelihood = _maximize(lambda p: gamma_gamma_log_likelihood(p, x, m_x), start, w, penalizer_coef)
    p, q, gamma = params
    return GammaGammaParams(p=p, q=q, gamma=gamma, log_likelihood=log_likelihood, n_customers=int(w.sum()))


# --------------------------------------------------------------------------------------------
# Lifetime value
# --------------------------------------------------------------------------------------------


def clv(
    purchases: BetaGeoParams,
    spend: GammaGammaParams,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    monetary_value: ArrayLike,
    horizon_periods: int = 12,
    period_length: float = 1.0,
    discount_rate: float = 0.01,
) -> NDArray[np.float64]:
    """Discounted expected value of each customer's purchases over the next ``horizon_periods`` periods.

    CLV = sum_{k=1..K} E[spend] * (E[Y(k*L)] - E[Y((k-1)*L)]) / (1 + d)^k, with K = ``horizon_periods``,
    L = ``period_length`` in summary time units (a month with weekly units: ``DAYS_PER_MONTH / 7``),
    d = ``discount_rate`` per period, E[Y] the BG/NBD conditional expected purchases and E[spend] the Gamma-Gamma
    conditional expected spend; purchases expected within period k are discounted as if paid at its end.
    """
    if horizon_periods < 1 or not period_length > 0 or discount_rate <= -1:
        raise ValueError(
            "clv: need horizon_periods >= 1, period_length > 0 and discount_rate > -1, got "
            f"{horizon_periods!r}, {period_length!r}, {discount_rate!r}"
        )
    x, t_x, T_ = _as_arrays(frequency, recency, T)
    expected_spend = spend.conditional_expected_spend(x, monetary_value)
    value = np.zeros(np.broadcast(x, t_x, T_).shape)
    purchases_before = np.zeros_like(value)
    for period in range(1, horizon_periods + 1):
        purchases_by_end = purchases.expected_purchases(period * period_length, x, t_x, T_)
        value = value + (purchases_by_end - purchases_before) / (1.0 + discount_rate) ** period
        purchases_before = purchases_by_end
    return expected_spend * value


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _as_date(value: date | str, name: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"rfm_summary: {name} must be an ISO date like 1997-09-30, got {value!r}") from None
    raise TypeError(f"rfm_summary: {name} must be a date or an ISO date string, got {type(value).__name__}")


def _as_arrays(*columns: ArrayLike) -> tuple[NDArray[np.float64], ...]:
    return tuple(np.asarray(column, dtype=np.float64) for column in columns)


def _check_rfm(x: NDArray[np.float64], t_x: NDArray[np.float64], T: NDArray[np.float64]) -> None:
    if x.size == 0:
        raise ValueError("fit_bg_nbd: no customers to fit")
    problems = {
        "frequency < 0 or not whole": (x < 0) | (x != np.round(x)),
        "recency < 0 or recency > T": (t_x < 0) | (t_x > T),
        "recency > 0 with frequency 0": (x == 0) & (t_x > 0),
        "T < 0": T < 0,
    }
    found = [f"{name} ({int(mask.sum())} rows)" for name, mask in problems.items() if mask.any()]
    if found:
        raise ValueError("fit_bg_nbd: invalid summary rows: " + "; ".join(found))


def _collapse(
    columns: tuple[NDArray[np.float64], ...], weights: ArrayLike | None
) -> tuple[tuple[NDArray[np.float64], ...], NDArray[np.float64]]:
    """Merge identical rows, summing their weights: the likelihood is evaluated once per distinct row."""
    rows = np.column_stack(columns)
    w = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(rows),) or np.any(w < 0) or not w.sum() > 0:
        raise ValueError("weights must be one non-negative count per row, not all zero")
    distinct, inverse = np.unique(rows, axis=0, return_inverse=True)
    return tuple(distinct.T), np.bincount(inverse.ravel(), weights=w)


def _maximize(
    per_row_log_likelihood: Callable[[NDArray[np.float64]], NDArray[np.float64]],
    start: NDArray[np.float64],
    weights: NDArray[np.float64],
    penalizer_coef: float,
) -> tuple[tuple[float, ...], float]:
    """Maximize a weighted log-likelihood over positive parameters, searched in log space; returns params and LL."""
    total_weight = weights.sum()

    def objective(log_params: NDArray[np.float64]) -> float:
        params = np.exp(log_params)
        mean_ll = np.dot(weights, per_row_log_likelihood(params)) / total_weight
        # L2 shrinkage as in lifetimes: keeps parameters finite on data that cannot pin them down.
        value = -mean_ll + penalizer_coef * np.sum(params**2)
        return float(value) if np.isfinite(value) else np.inf

    # L-BFGS-B gets near the optimum fast but its finite-difference gradient can stop it early ("ABNORMAL")
    # on a flat ridge; Nelder-Mead from there polishes without gradients and decides convergence.
    rough = optimize.minimize(objective, start, method="L-BFGS-B", options={"ftol": 1e-14, "gtol": 1e-9})
    polished = optimize.minimize(
        objective, rough.x, method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-12, "maxiter": 20_000}
    )
    if not (polished.success and np.isfinite(polished.fun)):
        at = ", ".join(f"{value:.4g}" for value in np.exp(polished.x))
        raise RuntimeError(
            f"maximum-likelihood fit did not converge: {polished.message} (parameters drifting at {at}): the data "
            "does not pin every parameter down; set clv.penalizer_coef in conf/models.yaml, e.g. 0.001"
        )
    params = np.exp(polished.x)
    return tuple(float(value) for value in params), float(np.dot(weights, per_row_log_likelihood(params)))
