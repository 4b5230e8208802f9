"""Activation: identifier hashing, consent and suppression, delta exports, idempotent and restartable exports."""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from pathlib import Path

import pytest
from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from cdp_spark import exports, tables
from cdp_spark.activation import export
from cdp_spark.activation.config import Destination, DestinationsConfig, check_destinations, load_destinations
from cdp_spark.activation.export import audience, export_id, run_export
from cdp_spark.config import ConfigError
from cdp_spark.hashing import HashKey, identifier_hash
from cdp_spark.segments.config import SegmentDefinition, SegmentsConfig, load_segments
from cdp_spark.suppression import Suppression

T1, T2, T3 = date(2026, 1, 31), date(2026, 2, 28), date(2026, 3, 31)
NOW = datetime(2026, 1, 30, 12, 0)

# sha256 of the normalized values, computed once with hashlib and pasted here.
JANE_EMAIL_SHA = "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"  # jane.doe@example.com
JANE_PHONE_SHA = "cb6880e416769253645cb9c6b8989154bf66a56a77fc14c81fb1019663cbb928"  # +14155552671
BOB_EMAIL_SHA = "5ff860bf1190596c7188ab851db691f0f3169c453936e9e1eba2f9a47f7a0018"  # bob@example.com

HASH_CASES = [
    # kind, raw value, expected SHA-256 of the normalized value
    ("email", "jane.doe@example.com", JANE_EMAIL_SHA),
    ("email", "  Jane.Doe@Example.COM ", JANE_EMAIL_SHA),
    ("email", "bob@example.com", BOB_EMAIL_SHA),
    ("phone", "+14155552671", JANE_PHONE_SHA),
    ("phone", " +1 (415) 555-2671 ", JANE_PHONE_SHA),
    ("email", None, None),
    ("email", "   ", None),
    ("phone", "", None),
]


def test_identifiers_hash_as_sha256_of_the_normalized_value(spark):
    cases = spark.createDataFrame(HASH_CASES, "kind string, raw string, expected string")
    hashed = cases.select(
        "kind",
        "raw",
        F.when(F.col("kind") == "email", identifier_hash("email", F.col("raw")))
        .otherwise(identifier_hash("phone", F.col("raw")))
        .alias("expected"),
    )
    assert_df_equality(hashed, cases, ignore_row_order=True, ignore_nullable=True)


PROFILE_SCHEMA = (
    "cdp_id string, first_name string, email string, phone string, consent_email boolean, consent_sms boolean, "
    "consent_ads boolean"
)


def ads_destination(**overrides) -> Destination:
    values = {
        "name": "ads",
        "segments": ["vip"],
        "identifiers": ["email", "phone"],
        "attributes": ["clv_decile"],
        "format": "csv",
        "path": "exports/ads",
        "channel": "email",
        "hash_identifiers": True,
        "mode": "delta",
    }
    return Destination(**{**values, **overrides})


ADDRESS_CONSENT_SCHEMA = (
    "cdp_id string, identifier_type string, identifier string, channel string, granted boolean, "
    "recorded_at timestamp, shared boolean"
)


