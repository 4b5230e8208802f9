"""Churn and CLV models: dates and labels, the driver sample, the champion/challenger gate in MLflow, the CLV pyfunc,
distributed scoring into gold.customer_scores, and a churn model that beats recency on simulated BTYD customers."""

from __future__ import annotations

import argparse
from datetime import date, datetime, timedelta
from functools import partial
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp_spark import tables, tracking
from cdp_spark.config import CdpConfig, ConfigError, MlflowConfig, StageFiles
from cdp_spark.features import Facts, customer_features_at, purchases
from cdp_spark.ml import score_job
from cdp_spark.ml.churn import BalancedChurnClassifier, build_estimator, top_fraction_lift
from cdp_spark.ml.churn_examples import churn_dates, churn_labels, feature_columns, sample_fractions
from cdp_spark.ml.churn_model import log_churn_model, train_churn
from cdp_spark.ml.clv import BetaGeoParams, GammaGammaParams, clv
from cdp_spark.ml.clv_model import ClvParams, log_clv_model, predict_clv, train_clv
from cdp_spark.ml.config import ChurnConfig, ClvConfig, ModelsConfig, load_models
from cdp_spark.ml.snapshots import feature_snapshots
from cdp_spark.ops import StageRun
from cdp_spark.pipeline import Context
from cdp_spark.tables import silver_schema as contract_schema

REPO = Path(__file__).resolve().parents[1]

CDNOW_BG_NBD = BetaGeoParams(r=0.2426, alpha=4.4135, a=0.7929, b=2.4258, log_likelihood=-9582.43, n_customers=2357)
CDNOW_GAMMA_GAMMA = GammaGammaParams(p=6.2488, q=3.7446, gamma=15.4478, log_likelihood=-4055.92, n_customers=946)


def mlflow_config(tracker: tracking.Tracking, tmp_path: Path) -> MlflowConfig:
    return MlflowConfig(
        tracking_uri=tracker.tracking_uri, artifact_root=str(tmp_path / "mlartifacts"), experiment="test"
    )


# --------------------------------------------------------------------------------------------
# Dates and labels
# --------------------------------------------------------------------------------------------


def test_churn_dates_default_schedule():
    dates = churn_dates(date(2025, 12, 31), horizon_days=90, n_snapshots=4, snapshot_every_days=30)
    assert dates.holdout_as_of == date(2025, 10, 2)
    assert dates.training_as_ofs == (date(2025, 7, 4), date(2025, 6, 4), date(2025, 5, 5), date(2025, 4, 5))


@pytest.mark.parametrize(
    ("latest", "horizon", "n_snapshots", "every", "holdout"),
    [
        (date(2025, 12, 31), 90, 4, 30, None),
        (date(2025, 12, 31), 90, 6, 7, None),
        (date(2024, 3, 1), 30, 12, 1, None),
        (date(2024, 3, 1), 60, 3, 90, date(2023, 11, 15)),
        (date(2026, 1, 1), 1, 2, 1, None),
    ],
)
def test_label_windows_never_overlap_the_holdout(latest, horizon, n_snapshots, every, holdout):
    dates = churn_dates(latest, horizon, n_snapshots, every, holdout)
    h = timedelta(days=horizon)
    # The holdout's labels are observable: its window (holdout, holdout + H] ends by the latest fact date.
    assert dates.holdout_as_of + h <= latest
    if holdout is not None:
        assert dates.holdout_as_of == holdout
    assert len(set(dates.training_as_ofs)) == n_snapshots
    for as_of in dates.training_as_ofs:
        # Each training label window (as_of, as_of + H] ends on or before the holdout as-of: it neither
        # contains a day after the holdout's features nor touches the holdout's label window.
        assert as_of + h <= dates.holdout_as_of
        assert as_of + h < dates.holdout_as_of + timedelta(days=1)
    assert list(dates.training_as_ofs) == sorted(dates.training_as_ofs, reverse=True)


def test_churn_dates_reject_a_holdout_whose_labels_are_not_known_yet():
    with pytest.raises(ValueError, match=r"holdout_as_of 2025-11-01 is too late.*use 2025-10-02 or earlier"):
        churn_dates(date(2025, 12, 31), 90, 4, 30, holdout_as_of=date(2025, 11, 1))


