"""The probabilistic (Fellegi-Sunter) matcher: blocking, comparison levels, u and EM, scoring, explain."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pandas as pd
import pytest
from chispa import assert_df_equality
from pydantic import ValidationError

from cdp_spark.config import ConfigError, load_model_file
from cdp_spark.identity.blocking import candidate_pairs
from cdp_spark.identity.blocking_rule import parse_blocking_rule
from cdp_spark.identity.model import FittedModel, accepted_edges, explain, fitted_model, score_pairs
from cdp_spark.identity.rules import ProbabilisticConfig
from cdp_spark.identity.training import estimate_m_em, estimate_u, fit_m_and_prior, train
from cdp_spark.identity.vectors import comparison_vectors

# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def config_of(comparisons: list[dict], blocking_rules: list[str] | None = None, **overrides) -> ProbabilisticConfig:
    return ProbabilisticConfig.model_validate(
        {"blocking_rules": blocking_rules or ["l.x = r.x"], "comparisons": comparisons, **overrides}
    )


def levels_of(spark, config: ProbabilisticConfig, rows: list[tuple], schema: str) -> list[int]:
    pairs = spark.createDataFrame(rows, schema)
    gamma = config.comparisons[0].gamma_column
    return [r[gamma] for r in comparison_vectors(pairs, config).orderBy("id_l").collect()]


def precision_recall(edges, truth: dict[str, int]) -> tuple[float, float, int]:
    found = {frozenset((e["src_record_id"], e["dst_record_id"])) for e in edges.collect()}
    correct = sum(1 for pair in found if len({truth[r] for r in pair}) == 1)
    by_person: dict[int, list[str]] = {}
    for record, person in truth.items():
        by_person.setdefault(person, []).append(record)
    true_pairs = sum(len(r) * (len(r) - 1) // 2 for r in by_person.values())
    return correct / max(len(found), 1), correct / true_pairs, len(found)


FIRST = [
    "anna",
    "maria",
    "james",
    "john",
    "robert",
    "michael",
    "william",
    "david",
    "richard",
    "joseph",
    "thomas",
    "charles",
    "christopher",
    "daniel",
    "matthew",
    "anthony",
    "mark",
    "donald",
    "steven",
    "paul",
    "andrew",
    "joshua",
    "kenneth",
    "kevin",
    "brian",
    "george",
    "timothy",
    "ronald",
    "edward",
    "jason",
    "jeffrey",
    "ryan",
    "jacob",
    "gary",
    "nicholas",
    "eric",
    "jonathan",
    "stephen",
    "larry",
    "justin",
    "scott",
    "brandon",
    "benjamin",
    "samuel",
    "gregory",
    "alexander",
    "patrick",
    "frank",
    "raymond",
    "jack",
    "dennis",
]
LAST = [
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
    "lee",
    "perez",
    "thompson",
    "white",
    "harris",
    "sanchez",
    "clark",
    "ramirez",
    "lewis",
    "robinson",
    "walker",
    "young",
    "allen",
    "king",
    "wright",
    "scott",
    "torres",
    "nguyen",
    "hill",
    "flores",
]


def typo(word: str, rng: np.random.Generator) -> str:
    """One realistic keying error: a swapped pair of letters, a dropped letter or a wrong letter."""
    i = int(rng.integers(1, len(word) - 1))
    kind = rng.integers(3)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:
        return word[:i] + word[i + 1 :]
    return word[:i] + "xq"[int(rng.integers(2))] + word[i + 1 :]


def people(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    postcodes = [f"{10000 + 37 * k}" for k in range(30)]
    out = []
    for person in range(n):
        first, last = FIRST[rng.integers(len(FIRST))], LAST[rng.integers(len(LAST))]
        postcode = postcodes[rng.integers(len(postcodes))]
        out.append(
            {
                "person": person,
                "first": first,
                "last": last,
                "birth": dt.date(1950, 1, 1) + dt.timedelta(days=int(rng.integers(0, 18000))),
                "postcode": postcode,
                "city": f"city{int(postcode) % 7}",
                "email": f"{first}.{last}{person}@mail.test",
            }
        )
    return out


def noisy_copy(person: dict, rng: np.random.Generator) -> dict:
    """The second record of a person: name typos now and then, and always one attribute that differs."""
    copy = dict(person)
    if rng.random() < 0.3:
        copy["first"] = typo(copy["first"], rng)
    if rng.random() < 0.2:
        copy["last"] = typo(copy["last"], rng)
    change = rng.integers(5)
    if change == 0:
        copy["email"] = f"{copy['first']}{person['person']}@other.test"
    elif change == 1:
        copy["postcode"], copy["city"] = "99999", "elsewhere"
    elif change == 2:
        birth = copy["birth"]
        swapped = birth.replace(month=birth.day, day=birth.month) if birth.day <= 12 else None
        copy["birth"] = swapped if swapped and swapped != birth else birth + dt.timedelta(days=1)
    elif change == 3:
        copy["email"] = None
    else:
        copy["city"] = None
    return copy


SAMPLE_SCHEMA = (
    "record_id string, first_name_key string, last_name_key string, birth_date string, "
    "postcode string, email_norm string, city string"
)


def sample_records(spark, n_people: int = 200, seed: int = 7):
    """~n people x 2 records with the sample schema, and the truth record -> person."""
    rng = np.random.default_rng(seed + 1)
    rows, truth = [], {}
    for person in people(n_people, seed):
        for copy, record in enumerate([person, noisy_copy(person, rng)]):
            record_id = f"r{person['person']:04d}{'ab'[copy]}"
            truth[record_id] = person["person"]
            birth = record["birth"].isoformat()
            rows.append(
                (record_id, record["first"], record["last"], birth, record["postcode"], record["email"], record["city"])
            )
    return spark.createDataFrame(rows, SAMPLE_SCHEMA), truth


SAMPLE_CONFIG = {
    "blocking_rules": [
        "l.last_name_key = r.last_name_key",
        "l.birth_date = r.birth_date",
        "l.email_norm = r.email_norm",
        "l.postcode = r.postcode and substr(l.first_name_key, 1, 1) = substr(r.first_name_key, 1, 1)",
    ],
    "comparisons": [
        {"name": "first_name", "column": "first_name_key", "kind": "string", "jaro_winkler": [0.95, 0.88]},
        {"name": "last_name", "column": "last_name_key", "kind": "string", "jaro_winkler": [0.95, 0.88]},
        {"name": "birth_date", "column": "birth_date", "kind": "date"},
        {"name": "postcode", "column": "postcode", "kind": "exact"},
        {"name": "email", "column": "email_norm", "kind": "exact"},
        {"name": "city", "column": "city", "kind": "exact"},
    ],
    "match_threshold": 0.99,
    "max_pairs_for_u": 20_000,
}


# --------------------------------------------------------------------------------------------------
# comparison levels
# --------------------------------------------------------------------------------------------------

NAME_PAIR_SCHEMA = "id_l string, id_r string, name_l string, name_r string"


@pytest.mark.parametrize(
    ("left", "right", "level"),
    [
        ("martha", "martha", 3),  # exact
        ("martha", "marhta", 2),  # Jaro-Winkler 0.961 >= 0.95
        ("catherine", "katherine", 1),  # 0.926: >= 0.88, < 0.95
        ("dwayne", "duane", 0),  # 0.84: else
        (" martha ", "martha", 3),  # compared trimmed
        (None, "martha", -1),
        ("martha", None, -1),
        ("", "martha", -1),  # blank is missing, not a disagreement
    ],
)
def test_string_levels_by_jaro_winkler(spark, left, right, level):
    config = config_of([{"name": "name", "column": "name", "kind": "string", "jaro_winkler": [0.88, 0.95]}])
    assert config.comparisons[0].labels == ["exact", "jaro_winkler>=0.95", "jaro_winkler>=0.88", "else"]
    assert levels_of(spark, config, [("a", "b", left, right)], NAME_PAIR_SCHEMA) == [level]


def test_string_levels_by_levenshtein_and_several_columns(spark):
    config = config_of(
        [{"name": "name", "columns": ["first", "last"], "kind": "string", "levenshtein": [1, 3], "exact": False}]
    )
    assert config.comparisons[0].labels == ["levenshtein<=1", "levenshtein<=3", "else"]
    rows = [
        ("1", "x", "ann", "lee", "ann", "lee"),  # distance 0 -> best level (exact is not a level of its own)
        ("2", "x", "ann", "lee", "ann", "le"),  # 1
        ("3", "x", "ann", "lee", "anne", "leigh"),  # 4 -> else
        ("4", "x", "ann", None, "ann", "lee"),  # "ann" vs "ann lee": 4 -> else
        ("5", "x", None, None, "ann", "lee"),  # both parts missing: null
        ("6", "x", "jon", "lee", "ann", "lee"),  # 2
    ]
    schema = "id_l string, id_r string, first_l string, last_l string, first_r string, last_r string"
    assert levels_of(spark, config, rows, schema) == [2, 2, 0, 0, -1, 1]


DATE_CONFIG = [{"name": "dob", "column": "dob", "kind": "date"}]


@pytest.mark.parametrize(
    ("left", "right", "level"),
    [
        ("1990-03-04", "1990-03-04", 3),  # exact
        ("1990-03-04", "1990-03-05", 2),  # off by one day
        ("1990-12-31", "1991-01-01", 2),  # off by one day across a year
        ("1990-03-04", "1990-04-03", 1),  # day and month swapped
        ("1990-03-04", "1991-03-04", 0),  # else
        ("1990-03-04", "1990-03-06", 0),  # two days apart: else
        ("1990-03-04", None, -1),
        ("1990-03-04", "not a date", -1),  # unparseable is missing, and never fails the job
    ],
)
def test_date_levels(spark, left, right, level):
    config = config_of(DATE_CONFIG)
    assert config.comparisons[0].labels == ["exact", "off_by_one_day", "day_month_swapped", "else"]
    assert levels_of(
        spark, config, [("a", "b", left, right)], "id_l string, id_r string, dob_l string, dob_r string"
    ) == [level]


def test_date_levels_on_date_columns_with_a_configured_subset(spark):
    config = config_of([{"name": "dob", "column": "dob", "kind": "date", "date_levels": ["same_year_month"]}])
    rows = [
        ("1", "x", dt.date(1990, 3, 4), dt.date(1990, 3, 4)),
        ("2", "x", dt.date(1990, 3, 4), dt.date(1990, 3, 28)),
        ("3", "x", dt.date(1990, 3, 4), dt.date(1990, 4, 3)),  # swapped is not a level here
    ]
    assert levels_of(spark, config, rows, "id_l string, id_r string, dob_l date, dob_r date") == [2, 1, 0]


def test_numeric_levels(spark):
    config = config_of([{"name": "age", "column": "age", "kind": "numeric", "abs_differences": [2, 1]}])
    rows = [("1", "x", 40, 40), ("2", "x", 40, 41), ("3", "x", 40, 38), ("4", "x", 40, 30), ("5", "x", None, 3)]
    assert levels_of(spark, config, rows, "id_l string, id_r string, age_l int, age_r int") == [3, 2, 1, 0, -1]


@pytest.mark.parametrize(
    ("comparison", "message"),
    [
        ({"name": "n", "column": "a", "columns": ["a", "b"], "kind": "exact"}, "exactly one of column or columns"),
        ({"name": "n", "column": "a", "kind": "exact", "jaro_winkler": [0.9]}, "do not apply to kind 'exact'"),
        ({"name": "n", "column": "a", "kind": "string", "jaro_winkler": [1.5]}, "must lie in"),
        ({"name": "n", "column": "a", "kind": "string", "exact": False}, "at least one level above else"),
        ({"name": "n", "column": "a", "kind": "exact", "m_probabilities": [0.5, 0.3, 0.2]}, "needs 2 values"),
        ({"name": "n", "column": "a", "kind": "exact", "u_probabilities": [0.5, 0.6]}, "sum to 1"),
    ],
)
def test_bad_comparisons_are_rejected(comparison, message):
    with pytest.raises(ValidationError, match=message):
        config_of([comparison])


# --------------------------------------------------------------------------------------------------
# blocking
# --------------------------------------------------------------------------------------------------


def test_blocking_unions_rules_without_duplicates_or_self_pairs(spark):
    records = spark.createDataFrame(
        [
            ("a", "lee", "111", "ann"),
            ("b", "lee", "111", "ben"),
            ("c", "lee", "222", "cy"),
            ("d", "kim", "222", "dee"),
            ("e", "kim", None, "eve"),
            ("f", None, None, "fay"),
        ],
        "record_id string, last string, zip string, first string",
    )
    config = config_of(
        [{"name": "first", "column": "first", "kind": "string", "jaro_winkler": [0.9]}],
        blocking_rules=[
            "l.last = r.last",
            "l.zip = r.zip",
            "l.last = r.last and l.zip = r.zip",  # adds nothing new: every pair of it is already in
        ],
    )
    pairs = candidate_pairs(records, config, "record_id")
    assert pairs.columns == [
        *["id_l", "id_r", "first_l", "last_l", "zip_l", "first_r", "last_r", "zip_r", "blocked_by"]
    ]
    expected = spark.createDataFrame(
        [("a", "b", 7), ("a", "c", 1), ("b", "c", 1), ("d", "e", 1), ("c", "d", 2)],  # blocked_by: bit i = rule i
        "id_l string, id_r string, blocked_by int",
    )
    assert_df_equality(
        pairs.select("id_l", "id_r", "blocked_by"), expected, ignore_row_order=True, ignore_nullable=True
    )


def test_asymmetric_rule_is_tried_both_ways(spark):
    records = spark.createDataFrame(
        [("a", "x@m", None), ("b", None, "x@m"), ("c", None, "y@m"), ("d", "y@m", None)],
        "record_id string, email string, alt_email string",
    )
    config = config_of(
        [{"name": "email", "column": "email", "kind": "exact"}], blocking_rules=["l.email = r.alt_email"]
    )
    pairs = {(r.id_l, r.id_r) for r in candidate_pairs(records, config, "record_id").collect()}
    assert pairs == {("a", "b"), ("c", "d")}


@pytest.mark.parametrize(
    ("rule", "keys", "filters"),
    [
        ("l.a = r.a", [("l.a", "r.a")], []),
        ("r.b = l.a", [("l.a", "r.b")], []),
        ("(l.a = r.a)", [("l.a", "r.a")], []),
        ("substr(l.a, 1, 2) = substr(r.a, 1, 2)", [("substr(l.a, 1, 2)", "substr(r.a, 1, 2)")], []),
        (
            "l.a = r.a AND l.b between r.b - 1 and r.b + 1 and l.c <> 'x = y and z'",
            [("l.a", "r.a")],
            ["l.b between r.b - 1 and r.b + 1", "l.c <> 'x = y and z'"],
        ),
        (
            "l.`odd col` = r.`odd col` and levenshtein(l.n, r.n) <= 1",
            [("l.`odd col`", "r.`odd col`")],
            ["levenshtein(l.n, r.n) <= 1"],
        ),
    ],
)
def test_blocking_rules_are_parsed_into_join_keys_and_filters(rule, keys, filters):
    parsed = parse_blocking_rule(rule)
    assert list(parsed.keys) == keys
    assert list(parsed.filters) == filters


@pytest.mark.parametrize(
    "rule",
    [
        "l.a < r.a",
        "levenshtein(l.a, r.a) <= 1",
        "l.a = r.a or l.b = r.b",  # OR: no term constrains every pair
        "not l.a = r.a",
        "l.a = 'x' and r.a = 'x'",  # each side alone: still every l with every r
        "l.a <=> r.a",  # null-safe equality would pair every missing value with every other
    ],
)
def test_rule_without_an_equality_term_is_rejected(rule):
    with pytest.raises(ConfigError, match="no equality term"):
        parse_blocking_rule(rule)


def test_rule_without_an_equality_term_is_rejected_when_config_is_loaded(tmp_path):
    path = tmp_path / "identity.yaml"
    path.write_text(
        "blocking_rules: ['l.last = r.last', 'l.age > r.age']\ncomparisons: [{name: last, column: last, kind: exact}]\n"
    )
    with pytest.raises(ConfigError, match=r"'l.age > r.age' has no equality term.*cross join"):
        load_model_file(ProbabilisticConfig, path)


def test_rule_naming_a_missing_column_names_it(spark):
    records = spark.createDataFrame([("a", "lee")], "record_id string, last string")
    config = config_of([{"name": "last", "column": "last", "kind": "exact"}], blocking_rules=["l.surname = r.surname"])
    with pytest.raises(ConfigError, match=r"\['surname'\]"):
        candidate_pairs(records, config, "record_id")


# --------------------------------------------------------------------------------------------------
# u and EM
# --------------------------------------------------------------------------------------------------

EM_CONFIG = [
    {"name": "name", "column": "name", "kind": "string", "jaro_winkler": [0.9]},  # 3 levels
    {"name": "email", "column": "email", "kind": "exact"},  # 2 levels
    {"name": "dob", "column": "dob", "kind": "date"},  # 4 levels
]
# index = level (0 = else)
TRUE_M = {"name": [0.05, 0.15, 0.80], "email": [0.25, 0.75], "dob": [0.04, 0.03, 0.08, 0.85]}
TRUE_U = {"name": [0.90, 0.08, 0.02], "email": [0.995, 0.005], "dob": [0.990, 0.004, 0.002, 0.004]}


def simulated_counts(n_pairs: int, match_share: float, null_share: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    is_match = rng.random(n_pairs) < match_share
    columns = {}
    for name in TRUE_M:
        levels = np.where(
            is_match,
            rng.choice(len(TRUE_M[name]), n_pairs, p=TRUE_M[name]),
            rng.choice(len(TRUE_U[name]), n_pairs, p=TRUE_U[name]),
        )
        columns[f"gamma_{name}"] = np.where(rng.random(n_pairs) < null_share, -1, levels)
    return pd.DataFrame(columns).value_counts().rename("count").reset_index()


def test_em_recovers_known_m_and_lambda_with_u_fixed():
    counts = simulated_counts(200_000, match_share=0.2, null_share=0.1, seed=3)
    assert len(counts) <= 4 * 3 * 5  # aggregated: one row per distinct vector
    config = config_of(EM_CONFIG, prior_match_probability=0.5)
    m, match_prior = estimate_m_em(counts, TRUE_U, config)
    assert match_prior == pytest.approx(0.2, abs=0.01)
    for name, truth in TRUE_M.items():
        assert m[name] == pytest.approx(truth, abs=0.03), name


def test_m_and_lambda_over_all_pairs_are_recovered_from_blocked_pairs():
    # 10^8 pairs, 10^4 of them matches. Rule 0 blocks on email, rule 1 on name: only pairs agreeing
    # exactly on one of them are counted (89% of the non-matches and 4% of the matches never are)
    rng = np.random.default_rng(5)
    total_pairs, matches = 100_000_000, 10_000
    grid = np.array(np.meshgrid(*[np.arange(len(TRUE_M[n])) for n in TRUE_M], indexing="ij")).reshape(3, -1).T

    def cell_probabilities(params: dict) -> np.ndarray:
        return np.prod([np.asarray(params[n])[grid[:, k]] for k, n in enumerate(TRUE_M)], axis=0)

    counts = rng.multinomial(matches, cell_probabilities(TRUE_M)) + rng.multinomial(
        total_pairs - matches, cell_probabilities(TRUE_U)
    )
    blocked_by = (grid[:, 1] == 1) * 1 + (grid[:, 0] == 2) * 2
    vectors = pd.DataFrame(grid, columns=[f"gamma_{n}" for n in TRUE_M]).assign(blocked_by=blocked_by, count=counts)
    vectors = vectors[vectors["blocked_by"] > 0]
    config = config_of(EM_CONFIG, blocking_rules=["l.email = r.email", "l.name = r.name"])
    m, match_prior, sessions = fit_m_and_prior(vectors, TRUE_U, config, total_pairs=total_pairs)
    blocked_matches = matches * (1 - (1 - TRUE_M["name"][2]) * TRUE_M["email"][0])
    assert match_prior == pytest.approx(blocked_matches / total_pairs, rel=0.05)
    for name, truth in TRUE_M.items():
        assert m[name] == pytest.approx(truth, abs=0.03), name
    assert [(s.blocking_rule, s.ignored) for s in sessions] == [(0, ["email"]), (1, ["name"]), (None, [])]
    assert all(s.converged for s in sessions)


def test_fixed_m_is_left_alone_by_em():
    counts = simulated_counts(50_000, match_share=0.2, null_share=0.0, seed=9)
    comparisons = [dict(c) for c in EM_CONFIG]
    comparisons[1]["m_probabilities"] = [0.6, 0.4]  # best level first: exact, else
    m, _ = estimate_m_em(counts, TRUE_U, config_of(comparisons))
    assert m["email"] == [0.4, 0.6]


def test_u_is_counted_on_random_pairs_and_unseen_levels_are_floored(spark):
    rng = np.random.default_rng(11)
    rows = [(f"r{i}", "xy"[int(rng.integers(2))], f"unique{i}") for i in range(5000)]
    records = spark.createDataFrame(rows, "record_id string, coin string, serial string")
    config = config_of(
        [{"name": "coin", "column": "coin", "kind": "exact"}, {"name": "serial", "column": "serial", "kind": "exact"}],
        max_pairs_for_u=20_000,
    )
    u = estimate_u(records, config, "record_id", seed=1)
    assert u["coin"][1] == pytest.approx(0.5, abs=0.03)  # two equally common values agree half the time
    assert 0 < u["serial"][1] < 1e-4  # never agrees among random pairs: floored, never zero
    assert sum(u["serial"]) == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------------
# end to end
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(spark):
    records, truth = sample_records(spark)
    records = records.cache()
    config = ProbabilisticConfig.model_validate(SAMPLE_CONFIG)
    model = train(records, config, "record_id", seed=3)
    yield records, truth, config, model
    records.unpersist()


@pytest.mark.slow
def test_end_to_end_precision_and_recall_on_noisy_copies(sample):
    records, truth, config, model = sample
    edges = accepted_edges(records, config, "record_id", model)
    assert edges.columns == ["src_record_id", "dst_record_id", "rule", "score", "match_weight"]
    precision, recall, found = precision_recall(edges, truth)
    print(f"\naccepted {found} edges: precision {precision:.3f}, recall {recall:.3f}, lambda {model.match_prior:.2e}")
    assert precision >= 0.95
    assert recall >= 0.9
    assert {r["rule"] for r in edges.collect()} == {"probabilistic"}
    assert model.training.records == 400 and model.training.total_pairs == 400 * 399 // 2
    # 200 true pairs among 79,800: lambda should be of that order
    assert 1e-3 < model.match_prior < 1e-2


@pytest.mark.slow
def test_trained_weights_point_the_right_way(sample):
    _, _, _, model = sample
    weights = {c.name: {level.label: level.weight for level in c.levels} for c in model.comparisons}
    for name in ("first_name", "last_name", "birth_date", "postcode", "email"):
        assert weights[name]["exact"] > 3 > 0 > weights[name]["else"], name
    assert weights["email"]["exact"] > weights["city"]["exact"]  # unique beats shared


@pytest.mark.slow
def test_explain_weights_add_up_to_the_match_weight(spark, sample):
    records, _, config, model = sample
    table = explain(("r0005b", "r0005a"), model, records)
    assert list(table["comparison"]) == [c.name for c in config.comparisons] + ["total"]
    assert list(table.columns) == [
        "comparison",
        "level",
        "label",
        "value_l",
        "value_r",
        "m",
        "u",
        "weight",
        "match_probability",
    ]
    per_comparison, total = table.iloc[:-1], table.iloc[-1]
    assert per_comparison["weight"].sum() == pytest.approx(total["weight"])
    assert (total["value_l"], total["value_r"]) == ("r0005a", "r0005b")
    for row in per_comparison.itertuples():
        if row.level == -1:
            assert row.weight == 0 and row.m is None
        else:
            assert row.weight == pytest.approx(math.log2(row.m / row.u))
    # the same pair scored in Spark carries the same weight and probability
    pairs = candidate_pairs(records, config, "record_id").where("id_l = 'r0005a' and id_r = 'r0005b'")
    scored = score_pairs(comparison_vectors(pairs, config), model).first()
    assert scored["match_weight"] == pytest.approx(total["weight"])
    assert scored["match_probability"] == pytest.approx(total["match_probability"])
    # a vector row explains the same way
    assert explain(scored, model)["weight"].tolist() == pytest.approx(table["weight"].tolist())


@pytest.mark.slow
def test_fitted_model_round_trips_through_json(sample):
    _, _, _, model = sample
    restored = FittedModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert restored == model
    assert restored.to_dict()["comparisons"][0]["levels"][0]["label"] == "exact"


def test_fitted_model_must_match_its_config():
    config = config_of([{"name": "email", "column": "email", "kind": "exact"}])
    model = fitted_model(config, "record_id", {"email": [0.1, 0.9]}, {"email": [0.99, 0.01]}, 1e-3)
    data = model.to_dict()
    data["comparisons"][0]["levels"] = data["comparisons"][0]["levels"][:1]
    with pytest.raises(ValidationError, match="do not match"):
        FittedModel.from_dict(data)


@pytest.mark.slow
def test_a_schema_with_other_column_names_works(spark):
    rng = np.random.default_rng(21)
    rows, truth = [], {}
    for person in people(120, seed=4):
        for copy, record in enumerate([person, noisy_copy(person, rng)]):
            pid = 1000 + 2 * person["person"] + copy
            truth[str(pid)] = person["person"]
            zip_code = record["postcode"] if record["postcode"] != "99999" else None
            rows.append((pid, record["first"], record["last"], record["birth"], zip_code))
    records = spark.createDataFrame(rows, "pid long, given string, family string, dob date, zip string")
    config = ProbabilisticConfig.model_validate(
        {
            "blocking_rules": ["l.family = r.family", "l.dob = r.dob", "l.zip = r.zip and l.given = r.given"],
            "comparisons": [
                {"name": "given", "column": "given", "kind": "string", "jaro_winkler": [0.92], "levenshtein": [2]},
                {"name": "family", "column": "family", "kind": "string", "jaro_winkler": [0.92]},
                {
                    "name": "dob",
                    "column": "dob",
                    "kind": "date",
                    "date_levels": ["day_month_swapped", "off_by_one_day"],
                },
                {"name": "zip", "column": "zip", "kind": "exact"},
            ],
            "match_threshold": 0.95,
            "max_pairs_for_u": 10_000,
        }
    )
    model = train(records, config, "pid", seed=5)
    edges = accepted_edges(records, config, "pid", model).selectExpr(
        "cast(src_record_id as string) as src_record_id", "cast(dst_record_id as string) as dst_record_id"
    )
    precision, recall, found = precision_recall(edges, truth)
    print(f"\nother schema: accepted {found} edges: precision {precision:.3f}, recall {recall:.3f}")
    assert precision >= 0.95
    assert recall >= 0.9
    assert explain((1001, 1000), model, records)["comparison"].tolist() == ["given", "family", "dob", "zip", "total"]
