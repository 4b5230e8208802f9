from pyspark.sql import functions as F

from cdp_spark.sampling import keyed_sample


def test_the_same_rows_are_kept_however_the_data_is_partitioned(spark):
    rows = spark.range(20000).withColumn("label", (F.col("id") % 4 == 0).cast("int"))
    one = keyed_sample(rows.repartition(1), 0.1, seed=7, keys=["id"])
    many = keyed_sample(rows.repartition(7, "label").orderBy(F.rand(1)), 0.1, seed=7, keys=["id"])
    kept = {r.id for r in one.select("id").collect()}

    assert kept == {r.id for r in many.select("id").collect()}
    assert 1800 < len(kept) < 2200
    assert kept != {r.id for r in keyed_sample(rows, 0.1, seed=8, keys=["id"]).select("id").collect()}


def test_a_per_row_rate_samples_each_class_at_its_own_rate(spark):
    rows = spark.range(40000).withColumn("label", (F.col("id") % 4 == 0).cast("int"))
    rate = F.when(F.col("label") == 1, F.lit(1.0)).otherwise(F.lit(0.2))
    counts = {r.label: r["count"] for r in keyed_sample(rows, rate, seed=3).groupBy("label").count().collect()}

    assert counts[1] == 10000
    assert 5600 < counts[0] < 6400
