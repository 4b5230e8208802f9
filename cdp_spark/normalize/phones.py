"""Phone numbers to E.164 (``+14155552671``) with Google's libphonenumber metadata, in an Arrow (pandas) UDF."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import phonenumbers
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import StringType

from cdp_spark.normalize.rules import PhoneRules

# Longer input is not one phone number (libphonenumber itself gives up at 250 characters).
_MAX_INPUT_LENGTH = 64
_SUPPORTED_REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)


def _parse_valid(text: str, region: str) -> phonenumbers.PhoneNumber | None:
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


def to_e164(text: str | None, region: str) -> str | None:
    """One number in E.164, or None if it is missing or not a valid number; extensions are dropped."""
    if text is None:
        return None
    text = text.strip()
    if not text or len(text) > _MAX_INPUT_LENGTH or not any(ch.isdigit() for ch in text):
        return None
    number = _parse_valid(text, region)
    # "00" is the international prefix of most of the world (ITU-T E.164), but not of the default
    # region's dialling plan when that is, e.g., the US (011): read "0044 ..." as "+44 ..." too.
    if number is None and text.startswith("00"):
        number = _parse_valid("+" + text[2:], region)
    if number is None:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@pandas_udf(StringType())
def _e164_udf(phones: pd.Series, regions: pd.Series) -> pd.Series:
    # Households share numbers and sources repeat them: parse each distinct (number, region) once per batch.
    seen: dict[tuple[str, str], str | None] = {}
    out: list[str | None] = []
    for text, region in zip(phones, regions, strict=True):
        if text is None or text != text:  # null fast path (None or NaN)
            out.append(None)
            continue
        key = (text, region)
        if key not in seen:
            seen[key] = to_e164(text, region)
        out.append(seen[key])
    return pd.Series(out, dtype=object)


def phone_e164(phone: Column, rules: PhoneRules, region: Column | None = None) -> Column:
    """E.164 string of ``phone`` (null if missing or invalid); ``region`` (ISO alpha-2 per row) overrides the default."""
    default = F.lit(rules.default_region)
    row_region = default if region is None else F.upper(F.trim(region))
    row_region = F.when(row_region.isin(_SUPPORTED_REGIONS), row_region).otherwise(default)
    # Blank and digit-free values never reach Python: they cross the Arrow boundary as nulls.
    worth_parsing = F.when(phone.rlike(r"\d"), phone)
    return _e164_udf(worth_parsing, row_region)


def standardize_phones(
    df: DataFrame, rules: PhoneRules, columns: Sequence[str] = ("phone",), region_column: str | None = None
) -> DataFrame:
    """For each phone column ``c`` add ``c_e164``; ``region_column`` holds ISO alpha-2 countries (optional)."""
    region = None if region_column is None else F.col(region_column)
    return df.withColumns({f"{c}_e164": phone_e164(F.col(c), rules, region) for c in columns})
