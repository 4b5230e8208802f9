"""Identity health without labels (issue 21): each metric on hand-built maps and edges, the checks that warn or fail,
and the resolve stage refusing to publish a run that breaks a fail limit."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from pathlib import Path

import pytest
import yaml
from chispa import assert_df_equality
from conftest import identity_overrides
from pyspark.sql import functions as F
from test_identity_model import PROBABILISTIC, email_model, identity_versions, silver_records

from cdp_spark import tables
from cdp_spark.config import ConfigError, load_config
from cdp_spark.identity import health
from cdp_spark.identity.health_report import CHART, health_section
from cdp_spark.identity.model_change import ModelChange
from cdp_spark.identity.rules import HealthConfig, load_identity
from cdp_spark.pipeline import Context, run_stage

REPO = Path(__file__).resolve().parents[1]
MAP_SCHEMA = "record_id string, cdp_id string"
EDGE_SCHEMA = "src_record_id string, dst_record_id string, rule string, score double, identifier string, status string"


def identity_map(spark, clusters: dict[str, int]):
    """A map with ``size`` records ``<cdp_id>:<i>`` per cdp_id."""
    rows = [(f"{cdp_id}:{i}", cdp_id) for cdp_id, size in clusters.items() for i in range(size)]
    return spark.createDataFrame(rows, MAP_SCHEMA)


def edge(src: str, dst: str, rule: str, status: str = "accepted") -> tuple:
    identifier = rule.split(":")[1] if rule.startswith("deterministic:") else None
    return (src, dst, rule, 1.0 if identifier else 0.999, identifier, status)


# --------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------


def test_cluster_metrics_share_the_clusters_by_size_bucket_and_find_the_largest(spark):
    metrics = health.cluster_metrics(identity_map(spark, {"a": 1, "b": 2, "c": 3, "d": 25}))
    assert metrics == pytest.approx(
        {
            "records": 31,
            "cdp_ids": 4,
            "cluster_size_max": 25,
            "cluster_size_p99": 24.34,  # exact percentile of 1, 2, 3, 25: 3 + 0.97 * (25 - 3)
            "records_share_over_20": 25 / 31,
            "clusters_1": 0.25,
            "clusters_2": 0.25,
            "clusters_3_5": 0.25,
            "clusters_6_10": 0.0,
            "clusters_11_20": 0.0,
            "clusters_over_20": 0.25,
        }
    )


# Five clusters: x, a star of 3 sharing one email (3 links); y, two pairs joined by one probabilistic match; z, a
# chain of two pairs (its refused edge does not count); w, a pair; v, a pair linked twice and a third record once.
CLUSTERS = {"x": 3, "y": 4, "z": 3, "w": 2, "v": 3}
EDGES = [
    edge("x:1", "x:0", "deterministic:email"),
    edge("x:2", "x:0", "deterministic:email"),
    edge("y:1", "y:0", "deterministic:email"),
    edge("y:3", "y:2", "deterministic:account"),
    edge("y:2", "y:0", "probabilistic"),
    edge("z:1", "z:0", "deterministic:email"),
    edge("z:2", "z:1", "deterministic:account"),
    edge("z:2", "z:0", "probabilistic", "refused:size"),
    edge("w:1", "w:0", "deterministic:email"),
    edge("v:1", "v:0", "deterministic:email"),
    edge("v:1", "v:0", "deterministic:account"),
    edge("v:2", "v:0", "probabilistic"),
]


def test_a_cluster_held_by_single_links_is_bridged_and_a_star_of_one_value_is_not(spark):
    links = health.cluster_links(identity_map(spark, CLUSTERS), spark.createDataFrame(EDGES, EDGE_SCHEMA))
    expected = spark.createDataFrame(
        [("x", 3, 3, False), ("y", 4, 3, True), ("z", 3, 2, True), ("w", 2, 1, False), ("v", 3, 3, False)],
        "cdp_id string, records long, links long, bridged boolean",
    )
    assert_df_equality(links, expected, ignore_row_order=True, ignore_nullable=True, ignore_column_order=True)
    metrics = health.bridge_metrics(identity_map(spark, CLUSTERS), spark.createDataFrame(EDGES, EDGE_SCHEMA))
    assert metrics == {"bridged_clusters": 2.0, "bridged_share": 0.5}  # of the 4 clusters of 3+ records


def test_link_shares_are_of_the_accepted_links_per_rule(spark):
    metrics = health.link_metrics(spark.createDataFrame(EDGES, EDGE_SCHEMA))
    assert metrics == pytest.approx(
        {
            "links": 11,
            "link_share:deterministic:account": 3 / 11,
            "link_share:deterministic:email": 6 / 11,
            "link_share:probabilistic": 2 / 11,
        }
    )


def test_hot_values_new_are_the_hashes_the_last_run_did_not_guard(spark):
    schema = "identifier string, value_hash string, reason string"
    now = spark.createDataFrame(
        [("email", "h1", "hot"), ("email", "h2", "hot"), ("phone", "h1", "hot"), ("email", "h9", "blocked")], schema
    )
    before = spark.createDataFrame([("email", "h1", "hot"), ("email", "h3", "hot")], schema)
    assert health.hot_value_metrics(now, None) == {"hot_values": 3.0}  # no last run: new is unknown
    assert health.hot_value_metrics(now, before) == {"hot_values": 3.0, "hot_values_new": 2.0}


def test_the_weight_change_is_against_the_champion_when_compared_else_against_the_last_runs_weights():
    model = email_model([0.1, 0.9], [0.8, 0.2])  # else: log2(0.1/0.8) = -3, exact: log2(0.9/0.2)
    weights = {"weight:email/else": -3.0, "weight:email/exact": pytest.approx(2.1699250)}
    assert health.model_metrics(model, None, {}) == weights
    last = {"weight:email/else": -3.5, "weight:email/exact": 2.0}
    assert health.model_metrics(model, None, last)["weight_change_max"] == pytest.approx(0.5)
    change = ModelChange(10, 2, 2, 2, 0, 1.25, {"email/exact": 1.25})
    assert health.model_metrics(model, change, last)["weight_change_max"] == 1.25
    assert health.model_metrics(None, None, last) == {}


def test_drift_is_each_share_minus_the_last_runs_and_a_rule_gone_has_share_zero():
    now = {"records": 10.0, "clusters_1": 0.5, "link_share:probabilistic": 0.75, "link_share:deterministic:email": 0.25}
    last = {
        "records": 8.0,
        "clusters_1": 0.75,
        "link_share:deterministic:email": 0.5,
        "link_share:deterministic:x": 0.5,
    }
    assert health.drift_metrics(now, {}) == {}
    assert health.drift_metrics(now, last) == {
        "drift:clusters_1": -0.25,
        "drift:link_share:deterministic:email": -0.25,
        "drift:link_share:deterministic:x": -0.5,
        "drift:link_share:probabilistic": 0.75,
        "link_share_change_max": 0.75,
    }


@pytest.mark.parametrize(
    ("threshold", "value", "level"),
    [
        ({"warn": 10, "fail": 20}, 10, None),
        ({"warn": 10, "fail": 20}, 11, health.WARN),
        ({"warn": 10, "fail": 20}, 21, health.FAIL),
        ({"fail": 20}, 15, None),
        ({"warn": 10}, 1000, health.WARN),
    ],
)
def test_a_check_warns_above_warn_and_fails_above_fail(threshold, value, level):
    config = HealthConfig.model_validate({"max_cluster_size": threshold})
    found = health.breaches({"cluster_size_max": float(value)}, config)
    assert [b.level for b in found] == ([] if level is None else [level])
    checks = health.check_metrics({"cluster_size_max": float(value)}, config, found)
    assert checks == {"check:max_cluster_size": float(level or 0), "verdict": float(level or 0)}


def test_a_check_whose_metric_is_unknown_or_turned_off_is_not_evaluated():
    config = HealthConfig.model_validate({"max_new_hot_values": None})
    metrics = {"hot_values_new": 1000.0, "cluster_size_max": 3.0}  # no drift: a first run
    found = health.breaches(metrics, config)
    assert found == []
    assert health.check_metrics(metrics, config, found) == {"check:max_cluster_size": 0.0, "verdict": 0.0}


def test_the_failure_names_each_breached_check_with_its_value_and_limit():
    found = [
        health.Breach("max_cluster_size", "cluster_size_max", 31.0, 30.0, health.FAIL),
        health.Breach("max_new_hot_values", "hot_values_new", 12.0, 10.0, health.WARN),
        health.Breach("max_weight_change", "weight_change_max", 4.25, 3.0, health.FAIL),
    ]
    message = str(health.IdentityHealthFailed(found))
    assert message.startswith(
        "identity health check failed, the identity map was not replaced: max_cluster_size: cluster_size_max 31 is "
        "above fail 30; max_weight_change: weight_change_max 4.25 is above fail 3 ("
    )
    assert "hot_values_new" not in message


def test_drift_is_measured_from_the_last_run_that_succeeded(spark):
    at = dt.datetime(2026, 1, 1)
    rows = [
        ("r1", "records", 10.0, at),
        ("r2", "records", 12.0, at + dt.timedelta(days=1)),
        ("r2", "verdict", 1.0, at + dt.timedelta(days=1)),
        ("r3", "records", 99.0, at + dt.timedelta(days=2)),  # failed: never recorded its inputs
    ]
    recorded = spark.createDataFrame(rows, tables.IDENTITY_HEALTH.schema)
    succeeded = spark.createDataFrame([("r1",), ("r2",)], "run_id string")
    assert health.last_successful(recorded, succeeded) == {"records": 12.0, "verdict": 1.0}
    assert health.last_successful(recorded, succeeded.limit(0)) == {}


def test_the_report_section_names_the_breaches_and_charts_this_run_beside_the_last():
    metrics = {"records": 40.0, "cluster_size_max": 31.0, "clusters_1": 0.5, "clusters_over_20": 0.1}
    metrics |= {"link_share:probabilistic": 0.5, "drift:link_share:probabilistic": 0.25}
    found = [health.Breach("max_cluster_size", "cluster_size_max", 31.0, 30.0, health.FAIL)]
    section = health_section(metrics, {"records": 38.0, "cluster_size_max": 6.0}, found)
    assert section.markdown.splitlines()[:2] == [
        "Verdict: **failed** (0 checks evaluated, thresholds in conf/identity.yaml `health`).",
        "- fail: max_cluster_size: cluster_size_max 31 is above fail 30",
    ]
    assert "| cluster_size_max | 31 | 6 | 25 |" in section.markdown
    assert "| link_share:probabilistic | 0.5 |  | 0.25 |" in section.markdown
    assert section.images[CHART].startswith(b"\x89PNG")


# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("health_yaml", "message"),
    [
        ({"max_cluster_size": {"warn": 300, "fail": 200}}, "health.max_cluster_size: Value error, warn 300 is above"),
        ({"max_cluster_size": {}}, "health.max_cluster_size: Value error, give warn, fail or both"),
        ({"max_cluster_size": {"fail": -1}}, "health.max_cluster_size.fail: Input should be greater than or equal"),
        ({"max_cluster_sise": {"fail": 10}}, "health.max_cluster_sise: unknown key"),
        ({"max_cluster_size": {"fail": 10, "error": 20}}, "health.max_cluster_size.error: unknown key"),
    ],
)
def test_a_bad_health_threshold_is_an_error_naming_file_and_key(tmp_path, health_yaml, message):
    shipped = yaml.safe_load((REPO / "conf" / "identity.yaml").read_text())
    path = tmp_path / "identity.yaml"
    path.write_text(yaml.safe_dump({**shipped, "health": health_yaml}))
    with pytest.raises(ConfigError) as err:
        load_identity(str(path))
    assert f"{path}: {message}" in str(err.value)


def test_the_shipped_health_section_is_the_default():
    shipped = load_identity(str(REPO / "conf" / "identity.yaml")).health
    assert shipped == HealthConfig()


# --------------------------------------------------------------------------------------------------
# the resolve stage
# --------------------------------------------------------------------------------------------------


def health_context(spark, tmp_path: Path, health_yaml: dict, probabilistic: dict | None = None) -> Context:
    identity = {
        "record_id": "record_id",
        "identifiers": [{"name": "email", "column": "email", "priority": 1}],
        "health": health_yaml,
    }
    if probabilistic is not None:
        identity["probabilistic"] = probabilistic
    (tmp_path / "identity.yaml").write_text(yaml.safe_dump(identity))
    return Context(load_config("conf", None, identity_overrides(tmp_path)), argparse.Namespace(), _spark=spark)


def recorded(spark, root: str, run_id: str) -> dict[str, float]:
    rows = tables.read(spark, root, tables.IDENTITY_HEALTH).where(F.col("run_id") == run_id).collect()
    return {r.metric: r.value for r in rows}


@pytest.mark.slow
def test_a_junk_email_many_share_fails_the_run_before_it_publishes_and_a_warning_only_warns(
    spark, tmp_path, caplog, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = str(tmp_path / "lakehouse")
    ctx = health_context(spark, tmp_path, {"max_cluster_size": {"warn": 1, "fail": 6}})
    tables.overwrite(silver_records(spark), root, tables.CUSTOMER_RECORDS)
    with caplog.at_level(logging.WARNING, logger="cdp_spark"):
        clean = run_stage("resolve", ctx).run_id
    # Pairs of records share an email: clusters of 2 are over warn 1, under fail 6; the run publishes.
    assert "identity health: max_cluster_size: cluster_size_max 2 is above warn 1" in caplog.text
    first = recorded(spark, root, clean)
    assert (first["cluster_size_max"], first["check:max_cluster_size"], first["verdict"]) == (2.0, 1.0, 1.0)
    assert "hot_values_new" not in first and "link_share_change_max" not in first  # a first run: no drift
    published = identity_versions(spark, root)

    # One junk email on the CRM records of all eight people (under hot_value_threshold 20: it links them all).
    junk = silver_records(spark).withColumn(
        "email", F.when(F.col("record_id").startswith("crm:"), F.lit("junk@example.com")).otherwise(F.col("email"))
    )
    tables.overwrite(junk, root, tables.CUSTOMER_RECORDS)
    for _ in range(2):  # the failed run recorded no inputs: its rerun recomputes, and fails the same way
        with pytest.raises(
            health.IdentityHealthFailed, match=r"max_cluster_size: cluster_size_max \d+ is above fail 6"
        ):
            run_stage("resolve", ctx)
    assert identity_versions(spark, root) == published  # no identity table (nor the skip record) changed
    runs = tables.read(spark, root, tables.IDENTITY_HEALTH).groupBy("run_id").agg(F.max("recorded_at").alias("at"))
    failed = [r.run_id for r in runs.orderBy("at").collect()][1:]
    for run_id in failed:
        metrics = recorded(spark, root, run_id)
        assert metrics["cluster_size_max"] > 6 and metrics["verdict"] == 2.0
        assert metrics["drift:clusters_2"] < 0  # measured from the clean run


@pytest.mark.slow
def test_a_blocking_rule_that_pairs_nobody_moves_the_rule_shares_and_fails_the_run(spark, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = str(tmp_path / "lakehouse")
    strict = {"max_rule_share_change": {"fail": 0.1}}
    tables.overwrite(silver_records(spark), root, tables.CUSTOMER_RECORDS)
    clean = run_stage("resolve", health_context(spark, tmp_path, strict, PROBABILISTIC)).run_id
    published = identity_versions(spark, root)
    assert recorded(spark, root, clean)["link_share:probabilistic"] == pytest.approx(8 / 12)  # and 4 email pairs

    # The records have no phone: the only blocking rule finds no pair, the probabilistic links vanish.
    broken = {**PROBABILISTIC, "blocking_rules": ["l.phone = r.phone"]}
    with pytest.raises(health.IdentityHealthFailed) as failed:
        run_stage("resolve", health_context(spark, tmp_path, strict, broken))
    assert "max_rule_share_change: link_share_change_max 0.6667 is above fail 0.1" in str(failed.value)
    assert identity_versions(spark, root) == published
    runs = tables.read(spark, root, tables.IDENTITY_HEALTH).select("run_id").distinct().collect()
    (run_id,) = [r.run_id for r in runs if r.run_id != clean]
    after = recorded(spark, root, run_id)
    assert after["drift:link_share:probabilistic"] == pytest.approx(-8 / 12)
    assert after["drift:link_share:deterministic:email"] == pytest.approx(8 / 12)
    assert (after["check:max_rule_share_change"], after["verdict"]) == (2.0, 2.0)
