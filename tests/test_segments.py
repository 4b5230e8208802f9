"""Segments: condition checks, qualification with exclusive groups, membership history, the report and the job."""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

import pytest
from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cdp_spark import tables
from cdp_spark.config import CdpConfig, ConfigError
from cdp_spark.ops import StageRun
from cdp_spark.pipeline import Context
from cdp_spark.segments import job as segment_job
from cdp_spark.segments.config import SegmentDefinition, SegmentsConfig, check_conditions, load_segments
from cdp_spark.segments.membership import (
    AsOfBeforeHistory,
    qualify,
    segment_view,
    update_membership,
)

MEMBERSHIP_SCHEMA = tables.SEGMENT_MEMBERSHIP.schema

T0, T1, T2 = date(2026, 1, 15), date(2026, 1, 31), date(2026, 2, 28)

PROFILE_SCHEMA = (
    "cdp_id string, first_name string, email string, phone string, consent_email boolean, "
    "consent_sms boolean, consent_ads boolean"
)
FEATURES_SCHEMA = (
    "cdp_id string, as_of date, frequency int, tenure_days int, orders_90d int, orders_365d int, "
    "channel_store boolean, days_since_last_order int, email_opens_90d int, email_clicks_90d int, "
    "email_unsubscribed boolean"
)
SCORES_SCHEMA = "cdp_id string, as_of date, churn_probability double, clv double, clv_decile int"


def view_schema() -> T.StructType:
    return T.StructType(
        [
            T.StructField("cdp_id", T.StringType()),
            T.StructField("clv", T.DoubleType()),
            T.StructField("clv_decile", T.IntegerType()),
            T.StructField("churn_probability", T.DoubleType()),
        ]
    )


def write_segments(tmp_path: Path, name: str, condition: str) -> str:
    path = tmp_path / "segments.yaml"
    path.write_text(f'segments:\n  - name: {name}\n    condition: "{condition}"\n')
    return str(path)


@pytest.mark.parametrize(
    ("condition", "problem"),
    [
        ("clv_decil >= 8", "unknown column `clv_decil`; did you mean one of `clv_decile`"),
        ("churn_probability >= AND 0.6", "SQL syntax error at or near"),
        ("clv", "not a boolean condition"),
        ("sum(clv) > 10", "INVALID_WHERE_CONDITION"),
    ],
)
def test_bad_condition_names_the_file_the_segment_and_the_problem(spark, tmp_path, condition, problem):
    path = write_segments(tmp_path, "big_spenders", condition)
    config = load_segments(path)
    with pytest.raises(ConfigError) as error:
        check_conditions(spark, config, view_schema(), path)
    message = str(error.value)
    assert message.startswith(f"{path}: segments[big_spenders].condition: ")
    assert problem in message


def test_good_conditions_pass_and_every_bad_one_is_listed(spark, tmp_path):
    good = SegmentsConfig(segments=[SegmentDefinition(name="ok", condition="clv_decile >= 8 AND clv > 100")])
    check_conditions(spark, good, view_schema(), "segments.yaml")
    bad = SegmentsConfig(
        segments=[
            SegmentDefinition(name="first", condition="nope > 1"),
            SegmentDefinition(name="fine", condition="clv > 1"),
            SegmentDefinition(name="second", condition="clv >"),
        ]
    )
    with pytest.raises(ConfigError) as error:
        check_conditions(spark, bad, view_schema(), "segments.yaml")
    lines = str(error.value).splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["segments[first].condition", "segments[second].condition"]


@pytest.mark.parametrize(
    ("yaml_text", "problem"),
    [
        ("segments:\n  - {name: a, condition: x > 1}\n  - {name: a, condition: x > 2}\n", "repeated: a"),
        ("segments:\n  - {name: Big Spenders, condition: x > 1}\n", "lower_snake_case"),
        ("segments:\n  - {name: a, condition: '  '}\n", "empty string"),
        ("segments:\n  - {name: a, condition: x > 1, colour: red}\n", "segments.0.colour: unknown key"),
    ],
)
def test_config_errors(tmp_path, yaml_text, problem):
    path = tmp_path / "segments.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=problem):
        load_segments(str(path))


