"""CLV models: the RFM summary in Spark, BG/NBD and Gamma-Gamma fits against the published CDNOW parameters."""

from __future__ import annotations

import importlib.util
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pytest
from chispa import assert_approx_df_equality
from pyspark.sql import functions as F
from scipy.special import hyp2f1

from cdp_spark.ml.clv import (
    DAYS_PER_MONTH,
    BetaGeoParams,
    GammaGammaParams,
    clv,
    fit_bg_nbd,
    fit_bg_nbd_summary,
    fit_gamma_gamma,
    fit_gamma_gamma_summary,
    rfm_summary,
)

# Fader, Hardie and Lee (2005) on the 2,357-customer CDNOW sample, 39-week calibration period.
PUBLISHED_BG_NBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_BG_NBD_LOG_LIKELIHOOD = -9582.4
# Fader and Hardie, "The Gamma-Gamma model of monetary value": the 946 customers with calibration repeat purchases.
PUBLISHED_GAMMA_GAMMA = {"p": 6.25, "q": 3.74, "gamma": 15.44}

CDNOW_BG_NBD = BetaGeoParams(r=0.2426, alpha=4.4135, a=0.7929, b=2.4258, log_likelihood=-9582.43, n_customers=2357)
CDNOW_GAMMA_GAMMA = GammaGammaParams(p=6.2488, q=3.7446, gamma=15.4478, log_likelihood=-4055.92, n_customers=946)


def _cdnow_sample_path() -> Path:
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("CDNOW data comes from the 'lifetimes' package: pip install --no-deps lifetimes==0.11.3")
    # Located, never imported: lifetimes needs numpy<2.
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "CDNOW_sample.txt"


@pytest.fixture(scope="module")
def cdnow_summary(spark):
    """CDNOW sample (master id, sample id, yyyymmdd, CDs, dollars) summarized in weeks up to 1997-09-30."""
    lines = spark.read.text(str(_cdnow_sample_path()))
    fields = F.split(F.trim("value"), r"\s+")
    transactions = lines.select(
        fields[1].cast("int").alias("customer_id"),
        F.to_date(fields[2], "yyyyMMdd").alias("purchased_on"),
        fields[4].cast("double").alias("amount"),
    )
    summary = rfm_summary(
        transactions,
        "customer_id",
        "purchased_on",
        "amount",
        calibration_end=date(1997, 9, 30),
        time_unit_days=7,
        observation_end=date(1998, 6, 30),
    )
    return summary.cache()


@pytest.mark.slow
def test_cdnow_summary_has_the_published_customer_counts(cdnow_summary):
    assert cdnow_summary.count() == 2357
    assert cdnow_summary.where("frequency > 0").count() == 946
    customer_1 = cdnow_summary.where("customer_id = 1").first()
    # Purchases on 1997-01-01, -01-18 and -08-02 in calibration ($29.73, $14.96 repeat), one on 12-12 in holdout.
    assert (customer_1.frequency, customer_1.frequency_holdout) == (2, 1)
    assert customer_1.recency == pytest.approx(213 / 7)
    assert customer_1["T"] == pytest.approx(272 / 7)
    assert customer_1.monetary_value == pytest.approx(22.345)
    assert customer_1.duration_holdout == pytest.approx(273 / 7)


@pytest.mark.slow
def test_bg_nbd_reproduces_published_cdnow_parameters(cdnow_summary):
    fitted = fit_bg_nbd_summary(cdnow_summary)

    for name, published in PUBLISHED_BG_NBD.items():
        assert getattr(fitted, name) == pytest.approx(published, rel=0.01), name
    assert fitted.log_likelihood == pytest.approx(PUBLISHED_BG_NBD_LOG_LIKELIHOOD, abs=0.1)
    assert fitted.n_customers == 2357
    # FHL 2005, section 5: a customer with 2 repeat purchases, the last at week 30.43 of 38.86, is expected to
    # make 1.226 purchases in the next 39 weeks.
    assert fitted.expected_purchases(39, 2, 30.43, 38.86) == pytest.approx(1.226, abs=0.001)


