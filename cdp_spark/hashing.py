"""Identifiers as ad platforms' customer-match uploads want them: normalized, then SHA-256 in lowercase hex.

Normalization (Google Ads / Meta customer match): an email is trimmed and lowercased; a phone is E.164,
``+`` then digits only. Silver identifiers are already standardized (provider rules, E.164), so this
only guards against stray whitespace or formatting. The erasure plan and the suppression list hash with
the same functions, so a suppressed hash matches an exported one exactly.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

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