def test_qualify_applies_exclusive_groups_by_priority_and_treats_null_as_false(spark):
    config = SegmentsConfig(
        segments=[
            SegmentDefinition(name="vip", condition="clv >= 100", exclusive_group="value", priority=1),
            SegmentDefinition(name="regular", condition="clv >= 10", exclusive_group="value", priority=2),
            SegmentDefinition(name="risky", condition="churn_probability > 0.5"),
        ]
    )
    view = spark.createDataFrame(
        [("c1", 150.0, 0.9), ("c2", 50.0, 0.1), ("c3", None, None), ("c4", 5.0, 0.6)],
        "cdp_id string, clv double, churn_probability double",
    )
    expected = spark.createDataFrame(
        [("vip", "c1"), ("risky", "c1"), ("regular", "c2"), ("risky", "c4")], "segment string, cdp_id string"
    )
    assert_df_equality(qualify(view, config), expected, ignore_row_order=True, ignore_nullable=True)


def test_segment_view_joins_features_and_scores_at_one_as_of(spark):
    profile = spark.createDataFrame([("c1", "Ann"), ("c2", "Bo")], "cdp_id string, first_name string")
    features = spark.createDataFrame([("c1", T1, 3), ("c1", T2, 5)], "cdp_id string, as_of date, orders_90d int")
    scores = spark.createDataFrame(
        [("c1", T2, 0.2), ("c2", T2, 0.7)], "cdp_id string, as_of date, churn_probability double"
    )
    expected = spark.createDataFrame(
        [("c1", "Ann", 5, 0.2, T2), ("c2", "Bo", None, 0.7, T2)],
        "cdp_id string, first_name string, orders_90d int, churn_probability double, as_of date",
    )
    assert_df_equality(
        segment_view(profile, features, scores, T2), expected, ignore_row_order=True, ignore_nullable=True
    )


def members(spark, *pairs: tuple[str, str]):
    return spark.createDataFrame(list(pairs), "segment string, cdp_id string")


def history(spark, root: str):
    return tables.read(spark, root, tables.SEGMENT_MEMBERSHIP)


def version(spark, root: str) -> int:
    return DeltaTable.forPath(spark, tables.SEGMENT_MEMBERSHIP.path(root)).history(1).first()["version"]


def test_membership_history_enter_stay_exit_and_idempotent_rerun(spark, lakehouse):
    root = lakehouse.root
    assert update_membership(members(spark, ("vip", "a"), ("vip", "b")), root, T1)["entered"] == 2
    counts = update_membership(members(spark, ("vip", "a"), ("vip", "c")), root, T2)
    assert counts == {"entered": 1, "stayed": 1, "exited": 1, "removed": 0}
    expected = spark.createDataFrame(
        [("vip", "a", T1, None, T2), ("vip", "b", T1, T2, T1), ("vip", "c", T2, None, T2)], MEMBERSHIP_SCHEMA
    )
    assert_df_equality(history(spark, root), expected, ignore_row_order=True, ignore_nullable=True)

    before = version(spark, root)
    again = update_membership(members(spark, ("vip", "a"), ("vip", "c")), root, T2)
    assert again == {"entered": 0, "stayed": 0, "exited": 0, "removed": 0}
    assert version(spark, root) == before  # no MERGE, no new version
    assert_df_equality(history(spark, root), expected, ignore_row_order=True, ignore_nullable=True)

    with pytest.raises(AsOfBeforeHistory, match="as-of 2026-01-15 is earlier than the latest segment run"):
        update_membership(members(spark, ("vip", "a")), root, T0)


def test_rerun_of_an_as_of_on_changed_inputs_gives_what_one_run_on_them_gives(spark, lakehouse):
    root = lakehouse.root
    update_membership(members(spark, ("vip", "a"), ("vip", "b")), root, T1)
    update_membership(members(spark, ("vip", "a"), ("vip", "c")), root, T2)
    # Scores were recomputed for T2: c does not qualify after all, b still does.
    counts = update_membership(members(spark, ("vip", "a"), ("vip", "b")), root, T2)
    assert counts == {"entered": 0, "stayed": 1, "exited": 0, "removed": 1}
    expected = spark.createDataFrame([("vip", "a", T1, None, T2), ("vip", "b", T1, None, T2)], MEMBERSHIP_SCHEMA)
    assert_df_equality(history(spark, root), expected, ignore_row_order=True, ignore_nullable=True)