@pytest.mark.slow
def test_gamma_gamma_reproduces_published_cdnow_parameters(cdnow_summary):
    fitted = fit_gamma_gamma_summary(cdnow_summary)

    for name, published in PUBLISHED_GAMMA_GAMMA.items():
        assert getattr(fitted, name) == pytest.approx(published, rel=0.01), name
    assert fitted.n_customers == 946


def test_rfm_summary_hand_computed(spark):
    transactions = spark.createDataFrame(
        [
            # c1: two lines on Jan 1 are one purchase of 15; repeats of 20 and 30; holdout days of 10 and 30.
            ("c1", datetime(2024, 1, 1, 9, 0), 10.0),
            ("c1", datetime(2024, 1, 1, 17, 30), 5.0),
            ("c1", datetime(2024, 1, 8, 12, 0), 20.0),
            ("c1", datetime(2024, 1, 22, 12, 0), 30.0),
            ("c1", datetime(2024, 2, 5, 10, 0), 8.0),
            ("c1", datetime(2024, 2, 5, 11, 0), 2.0),
            ("c1", datetime(2024, 2, 19, 10, 0), 30.0),
            # c2: one purchase, nothing after.
            ("c2", datetime(2024, 1, 15, 8, 0), 12.0),
            # c3: first seen in the holdout period, so not a calibration customer.
            ("c3", datetime(2024, 2, 1, 8, 0), 40.0),
            # c4: first purchase on the (inclusive) calibration end; the one after the observation end is ignored.
            ("c4", datetime(2024, 1, 29, 23, 0), 7.0),
            ("c4", datetime(2024, 3, 1, 8, 0), 99.0),
        ],
        "customer_id string, purchased_at timestamp, amount double",
    )

    summary = rfm_summary(
        transactions, "customer_id", "purchased_at", "amount", "2024-01-29", 7.0, observation_end=date(2024, 2, 26)
    )

    expected = spark.createDataFrame(
        [
            ("c1", 2, 3.0, 4.0, 25.0, 2, 20.0, 4.0),
            ("c2", 0, 0.0, 2.0, 0.0, 0, 0.0, 4.0),
            ("c4", 0, 0.0, 0.0, 0.0, 0, 0.0, 4.0),
        ],
        "customer_id string, frequency long, recency double, T double, monetary_value double, "
        "frequency_holdout long, monetary_holdout double, duration_holdout double",
    )
    assert_approx_df_equality(summary, expected, precision=1e-9, ignore_row_order=True, ignore_nullable=True)


def test_rfm_summary_without_holdout_has_calibration_columns_only(spark):
    transactions = spark.createDataFrame(
        [("c1", date(2024, 1, 1), 10.0), ("c1", date(2024, 1, 4), 6.0), ("c1", date(2024, 2, 1), 50.0)],
        "customer_id string, purchased_on date, amount double",
    )

    summary = rfm_summary(transactions, "customer_id", "purchased_on", "amount", date(2024, 1, 10), 1.0)

    expected = spark.createDataFrame(
        [("c1", 1, 3.0, 9.0, 6.0)],
        "customer_id string, frequency long, recency double, T double, monetary_value double",
    )
    assert_approx_df_equality(summary, expected, precision=1e-9, ignore_nullable=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"calibration_end": "1997-09-30", "time_unit_days": 0}, "time_unit_days must be positive"),
        ({"calibration_end": "30/09/1997", "time_unit_days": 7}, "calibration_end must be an ISO date"),
        (
            {"calibration_end": "1997-09-30", "time_unit_days": 7, "observation_end": "1997-09-30"},
            "must be after calibration_end",
        ),
    ],
)
def test_rfm_summary_rejects_bad_arguments(spark, kwargs, message):
    transactions = spark.createDataFrame([("c1", date(1997, 1, 1), 1.0)], "c string, d date, v double")
    with pytest.raises(ValueError, match=message):
        rfm_summary(transactions, "c", "d", "v", **kwargs)


def test_p_alive_is_one_without_repeat_purchases():
    T = np.array([0.0, 1.0, 38.86, 500.0])
    assert np.array_equal(CDNOW_BG_NBD.p_alive(np.zeros(4), np.zeros(4), T), np.ones(4))


