"""Deterministic rules, guards, clustering, stable ids and evaluation on hand-made records."""

from __future__ import annotations

import pytest
from chispa import assert_df_equality

from cdp_spark.identity.evaluate import identity_metrics
from cdp_spark.identity.graph import cluster
from cdp_spark.identity.resolve import resolve
from cdp_spark.identity.rules import ClusteringConfig, IdentityConfig
from cdp_spark.identity.stable_ids import assign_cdp_ids, record_changes

RECORD_SCHEMA = "record_id string, email string, phone string, account string"


def config(**overrides) -> IdentityConfig:
    base = {
        "identifiers": [
            {"name": "account", "column": "account", "priority": 1},
            {"name": "email", "column": "email", "priority": 2, "limit": 2, "blocked": ["Test@Test.com"]},
            {"name": "phone", "column": "phone", "priority": 3, "limit": 2},
        ],
        "hot_value_threshold": 3,
        "clustering": {"max_component_size": 10, "max_iterations": 20},
    }
    base.update(overrides)
    return IdentityConfig.model_validate(base)


def clusters_of(identity_map) -> set[frozenset[str]]:
    groups: dict[str, set[str]] = {}
    for row in identity_map.collect():
        groups.setdefault(row["cdp_id"], set()).add(row["record_id"])
    return {frozenset(g) for g in groups.values()}


def test_records_sharing_an_identifier_are_linked(spark):
    records = spark.createDataFrame(
        [
            ("r1", "ann@x.io", None, None),
            ("r2", "ann@x.io", "+14155550100", None),
            ("r3", None, "+14155550100", None),
            ("r4", None, None, "A-9"),
            ("r5", "bob@x.io", None, "A-9"),
            ("r6", "cy@x.io", None, None),
        ],
        RECORD_SCHEMA,
    )
    result = resolve(spark, records, config())
    assert clusters_of(result.identity_map) == {
        frozenset({"r1", "r2", "r3"}),
        frozenset({"r4", "r5"}),
        frozenset({"r6"}),
    }
    rules = {(r["src_record_id"], r["dst_record_id"], r["rule"]) for r in result.edges.collect()}
    assert ("r2", "r1", "deterministic:email") in rules and ("r5", "r4", "deterministic:account") in rules


def test_blocked_and_hot_values_never_link_and_are_reported(spark):
    records = spark.createDataFrame(
        [
            ("r1", "test@test.com", None, None),
            ("r2", "TEST@test.com", None, None),
            ("h1", None, "+12125550100", None),
            ("h2", None, "+12125550100", None),
            ("h3", None, "+12125550100", None),
            ("h4", None, "+12125550100", None),
        ],
        RECORD_SCHEMA,
    )
    result = resolve(spark, records, config())
    assert all(len(c) == 1 for c in clusters_of(result.identity_map))
    guarded = {
        (r["identifier"], r["value"].lower(), r["records"], r["reason"]) for r in result.guarded_values.collect()
    }
    assert guarded == {("email", "test@test.com", 1, "blocked"), ("phone", "+12125550100", 4, "hot")}


def test_a_link_that_would_exceed_a_limit_is_refused_and_the_weaker_identifier_gives_way(spark):
    # Three people sharing one phone (a family): linking them would put 3 emails in one profile (limit 2).
    # The phone (priority 3) gives way; the account link (priority 1) between f3 and f4 stands.
    records = spark.createDataFrame(
        [
            ("f1", "mum@x.io", "+16175550100", None),
            ("f2", "dad@x.io", "+16175550100", None),
            ("f3", "kid@x.io", "+16175550100", "K-1"),
            ("f4", "kid@x.io", None, "K-1"),
        ],
        RECORD_SCHEMA,
    )
    result = resolve(spark, records, config())
    assert clusters_of(result.identity_map) == {frozenset({"f1"}), frozenset({"f2"}), frozenset({"f3", "f4"})}
    statuses = {(r["rule"], r["status"]) for r in result.edges.collect()}
    assert ("deterministic:phone", "refused:limit:email") in statuses
    assert ("deterministic:account", "accepted") in statuses
    assert result.offending.count() == 0


