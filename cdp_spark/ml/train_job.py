"""`cdp-spark train`: churn and CLV models from silver facts and gold feature snapshots, tracked in MLflow."""

from __future__ import annotations

import argparse
from datetime import date

from pyspark.sql import functions as F

from cdp_spark import tracking
from cdp_spark.features import Facts, customer_features_at, default_as_of, purchases
from cdp_spark.ml.churn_examples import churn_dates
from cdp_spark.ml.churn_model import train_churn
from cdp_spark.ml.clv_model import train_clv
from cdp_spark.ml.config import load_models
from cdp_spark.ml.snapshots import feature_snapshots
from cdp_spark.ops import StageRun
from cdp_spark.pipeline import Context


def as_of_argument(args: argparse.Namespace) -> date | None:
    """``--as-of YYYY-MM-DD`` as a date, or None when not given."""
    text = getattr(args, "as_of", None)
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--as-of must be a date like 2026-01-31, got {text!r}") from None


def run(ctx: Context, stage: StageRun) -> None:
    config = load_models(ctx.config.files.models)
    spark, root = ctx.spark, ctx.root
    tracker = tracking.connect(ctx.config.mlflow)
    tags = {"cdp.run_id": stage.run_id}
    with stage.step("read facts") as counts:
        facts = Facts.read(spark, root)
        # With --as-of the models are trained as if that day were the latest: later facts stay unseen.
        latest = as_of_argument(ctx.args) or default_as_of(facts)
        customer_purchases = purchases(facts).where(F.to_date("order_ts") <= F.lit(latest)).cache()
        counts["purchases"] = customer_purchases.count()
    dates = churn_dates(
        latest,
        config.churn.horizon_days,
        config.churn.n_snapshots,
        config.churn.snapshot_every_days,
        config.churn.holdout_as_of,
    )
    with stage.step("feature snapshots") as counts:
        features, computed = feature_snapshots(
            spark, root, dates.all_as_ofs, lambda as_ofs: customer_features_at(facts, as_ofs)
        )
        counts["snapshots"] = len(dates.all_as_ofs)
        counts["snapshots_computed"] = len(computed)
    with stage.step("train churn") as counts:
        counts.update(train_churn(features, customer_purchases, dates, config.churn, tracker, tags).counts())
    with stage.step("train clv") as counts:
        counts.update(train_clv(customer_purchases, latest, config.clv, tracker, tags).counts())
    customer_purchases.unpersist()