def test_p_alive_falls_with_time_since_last_purchase():
    p_alive = CDNOW_BG_NBD.p_alive(3, np.array([38.0, 30.0, 20.0, 5.0]), 38.86)
    assert np.all(np.diff(p_alive) < 0)
    assert np.all((p_alive > 0) & (p_alive < 1))


def test_expected_purchases_increase_with_frequency():
    # With the last purchase recent (recency near T), more past purchases mean more future ones. (With a long
    # silence BG/NBD rightly says the opposite: frequent buyers who went quiet are probably gone.)
    frequency = np.arange(0, 21)
    expected = CDNOW_BG_NBD.expected_purchases(39, frequency, np.where(frequency > 0, 37.0, 0.0), 38.86)
    assert np.all(np.diff(expected[1:]) > 0)
    assert expected[1] > expected[0]


def test_expected_purchases_match_the_published_formula():
    r, alpha, a, b = CDNOW_BG_NBD.r, CDNOW_BG_NBD.alpha, CDNOW_BG_NBD.a, CDNOW_BG_NBD.b
    t, x, t_x, T = 39.0, np.array([0.0, 1.0, 2.0, 7.0, 15.0]), np.array([0.0, 5.0, 30.43, 20.0, 35.0]), 38.86
    # FHL 2005, eq. 10, as printed (the implementation uses Euler's transformation of the hypergeometric).
    printed = (
        (a + b + x - 1)
        / (a - 1)
        * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t)))
        / (1 + (x > 0) * a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x))
    )
    assert np.allclose(CDNOW_BG_NBD.expected_purchases(t, x, t_x, T), printed, rtol=1e-10)


def test_expected_purchases_stay_finite_for_heavy_buyers():
    expected = CDNOW_BG_NBD.expected_purchases(52, np.array([500.0, 2000.0]), 309.0, 310.0)
    assert np.all(np.isfinite(expected))
    assert np.all(expected > 0)


def test_conditional_expected_spend_shrinks_towards_the_population_mean():
    population_mean = CDNOW_GAMMA_GAMMA.p * CDNOW_GAMMA_GAMMA.gamma / (CDNOW_GAMMA_GAMMA.q - 1)
    spend = CDNOW_GAMMA_GAMMA.conditional_expected_spend([0, 1, 10, 1000], [0.0, 100.0, 100.0, 100.0])
    assert spend[0] == pytest.approx(population_mean)
    assert population_mean < spend[1] < spend[2] < spend[3] < 100.0


def test_clv_decreases_with_a_higher_discount_rate():
    args = (CDNOW_BG_NBD, CDNOW_GAMMA_GAMMA, [0, 2, 7], [0.0, 30.43, 35.0], [38.86, 38.86, 38.86], [0.0, 22.35, 40.0])
    months = {"horizon_periods": 12, "period_length": DAYS_PER_MONTH / 7}
    low, high = clv(*args, discount_rate=0.0, **months), clv(*args, discount_rate=0.05, **months)
    assert np.all(high < low)
    assert np.all(high > 0)


def test_clv_undiscounted_is_spend_times_expected_purchases():
    # With no discounting the per-period increments telescope to E[Y(horizon)].
    x, t_x, T, m_x = np.array([1.0, 4.0]), np.array([10.0, 30.0]), np.array([38.86, 38.86]), np.array([15.0, 60.0])
    value = clv(CDNOW_BG_NBD, CDNOW_GAMMA_GAMMA, x, t_x, T, m_x, horizon_periods=6, period_length=2.0, discount_rate=0)
    expected = CDNOW_GAMMA_GAMMA.conditional_expected_spend(x, m_x) * CDNOW_BG_NBD.expected_purchases(12.0, x, t_x, T)
    assert np.allclose(value, expected)