def test_oversized_component_is_split_at_its_weakest_probabilistic_edge(spark):
    records = spark.createDataFrame([(r,) for r in "abcdefg"], "record_id string")
    edges = spark.createDataFrame(
        [
            ("b", "a", "probabilistic", 0.99, None),
            ("c", "b", "probabilistic", 0.97, None),
            ("d", "c", "probabilistic", 0.91, None),  # the weakest link of the chain
            ("e", "d", "probabilistic", 0.98, None),
            ("f", "e", "probabilistic", 0.99, None),
            ("g", "f", "deterministic:email", 1.0, "email"),
        ],
        "src_record_id string, dst_record_id string, rule string, score double, identifier string",
    )
    values = spark.createDataFrame([], "record_id string, identifier string, value string")
    cfg = config(clustering=ClusteringConfig(max_component_size=4, max_iterations=20).model_dump())
    components, status, offending, raw = cluster(records, edges, values, cfg)
    expected = spark.createDataFrame(
        [("a", "a"), ("b", "a"), ("c", "a"), ("d", "d"), ("e", "d"), ("f", "d"), ("g", "d")],
        "record_id string, component_id string",
    )
    assert_df_equality(components, expected, ignore_row_order=True, ignore_nullable=True)
    refused = [(r["src_record_id"], r["status"]) for r in status.where("status != 'accepted'").collect()]
    assert refused == [("d", "refused:size")]
    assert offending.count() == 0
    # Before the guard split it, one component: what an incremental run re-resolves whole.
    assert raw.count() == 7 and raw.select("raw_component").distinct().count() == 1


def test_component_that_stays_oversized_is_reported(spark):
    records = spark.createDataFrame([(r,) for r in "abc"], "record_id string")
    edges = spark.createDataFrame(
        [("b", "a", "deterministic:email", 1.0, "email"), ("c", "a", "deterministic:email", 1.0, "email")],
        "src_record_id string, dst_record_id string, rule string, score double, identifier string",
    )
    values = spark.createDataFrame([], "record_id string, identifier string, value string")
    cfg = config(
        identifiers=[{"name": "email", "column": "email", "priority": 1}], clustering={"max_component_size": 2}
    )
    components, _, offending, _ = cluster(records, edges, values, cfg, max_rounds=3)
    # Deterministic edges of the only type are removed as the weakest; the component splits rather than hides.
    assert {r["component_id"] for r in components.collect()} == {"a", "b", "c"}
    assert offending.count() == 0


def test_ids_are_stable_across_reruns_and_carried_over_merges_and_splits(spark):
    schema = "record_id string, component_id string"
    run1 = spark.createDataFrame([("a", "a"), ("b", "a"), ("c", "a"), ("d", "d"), ("e", "d")], schema)
    map1, lineage1 = assign_cdp_ids(run1, None, "run-1")
    ids1 = {r["record_id"]: r["cdp_id"] for r in map1.collect()}
    assert ids1["a"] == ids1["b"] == ids1["c"] != ids1["d"] == ids1["e"]
    assert {r["event"] for r in lineage1.collect()} == {"created"}

    # Same data again: same ids, no lineage events.
    map_again, lineage_again = assign_cdp_ids(run1, map1.select("record_id", "cdp_id"), "run-2")
    assert {r["record_id"]: r["cdp_id"] for r in map_again.collect()} == ids1
    assert lineage_again.count() == 0
    # A first run on the same data elsewhere gives the same ids too.
    assert {r["record_id"]: r["cdp_id"] for r in assign_cdp_ids(run1, None, "other")[0].collect()} == ids1

    # Merge: a new record f bridges both clusters; the larger previous cluster's id survives.
    run3 = spark.createDataFrame([(r, "a") for r in "abcdef"], schema)
    map3, lineage3 = assign_cdp_ids(run3, map1.select("record_id", "cdp_id"), "run-3")
    assert {r["cdp_id"] for r in map3.collect()} == {ids1["a"]}
    events3 = {(r["cdp_id"], r["event"], tuple(r["previous_cdp_ids"])) for r in lineage3.collect()}
    assert events3 == {
        (ids1["a"], "merged", tuple(sorted([ids1["a"], ids1["d"]]))),
        (ids1["d"], "retired", (ids1["d"],)),
    }

    # Split: {a,b} and {c,d,e,f}; the part holding most of the previous cluster keeps its id.
    run4 = spark.createDataFrame([("a", "a"), ("b", "a"), ("c", "c"), ("d", "c"), ("e", "c"), ("f", "c")], schema)
    map4, lineage4 = assign_cdp_ids(run4, map3.select("record_id", "cdp_id"), "run-4")
    ids4 = {r["record_id"]: r["cdp_id"] for r in map4.collect()}
    assert ids4["c"] == ids1["a"] and ids4["a"] == ids4["b"] != ids1["a"]
    assert {r["event"] for r in lineage4.collect()} == {"split"}