def _purchases(spark: SparkSession, rows: list[tuple[str | None, str, float]]) -> DataFrame:
    return spark.createDataFrame(
        [(cdp_id, datetime.fromisoformat(ts), amount) for cdp_id, ts, amount in rows],
        "cdp_id string, order_ts timestamp, amount double",
    )


def test_churn_labels_hand_made(spark):
    purchases_ = _purchases(
        spark,
        [
            # a: bought on the as-of day (history, not in the window), then exactly on as_of + 10: retained.
            ("a", "2025-01-10 23:59:00", 5.0),
            ("a", "2025-01-20 08:00:00", 5.0),
            # b: bought before, then only on as_of + 11, just outside the window: churned at 01-10; at 01-20 the
            # purchase on 01-21 is inside its window.
            ("b", "2025-01-01 12:00:00", 9.0),
            ("b", "2025-01-21 00:00:01", 9.0),
            # c: first purchase after the first as-of: no example at 01-10; at 01-20 nothing follows -> churned.
            ("c", "2025-01-15 09:00:00", 20.0),
            ("c", "2025-01-15 10:00:00", 20.0),
            # Anonymous store sale: nobody's label.
            (None, "2025-01-05 10:00:00", 3.0),
        ],
    )

    labels = churn_labels(purchases_, [date(2025, 1, 10), date(2025, 1, 20)], horizon_days=10)

    expected = spark.createDataFrame(
        [
            ("a", date(2025, 1, 10), 0),
            ("a", date(2025, 1, 20), 1),
            ("b", date(2025, 1, 10), 1),
            ("b", date(2025, 1, 20), 0),
            ("c", date(2025, 1, 20), 1),
        ],
        "cdp_id string, as_of date, churned int",
    )
    assert_df_equality(labels, expected, ignore_row_order=True, ignore_nullable=True)


def test_training_labels_never_see_purchases_after_the_holdout_as_of(spark):
    dates = churn_dates(date(2025, 12, 31), horizon_days=90, n_snapshots=2, snapshot_every_days=30)
    assert dates.holdout_as_of == date(2025, 10, 2)
    purchases_ = _purchases(
        spark,
        [
            # x buys long before, then only the day after the holdout as-of: churned in both training snapshots.
            ("x", "2025-01-15 10:00:00", 10.0),
            ("x", "2025-10-03 10:00:00", 10.0),
            # y buys long before, then on the holdout as-of itself: the last day of the newest training window.
            ("y", "2025-01-15 10:00:00", 10.0),
            ("y", "2025-10-02 18:00:00", 10.0),
        ],
    )

    labels = churn_labels(purchases_, dates.all_as_ofs, dates.horizon_days)

    expected = spark.createDataFrame(
        [
            ("x", date(2025, 6, 4), 1),
            ("x", date(2025, 7, 4), 1),
            ("x", date(2025, 10, 2), 0),
            ("y", date(2025, 6, 4), 1),
            ("y", date(2025, 7, 4), 0),
            ("y", date(2025, 10, 2), 1),
        ],
        "cdp_id string, as_of date, churned int",
    )
    assert_df_equality(labels, expected, ignore_row_order=True, ignore_nullable=True)


# --------------------------------------------------------------------------------------------
# Sampling, features, metrics, config
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("class_counts", "max_rows", "expected"),
    [
        ({0: 300, 1: 700}, 1000, {0: 1.0, 1: 1.0}),  # under the cap: everything
        ({0: 100, 1: 900}, 500, {0: 1.0, 1: 0.4 / 0.9}),  # rare class kept whole, the rest fills the budget
        ({0: 600, 1: 400}, 500, {0: 250 / 600, 1: 250 / 400}),  # both above their share: half the budget each
        ({0: 2000, 1: 2000}, 1000, {0: 0.25, 1: 0.25}),
        ({1: 50}, 10, {1: 0.2}),
    ],
)
def test_sample_fractions(class_counts, max_rows, expected):
    assert sample_fractions(class_counts, max_rows) == pytest.approx(expected)


