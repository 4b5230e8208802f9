"""Email addresses: cleaned, checked for syntax and rewritten to the mailbox they reach (Gmail dots and +tags)."""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cdp_spark.normalize.rules import EmailRules
from cdp_spark.normalize.text import WHITESPACE, blank_to_null, let

# A pragmatic subset of RFC 5322, the one mail providers accept in practice: a dot-atom local part
# (no leading, trailing or doubled dots, no quoted strings) and a domain of dot-separated labels
# that neither start nor end with a hyphen, ending in an alphabetic TLD or a punycode one (xn--...).
_LOCAL = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_DOMAIN = r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})"
EMAIL_PATTERN = rf"^{_LOCAL}@{_DOMAIN}$"
_MAX_LENGTH = 254  # RFC 5321 path limit
_MAX_LOCAL_LENGTH = 64


def clean_email(email: Column) -> Column:
    """Lowercase with all whitespace removed (it is never part of an address we accept); blank -> null."""
    # Spaces around the @ or inside a copy-pasted address are entry noise, not a different address.
    return blank_to_null(F.lower(F.regexp_replace(email, WHITESPACE + "+", "")))


def _is_syntactically_valid(email: Column) -> Column:
    local = F.substring_index(email, "@", 1)
    return email.rlike(EMAIL_PATTERN) & (F.length(email) <= _MAX_LENGTH) & (F.length(local) <= _MAX_LOCAL_LENGTH)


def _canonical(email: Column, rules: EmailRules) -> Column:
    """The address after the provider rules: googlemail.com -> gmail.com, dots and +tags dropped."""
    if not rules.providers:
        return email
    # The local part and the domain are each bound once (see ``let``): every provider rule reads them.
    return let(
        F.substring_index(email, "@", 1),
        lambda local: let(F.substring_index(email, "@", -1), lambda domain: _rewritten(local, domain, rules)),
    )


def _rewritten(local: Column, domain: Column, rules: EmailRules) -> Column:
    canonical_local = canonical_domain = None
    for rule in rules.providers:
        rewritten = local
        if rule.remove_plus_tag:
            # Everything from the first "+" (the address has no whitespace left, so no line breaks either).
            rewritten = F.substring_index(rewritten, "+", 1)
        if rule.remove_dots:
            rewritten = F.replace(rewritten, F.lit("."), F.lit(""))
        served = domain.isin(rule.domains)
        if canonical_local is None:
            canonical_local = F.when(served, rewritten)
            canonical_domain = F.when(served, F.lit(rule.canonical_domain))
        else:
            canonical_local = canonical_local.when(served, rewritten)
            canonical_domain = canonical_domain.when(served, F.lit(rule.canonical_domain))
    return F.concat(canonical_local.otherwise(local), F.lit("@"), canonical_domain.otherwise(domain))


def _both_valid(cleaned: Column, canonical: Column) -> Column:
    """The cleaned and the canonical address are both well formed; one check when the rules changed nothing."""
    return F.when(canonical == cleaned, _is_syntactically_valid(cleaned)).otherwise(
        _is_syntactically_valid(cleaned) & _is_syntactically_valid(canonical)
    )


def email_valid(email: Column, rules: EmailRules) -> Column:
    """True if the address is syntactically valid before and after the provider rules; null if missing/blank."""
    # "+news@gmail.com" is well formed but its Gmail mailbox name is empty.
    return let(
        clean_email(email),
        lambda cleaned: F.when(
            cleaned.isNotNull(), let(_canonical(cleaned, rules), lambda canonical: _both_valid(cleaned, canonical))
        ),
    )


def normalize_email(email: Column, rules: EmailRules) -> Column:
    """The canonical address (lowercase, provider rules applied) or null if missing or invalid."""
    # Each intermediate is bound once (see ``let``): the canonical form is read four times below.
    return let(
        clean_email(email),
        lambda cleaned: let(
            _canonical(cleaned, rules),
            lambda canonical: F.when(_both_valid(cleaned, canonical), canonical),
        ),
    )


def standardize_emails(df: DataFrame, rules: EmailRules, columns: Sequence[str] = ("email",)) -> DataFrame:
    """For each email column ``c`` add ``c_norm`` (string, null if invalid or blank) and ``c_valid`` (boolean)."""
    return df.withColumns(
        {
            **{f"{c}_norm": normalize_email(F.col(c), rules) for c in columns},
            **{f"{c}_valid": email_valid(F.col(c), rules) for c in columns},
        }
    )