def _simulate_bg_nbd(n: int, r: float, alpha: float, a: float, b: float, seed: int) -> tuple[np.ndarray, ...]:
    """BG/NBD customers in whole weeks: Poisson purchases at rate ~ Gamma(r, alpha), dropout ~ Beta(a, b) after each."""
    rng = np.random.default_rng(seed)
    rate, dropout = rng.gamma(r, 1 / alpha, n), rng.beta(a, b, n)
    T = rng.choice([26.0, 39.0, 52.0], n)
    frequency, recency = np.zeros(n), np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1 / rate[i])
            if t > T[i]:
                break
            frequency[i], recency[i] = frequency[i] + 1, t
            if rng.random() < dropout[i]:
                break
    return frequency, np.floor(recency), T


def test_count_weights_fit_like_repeated_rows():
    frequency, recency, T = _simulate_bg_nbd(3000, r=0.5, alpha=5.0, a=0.8, b=2.5, seed=7)
    rows, counts = np.unique(np.column_stack([frequency, recency, T]), axis=0, return_counts=True)
    assert len(rows) < len(frequency) / 2  # the counts really do collapse rows

    weighted = fit_bg_nbd(rows[:, 0], rows[:, 1], rows[:, 2], weights=counts)
    repeated = fit_bg_nbd(frequency, recency, T)
    assert weighted.n_customers == repeated.n_customers == 3000
    assert weighted.log_likelihood == pytest.approx(repeated.log_likelihood, abs=1e-6)
    for name in ("r", "alpha", "a", "b"):
        assert getattr(weighted, name) == pytest.approx(getattr(repeated, name), rel=1e-3), name
    # Well-posed data: the fit lands near the simulated rate parameters.
    assert weighted.r == pytest.approx(0.5, rel=0.25)
    assert weighted.alpha == pytest.approx(5.0, rel=0.35)


def test_penalizer_keeps_a_fit_finite_where_the_data_cannot_identify_dropout():
    # Few customers and no sign of dropout: unpenalized, a and b run off along a ridge towards infinity.
    frequency, recency, T = [0, 0, 1, 2, 3, 5, 1], [0.0, 0.0, 4.0, 9.0, 20.0, 30.0, 1.0], [40.0, 12, 30, 35, 38, 39, 5]
    fitted = fit_bg_nbd(frequency, recency, T, weights=[30, 20, 15, 10, 8, 5, 12], penalizer_coef=0.001)
    assert max(fitted.r, fitted.alpha, fitted.a, fitted.b) < 100


@pytest.mark.parametrize(
    ("frequency", "recency", "T", "message"),
    [
        ([1, 2], [5.0, 50.0], [40.0, 40.0], r"recency < 0 or recency > T \(1 rows\)"),
        ([0, 2], [3.0, 5.0], [40.0, 40.0], r"recency > 0 with frequency 0 \(1 rows\)"),
        ([1.5, 2], [3.0, 5.0], [40.0, 40.0], r"frequency < 0 or not whole \(1 rows\)"),
    ],
)
def test_fit_bg_nbd_rejects_impossible_summaries(frequency, recency, T, message):
    with pytest.raises(ValueError, match=message):
        fit_bg_nbd(frequency, recency, T)


def test_fit_gamma_gamma_rejects_customers_without_repeats():
    with pytest.raises(ValueError, match="frequency > 0 and monetary_value > 0"):
        fit_gamma_gamma([0, 2, 3], [0.0, 10.0, 20.0])


def test_params_round_trip_through_dicts():
    assert BetaGeoParams.from_dict(CDNOW_BG_NBD.to_dict()) == CDNOW_BG_NBD
    assert GammaGammaParams.from_dict(CDNOW_GAMMA_GAMMA.to_dict()) == CDNOW_GAMMA_GAMMA
    assert CDNOW_BG_NBD.to_dict() == {
        "r": 0.2426,
        "alpha": 4.4135,
        "a": 0.7929,
        "b": 2.4258,
        "log_likelihood": -9582.43,
        "n_customers": 2357,
    }


def test_params_from_dict_names_missing_and_unknown_keys():
    values = CDNOW_GAMMA_GAMMA.to_dict()
    del values["q"]
    values["v"] = 1.0
    with pytest.raises(ValueError, match=r"missing keys \['q'\], unknown keys \['v'\]"):
        GammaGammaParams.from_dict(values)
