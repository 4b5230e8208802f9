"""Distributed scoring: every customer's feature row through the champion models, on the executors."""

from __future__ import annotations

import mlflow.pyfunc
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cdp_spark.ml.clv_model import INPUT_COLUMNS, OUTPUT_COLUMNS
from cdp_spark.tracking import ChampionRef

SCORE_COLUMNS = [
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
CLV_RESULT = T.StructType([T.StructField(name, T.DoubleType()) for name in OUTPUT_COLUMNS])


def _null_if_nan(column: Column) -> Column:
    return F.when(F.isnan(column), F.lit(None).cast("double")).otherwise(column)


def _inputs(features: DataFrame, model: ChampionRef) -> list[Column]:
    missing = [name for name in model.input_names if name not in features.columns]
    if missing:
        raise ValueError(
            f"{model.name} version {model.version} needs features {missing} that gold.customer_features lacks: "
            "retrain (`cdp-spark train`) or recompute the features"
        )
    # Signature order: the UDF names its positional arguments after the model's input schema.
    return [F.col(name).cast("double").alias(name) for name in model.input_names]


def score_customers(features: DataFrame, churn: ChampionRef, clv: ChampionRef) -> DataFrame:
    """Churn probability, P(alive), expected purchases, CLV and CLV decile per customer, with the model versions.

    In: one feature snapshot (``cdp_id``, ``as_of``, the churn model's features, ``bgnbd_*``). Out: ``SCORE_COLUMNS``,
    one row per input row. People without a purchase by ``as_of`` are no customers yet: their scores are null.
    Deciles: 1 = lowest CLV, 10 = highest, ties broken by ``cdp_id`` so a rerun assigns the same deciles.
    """
    spark = features.sparkSession
    churn_udf = mlflow.pyfunc.spark_udf(spark, churn.uri, result_type=T.ArrayType(T.DoubleType()), env_manager="local")
    clv_udf = mlflow.pyfunc.spark_udf(spark, clv.uri, result_type=CLV_RESULT, env_manager="local")
    customer = F.col("bgnbd_t_days").isNotNull()
    clv_inputs = _inputs(features, ChampionRef(clv.name, clv.version, clv.input_names or INPUT_COLUMNS))
    scored = features.select(
        "cdp_id",
        "as_of",
        customer.alias("_customer"),
        # predict_proba's columns: [retained, churned]
        churn_udf(*_inputs(features, churn)).getItem(1).alias("_churn"),
        clv_udf(*clv_inputs).alias("_clv"),
    )
    value = {
        "churn_probability": F.col("_churn"),
        **{name: F.col("_clv").getField(name) for name in OUTPUT_COLUMNS},
    }
    scored = scored.select(
        "cdp_id",
        "as_of",
        *[F.when(F.col("_customer"), _null_if_nan(column)).alias(name) for name, column in value.items()],
    )
    # One window over all customers: exact deciles, at the price of one sorted partition.
    by_clv = Window.partitionBy(F.col("clv").isNull()).orderBy(F.col("clv"), F.col("cdp_id"))
    return scored.select(
        "cdp_id",
        "as_of",
        "churn_probability",
        "p_alive",
        "expected_purchases",
        "clv",
        F.when(F.col("clv").isNotNull(), F.ntile(10).over(by_clv)).alias("clv_decile"),
        F.lit(churn.name).alias("churn_model"),
        F.lit(int(churn.version)).alias("churn_model_version"),
        F.lit(clv.name).alias("clv_model"),
        F.lit(int(clv.version)).alias("clv_model_version"),
    )