def test_new_id_is_salted_when_the_natural_one_is_taken(spark):
    components = spark.createDataFrame([("a", "a")], "record_id string, component_id string")
    natural_id = assign_cdp_ids(components, None, "run-1")[0].first()["cdp_id"]
    # The previous run gave that id to a cluster whose records are gone from this run.
    previous = spark.createDataFrame([("x", natural_id)], "record_id string, cdp_id string")
    new_map, lineage = assign_cdp_ids(components, previous, "run-2")
    salted = new_map.first()["cdp_id"]
    assert salted not in (natural_id, None)
    assert {(r["cdp_id"], r["event"]) for r in lineage.collect()} == {(salted, "created"), (natural_id, "retired")}
    # Derived from the inputs, not the run: a full and an incremental run give the same id.
    assert assign_cdp_ids(components, previous, "run-3")[0].first()["cdp_id"] == salted
    # Taken as well: the run id salts it.
    both = spark.createDataFrame([("x", natural_id), ("y", salted)], "record_id string, cdp_id string")
    third = {assign_cdp_ids(components, both, run)[0].first()["cdp_id"] for run in ("run-4", "run-5")}
    assert len(third) == 2 and not third & {natural_id, salted}


def test_resolve_works_on_a_non_sample_schema(spark):
    records = spark.createDataFrame(
        [("p1", "Mia", "mia@corp.example"), ("p2", "Mia R.", "mia@corp.example"), ("p3", "Leo", "leo@corp.example")],
        "person_key string, given string, mail string",
    )
    cfg = IdentityConfig.model_validate(
        {"record_id": "person_key", "identifiers": [{"name": "mail", "column": "mail", "priority": 1}]}
    )
    assert clusters_of(resolve(spark, records, cfg).identity_map) == {frozenset({"p1", "p2"}), frozenset({"p3"})}
    with pytest.raises(ValueError, match=r"lack the columns named in the identity config: \['mail'\]"):
        resolve(spark, records.drop("mail"), cfg)


def test_evaluate_against_hand_made_truth(spark):
    predicted = spark.createDataFrame(
        [("a", "X"), ("b", "X"), ("c", "X"), ("d", "Y"), ("e", "Z")], "record_id string, cdp_id string"
    )
    truth = spark.createDataFrame(
        [("a", "p1"), ("b", "p1"), ("c", "p2"), ("d", "p2"), ("e", "p3")], "record_id string, person_id string"
    )
    metrics = identity_metrics(predicted, truth)
    # predicted pairs: ab, ac, bc (3); true pairs: ab, cd (2); correct: ab (1)
    assert metrics == {
        "records": 5,
        "clusters": 3,
        "people": 3,
        "true_pairs": 2,
        "predicted_pairs": 3,
        "true_positive_pairs": 1,
        "pairwise_precision": pytest.approx(1 / 3, abs=1e-6),
        "pairwise_recall": 0.5,
        "pairwise_f1": pytest.approx(0.4, abs=1e-6),
        "people_split": 1,
        "clusters_merging_people": 1,
    }


def test_record_changes_are_the_records_whose_cdp_id_differs_between_two_maps(spark):
    schema = "record_id string, cdp_id string"
    before = spark.createDataFrame([("a", "c1"), ("b", "c1"), ("c", "c2"), ("d", "c3")], schema)
    after = spark.createDataFrame([("a", "c1"), ("b", "c2"), ("c", "c2"), ("e", "c4")], schema)
    out = "record_id string, previous_cdp_id string, cdp_id string, change string"
    assert_df_equality(
        record_changes(before, after),
        spark.createDataFrame(
            [("b", "c1", "c2", "moved"), ("d", "c3", None, "removed"), ("e", None, "c4", "added")], out
        ),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    assert record_changes(after, after).count() == 0
    assert_df_equality(
        record_changes(None, before.limit(1)),
        spark.createDataFrame([("a", None, "c1", "added")], out),
        ignore_nullable=True,
    )
