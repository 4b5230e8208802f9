"""The identity model kept and reused: JSON, `resolve --model PATH|NAME`, MLflow versions and the retrain gate."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from chispa import assert_df_equality
from conftest import identity_overrides
from pydantic import ValidationError
from pyspark.sql import functions as F

from cdp_spark import tables
from cdp_spark.config import ConfigError, load_config
from cdp_spark.identity import job as identity_job
from cdp_spark.identity import registry
from cdp_spark.identity import resolve as resolve_module
from cdp_spark.identity.blocking import candidate_pairs
from cdp_spark.identity.model import EDGE_RULE, FittedModel, fitted_model, predict_match, score_pairs
from cdp_spark.identity.model_change import ModelChange, gate_breaches, model_change
from cdp_spark.identity.rules import ProbabilisticConfig, RetrainGate
from cdp_spark.identity.training import train
from cdp_spark.identity.vectors import comparison_vectors
from cdp_spark.ops import StageRun
from cdp_spark.pipeline import Context, run_stage

# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------

PROBABILISTIC = {
    "blocking_rules": ["l.last_name = r.last_name", "l.birth_date = r.birth_date"],
    "comparisons": [
        {"name": "first_name", "column": "first_name", "kind": "string", "jaro_winkler": [0.9]},
        {"name": "last_name", "column": "last_name", "kind": "exact"},
        {"name": "birth_date", "column": "birth_date", "kind": "date"},
        {"name": "email", "column": "email", "kind": "exact"},
    ],
    "match_threshold": 0.9,
}

# Two records per person, the second with a typo or a missing value; people share surnames and birth dates.
PEOPLE = [
    ("ana", "silva", "1980-01-02", "ana@x.com", "anna", None),
    ("bruno", "silva", "1975-05-06", "bruno@x.com", "bruno", "bruno@y.com"),
    ("carla", "costa", "1990-03-04", "carla@x.com", "karla", "carla@x.com"),
    ("david", "costa", "1980-01-02", "david@x.com", "davd", "david@x.com"),
    ("eva", "rocha", "1985-07-08", "eva@x.com", "eva", "eva@x.com"),
    ("filipe", "rocha", "1992-09-10", "filipe@x.com", "felipe", "filipe@x.com"),
    ("gina", "pinto", "1975-05-06", "gina@x.com", "gina", "gina@z.com"),
    ("hugo", "pinto", "1988-11-12", "hugo@x.com", "hugo", None),
]


def person_rows(people=PEOPLE) -> list[dict]:
    rows = []
    for i, (first, last, born, email, first_2, email_2) in enumerate(people):
        birth = dt.date.fromisoformat(born)
        rows.append(
            {"record_id": f"crm:{i}a", "first_name": first, "last_name": last, "birth_date": birth, "email": email}
        )
        rows.append({"record_id": f"web:{i}b", "first_name": first_2, "last_name": last, "birth_date": birth, "email": email_2})  # fmt: skip
    return rows


def silver_records(spark, people=PEOPLE):
    from cdp_spark.tables import silver_schema as contract_schema

    schema = contract_schema("customer_records")
    return spark.createDataFrame([{**dict.fromkeys(schema.fieldNames()), **row} for row in person_rows(people)], schema)


def email_model(m: list[float], u: list[float], prior: float = 0.01) -> FittedModel:
    """A model of one exact comparison (levels else, exact), m and u given by level."""
    config = ProbabilisticConfig.model_validate(
        {
            "blocking_rules": ["l.email = r.email"],
            "comparisons": [{"name": "email", "column": "email", "kind": "exact"}],
        }
    )
    return fitted_model(config, "record_id", {"email": m}, {"email": u}, prior)


# --------------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------------


def test_a_model_loaded_from_json_scores_the_same_pairs_the_same(spark):
    records = spark.createDataFrame(person_rows(), "record_id string, first_name string, last_name string, "
                                    "birth_date date, email string")  # fmt: skip
    config = ProbabilisticConfig.model_validate(PROBABILISTIC)
    trained = train(records, config, "record_id")
    loaded = FittedModel.from_json(trained.to_json())
    vectors = comparison_vectors(candidate_pairs(records, config, "record_id"), config)

    assert loaded == trained
    assert json.loads(trained.to_json())["format_version"] == 1
    assert_df_equality(score_pairs(vectors, loaded), score_pairs(vectors, trained), ignore_row_order=True)


def test_a_model_of_another_format_version_is_refused():
    data = email_model([0.1, 0.9], [0.99, 0.01]).to_dict()
    data["format_version"] = 2
    with pytest.raises(ValidationError, match="format version 1; retrain"):
        FittedModel.from_dict(data)


def test_the_pandas_scores_are_the_spark_scores(spark):
    model = email_model([0.1, 0.9], [0.99, 0.01])
    vectors = spark.createDataFrame([(1,), (0,), (-1,)], "gamma_email int")
    spark_scores = [(r.match_weight, r.match_probability) for r in score_pairs(vectors, model).collect()]
    pandas_scores = predict_match(model, vectors.toPandas())

    assert pandas_scores["match_weight"].tolist() == pytest.approx([w for w, _ in spark_scores])
    assert pandas_scores["match_probability"].tolist() == pytest.approx([p for _, p in spark_scores])


# --------------------------------------------------------------------------------------------------
# The retrain gate
# --------------------------------------------------------------------------------------------------


def test_model_change_counts_the_links_either_model_accepts_and_the_largest_weight_move(spark):
    # prior weight log2(0.01/0.99) = -6.63 bits. The champion's exact level weighs log2(0.9/0.01) = 6.49 bits:
    # below a 0.5 threshold. The new one's log2(0.9/0.001) = 9.81 bits: above. Else: log2(0.1/0.99) in both.
    champion = email_model([0.1, 0.9], [0.99, 0.01])
    new = email_model([0.1, 0.9], [0.999, 0.001])
    vectors = spark.createDataFrame([(1,), (1,), (0,), (-1,)], "gamma_email int")

    change = model_change(vectors, new, champion, threshold=0.5)

    assert (change.pairs, change.links_new, change.links_champion, change.links_either, change.links_changed) == (
        4, 2, 0, 2, 2,
    )  # fmt: skip
    assert change.changed_links == 1.0
    assert change.weight_changes["email/exact"] == pytest.approx(3.3219, abs=1e-4)  # log2(10)
    assert change.weight_changes["email/else"] == pytest.approx(0.0131, abs=1e-4)  # log2(0.999/0.99)
    assert change.max_weight_change == change.weight_changes["email/exact"]


def change_of(links_changed: int, links_either: int, max_weight: float) -> ModelChange:
    return ModelChange(
        100, links_either, links_either, links_either, links_changed, max_weight, {"email/exact": max_weight}
    )


@pytest.mark.parametrize(
    ("change", "breaches"),
    [
        (change_of(0, 40, 0.0), []),
        (change_of(2, 40, 1.9), []),
        (change_of(3, 40, 0.5), ["3 of 40 links (7.50%) change, more than max_changed_links 5.00%"]),
        (change_of(0, 40, 2.5), ["the weight of email/exact moves 2.50 bits, more than max_weight_change 2"]),
        (change_of(0, 0, 0.0), []),
    ],
)
def test_the_gate_names_each_limit_a_retrain_exceeds(change, breaches):
    assert gate_breaches(change, RetrainGate(max_changed_links=0.05, max_weight_change=2.0)) == breaches


def test_a_retrain_within_the_gate_becomes_champion_and_one_beyond_it_stays_challenger(tracker):
    first = email_model([0.1, 0.9], [0.99, 0.01])
    close = email_model([0.12, 0.88], [0.99, 0.01])
    far = email_model([0.1, 0.9], [0.9999, 0.0001])
    name = first.config.registered_model

    v1 = registry.register(tracker, first, None, None)
    v2 = registry.register(tracker, close, "1", change_of(1, 40, 0.2))
    v3 = registry.register(tracker, far, "2", change_of(10, 40, 6.6))

    assert (v1.version, v1.decision.alias, v1.decision.reason) == ("1", "champion", "first version: no champion yet")
    assert (v2.version, v2.decision.alias) == ("2", "champion")
    assert (v3.version, v3.decision.alias) == ("3", "challenger")
    assert str(tracker.client.get_model_version_by_alias(name, "champion").version) == "2"
    tags = tracker.client.get_model_version(name, "3").tags
    assert tags["gate_decision"] == "challenger"
    assert tags["gate_reason"].startswith("10 of 40 links (25.00%) change, more than max_changed_links 5.00%; the "
                                          "weight of email/exact moves 6.60 bits")  # fmt: skip
    assert tags["gate_reason"].endswith("(against champion version 2)")
    run = tracker.client.get_run(v3.run_id).data
    assert run.params["m.email.exact"] == "0.9" and run.params["u.email.exact"] == "0.0001"
    assert run.metrics["gate_changed_links"] == 0.25
    # the registered version is the model, JSON inside, and scores vectors
    assert registry.load_registered(tracker, f"{name}@challenger") == far
    assert registry.load_registered(tracker, name) == close
    example = pd.DataFrame({"gamma_email": [1, 0]})
    scored = mlflow.pyfunc.load_model(f"models:/{name}/3").predict(example)
    assert scored["match_weight"].tolist() == pytest.approx(predict_match(far, example)["match_weight"].tolist())


@pytest.mark.parametrize(
    ("ref", "is_registry", "uri"),
    [
        ("cdp_identity", True, "models:/cdp_identity@champion"),
        ("cdp_identity@challenger", True, "models:/cdp_identity@challenger"),
        ("models:/cdp_identity/3", True, "models:/cdp_identity/3"),
        ("models:/cdp_identity@champion", True, "models:/cdp_identity@champion"),
        ("model.json", False, None),
        ("s3a://lake/_models/identity/run1.json", False, None),
        ("/tmp/identity/run1", False, None),
    ],
)
def test_model_references_are_registry_names_or_paths(ref, is_registry, uri):
    assert registry.is_registry_reference(ref) is is_registry
    if is_registry:
        assert registry.registry_uri(ref) == uri


# --------------------------------------------------------------------------------------------------
# cdp-spark resolve: train once, resolve many
# --------------------------------------------------------------------------------------------------


def resolve_context(
    spark, tmp_path: Path, model: str | None = None, lakehouse: str = "lakehouse", force: bool = False, **probabilistic
) -> Context:
    identity = {"record_id": "record_id", "probabilistic": {**PROBABILISTIC, **probabilistic}}
    (tmp_path / "identity.yaml").write_text(yaml.safe_dump(identity))
    overrides = identity_overrides(tmp_path, lakehouse)
    return Context(load_config("conf", None, overrides), argparse.Namespace(model=model, force=force), _spark=spark)


def identity_versions(spark, root: str) -> dict[str, int]:
    """The Delta version of every identity table and of ops.stage_inputs."""
    written = (*identity_job.IDENTITY_TABLES, tables.STAGE_INPUTS)
    return {t.name: tables.log_snapshot(spark, root, t).version() for t in written}


def steps(run: StageRun) -> set[str]:
    return {step for step, _, _ in run.metrics}


def identity_map(spark, tmp_path: Path) -> list[tuple[str, str]]:
    rows = tables.read(spark, str(tmp_path / "lakehouse"), tables.IDENTITY_MAP).collect()
    return sorted((r.record_id, r.cdp_id) for r in rows)


@pytest.mark.slow
def test_resolve_trains_saves_and_registers_then_reuses_the_model_without_training(spark, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tables.overwrite(silver_records(spark), str(tmp_path / "lakehouse"), tables.CUSTOMER_RECORDS)

    trained_run = run_stage("resolve", resolve_context(spark, tmp_path)).run_id
    path = registry.model_path(str(tmp_path / "lakehouse"), trained_run)
    saved = FittedModel.from_json(Path(path).read_text())
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    assert str(client.get_model_version_by_alias("cdp_identity", "champion").version) == "1"
    first_map = identity_map(spark, tmp_path)
    assert len({cdp_id for _, cdp_id in first_map}) < len(first_map)  # some records were linked

    def no_training(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("resolve --model must not train")

    monkeypatch.setattr(resolve_module, "train", no_training)
    run_stage("resolve", resolve_context(spark, tmp_path, model=path))
    assert identity_map(spark, tmp_path) == first_map
    run_stage("resolve", resolve_context(spark, tmp_path, model="cdp_identity", force=True))  # the model of `path`
    assert identity_map(spark, tmp_path) == first_map
    assert len(client.search_model_versions("name = 'cdp_identity'")) == 1  # reusing registers nothing
    assert saved.training is not None and saved.training.records == 16


@pytest.mark.slow
def test_a_retrain_that_moves_the_links_too_much_stays_challenger(spark, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = str(tmp_path / "lakehouse")
    tables.overwrite(silver_records(spark), root, tables.CUSTOMER_RECORDS)
    run_stage("resolve", resolve_context(spark, tmp_path))
    # Nothing changed since: the rerun skips (no table version, no model version); --force retrains, and the
    # same records and seed give the same model.
    kept = identity_versions(spark, root)
    assert steps(run_stage("resolve", resolve_context(spark, tmp_path))) == {"compare inputs with the last run"}
    assert identity_versions(spark, root) == kept
    run_stage("resolve", resolve_context(spark, tmp_path, force=True))
    # half the people again, under new ids: other pairs, other weights
    tables.overwrite(silver_records(spark, PEOPLE + PEOPLE[:4]), root, tables.CUSTOMER_RECORDS)
    strict = {"retrain_gate": {"max_changed_links": 0.0, "max_weight_change": 0.0}}
    run_stage("resolve", resolve_context(spark, tmp_path, **strict))

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    tags = {str(v.version): v.tags for v in client.search_model_versions("name = 'cdp_identity'")}
    assert {v: t["gate_decision"] for v, t in tags.items()} == {"1": "champion", "2": "champion", "3": "challenger"}
    assert tags["2"]["gate_reason"].startswith("0.00% of the links change, no level weight moves more than 0.00 bits")
    assert "more than max_weight_change 0" in tags["3"]["gate_reason"]
    assert str(client.get_model_version_by_alias("cdp_identity", "champion").version) == "2"
    # The champion, not the refused retrain, scored the links: the same scores as the champion given with --model
    # on a fresh lakehouse of the same records.
    tables.overwrite(silver_records(spark, PEOPLE + PEOPLE[:4]), str(tmp_path / "fresh"), tables.CUSTOMER_RECORDS)
    run_stage("resolve", resolve_context(spark, tmp_path, model="cdp_identity@champion", lakehouse="fresh"))

    def scores(lakehouse: str) -> list[tuple]:
        edges = tables.read(spark, lakehouse, tables.IDENTITY_EDGES).where(F.col("rule") == EDGE_RULE)
        return sorted((r.src_record_id, r.dst_record_id, round(r.score, 9)) for r in edges.collect())

    assert scores(root) and scores(root) == scores(str(tmp_path / "fresh"))


@pytest.mark.slow
def test_resolve_model_errors_name_the_path_or_the_comparisons(spark, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tables.overwrite(silver_records(spark), str(tmp_path / "lakehouse"), tables.CUSTOMER_RECORDS)
    missing = str(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match=re.escape(f"--model {missing}: no such file")):
        run_stage("resolve", resolve_context(spark, tmp_path, model=missing))

    (tmp_path / "bad.json").write_text('{"config": {}}')
    with pytest.raises(ConfigError, match="bad.json: not a cdp-spark identity model"):
        run_stage("resolve", resolve_context(spark, tmp_path, model=str(tmp_path / "bad.json")))

    (tmp_path / "email.json").write_text(email_model([0.1, 0.9], [0.99, 0.01]).to_json())
    with pytest.raises(ConfigError, match=r"email.json: the model was fitted for comparisons .*identity.yaml"):
        run_stage("resolve", resolve_context(spark, tmp_path, model=str(tmp_path / "email.json")))

    with pytest.raises(ConfigError, match="--model cdp_identity: no such registered identity model"):
        run_stage("resolve", resolve_context(spark, tmp_path, model="cdp_identity"))


@pytest.mark.slow
def test_resolve_records_writes_its_model_beside_the_output_and_reuses_it(spark, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    people = tmp_path / "people.parquet"
    silver_records(spark).withColumnRenamed("record_id", "pid").write.parquet(str(people))
    (tmp_path / "identity.yaml").write_text(yaml.safe_dump({"probabilistic": PROBABILISTIC}))

    def on_file(out: Path, model: str | None = None) -> list[tuple[str, str]]:
        args = argparse.Namespace(
            records=str(people), id_column="pid", config=str(tmp_path / "identity.yaml"), out=str(out), model=model
        )
        overrides = [f"lakehouse.root={tmp_path / 'lakehouse'}", f"mlflow.tracking_uri=sqlite:///{tmp_path}/m.db"]
        run_stage("resolve", Context(load_config("conf", None, overrides), args, _spark=spark))
        return sorted((r.record_id, r.cdp_id) for r in spark.read.parquet(str(out / "identity_map")).collect())

    trained = on_file(tmp_path / "first")
    monkeypatch.setattr(resolve_module, "train", lambda *a, **k: pytest.fail("resolve --model must not train"))
    reused = on_file(tmp_path / "second", model=str(tmp_path / "first" / "identity_model.json"))

    assert reused == trained
    assert not (tmp_path / "second" / "identity_model.json").exists()  # nothing trained, nothing written