def test_top_decile_lift_and_capture():
    # 20 customers, 5 churners; the 2 highest scores (top decile) hold 2 churners.
    y = [1, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    score = [0.99, 0.98, 0.97, *[0.5] * 17]
    lift, capture = top_fraction_lift(y, score, 0.1)
    assert capture == pytest.approx(2 / 5)
    assert lift == pytest.approx((2 / 2) / (5 / 20))


def test_feature_columns_default_to_numeric_and_boolean_columns(spark):
    df = spark.createDataFrame(
        [("c1", date(2025, 1, 1), 3, 2.5, True, "gold")],
        "cdp_id string, as_of date, frequency long, spend double, channel_online boolean, tier string",
    )
    assert feature_columns(df.schema) == ["frequency", "spend", "channel_online"]
    assert feature_columns(df.schema, ["spend"]) == ["spend"]
    with pytest.raises(ValueError, match=r"churn.features: \['tier', 'nope'\] are not numeric or boolean"):
        feature_columns(df.schema, ["tier", "nope"])


def test_balanced_classifier_reports_the_population_churn_rate():
    # A feature that says nothing: the balanced fit says 0.5, the prior correction gives back the 30% base rate.
    frame = pd.DataFrame({"noise": np.zeros(100), "churned": [1] * 30 + [0] * 70})
    model = BalancedChurnClassifier(build_estimator("logistic_regression", {}, 0), prior_odds=30 / 70)
    model.fit(frame[["noise"]], frame["churned"])
    assert model.predict_proba(frame[["noise"]])[:, 1] == pytest.approx(np.full(100, 0.3), abs=1e-6)


def test_shipped_models_config_is_valid():
    config = load_models(str(REPO / "conf" / "models.yaml"))
    assert config.churn.registered_model == "cdp_churn" and config.clv.registered_model == "cdp_clv"
    assert (config.churn.horizon_days, config.churn.model, config.clv.time_unit_days) == (90, "gradient_boosting", 7.0)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "churn:\n  hyperparameters:\n    gradient_boosting: {max_itr: 5}\n",
            r"churn.hyperparameters.gradient_boosting",
        ),
        ("churn:\n  model: xgboost\n", r"churn.model"),
        ("clv:\n  time_unit_days: 0\n", r"clv.time_unit_days"),
        ("churn:\n  horizon: 90\n", r"churn.horizon: unknown key"),
    ],
)
def test_bad_models_config_names_file_and_key(tmp_path, yaml_text, message):
    path = tmp_path / "models.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=rf"models.yaml: {message}"):
        load_models(str(path))


@pytest.mark.parametrize(
    ("new", "champion_version", "champion", "higher_is_better", "promoted"),
    [
        (0.70, None, None, True, True),  # first version
        (0.80, "1", 0.75, True, True),
        (0.75, "1", 0.75, True, False),  # a tie is not an improvement
        (0.70, "1", 0.75, True, False),
        (1.9, "2", 2.0, False, True),  # MAE: lower wins
        (2.1, "2", 2.0, False, False),
        (0.70, "1", None, True, True),  # the champion cannot be evaluated on this holdout
    ],
)
def test_gate_decision(new, champion_version, champion, higher_is_better, promoted):
    decision = tracking.decide("metric", new, champion_version, champion, higher_is_better)
    assert decision.promoted is promoted
    assert decision.alias == ("champion" if promoted else "challenger")


# --------------------------------------------------------------------------------------------
# CLV pyfunc
# --------------------------------------------------------------------------------------------


CLV_PARAMS = ClvParams(CDNOW_BG_NBD, CDNOW_GAMMA_GAMMA, time_unit_days=7.0, horizon_days=365, discount_rate=0.1)


def _register_clv(tracker: tracking.Tracking, params: ClvParams = CLV_PARAMS) -> str:
    with mlflow.start_run(experiment_id=tracker.experiment_id):
        version = log_clv_model(params, "cdp_clv")
    tracking.apply_gate(tracker.client, "cdp_clv", version, tracking.decide("m", 1.0, None, None, False))
    return version


