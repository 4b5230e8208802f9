"""Identifiers as ad platforms' customer-match uploads want them: normalized, then SHA-256 in lowercase hex.

Normalization (Google Ads / Meta customer match): an email is trimmed and lowercased; a phone is E.164,
``+`` then digits only. Silver identifiers are already standardized (provider rules, E.164), so this
only guards against stray whitespace or formatting. The erasure plan and the suppression list hash with
the same functions, so a suppressed hash matches an exported one exactly.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp_spark import tables
from cdp_spark.lakefiles import LakeFiles

log = logging.getLogger("cdp_spark")

HASHED_KINDS = ("email", "phone")


def normalized_identifier(kind: str, value: Column) -> Column:
    """The value as it is hashed: ``email`` trimmed + lowercased, ``phone`` '+' and digits, others trimmed."""
    text = F.trim(value.cast("string"))
    if kind == "email":
        normalized = F.lower(text)
    elif kind == "phone":
        digits = F.regexp_replace(text, r"[^0-9]", "")
        normalized = F.when(digits != "", F.concat(F.lit("+"), digits))
    else:
        normalized = text
    return F.nullif(normalized, F.lit(""))


def identifier_hash(kind: str, value: Column) -> Column:
    """SHA-256 (lowercase hex) of the normalized value; null stays null."""
    return F.sha2(normalized_identifier(kind, value), 256)


# --------------------------------------------------------------------------------------------
# Keyed hashes: what the platform keeps about erased people
# --------------------------------------------------------------------------------------------

KEY_COLUMNS = ("_hk_inner", "_hk_outer")
_BLOCK = 64  # SHA-256 block size, bytes
MIN_KEY_BYTES = 16
KEY_FILE = "_keys/hash_key"


class HashKey:
    """The secret of the keyed hashes (HMAC-SHA-256) in the erasure plan and the suppression list.

    A plain SHA-256 of a phone number is reversed by trying every number; an HMAC is not without the
    key. The keyed hash of an identifier is the HMAC of its plain SHA-256 (hex, as exports carry it), so
    an export's ``email_sha256`` column is matched without its email, and a list hashed plainly before
    keys existed is converted without the values. ``key_id`` names the key in the rows it hashed, so a
    lakehouse read with another key fails loudly instead of silently matching nothing.
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_KEY_BYTES:
            raise ValueError(f"a hash key needs at least {MIN_KEY_BYTES} bytes, got {len(secret)}")
        block = hashlib.sha256(secret).digest() if len(secret) > _BLOCK else secret
        block = block.ljust(_BLOCK, b"\0")
        self._secret = secret
        self._inner = bytes(b ^ 0x36 for b in block)
        self._outer = bytes(b ^ 0x5C for b in block)
        self.key_id = "hk-" + self.digest("cdp-spark key id")[:12]

    def __repr__(self) -> str:  # never the secret
        return f"HashKey({self.key_id})"

    def digest(self, message: str) -> str:
        """HMAC-SHA-256 of ``message`` (UTF-8) in lowercase hex: the driver-side twin of :func:`with_keyed`."""
        return hmac.new(self._secret, message.encode("utf-8"), hashlib.sha256).hexdigest()

    def frame(self, spark: SparkSession) -> DataFrame:
        """One row holding the key's HMAC pads: joined to rows, so the key is data, never part of a plan."""
        return tables.rows_frame(
            spark, [(bytes(self._inner), bytes(self._outer))], f"{KEY_COLUMNS[0]} binary, {KEY_COLUMNS[1]} binary"
        )


def _hmac(message: Column) -> Column:
    inner = F.unhex(F.sha2(F.concat(F.col(KEY_COLUMNS[0]), F.encode(message, "UTF-8")), 256))
    return F.sha2(F.concat(F.col(KEY_COLUMNS[1]), inner), 256)


def with_keyed(df: DataFrame, key: HashKey, columns: dict[str, Column]) -> DataFrame:
    """Add each ``name: plain_sha256_hex`` of ``columns`` as its keyed hash (null stays null).

    The key's pads come from a one-row broadcast frame, not literals: a literal would be printed in every
    query plan, the Spark UI and the event log. Out: ``df``'s rows and columns plus ``columns``.
    """
    pads = F.broadcast(key.frame(df.sparkSession))
    return df.crossJoin(pads).withColumns({n: _hmac(c) for n, c in columns.items()}).drop(*KEY_COLUMNS)


def keyed_identifier(kind: str, value: Column, hashed: bool = False) -> Column:
    """The message keyed for an identifier: its plain SHA-256 (``hashed``: the value already is one)."""
    return F.lower(F.trim(value.cast("string"))) if hashed else identifier_hash(kind, value)


def load_hash_key(spark: SparkSession, root: str, configured: str | None) -> HashKey:
    """``privacy.hash_key`` (a secret: ``${env:NAME}``), else the key generated once in ``<root>/_keys``.

    The generated key makes the sample lakehouse work out of the box; it lies beside the data it protects,
    so production configures its own from a secret store (a warning says so on every run that uses it).
    """
    if configured:
        return HashKey(configured.encode("utf-8"))
    path = f"{root.rstrip('/')}/{KEY_FILE}"
    files = LakeFiles(spark)
    if not files.exists(path):
        files.write_private(path, secrets.token_urlsafe(32) + "\n")
        log.info("generated the hash key of this lakehouse: %s", path)
    log.warning(
        "privacy.hash_key is not set: using the key generated in %s. Set privacy.hash_key: ${env:NAME} from "
        "your secret store in production; whoever reads that file can test guesses against erased people's hashes",
        path,
    )
    return HashKey(files.read_text(path).strip().encode("utf-8"))
