"""`cdp-spark check`: every config file and the references between them, checked without Spark."""

import shutil
from pathlib import Path

import pytest

from cdp_spark.check import Problem, check_config, raise_if_invalid, sql_columns
from cdp_spark.cli import EXIT_CONFIG, main
from cdp_spark.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def conf(tmp_path, monkeypatch) -> Path:
    """A copy of the shipped conf/ in a working directory of its own (files: paths are relative to it)."""
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "conf"


@pytest.fixture(autouse=True)
def no_spark(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("cdp-spark check started Spark")

    monkeypatch.setattr("cdp_spark.pipeline.build_session", refuse)


def edit(conf: Path, name: str, old: str, new: str) -> None:
    path = conf / name
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {name} once"
    path.write_text(text.replace(old, new))


def test_the_shipped_configuration_has_no_problem(monkeypatch):
    monkeypatch.chdir(REPO)
    for env in (None, "local"):
        assert check_config(load_config(REPO / "conf", env)) == []


@pytest.mark.parametrize(
    "name, old, new, where, message",
    [
        (
            "destinations.yaml",
            "segments: [new_customers]",
            "segments: [new_customer]",
            "destinations[sms_new_customers].segments",
            "unknown segment(s) ['new_customer']",
        ),
        (
            "destinations.yaml",
            "attributes: [clv]",
            "attributes: [clv, churn_score]",
            "destinations[sms_new_customers].attributes",
            "unknown column(s) ['churn_score']; profile and score columns are [",
        ),
        (
            "segments.yaml",
            "condition: orders_90d >= 3 AND channel_store",
            "condition: orders_90days >= 3 AND channel_store",
            "segments[store_regulars].condition",
            "unknown column(s) ['orders_90days'] of gold.customer_profile, customer_features or customer_scores; "
            "did you mean 'orders_90d' for 'orders_90days'?",
        ),
        (
            "segments.yaml",
            "condition: tenure_days <= 90 AND frequency >= 1",
            "condition: (tenure_days <= 90 AND frequency >= 1",
            "segments[new_customers].condition",
            "unbalanced parentheses in '(tenure_days <= 90 AND frequency >= 1'",
        ),
        (
            "sources.yaml",
            "columns: {loyalty_id: loyalty_id}",
            "columns: {loyalty_card: loyalty_id}",
            "sources[pos].silver[customer_records].columns",
            "unknown column(s) ['loyalty_card']; customer_records has ['account_id', 'address', ",
        ),
        (
            "sources.yaml",
            "record_id: \"concat('pos:', loyalty_id)\"",
            "record_id: \"concat('pos:', loyalty_no)\"",
            "sources[pos].silver[orders].columns.record_id",
            "unknown column(s) ['loyalty_no'] of silver.orders's standardized row; "
            "did you mean 'loyalty_id' for 'loyalty_no'?",
        ),
        (
            "identity.yaml",
            "{name: loyalty, column: loyalty_id, priority: 1, limit: 3}",
            "{name: loyalty, column: loyalty_card, priority: 1, limit: 3}",
            "identifiers[loyalty].column",
            "unknown column(s) ['loyalty_card'] of silver.customer_records; did you mean 'loyalty_id' for 'loyalty_card'?",
        ),
        (
            "identity.yaml",
            "device: device_id",
            "device: device_key",
            "facts[events].identifiers.device",
            "unknown column(s) ['device_key'] of silver.events; did you mean 'device_id' for 'device_key'?",
        ),
        (
            "identity.yaml",
            "l.birth_date = r.birth_date and l.phone = r.phone",
            "l.birthdate = r.birthdate and l.phone = r.phone",
            "probabilistic.blocking_rules[3]",
            "unknown column(s) ['birthdate'] of silver.customer_records; did you mean 'birth_date' for 'birthdate'?",
        ),
        (
            "expectations.yaml",
            "expr: amount IS NOT NULL AND amount >= 0",
            "expr: amount IS NOT NULL AND amount_usd >= 0",
            "tables.orders[amount_not_negative].expr",
            "unknown column(s) ['amount_usd'] of silver.orders; did you mean 'amount' for 'amount_usd'?",
        ),
        (
            "expectations.yaml",
            "  support_tickets:\n",
            "  support:\n",
            "tables.support",
            "no silver table 'support'; expectations apply to ['consent', 'customer_records', 'email_engagement', "
            "'events', 'orders', 'support_tickets']",
        ),
        (
            "profiles.yaml",
            "  birth_date: {rule: first_non_null}\n",
            "  birth_date: {rule: first_non_null}\n  gender: {rule: most_recent}\n",
            "attributes[gender].columns",
            "unknown column(s) ['gender'] of silver.customer_records",
        ),
        (
            "models.yaml",
            "features: null",
            "features: [recency_days, orders_60d]",
            "churn.features",
            "unknown column(s) ['orders_60d'] of gold.customer_features; did you mean 'orders_90d' for 'orders_60d'?",
        ),
    ],
)
def test_one_mistake_is_one_problem_naming_file_and_item(conf, name, old, new, where, message):
    edit(conf, name, old, new)
    problems = check_config(load_config(conf))
    assert len(problems) == 1, problems
    assert (problems[0].file, problems[0].where) == (f"conf/{name}", where)
    assert problems[0].message.startswith(message), problems[0].message


def test_a_file_that_does_not_load_is_reported_with_the_mistakes_of_the_others(conf):
    edit(conf, "models.yaml", "horizon_days: 90 ", "horizon_days: ninety ")
    edit(conf, "destinations.yaml", "segments: [new_customers]", "segments: [new_customer]")
    (conf / "expectations.yaml").unlink()
    assert check_config(load_config(conf)) == [
        Problem("conf/expectations.yaml", "(file)", f"config file not found (working directory: {conf.parent})"),
        Problem(
            "conf/models.yaml",
            "churn.horizon_days",
            "Input should be a valid integer, unable to parse string as an integer, got 'ninety'",
        ),
        Problem(
            "conf/destinations.yaml", "destinations[sms_new_customers].segments", "unknown segment(s) ['new_customer']"
        ),
    ]


def test_a_health_threshold_that_fails_before_it_warns_is_a_problem_of_its_check(conf):
    edit(conf, "identity.yaml", "max_cluster_size: {warn: 40, fail: 200}", "max_cluster_size: {warn: 400, fail: 200}")
    assert check_config(load_config(conf)) == [
        Problem(
            "conf/identity.yaml",
            "health.max_cluster_size",
            "Value error, warn 400 is above fail 200: a run would fail before it warns",
        )
    ]


def test_a_file_pointed_elsewhere_with_set_is_the_one_checked(conf, tmp_path):
    elsewhere = tmp_path / "my_destinations.yaml"
    elsewhere.write_text((conf / "destinations.yaml").read_text().replace("[new_customers]", "[newcomers]"))
    problems = check_config(load_config(conf, None, [f"files.destinations={elsewhere}"]))
    assert [(p.file, p.where) for p in problems] == [(str(elsewhere), "destinations[sms_new_customers].segments")]


def test_raise_if_invalid_lists_every_problem_one_per_line(conf):
    edit(conf, "segments.yaml", "condition: frequency >= 1 AND", "condition: frequenzy >= 1 AND")
    edit(conf, "identity.yaml", "record_id: record_id", "record_id: id")
    with pytest.raises(ConfigError) as err:
        raise_if_invalid(load_config(conf))
    lines = str(err.value).splitlines()
    assert [line.split(": ")[:2] for line in lines] == [
        ["conf/identity.yaml", "record_id"],
        ["conf/segments.yaml", "segments[lapsed].condition"],
    ]


@pytest.mark.parametrize(
    "sql, columns",
    [
        ("churn_probability >= 0.6 AND clv_decile >= 8", ["churn_probability", "clv_decile"]),
        ("channel IN ('online', 'store') OR note = \"it's\"", ["channel", "note"]),
        ("birth_date BETWEEN DATE'1900-01-01' AND current_date()", ["birth_date"]),
        ("NOT coalesce(email_unsubscribed, false) -- a comment naming nothing", ["email_unsubscribed"]),
        ("CASE WHEN device_id IS NOT NULL THEN 'app' ELSE 'web' END", ["device_id"]),
        ("provenance.email.source = 'crm' AND provenance['phone'] IS NULL", ["provenance"]),
        ("exists(emails, e -> e LIKE '%@example.com')", ["emails"]),
        ("aggregate(phones, 0, (n, p) -> n + 1) > 2", ["phones"]),
        ("cast(total_spend AS DECIMAL(10, 2)) > 1.5D AND recency_days::int < 1e3", ["total_spend", "recency_days"]),
        ("`odd name` > 0 AND `date` IS NOT NULL /* a block comment */", ["odd name", "date"]),
        ("last_seen > current_timestamp - INTERVAL 30 DAYS", ["last_seen"]),
    ],
)
def test_sql_columns_reads_the_names_an_expression_reads(sql, columns):
    assert sql_columns(sql) == columns


@pytest.mark.parametrize("sql", ["name = 'unterminated", "(a = 1", "a = 1)", "`odd"])
def test_sql_columns_refuses_unbalanced_quotes_and_parentheses(sql):
    with pytest.raises(ValueError):
        sql_columns(sql)


def test_cli_check_exits_0_on_the_shipped_conf(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["check", "--conf-dir", "conf", "--env", "local"]) == 0
    assert capsys.readouterr().out == "config ok: 7 files checked\n"


def test_cli_check_exits_2_printing_one_line_per_problem(capsys, conf):
    edit(conf, "destinations.yaml", "segments: [new_customers]", "segments: [new_customer]")
    edit(conf, "segments.yaml", "condition: orders_90d >= 3", "condition: orders_90days >= 3")
    assert main(["--conf-dir", str(conf), "check"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "cdp-spark check: config error:",
        "conf/segments.yaml: segments[store_regulars].condition: unknown column(s) ['orders_90days'] of "
        "gold.customer_profile, customer_features or customer_scores; did you mean 'orders_90d' for 'orders_90days'?",
        "conf/destinations.yaml: destinations[sms_new_customers].segments: unknown segment(s) ['new_customer']",
    ]


@pytest.mark.parametrize("command", [["run"], ["ingest"], ["run", "--from", "segment"]])
def test_every_stage_and_run_check_the_whole_configuration_first(capsys, conf, command):
    """A typo in destinations.yaml stops `cdp-spark run` (and a single stage) before any stage or Spark starts."""
    edit(conf, "destinations.yaml", "segments: [new_customers]", "segments: [new_customer]")
    assert main(["--conf-dir", str(conf), *command]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "unknown segment(s) ['new_customer']" in err and "[ingest]" not in err