def gold_tables(spark, root: str) -> None:
    profile = spark.createDataFrame(
        [(c, c.upper(), f"{c}@example.com", None, True, None, True) for c in ("c1", "c2", "c3", "c4")],
        PROFILE_SCHEMA,
    )
    # cdp_id, as_of, frequency, tenure_days, orders_90d, orders_365d, channel_store, days_since_last_order,
    # email_opens_90d, email_clicks_90d, email_unsubscribed
    features = spark.createDataFrame(
        [
            ("c1", T1, 6, 700, 1, 4, False, 20, 0, 0, False),
            ("c2", T1, 9, 400, 3, 8, True, 5, 0, 0, False),
            ("c3", T1, 1, 30, 1, 1, False, 30, 0, 0, False),
            ("c4", T1, 2, 500, 0, 0, False, 100, 5, 0, False),
            ("c1", T2, 7, 728, 2, 4, False, 10, 0, 0, False),
            ("c2", T2, 12, 428, 3, 9, True, 2, 0, 0, False),
            ("c3", T2, 1, 58, 0, 1, False, 58, 0, 0, False),
            ("c4", T2, 2, 528, 0, 0, False, 128, 6, 1, True),
        ],
        FEATURES_SCHEMA,
    )
    scores = spark.createDataFrame(
        [
            ("c1", T1, 0.7, 500.0, 9),
            ("c2", T1, 0.1, 100.0, 5),
            ("c3", T1, 0.4, 40.0, 2),
            ("c4", T1, 0.5, 60.0, 3),
            ("c1", T2, 0.2, 520.0, 9),
            ("c2", T2, 0.65, 300.0, 8),
            ("c3", T2, 0.4, 50.0, 2),
            ("c4", T2, 0.5, 60.0, 3),
        ],
        SCORES_SCHEMA,
    )
    tables.overwrite(profile, root, tables.CUSTOMER_PROFILE)
    tables.overwrite(features, root, tables.CUSTOMER_FEATURES)
    tables.overwrite(scores, root, tables.CUSTOMER_SCORES)


@pytest.mark.slow
def test_segment_job_with_the_shipped_segments_writes_history_report_and_chart(spark, lakehouse, tmp_path):
    root = lakehouse.root
    gold_tables(spark, root)
    config = CdpConfig(lakehouse=lakehouse, reports_dir=str(tmp_path / "reports"))
    segment_job.run(Context(config, argparse.Namespace(as_of=T1.isoformat()), _spark=spark), StageRun("segment"))
    # No --as-of: the latest as-of of gold.customer_scores (T2).
    segment_job.run(Context(config, argparse.Namespace(as_of=None), _spark=spark), StageRun("segment"))

    expected_history = spark.createDataFrame(
        [
            ("at_risk_high_value", "c1", T1, T2, T1),
            ("store_regulars", "c2", T1, None, T2),
            ("new_customers", "c3", T1, None, T2),
            ("email_engaged", "c4", T1, T2, T1),
            ("high_value_loyal", "c1", T2, None, T2),
            ("at_risk_high_value", "c2", T2, None, T2),
        ],
        MEMBERSHIP_SCHEMA,
    )
    assert_df_equality(history(spark, root), expected_history, ignore_row_order=True, ignore_nullable=True)

    # Maps cannot be sorted or hashed: compare the overlap as its sorted entries.
    report = (
        tables.read(spark, root, tables.SEGMENT_REPORT)
        .where(f"as_of = '{T2}'")
        .withColumn("overlap", F.array_sort(F.map_entries("overlap")))
    )
    expected_report = spark.createDataFrame(
        [
            (T2, "at_risk_high_value", 1, 300.0, 0.65, 1, 1, [("store_regulars", 1)]),
            (T2, "high_value_loyal", 1, 520.0, 0.2, 1, 0, []),
            (T2, "store_regulars", 1, 300.0, 0.65, 0, 0, [("at_risk_high_value", 1)]),
            (T2, "new_customers", 1, 50.0, 0.4, 0, 0, []),
            (T2, "lapsed", 0, None, None, 0, 0, []),
            (T2, "email_engaged", 0, None, None, 0, 1, []),
        ],
        "as_of date, segment string, members long, mean_clv double, mean_churn_probability double, "
        "entries long, exits long, overlap array<struct<key: string, value: long>>",
    )
    assert_df_equality(report, expected_report, ignore_row_order=True, ignore_nullable=True)
    assert tables.read(spark, root, tables.SEGMENT_REPORT).where(f"as_of = '{T1}'").count() == 6
    chart = tmp_path / "reports" / "segments_2026-02-28.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shipped_segments_file_is_valid(spark):
    config = load_segments("conf/segments.yaml")
    assert {
        "high_value_loyal",
        "at_risk_high_value",
        "store_regulars",
        "new_customers",
        "lapsed",
        "email_engaged",
    } <= set(config.names)
    schema = spark.createDataFrame([], f"{PROFILE_SCHEMA}, {FEATURES_SCHEMA.replace('cdp_id string, ', '')}").schema
    schema = T.StructType([*schema.fields, *spark.createDataFrame([], SCORES_SCHEMA).schema.fields[2:]])
    check_conditions(spark, config, schema, "conf/segments.yaml")
