import pytest
from chispa import assert_df_equality

from cdp_spark.config import ConfigError, load_model_file
from cdp_spark.standardize.expectations import (
    DataQualityError,
    Expectation,
    ExpectationResult,
    ExpectationsConfig,
    count_results,
    enforce,
    evaluate,
    merged_results,
)

SCHEMA = "order_id string, amount double, currency string"
ROWS = [("o1", 10.0, "USD"), ("o2", -5.0, "USD"), ("o3", 7.5, None), ("o4", None, "EUR")]


def run(spark, expectations):
    flagged = evaluate(spark.createDataFrame(ROWS, SCHEMA), expectations)
    counted = count_results(flagged, "orders", expectations)
    results = merged_results(counted, "orders", expectations)
    quarantined = sum(rejected for _, rejected in counted.values())
    kept, rejected = enforce(flagged, "orders", expectations, results, "order_id")
    # The count the job reports is the number of rows enforce splits off.
    assert quarantined == (0 if rejected is None else rejected.count())
    return results, (kept, rejected)


def test_counts_per_group_add_up_to_the_totals(spark):
    expectations = [
        Expectation(name="positive_amount", expr="amount > 0", action="quarantine"),
        Expectation(name="has_currency", expr="currency is not null", action="warn"),
    ]
    flagged = evaluate(spark.createDataFrame(ROWS, SCHEMA), expectations)
    by_currency = count_results(flagged, "orders", expectations, by="currency")
    assert by_currency == {
        "USD": (
            [
                ExpectationResult("orders", "positive_amount", "quarantine", passed=1, failed=1),
                ExpectationResult("orders", "has_currency", "warn", passed=2, failed=0),
            ],
            1,
        ),
        None: (
            [
                ExpectationResult("orders", "positive_amount", "quarantine", passed=1, failed=0),
                ExpectationResult("orders", "has_currency", "warn", passed=0, failed=1),
            ],
            0,
        ),
        "EUR": (
            [
                ExpectationResult("orders", "positive_amount", "quarantine", passed=0, failed=1),
                ExpectationResult("orders", "has_currency", "warn", passed=1, failed=0),
            ],
            1,
        ),
    }
    assert merged_results(by_currency, "orders", expectations) == merged_results(
        count_results(flagged, "orders", expectations), "orders", expectations
    )


def test_warn_counts_and_keeps_every_row(spark):
    expectations = [Expectation(name="has_currency", expr="currency is not null", action="warn")]
    results, (kept, rejected) = run(spark, expectations)
    assert results == [ExpectationResult("orders", "has_currency", "warn", passed=3, failed=1)]
    assert rejected is None
    assert_df_equality(kept, spark.createDataFrame(ROWS, SCHEMA), ignore_row_order=True)


def test_quarantine_splits_failing_rows_and_names_every_broken_rule(spark):
    expectations = [
        Expectation(name="positive_amount", expr="amount > 0", action="quarantine"),
        Expectation(name="has_currency", expr="currency is not null", action="quarantine"),
    ]
    results, (kept, rejected) = run(spark, expectations)
    # A NULL amount makes "amount > 0" NULL, which counts as a failure.
    assert [(r.expectation, r.passed, r.failed) for r in results] == [("positive_amount", 2, 2), ("has_currency", 3, 1)]
    assert_df_equality(kept, spark.createDataFrame([ROWS[0]], SCHEMA), ignore_row_order=True)
    assert sorted((r["order_id"], tuple(r["_dq_failed"])) for r in rejected.collect()) == [
        ("o2", ("positive_amount",)),
        ("o3", ("has_currency",)),
        ("o4", ("positive_amount",)),
    ]


def test_fail_stops_with_name_count_and_example_keys(spark):
    expectations = [Expectation(name="positive_amount", expr="amount > 0", action="fail")]
    with pytest.raises(DataQualityError) as err:
        run(spark, expectations)
    message = str(err.value)
    assert message.startswith(
        "orders: expectation 'positive_amount' (amount > 0) failed for 2 row(s); examples of order_id: "
    )
    assert sorted(message.rsplit(": ", 1)[1].split(", ")) == ["o2", "o4"]


def test_fail_that_holds_does_not_stop(spark):
    results, (kept, _) = run(spark, [Expectation(name="has_id", expr="order_id is not null", action="fail")])
    assert (results[0].passed, results[0].failed, kept.count()) == (4, 0, 4)


def test_unknown_column_is_reported_with_the_expectation_name(spark):
    with pytest.raises(DataQualityError, match="expectation 'bad': cannot evaluate 'no_such_column > 1'"):
        evaluate(spark.createDataFrame(ROWS, SCHEMA), [Expectation(name="bad", expr="no_such_column > 1")])


def test_config_rejects_unknown_action(tmp_path):
    path = tmp_path / "expectations.yaml"
    path.write_text("tables:\n  orders:\n    - {name: positive_amount, expr: amount > 0, action: drop}\n")
    with pytest.raises(ConfigError, match=r"tables\.orders\.0\.action: Input should be 'warn', 'quarantine' or 'fail'"):
        load_model_file(ExpectationsConfig, path)
