"""Keyed hashes of erased people's identifiers: HMAC-SHA-256, the key kept out of plans, key ids, old plain lists."""

from __future__ import annotations

import hashlib
import hmac
import stat
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from cdp_spark import tables
from cdp_spark.config import ConfigError, load_config
from cdp_spark.hashing import HashKey, keyed_identifier, load_hash_key, with_keyed
from cdp_spark.privacy import erase as erase_module
from cdp_spark.suppression import read_suppression

SECRET = "test-hash-key-0123456789"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def hmac_hex(secret: str | bytes, message: str) -> str:
    secret = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def test_keyed_hash_is_the_hmac_of_the_plain_hash_and_the_key_never_appears_in_the_query_plan(spark):
    long_secret = b"k" * 100  # longer than a SHA-256 block: HMAC hashes the key first
    rows = spark.createDataFrame(
        [("Jane.Doe@Example.com ", "+1 (415) 555-2671", sha("jane.doe@example.com")), (None, None, None)],
        "email string, phone string, email_sha256 string",
    )
    for secret in (SECRET.encode(), long_secret):
        key = HashKey(secret)
        out = with_keyed(
            rows,
            key,
            {
                "email_k": keyed_identifier("email", F.col("email")),
                "phone_k": keyed_identifier("phone", F.col("phone")),
                "exported_k": keyed_identifier("email", F.col("email_sha256"), hashed=True),
            },
        )
        assert out.columns == [*rows.columns, "email_k", "phone_k", "exported_k"]
        got = [tuple(r) for r in out.select("email_k", "phone_k", "exported_k").collect()]
        jane = hmac_hex(secret, sha("jane.doe@example.com"))
        assert got == [(jane, hmac_hex(secret, sha("+14155552671")), jane), (None, None, None)]
        # Neither the key nor its pads are literals of the plan (printed in the Spark UI and event logs).
        plans = out._jdf.queryExecution().toString().lower()
        inner = bytes(b ^ 0x36 for b in (hashlib.sha256(secret).digest() if len(secret) > 64 else secret)).hex()
        assert secret.decode() not in plans and inner[:32] not in plans
        assert secret.decode() not in repr(key)
    assert HashKey(SECRET.encode()).key_id == "hk-" + hmac_hex(SECRET, "cdp-spark key id")[:12]
    with pytest.raises(ValueError, match="at least 16 bytes"):
        HashKey(b"short")


def test_the_hash_key_comes_from_config_else_is_generated_once_and_readable_by_its_owner_only(spark, tmp_path):
    root = str(tmp_path / "lakehouse")
    generated = load_hash_key(spark, root, None)
    path = Path(root) / "_keys" / "hash_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_hash_key(spark, root, None).key_id == generated.key_id  # the same key on every run
    assert load_hash_key(spark, root, SECRET).key_id == HashKey(SECRET.encode()).key_id != generated.key_id


def test_a_hash_key_shorter_than_16_characters_is_a_config_error_that_does_not_show_it(tmp_path, monkeypatch):
    (tmp_path / "base.yaml").write_text("privacy:\n  hash_key: ${env:CDP_TEST_HASH_KEY}\n")
    monkeypatch.setenv("CDP_TEST_HASH_KEY", "tooShort!")
    with pytest.raises(ConfigError, match=r"privacy\.hash_key: .*at least 16") as err:
        load_config(tmp_path)
    assert "tooShort!" not in str(err.value)
    monkeypatch.setenv("CDP_TEST_HASH_KEY", SECRET)
    assert load_config(tmp_path).privacy.hash_key == SECRET


def test_plain_hashes_from_before_keys_are_keyed_and_a_list_made_with_another_key_is_refused(spark, tmp_path):
    root = str(tmp_path / "lakehouse")
    # A suppression list written before keyed hashes: plain SHA-256, no key_id column.
    legacy = spark.createDataFrame(
        [("email", sha("jane.doe@example.com"), "cdp-1"), ("phone", sha("+14155552671"), "cdp-1")],
        "kind string, value_hash string, cdp_id string",
    )
    tables.overwrite(legacy, root, tables.ERASURE_SUPPRESSION)
    key = HashKey(SECRET.encode())
    expected = spark.createDataFrame(
        [("email", hmac_hex(SECRET, sha("jane.doe@example.com"))), ("phone", hmac_hex(SECRET, sha("+14155552671")))],
        "kind string, value_hash string",
    )
    # Read on the fly by standardize and activation ...
    assert_df_equality(read_suppression(spark, root, SECRET).listed, expected, ignore_row_order=True)
    # ... and rewritten in place by the next erasure, which owns the list.
    erase_module._key_bookkeeping(spark, root, tables.ERASURE_SUPPRESSION, key)
    stored = tables.read(spark, root, tables.ERASURE_SUPPRESSION)
    assert stored.columns == ["kind", "value_hash", "cdp_id", "key_id"]
    assert_df_equality(stored.select("kind", "value_hash"), expected, ignore_row_order=True)
    assert {r["key_id"] for r in stored.collect()} == {key.key_id}

    other = "another-key-0123456789"
    with pytest.raises(ConfigError, match=rf"silver.erasure_suppression holds hashes made with hash key {key.key_id}"):
        read_suppression(spark, root, other)
    with pytest.raises(ConfigError, match=r"privacy.hash_key is hk-"):
        erase_module._key_bookkeeping(spark, root, tables.ERASURE_SUPPRESSION, HashKey(other.encode()))