def test_clv_pyfunc_round_trip(tracker):
    version = _register_clv(tracker)

    loaded = mlflow.pyfunc.load_model("models:/cdp_clv@champion")
    summary = pd.DataFrame(
        {
            "bgnbd_frequency": [0.0, 2.0, 7.0, None],
            "bgnbd_recency_days": [0.0, 140.0, 266.0, None],
            "bgnbd_t_days": [273.0, 273.0, 273.0, None],
            "bgnbd_monetary": [0.0, 22.5, 40.0, 0.0],
        }
    )
    predicted = loaded.predict(summary)

    assert version == "1"
    assert loaded.unwrap_python_model().params == CLV_PARAMS
    x, t_x, T = np.array([0.0, 2.0, 7.0]), np.array([0.0, 20.0, 38.0]), np.array([39.0, 39.0, 39.0])
    m_x = np.array([0.0, 22.5, 40.0])
    # 365 days = 12 periods of 365/12 days, each discounted at (1.1)^(period in years) - 1.
    expected = pd.DataFrame(
        {
            "p_alive": CDNOW_BG_NBD.p_alive(x, t_x, T),
            "expected_purchases": CDNOW_BG_NBD.expected_purchases(365 / 7, x, t_x, T),
            "clv": clv(
                CDNOW_BG_NBD,
                CDNOW_GAMMA_GAMMA,
                x,
                t_x,
                T,
                m_x,
                horizon_periods=12,
                period_length=365 / 12 / 7,
                discount_rate=1.1 ** ((365 / 12) / 365.25) - 1,
            ),
        }
    )
    assert list(predicted.columns) == ["p_alive", "expected_purchases", "clv"]
    pd.testing.assert_frame_equal(predicted.iloc[:3].reset_index(drop=True), expected, rtol=1e-12)
    assert predicted.iloc[3].isna().all()
    assert predicted["p_alive"].iloc[0] == 1.0
    assert 0 < predicted["clv"].iloc[1] < predicted["clv"].iloc[2]


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------

AS_OF = date(2025, 6, 30)


def _features_snapshot(spark: SparkSession) -> DataFrame:
    """Five profiles at AS_OF; p5 has never bought (no BG/NBD summary)."""
    return spark.createDataFrame(
        [
            ("p1", AS_OF, 5, 10, 2, 100, 300, 40.0),
            ("p2", AS_OF, 200, 1, 0, 0, 200, 0.0),
            ("p3", AS_OF, 30, 4, 3, 150, 330, 25.0),
            ("p4", AS_OF, 90, 2, 1, 20, 110, 60.0),
            ("p5", AS_OF, None, 0, 0, None, None, 0.0),
        ],
        "cdp_id string, as_of date, recency_days int, frequency long, bgnbd_frequency long, "
        "bgnbd_recency_days int, bgnbd_t_days int, bgnbd_monetary double",
    )


def _register_churn(tracker: tracking.Tracking) -> BalancedChurnClassifier:
    train = pd.DataFrame(
        {
            "recency_days": [1.0, 5.0, 10.0, 20.0, 100.0, 150.0, 200.0, 300.0, 15.0, 250.0],
            "frequency": [9.0, 7.0, 6.0, 4.0, 1.0, 2.0, 1.0, 1.0, 3.0, 2.0],
            "churned": [0, 0, 0, 0, 1, 1, 1, 1, 0, 1],
        }
    )
    model = BalancedChurnClassifier(build_estimator("logistic_regression", {}, 0), prior_odds=1.0)
    model.fit(train[["recency_days", "frequency"]], train["churned"])
    with mlflow.start_run(experiment_id=tracker.experiment_id):
        version = log_churn_model(model, train, "cdp_churn")
    tracking.apply_gate(tracker.client, "cdp_churn", version, tracking.decide("m", 0.5, None, None, True))
    return model


def _score_context(spark, lakehouse, tracker, tmp_path) -> Context:
    models_yaml = tmp_path / "models.yaml"
    models_yaml.write_text("churn: {registered_model: cdp_churn}\nclv: {registered_model: cdp_clv}\n")
    config = CdpConfig(
        lakehouse=lakehouse, mlflow=mlflow_config(tracker, tmp_path), files=StageFiles(models=str(models_yaml))
    )
    return Context(config=config, args=argparse.Namespace(as_of=AS_OF.isoformat()), _spark=spark)


