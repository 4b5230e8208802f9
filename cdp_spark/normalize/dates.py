"""Dates and timestamps to ``date`` and UTC ``timestamp``, trying the configured layouts in order."""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from cdp_spark.normalize.rules import DateRules
from cdp_spark.normalize.text import blank_to_null, collapse_whitespace, let

# ISO 8601 with an explicit zone: "2026-01-02T10:00:00Z", "...+02:00", "...-0500".
_HAS_ZONE = r"(?i)(z|[+-]\d{2}:?\d{2})$"
_ISO_DATE_TIME = r"^\d{4}-\d{1,2}-\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?"


def _in_range(value: Column, rules: DateRules) -> Column:
    return let(value, lambda v: F.when((F.year(v) >= rules.min_year) & (F.year(v) <= rules.max_year), v))


def _cleaned(text: Column) -> Column:
    return blank_to_null(collapse_whitespace(text.cast("string")))


def parse_date(text: Column, rules: DateRules) -> Column:
    """A ``date`` from the first layout of ``rules.date_formats`` that parses; an ISO timestamp keeps its day.

    Null for blanks, unparseable text, impossible days (2026-02-30) and years outside the configured range.
    """

    def parse(cleaned: Column) -> Column:
        attempts = [F.try_to_timestamp(cleaned, F.lit(fmt)) for fmt in rules.date_formats]
        iso_day = F.when(
            cleaned.rlike(_ISO_DATE_TIME),
            F.try_to_timestamp(F.substring_index(F.regexp_replace(cleaned, "T", " "), " ", 1), F.lit("yyyy-M-d")),
        )
        return F.coalesce(*attempts, iso_day).cast("date")

    # The cleaned text and the parsed value are each bound once (see ``let``): every layout reads them.
    return _in_range(let(_cleaned(text), parse), rules)


def parse_timestamp(text: Column, rules: DateRules) -> Column:
    """A UTC ``timestamp``: ISO 8601 (with a zone, or naive in ``rules.naive_timezone``) or a configured layout.

    Already-typed timestamps pass through (the session time zone is UTC). Null for anything unparseable
    or outside the configured years.
    """

    def parse(cleaned: Column) -> Column:
        zoned = cleaned.rlike(_HAS_ZONE)
        iso = F.when(cleaned.rlike(_ISO_DATE_TIME), F.try_to_timestamp(cleaned))
        layouts = [F.try_to_timestamp(cleaned, F.lit(fmt)) for fmt in rules.timestamp_formats]
        naive = F.coalesce(iso, *layouts) if layouts else iso
        if rules.naive_timezone != "UTC":
            naive = F.to_utc_timestamp(naive, rules.naive_timezone)
        return F.when(zoned, iso).otherwise(naive)

    return _in_range(let(_cleaned(text), parse), rules)
