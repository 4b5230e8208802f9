"""A stage skips only when everything it read and wrote, its settings and its code are as its last success left them."""

from __future__ import annotations

import json

from delta.tables import DeltaTable

import cdp_spark
from cdp_spark import stage_inputs, tables
from cdp_spark.ops import StageRun
from cdp_spark.stage_inputs import StageState


def write(spark, root: str, table: tables.Table, ids: list[str], mode: str = "overwrite") -> None:
    rows = spark.createDataFrame([(i, "x") for i in ids], "record_id string, cdp_id string")
    (tables.overwrite if mode == "overwrite" else tables.append)(rows, root, table)


def test_a_stage_skips_only_when_reads_writes_and_settings_are_as_its_last_success_left_them(spark, tmp_path):
    root = str(tmp_path / "lakehouse")
    reads, writes = tables.CUSTOMER_RECORDS, tables.IDENTITY_MAP
    state = StageState("resolve", reads=(reads,), writes=(writes,), settings={"config": {"threshold": 0.9}})
    write(spark, root, reads, ["a", "b"])

    def success(run_id: str, settings: dict | None = None) -> None:
        run = StageRun("resolve")
        before, unchanged = stage_inputs.compare(spark, root, run, state, force=True)
        assert not unchanged and run.metrics[0][:2] == ("compare inputs with the last run", "unchanged")
        write(spark, root, writes, ["a"])  # what the stage writes
        stage_inputs.record(spark, root, run_id, state, before, settings)

    def unchanged(current: StageState = state) -> str | None:
        return stage_inputs.unchanged_since(spark, root, "resolve", current.current(spark, root))

    assert unchanged() is None  # never run
    success("run-1")
    assert unchanged() == "run-1"
    recorded = tables.read(spark, root, tables.STAGE_INPUTS).collect()
    assert [r.run_id for r in recorded] == ["run-1"]
    assert set(json.loads(recorded[0].state)["tables"]) == {reads.full_name, writes.full_name}
    assert stage_inputs.unchanged_since(spark, root, "profiles", state.current(spark, root)) is None  # other stage

    write(spark, root, reads, ["c"], mode="append")  # new input
    assert unchanged() is None
    success("run-2")
    assert unchanged() == "run-2"

    write(spark, root, writes, ["b"], mode="append")  # its own table changed since (an erasure, a restore)
    assert unchanged() is None
    success("run-3")
    assert unchanged() == "run-3"

    other = StageState("resolve", reads=(reads,), writes=(writes,), settings={"config": {"threshold": 0.8}})
    assert unchanged(other) is None  # other settings
    # A run that changed its settings (e.g. promoted the model it trained) records them as they are after it.
    success("run-4", settings=other.settings)
    assert unchanged(other) == "run-4" and unchanged() is None

    # A failed run records nothing: the tables it wrote before failing make the next run recompute.
    write(spark, root, writes, ["d"])
    assert unchanged(other) is None
    versions = {t: DeltaTable.forPath(spark, t.path(root)).history(1).first()["version"] for t in (reads, writes)}
    assert state.current(spark, root)["tables"][reads.full_name].startswith(f"{versions[reads]}@")


def test_the_code_digest_covers_the_sources_and_the_version(monkeypatch):
    digest = stage_inputs.code_digest("cdp_spark.identity")
    assert digest == stage_inputs.code_digest("cdp_spark.identity")
    assert digest != stage_inputs.code_digest("cdp_spark.gold")
    # A module as well as a package: a change to either changes the digest.
    both = stage_inputs.code_digest("cdp_spark.gold", "cdp_spark.features")
    assert both not in (stage_inputs.code_digest("cdp_spark.gold"), stage_inputs.code_digest("cdp_spark.features"))
    monkeypatch.setattr(cdp_spark, "__version__", "99.0")
    assert stage_inputs.code_digest("cdp_spark.identity") != digest


def test_a_missing_table_has_no_version(spark, tmp_path):
    missing = tables.CUSTOMER_RECORDS
    assert stage_inputs.table_versions(spark, str(tmp_path), [missing]) == {missing.full_name: None}
