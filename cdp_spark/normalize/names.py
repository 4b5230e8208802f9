"""Person names: Unicode NFKC, whitespace, titles and suffixes removed, capitalised per word."""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from cdp_spark.normalize.rules import NameRules
from cdp_spark.normalize.text import blank_to_null, collapse_whitespace, let, nfkc


def _words_pattern(words: list[str]) -> str:
    # "phd" also matches "Ph.D." and "P.h.D": an optional dot after every letter.
    return "|".join(r"\.?".join(word) + r"\.?" for word in sorted(words, key=len, reverse=True))


def normalize_name(name: Column, rules: NameRules) -> Column:
    """``"  dr.  JOSÉ  garcía-lópez, Jr. "`` -> ``"José García-López"``; blank or only a title -> null.

    Titles are removed at the start (repeatedly: "Prof. Dr."), suffixes at the end (after an optional
    comma). Each word is capitalised after spaces, hyphens and apostrophes (O'Brien, Smith-Jones).
    """
    text = collapse_whitespace(nfkc(name))
    if rules.titles:
        text = F.regexp_replace(text, rf"(?i)^(?:(?:{_words_pattern(rules.titles)})(?:\s+|$))+", "")
    if rules.suffixes:
        text = F.regexp_replace(text, rf"(?i)(?:,?\s*(?:{_words_pattern(rules.suffixes)}))+$", "")
    # Stray punctuation left at the ends by the removals or by data entry ("Smith,").
    text = F.regexp_replace(text, r"^[\s,.;]+|[\s,.;]+$", "")
    # initcap() only capitalises after spaces; lower first, then capitalise after - and ' as well.
    lowered = F.lower(text)
    capitalised = F.initcap(lowered)
    for separator in ("-", "'"):
        capitalised = F.array_join(
            F.transform(
                F.split(capitalised, separator),
                lambda part: F.concat(F.upper(F.substring(part, 1, 1)), F.substring(part, 2, 1 << 20)),
            ),
            separator,
        )
    return blank_to_null(capitalised)


def split_full_name(name: Column) -> Column:
    """A normalized full name (see ``normalize_name``) as ``struct<first, last>``: the last word is the last
    name, the words before it the first name. "Mary Ann Smith" -> ("Mary Ann", "Smith"); one word is a first
    name.

    One struct column, so a caller binds it once (``withColumn``) and reads both fields. ``name`` should be a
    column, not the ``normalize_name`` expression itself: bound by ``let`` below, a Python UDF would sit
    inside a higher-order function, which Spark cannot evaluate once another UDF reads the result.
    """
    # The words are bound once (see ``let``): the split reads them several times.
    return let(
        F.split(name, " "),
        lambda words: F.struct(
            F.when(F.size(words) > 1, F.array_join(F.slice(words, 1, F.size(words) - 1), " "))
            .otherwise(name)
            .alias("first"),
            F.when(F.size(words) > 1, F.element_at(words, -1)).alias("last"),
        ),
    )