def test_scoring_writes_one_row_per_profile_and_a_rerun_gives_the_same_table(spark, lakehouse, tracker, tmp_path):
    churn_model = _register_churn(tracker)
    _register_clv(tracker)
    snapshot = _features_snapshot(spark)
    tables.replace_where(snapshot, lakehouse.root, tables.CUSTOMER_FEATURES, f"as_of = DATE'{AS_OF}'")
    ctx = _score_context(spark, lakehouse, tracker, tmp_path)

    stage = StageRun("score")
    score_job.run(ctx, stage)
    score_job.run(ctx, StageRun("score"))
    path = tables.CUSTOMER_SCORES.path(lakehouse.root)
    first = spark.read.format("delta").option("versionAsOf", 0).load(path)
    second = tables.read(spark, lakehouse.root, tables.CUSTOMER_SCORES)

    assert_df_equality(first, second, ignore_row_order=True, ignore_nullable=True)
    assert second.columns == [
        "cdp_id",
        "as_of",
        "churn_probability",
        "p_alive",
        "expected_purchases",
        "clv",
        "clv_decile",
        "churn_model",
        "churn_model_version",
        "clv_model",
        "clv_model_version",
    ]
    assert_df_equality(
        second.select("cdp_id", "as_of", "churn_model", "churn_model_version", "clv_model", "clv_model_version"),
        spark.createDataFrame(
            [(p, AS_OF, "cdp_churn", 1, "cdp_clv", 1) for p in ("p1", "p2", "p3", "p4", "p5")],
            "cdp_id string, as_of date, churn_model string, churn_model_version int, clv_model string, "
            "clv_model_version int",
        ),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    scores = second.toPandas().set_index("cdp_id").sort_index()
    customers = ["p1", "p2", "p3", "p4"]
    # The distributed scores are the registered models' own predictions.
    features = _features_snapshot(spark).toPandas().set_index("cdp_id").sort_index()
    expected_churn = churn_model.predict_proba(features.loc[customers, ["recency_days", "frequency"]].astype(float))
    assert scores.loc[customers, "churn_probability"].to_numpy() == pytest.approx(expected_churn[:, 1])
    expected_clv = predict_clv(CLV_PARAMS, features.loc[customers])
    assert scores.loc[customers, "clv"].to_numpy() == pytest.approx(expected_clv["clv"].to_numpy())
    assert scores.loc[customers, "p_alive"].to_numpy() == pytest.approx(expected_clv["p_alive"].to_numpy())
    # Four customers in ten deciles by CLV: ntile gives 1, 2, 3, 4 from the lowest to the highest.
    ranked = scores.loc[customers].sort_values("clv")
    assert ranked["clv_decile"].tolist() == [1, 2, 3, 4]
    # p5 never bought: no customer yet, no scores.
    assert scores.loc["p5", ["churn_probability", "p_alive", "expected_purchases", "clv", "clv_decile"]].isna().all()
    metrics = {(step, metric): value for step, metric, value in stage.metrics}
    assert metrics[("score", "customers")] == 5
    assert metrics[("score", "scored")] == 4
    assert metrics[("feature snapshot", "snapshots_computed")] == 0


def test_scoring_without_a_champion_says_to_train_first(spark, lakehouse, tracker, tmp_path):
    ctx = _score_context(spark, lakehouse, tracker, tmp_path)
    with pytest.raises(tracking.NoChampionError, match=r"'cdp_churn' has no 'champion'.*run `cdp-spark train` first"):
        score_job.run(ctx, StageRun("score"))


# --------------------------------------------------------------------------------------------
# Training on simulated buy-till-you-die customers
# --------------------------------------------------------------------------------------------

SIM_START, SIM_DAYS = date(2024, 1, 1), 731
SIM_LATEST = SIM_START + timedelta(days=SIM_DAYS - 1)  # 2025-12-31


def simulate_btyd(n_customers: int, seed: int) -> pd.DataFrame:
    """BG/NBD purchases with Gamma-Gamma spend: ``record_id``, ``order_ts``, ``amount``, first purchases in 2024.

    Purchase rates are heterogeneous (Gamma(0.5, 1/15) per day) so recency alone cannot tell a slow buyer from a
    lost one; each purchase is followed by dropout with probability ~ Beta(1, 8).
    """
    rng = np.random.default_rng(seed)
    rate = rng.gamma(0.5, 1 / 15, n_customers)
    dropout = rng.beta(1.0, 8.0, n_customers)
    nu = rng.gamma(3.7, 1 / 15.0, n_customers)
    first = rng.uniform(0, 365, n_customers)
    rows = []
    for i in range(n_customers):
        t = first[i]
        while t < SIM_DAYS:
            rows.append((f"orders:A{i:05d}", t, round(float(rng.gamma(6.0, 1 / nu[i])), 2)))
            if rng.uniform() < dropout[i]:
                break
            t += rng.exponential(1 / rate[i])
    frame = pd.DataFrame(rows, columns=["record_id", "day", "amount"])
    frame["order_ts"] = pd.Timestamp(SIM_START) + pd.to_timedelta(frame.pop("day"), unit="D")
    return frame[["record_id", "order_ts", "amount"]]


def simulated_facts(spark: SparkSession, orders: pd.DataFrame) -> Facts:
    order_rows = spark.createDataFrame(orders, "record_id string, order_ts timestamp, amount double")
    order_rows = order_rows.withColumn("order_id", F.monotonically_increasing_id().cast("string"))
    contract = contract_schema("orders")
    orders_df = order_rows.select(
        *[
            F.col(f.name).cast(f.dataType)
            if f.name in order_rows.columns
            else F.lit(None).cast(f.dataType).alias(f.name)
            for f in contract.fields
        ]
    ).withColumn("channel", F.lit("online"))
    identity_map = (
        order_rows.select("record_id")
        .distinct()
        .select(
            "record_id",
            F.regexp_replace("record_id", "orders:A", "p").alias("cdp_id"),
            F.lit(1).alias("component_size"),
        )
    )

    def empty(table: str) -> DataFrame:
        return spark.createDataFrame([], contract_schema(table))

    return Facts(
        orders=orders_df,
        events=empty("events"),
        email_engagement=empty("email_engagement"),
        support_tickets=empty("support_tickets"),
        identity_map=identity_map,
    )


@pytest.fixture(scope="module")
def btyd(spark, tmp_path_factory):
    """3,000 simulated customers, their purchases, and feature snapshots at every churn as-of, written once."""
    root = str(tmp_path_factory.mktemp("btyd") / "lakehouse")
    facts = simulated_facts(spark, simulate_btyd(3000, seed=11))
    dates = churn_dates(SIM_LATEST, horizon_days=90, n_snapshots=4, snapshot_every_days=30)
    compute = partial(customer_features_at, facts)
    features, computed = feature_snapshots(spark, root, dates.all_as_ofs, compute)
    again, recomputed = feature_snapshots(spark, root, dates.all_as_ofs, compute)
    assert sorted(computed) == sorted(dates.all_as_ofs) and recomputed == []
    return facts, purchases(facts).cache(), features, dates


def test_missing_snapshots_are_computed_together_in_one_write_and_stored_ones_are_not_recomputed(spark, tmp_path):
    root = str(tmp_path / "lakehouse")
    facts = simulated_facts(spark, simulate_btyd(200, seed=3))
    early, middle, late = (SIM_LATEST - timedelta(days=d) for d in (60, 30, 0))
    asked: list[list[date]] = []

    def compute(days: list[date]) -> DataFrame:
        asked.append(list(days))
        return customer_features_at(facts, days)

    _, first_run = feature_snapshots(spark, root, [middle], compute)
    features, second_run = feature_snapshots(spark, root, [late, middle, early], compute)
    assert first_run == [middle] and second_run == [early, late]
    assert asked == [[middle], [early, late]]
    assert DeltaTable.forPath(spark, tables.CUSTOMER_FEATURES.path(root)).history().count() == 2  # one write a run
    expected = customer_features_at(facts, [early, middle, late])
    assert features.count() > 0
    # Approximate: a sum of doubles depends on the order rows reach it, and middle's rows were summed in another plan.
    assert_approx_df_equality(features, expected, precision=1e-9, ignore_row_order=True, ignore_nullable=True)


CHURN_TEST_CONFIG = {"max_training_rows": 6000, "importance_rows": 1000}


@pytest.mark.slow
def test_churn_model_on_simulated_customers_beats_recency_and_logs_everything(btyd, tracker):
    facts, purchases_, features, dates = btyd
    config = ChurnConfig(**CHURN_TEST_CONFIG)

    result = train_churn(features, purchases_, dates, config, tracker, {"cdp.run_id": "test"})

    assert result.metrics["roc_auc"] > result.baseline_metrics["roc_auc"] + 0.005
    assert result.metrics["top_decile_lift"] > 1.0
    assert result.version == "1" and result.decision.promoted
    run = tracker.client.get_run(result.run_id)
    assert run.data.params["holdout_as_of"] == "2025-10-02"
    assert run.data.params["training_as_ofs"] == "2025-07-04,2025-06-04,2025-05-05,2025-04-05"
    assert run.data.params["training_sampled"] == "True"
    assert run.data.params["gate_decision"] == "champion"
    assert run.data.metrics["training_examples"] > 6000 >= result.rows["training_rows_used"] > 4000
    for metric in (
        "holdout_roc_auc",
        "holdout_pr_auc",
        "holdout_brier",
        "holdout_top_decile_capture",
        "baseline_roc_auc",
    ):
        assert metric in run.data.metrics
    artifacts = {a.path for a in tracker.client.list_artifacts(result.run_id, "plots")}
    assert artifacts == {"plots/calibration.png", "plots/roc_and_gains.png", "plots/feature_importance.png"}
    champion = tracker.client.get_model_version_by_alias("cdp_churn", "champion")
    assert str(champion.version) == "1"
    info = mlflow.models.get_model_info("models:/cdp_churn@champion")
    assert info.signature is not None and "recency_days" in info.signature.inputs.input_names()
    assert info.saved_input_example_info is not None
    assert result.metrics["brier"] < result.baseline_metrics["brier"]


@pytest.mark.slow
def test_churn_gate_promotes_a_better_model_and_not_a_worse_one(btyd, tracker):
    facts, purchases_, features, dates = btyd
    weak = ChurnConfig(model="logistic_regression", features=["tenure_days"], **CHURN_TEST_CONFIG)
    strong = ChurnConfig(**CHURN_TEST_CONFIG)

    first = train_churn(features, purchases_, dates, weak, tracker)
    better = train_churn(features, purchases_, dates, strong, tracker)
    worse = train_churn(features, purchases_, dates, weak, tracker)

    client = tracker.client
    assert (first.version, first.decision.alias) == ("1", "champion")
    assert (better.version, better.decision.alias) == ("2", "champion")
    assert better.decision.champion_version == "1"
    # The champion was re-scored on the same holdout: the weak model's score is the first run's own.
    assert better.decision.champion_score == pytest.approx(first.metrics["roc_auc"])
    assert (worse.version, worse.decision.alias) == ("3", "challenger")
    assert worse.decision.champion_score == pytest.approx(better.metrics["roc_auc"])
    assert str(client.get_model_version_by_alias("cdp_churn", "champion").version) == "2"
    assert str(client.get_model_version_by_alias("cdp_churn", "challenger").version) == "3"
    assert client.get_model_version("cdp_churn", "3").tags["gate_decision"] == "challenger"
    params = client.get_run(worse.run_id).data.params
    assert (params["gate_champion_version"], params["gate_decision"]) == ("2", "challenger")
    assert float(params["gate_champion_score"]) > float(params["gate_new_score"])


@pytest.mark.slow
def test_clv_model_on_simulated_customers(btyd, tracker):
    facts, purchases_, features, dates = btyd
    config = ClvConfig(holdout_days=180)

    fitted = train_clv(purchases_, SIM_LATEST, config, tracker)
    # A heavily penalized fit shrinks the parameters away from the truth: worse on the same holdout.
    penalized = train_clv(purchases_, SIM_LATEST, ClvConfig(holdout_days=180, penalizer_coef=0.5), tracker)

    run = tracker.client.get_run(fitted.run_id)
    assert run.data.params["calibration_end"] == "2025-07-04"
    assert run.data.params["observation_end"] == "2025-12-31"
    assert fitted.decision.alias == "champion"
    # The model is the true one: holdout purchases in total are predicted within 15%.
    total_predicted, total_actual = (
        fitted.metrics["predicted_purchases_total"],
        fitted.metrics["actual_purchases_total"],
    )
    assert total_predicted == pytest.approx(total_actual, rel=0.15)
    assert fitted.metrics["corr_purchases"] > 0.3
    assert penalized.metrics["mae_purchases"] > fitted.metrics["mae_purchases"]
    assert (penalized.version, penalized.decision.alias) == ("2", "challenger")
    assert str(tracker.client.get_model_version_by_alias("cdp_clv", "champion").version) == "1"
    assert {a.path for a in tracker.client.list_artifacts(fitted.run_id, "plots")} == {"plots/holdout_purchases.png"}


def test_models_config_rejects_one_name_for_both_models():
    with pytest.raises(ValueError, match="must differ"):
        ModelsConfig(churn=ChurnConfig(registered_model="m"), clv=ClvConfig(registered_model="m"))