def test_only_consented_addresses_of_not_erased_customers_are_exported(spark):
    profile = spark.createDataFrame(
        [
            ("p1", "Jane", "jane.doe@example.com", "+14155552671", True, None, None),
            ("p2", "Never", "never@example.com", None, None, True, True),  # never stated: no consent
            ("p3", "Withdrawn", "withdrawn@example.com", None, False, True, True),
            ("p4", "Erased", "erased4@example.com", None, True, None, None),  # erased: cdp_id suppressed
            ("p5", "Again", "erased5@example.com", None, True, None, None),  # re-created profile, email suppressed
            ("p6", "Outside", "outside@example.com", None, True, None, None),  # not in the segment
            ("p7", "NoContact", None, None, True, None, None),  # nothing to match on
            ("p8", "Half", "half@example.com", "+14155550000", True, None, None),  # email yes, phone withdrawn
        ],
        PROFILE_SCHEMA,
    )
    addresses = spark.createDataFrame(
        [
            ("p1", "email", "jane.doe@example.com", "email", True, NOW, False),
            ("p1", "phone", "+14155552671", "email", True, NOW, False),
            ("p1", "phone", "+14155552671", "sms", False, NOW, False),  # another channel says nothing here
            ("p3", "email", "withdrawn@example.com", "email", False, NOW, False),
            ("p4", "email", "erased4@example.com", "email", True, NOW, False),
            ("p5", "email", "erased5@example.com", "email", True, NOW, False),
            ("p6", "email", "outside@example.com", "email", True, NOW, False),
            ("p8", "email", "half@example.com", "email", True, NOW, False),
            ("p8", "phone", "+14155550000", "email", False, NOW, False),
            ("p1", "email", "half@example.com", "email", True, NOW, False),  # p1's grant on an address p8 shows
        ],
        ADDRESS_CONSENT_SCHEMA,
    )
    members = spark.createDataFrame([(c,) for c in ("p1", "p2", "p3", "p4", "p5", "p7", "p8")], "cdp_id string")
    scores = spark.createDataFrame(
        [(c, T1, 9) for c in ("p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8")],
        "cdp_id string, as_of date, clv_decile int",
    )
    key = HashKey(b"test-hash-key-0123456789")
    listed = spark.createDataFrame(
        [
            ("cdp_id", key.digest(hashlib.sha256(b"p4").hexdigest()), "p4"),
            ("email", key.digest(hashlib.sha256(b"erased5@example.com").hexdigest()), "cdp-old"),
        ],
        "kind string, value_hash string, cdp_id string",
    )
    suppression = Suppression(listed, key)
    rows = audience(members, profile, scores, suppression, ads_destination(), addresses)
    expected = spark.createDataFrame(
        [("p1", JANE_EMAIL_SHA, JANE_PHONE_SHA, 9), ("p8", hashlib.sha256(b"half@example.com").hexdigest(), None, 9)],
        "cdp_id string, email_sha256 string, phone_sha256 string, clv_decile int",
    )
    assert_df_equality(rows, expected, ignore_row_order=True, ignore_nullable=True)

    # Keyed by cdp_id alone, a destination has no address to decide on: the person's consent column decides.
    by_id = audience(members, profile, scores, None, ads_destination(identifiers=["cdp_id"], channel="sms"), addresses)
    expected_by_id = spark.createDataFrame([("p2", 9), ("p3", 9)], "cdp_id string, clv_decile int")
    assert_df_equality(by_id, expected_by_id, ignore_row_order=True, ignore_nullable=True)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_kind(spark, folder: Path, kind: str):
    files = sorted(str(p) for p in folder.glob(f"{kind}-*.csv"))
    schema = "email_sha256 string, clv_decile int"
    if not files:
        return spark.createDataFrame([], schema)
    return spark.read.option("header", "true").schema(schema).csv(files)


def state_version(spark, root: str) -> int:
    return DeltaTable.forPath(spark, tables.EXPORT_STATE.path(root)).history(1).first()["version"]


