"""Identity metrics against ground truth: pairwise precision/recall/F1 and cluster-level counts.

Pairs are counted, never enumerated: a group of n records holds n(n-1)/2 pairs, so the cost is one
aggregation whatever the cluster sizes.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def _pairs(n: F.Column) -> F.Column:
    return n * (n - 1) / 2


def identity_metrics(predicted: DataFrame, truth: DataFrame) -> dict[str, float | int]:
    """Compare clusters with truth.

    In: predicted ``record_id, cdp_id``; truth ``record_id, person_id`` (records missing from either
    side are left out). Out: a dict of pairwise precision, recall, F1 and cluster-level counts.
    """
    joined = predicted.join(truth, "record_id").select("record_id", "cdp_id", "person_id").cache()
    try:
        cell = joined.groupBy("cdp_id", "person_id").agg(F.count("*").alias("n"))
        cluster = joined.groupBy("cdp_id").agg(F.count("*").alias("n"), F.countDistinct("person_id").alias("people"))
        person = joined.groupBy("person_id").agg(F.count("*").alias("n"), F.countDistinct("cdp_id").alias("clusters"))
        tp = cell.agg(F.sum(_pairs(F.col("n")))).first()[0] or 0
        c = cluster.agg(
            F.sum(_pairs(F.col("n"))).alias("pred"),
            F.count("*").alias("clusters"),
            F.count_if(F.col("people") > 1).alias("merged"),
        ).first()
        p = person.agg(
            F.sum(_pairs(F.col("n"))).alias("true"),
            F.count("*").alias("people"),
            F.count_if(F.col("clusters") > 1).alias("split"),
        ).first()
        records = joined.count()
    finally:
        joined.unpersist()
    predicted_pairs, true_pairs = c["pred"] or 0, p["true"] or 0
    precision = tp / predicted_pairs if predicted_pairs else 1.0
    recall = tp / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "records": int(records),
        "clusters": int(c["clusters"]),
        "people": int(p["people"]),
        "true_pairs": int(true_pairs),
        "predicted_pairs": int(predicted_pairs),
        "true_positive_pairs": int(tp),
        "pairwise_precision": round(float(precision), 6),
        "pairwise_recall": round(float(recall), 6),
        "pairwise_f1": round(float(f1), 6),
        "people_split": int(p["split"]),
        "clusters_merging_people": int(c["merged"]),
    }
