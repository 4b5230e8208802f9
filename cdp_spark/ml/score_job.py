"""`cdp-spark score`: every customer scored by the champion churn and CLV models into gold.customer_scores."""

from __future__ import annotations

from functools import cache

from pyspark.sql import functions as F

from cdp_spark import tables, tracking
from cdp_spark.features import Facts, customer_features_at, default_as_of
from cdp_spark.ml.config import load_models
from cdp_spark.ml.scoring import score_customers
from cdp_spark.ml.snapshots import feature_snapshots
from cdp_spark.ml.train_job import as_of_argument
from cdp_spark.ops import StageRun
from cdp_spark.pipeline import Context


def run(ctx: Context, stage: StageRun) -> None:
    config = load_models(ctx.config.files.models)
    spark, root = ctx.spark, ctx.root
    with stage.step("champion models") as counts:
        tracker = tracking.connect(ctx.config.mlflow)
        churn = tracking.champion(tracker, config.churn.registered_model)
        clv = tracking.champion(tracker, config.clv.registered_model)
        counts["churn_model_version"] = int(churn.version)
        counts["clv_model_version"] = int(clv.version)

    # Silver is read only when needed: for the default as-of or a snapshot not yet in gold.
    facts = cache(lambda: Facts.read(spark, root))
    as_of = as_of_argument(ctx.args) or default_as_of(facts())
    with stage.step("feature snapshot") as counts:
        features, computed = feature_snapshots(spark, root, [as_of], lambda days: customer_features_at(facts(), days))
        counts["snapshots_computed"] = len(computed)
    with stage.step("score") as counts:
        scores = score_customers(features, churn, clv)
        tables.replace_where(scores, root, tables.CUSTOMER_SCORES, f"as_of = DATE'{as_of.isoformat()}'")
        written = tables.read(spark, root, tables.CUSTOMER_SCORES).where(F.col("as_of") == F.lit(as_of))
        counts["customers"] = written.count()
        counts["scored"] = written.where(F.col("clv").isNotNull()).count()