def snapshot(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def exported(spark, *rows):
    return spark.createDataFrame(list(rows), "cdp_id string, email_sha256 string, clv_decile int")


@pytest.mark.slow
def test_delta_export_adds_removes_idempotency_and_a_half_written_export_redone(spark, lakehouse, monkeypatch):
    root = lakehouse.root
    dest = ads_destination(identifiers=["email"])
    segments_hash = SegmentsConfig(
        segments=[SegmentDefinition(name="vip", condition="clv_decile >= 9")]
    ).definitions_hash()

    first = run_export(exported(spark, ("a", "ha", 9), ("b", "hb", 8)), root, dest, T1, segments_hash, "run-1")
    assert (first.status, first.adds, first.removes, first.total) == ("written", 2, 0, 2)
    folder1 = Path(first.folder)
    assert folder1 == Path(root) / "exports" / "ads" / export_id(dest, T1, segments_hash)
    manifest = json.loads((folder1 / "_manifest.json").read_text())
    assert manifest["counts"] == {"adds": 2, "removes": 0, "erasures": 0, "total": 2}
    assert manifest["segment_definitions_sha256"] == segments_hash
    assert (manifest["destination"], manifest["export_id"], manifest["as_of"]) == ("ads", first.export_id, "2026-01-31")
    for entry in manifest["files"]:
        assert entry["sha256"] == sha256_file(folder1 / entry["name"])
    assert sum(e["rows"] for e in manifest["files"] if e["kind"] == "adds") == 2
    expected_adds = spark.createDataFrame([("ha", 9), ("hb", 8)], "email_sha256 string, clv_decile int")
    assert_df_equality(read_kind(spark, folder1, "adds"), expected_adds, ignore_row_order=True, ignore_nullable=True)

    # The same export again: nothing is written, not even a state version or an audit row.
    files_before, version_before = snapshot(folder1), state_version(spark, root)
    audit_before = tables.read(spark, root, tables.AUDIT_LOG).count()
    again = run_export(exported(spark, ("a", "ha", 9), ("b", "hb", 8)), root, dest, T1, segments_hash, "run-2")
    assert (again.status, again.export_id, again.adds, again.total) == ("skipped", first.export_id, 2, 2)
    assert snapshot(folder1) == files_before
    assert state_version(spark, root) == version_before
    assert tables.read(spark, root, tables.AUDIT_LOG).count() == audit_before

    # b left (consent withdrawn), c joined: the delta lists c as an add and b as a remove.
    second = run_export(exported(spark, ("a", "ha", 9), ("c", "hc", 7)), root, dest, T2, segments_hash, "run-3")
    assert (second.status, second.adds, second.removes, second.total) == ("written", 1, 1, 2)
    folder2 = Path(second.folder)
    assert_df_equality(
        read_kind(spark, folder2, "adds"),
        spark.createDataFrame([("hc", 7)], "email_sha256 string, clv_decile int"),
        ignore_nullable=True,
    )
    assert_df_equality(
        read_kind(spark, folder2, "removes"),
        spark.createDataFrame([("hb", 8)], "email_sha256 string, clv_decile int"),
        ignore_nullable=True,
    )

    # A run that died half way: leftover files without a manifest, then a run that wrote its files and
    # manifest but died before the state commit.
    folder3 = Path(root) / "exports" / "ads" / export_id(dest, T3, segments_hash)
    folder3.mkdir(parents=True)
    (folder3 / "adds-00000.csv").write_text("email_sha256,clv_decile\ngarbage,0\n")

    def die(*args, **kwargs):
        raise RuntimeError("killed before the state commit")

    rows3 = exported(spark, ("a", "ha", 9), ("c", "hc", 7), ("d", "hd", 9))
    with monkeypatch.context() as patch:
        patch.setattr(export.tables, "replace_where", die)
        with pytest.raises(RuntimeError, match="killed"):
            run_export(rows3, root, dest, T3, segments_hash, "run-4")
    assert json.loads((folder3 / "_manifest.json").read_text())["run_id"] == "run-4"
    third = run_export(rows3, root, dest, T3, segments_hash, "run-5")
    assert (third.status, third.adds, third.removes, third.total) == ("written", 1, 0, 3)
    manifest3 = json.loads((folder3 / "_manifest.json").read_text())
    assert manifest3["run_id"] == "run-5"
    assert_df_equality(
        read_kind(spark, folder3, "adds"),
        spark.createDataFrame([("hd", 9)], "email_sha256 string, clv_decile int"),
        ignore_nullable=True,
    )
    for entry in manifest3["files"]:
        assert entry["sha256"] == sha256_file(folder3 / entry["name"])
    assert sorted(p.name for p in folder3.iterdir() if not p.name.startswith(".")) == sorted(
        ["_manifest.json", *(e["name"] for e in manifest3["files"])]
    )

    state = tables.read(spark, root, tables.EXPORT_STATE).where("cdp_id IS NOT NULL").select("cdp_id", "export_id")
    expected_state = spark.createDataFrame(
        [(c, third.export_id) for c in ("a", "c", "d")], "cdp_id string, export_id string"
    )
    assert_df_equality(state, expected_state, ignore_row_order=True, ignore_nullable=True)
    audited = tables.read(spark, root, tables.AUDIT_LOG).where("action = 'export'").select("target")
    expected_audit = spark.createDataFrame([(f"ads/{r.export_id}",) for r in (first, second, third)], "target string")
    assert_df_equality(audited, expected_audit, ignore_row_order=True, ignore_nullable=True)

    with pytest.raises(export.ExportOutOfOrder, match="older than its last export"):
        run_export(rows3, root, dest, T1, "another-segments-hash", "run-6")


def test_destination_checks_name_the_destination_and_the_problem():
    segments = SegmentsConfig(segments=[SegmentDefinition(name="vip", condition="clv > 1")])
    config = DestinationsConfig(destinations=[ads_destination(segments=["vip", "vipp"], attributes=["clv_decil"])])
    with pytest.raises(ConfigError) as error:
        check_destinations(config, segments, ["cdp_id", "email", "clv_decile"], "destinations.yaml")
    assert str(error.value).splitlines() == [
        "destinations.yaml: destinations[ads].segments: unknown segment(s) ['vipp']",
        "destinations.yaml: destinations[ads].attributes: unknown column(s) ['clv_decil']; "
        "profile and score columns are ['cdp_id', 'clv_decile', 'email']",
    ]
    with pytest.raises(ValueError, match="not identifier columns"):
        ads_destination(attributes=["email_sha256"])


def test_shipped_destinations_export_shipped_segments_and_known_columns():
    destinations = load_destinations("conf/destinations.yaml")
    available = [
        "cdp_id", "first_name", "last_name", "email", "phone", "consent_email", "consent_sms", "consent_ads",
        "churn_probability", "p_alive", "expected_purchases", "clv", "clv_decile",
    ]  # fmt: skip
    check_destinations(destinations, load_segments("conf/segments.yaml"), available, "conf/destinations.yaml")
    assert {d.mode for d in destinations.destinations} == {"full", "delta"}
    assert any(d.hash_identifiers for d in destinations.destinations)


DESTINATION = {"name": "ads", "segments": ["s"], "identifiers": ["email"], "channel": "ads"}


@pytest.mark.parametrize(
    "path",
    [
        "../outside",
        "exports/../../silver",
        "/data/exports/../lakehouse",
        "s3a://bucket/exports/../lakehouse",
        "silver/exports",
        "ops",
        "_checkpoints/x",
        "./exports",
    ],
)
def test_a_destination_path_cannot_leave_its_tree_or_land_in_a_table_layer(path):
    with pytest.raises(ValueError, match="path"):
        Destination(**DESTINATION, path=path)


@pytest.mark.parametrize("path", ["exports/ads", "/data/exports/ads", "s3a://bucket/cdp/exports/ads"])
def test_ordinary_destination_paths_are_accepted(path):
    assert Destination(**DESTINATION, path=path).path == path


@pytest.mark.parametrize(
    "name",
    ["../../silver/customer_records", "adds-00000.csv/../../x", "_delta_log", "members-00000.csv.bak", None, 7],
)
def test_a_manifest_may_only_name_export_files_of_its_own_folder(name):
    with pytest.raises(exports.UnsafePath, match="refused"):
        exports.export_file("/lake/exports/ads/20260228-0123456789ab", name, "m.json")
    assert exports.export_file("/x/20260228-0123456789ab", "removes-00001.jsonl", "m.json").endswith(
        "/removes-00001.jsonl"
    )


@pytest.mark.parametrize(
    "folder", ["/lake/exports/ads/../../silver", "/lake/silver/customer_records", "/lake/exports/.."]
)
def test_an_export_folder_from_the_audit_log_must_be_an_export_folder(folder):
    with pytest.raises(exports.UnsafePath, match="refused"):
        exports.export_folder(folder)
    assert (
        exports.export_folder("s3a://b/exports/ads/20260228-0123456789ab")
        == "s3a://b/exports/ads/20260228-0123456789ab"
    )
