"""Postal addresses: case, whitespace, punctuation, common abbreviations, postcode formats, ISO countries."""

from __future__ import annotations

from itertools import chain

from pyspark.sql import Column
from pyspark.sql import functions as F

from cdp_spark.normalize.rules import AddressRules
from cdp_spark.normalize.text import blank_to_null, collapse_whitespace, fold_accents, let


def _literal_map(mapping: dict[str, str]) -> Column:
    return F.create_map(*[F.lit(x) for x in chain.from_iterable(sorted(mapping.items()))])


def normalize_address(address: Column, rules: AddressRules) -> Column:
    """``"12  Main Street, Apt. #4"`` -> ``"12 main st apt 4"``: lowercase ASCII words, USPS abbreviations.

    Word by word with built-ins (split, transform, map lookup): no Python per row.
    """
    text = F.lower(fold_accents(address))
    # Punctuation separates words ("St.,Apt#4"), except the apostrophe inside a word (o'connell).
    text = F.regexp_replace(text, r"[^\p{L}\p{N}' ]+", " ")
    text = F.regexp_replace(text, r"'", "")
    text = collapse_whitespace(text)
    words = F.split(text, " ")
    if rules.abbreviations:
        table = _literal_map(rules.abbreviations)
        words = F.transform(words, lambda w: F.coalesce(F.element_at(table, w), w))
    return blank_to_null(F.array_join(words, " "))


def normalize_city(city: Column) -> Column:
    """Lowercase ASCII words, punctuation as spaces: ``" St. Louis "`` -> ``"st louis"``."""
    text = F.lower(fold_accents(city))
    return blank_to_null(collapse_whitespace(F.regexp_replace(text, r"[^\p{L}\p{N} ]+", " ")))


def normalize_country(country: Column, rules: AddressRules) -> Column:
    """ISO 3166 alpha-2: ``"U.S.A."`` -> ``US``, ``"uk"`` -> ``GB``, ``"de"`` -> ``DE``; unknown -> default or null."""

    def resolve(key: Column) -> Column:
        aliased = F.element_at(_literal_map(rules.country_aliases), key) if rules.country_aliases else F.lit(None)
        two_letters = F.when(key.rlike(r"^[a-z]{2}$"), F.upper(key))
        resolved = F.coalesce(aliased, two_letters)
        if rules.default_country:
            # Only a missing country becomes the default; a value we cannot read stays null (not guessed).
            resolved = F.when(blank_to_null(key).isNull(), F.lit(rules.default_country)).otherwise(resolved)
        return resolved.cast("string")

    # The cleaned key is bound once (see ``let``): the lookups below read it four times.
    return let(collapse_whitespace(F.lower(F.regexp_replace(fold_accents(country), r"\.", ""))), resolve)


def normalize_postcode(postcode: Column, country: Column, rules: AddressRules) -> Column:
    """Postcode in its country's format: US ``02134`` / ``02134-1234``, GB ``SW1A 1AA``, others uppercase, no spaces.

    ``country`` is an ISO alpha-2 column (normalized); a null country is read as US when the value looks
    like a ZIP. Values that do not fit their country's pattern become null.
    """
    # raw, compact and digits are each bound once (see ``let``): the country formats read them a dozen times.
    return let(
        F.upper(collapse_whitespace(postcode)),
        lambda raw: let(
            F.regexp_replace(raw, r"[\s-]", ""),
            lambda compact: let(
                F.regexp_replace(raw, r"[^0-9]", ""),
                lambda digits: _postcode(raw, compact, digits, country, rules),
            ),
        ),
    )


def _postcode(raw: Column, compact: Column, digits: Column, country: Column, rules: AddressRules) -> Column:
    us = F.coalesce(country, F.lit("US")) == "US"
    zip_digits = digits
    if rules.pad_us_zip:
        # Leading zeros lost in a spreadsheet: 2134 -> 02134 (New England ZIPs start with 0).
        zip_digits = F.when(raw.rlike(r"^\d{3,4}$"), F.lpad(digits, 5, "0")).otherwise(digits)
    us_code = F.when(raw.rlike(r"^\d{3,5}$") & (F.length(zip_digits) == 5), zip_digits).when(
        raw.rlike(r"^\d{5}[\s-]?\d{4}$"), F.concat(F.substring(digits, 1, 5), F.lit("-"), F.substring(digits, 6, 4))
    )
    gb_code = F.when(
        compact.rlike(r"^[A-Z]{1,2}[0-9][A-Z0-9]?[0-9][A-Z]{2}$"),
        F.concat(F.substring(compact, 1, F.length(compact) - 3), F.lit(" "), F.substring(compact, -3, 3)),
    )
    other = F.when(compact.rlike(r"^[A-Z0-9]{2,10}$"), compact)
    return (
        F.when(blank_to_null(raw).isNull(), F.lit(None))
        .when(us & (country.isNotNull() | raw.rlike(r"^\d")), us_code)
        .when(country == "GB", gb_code)
        .otherwise(other)
    ).cast("string")
