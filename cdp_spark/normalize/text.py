"""Text helpers every standardizer shares: whitespace, blanks, Unicode NFKC and accent folding.

Spark has no Unicode normalization built in. Two ways were measured at 10^6 names on local[2]: a
``translate`` accent map (built-in, almost free, but Latin-only and no NFKC: fullwidth letters,
ligatures and decomposed accents stay as they are) and a pandas UDF over ``unicodedata`` (exact NFKC
and NFKD for every script, about 1.7 s per column when every row goes through Python). We take the
exact one and make it cheap: only strings with a non-ASCII character are sent to Python (ASCII text is
already NFKC and has no accents), the others reach the UDF as nulls, which cost next to nothing.
The JVM's own normalizer (ICU, through ``reflect``) was ruled out: ``reflect`` is non-deterministic to
Spark, so a key built with it could not be grouped or aggregated on.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import StringType

# Java regex: ASCII whitespace, every Unicode space separator (no-break space ...) and the zero-width
# characters that arrive with copy-pasted text. Spark's trim() strips plain spaces only.
WHITESPACE = r"[\s\p{Z}\x{200B}-\x{200D}\x{2060}\x{FEFF}]"
_NON_ASCII = r"[^\x00-\x7F]"

# Letters NFKD does not take apart (they are letters of their own, not letter + accent).
_SPECIAL_LETTERS = str.maketrans(
    {
        "ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O",
        "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "TH",
        "ı": "i", "ħ": "h", "Ħ": "H", "ŧ": "t", "Ŧ": "T",
    }
)  # fmt: skip
# Accents are dropped from Latin letters only: for other scripts (Cyrillic й, Devanagari vowel signs)
# the "mark" is part of the letter and dropping it would merge different names.
_LATIN_MARKS = re.compile(r"(?<=[A-Za-z\u00C0-\u024F\u1E00-\u1EFF])[\u0300-\u036F]+")


def let(value: Column, body: Callable[[Column], Column]) -> Column:
    """``body(value)`` with ``value`` computed once per row, however often ``body`` reads it.

    Spark has no let: a column used twice in an expression is computed twice, and common-subexpression
    elimination skips what sits inside conditionals (``when``, ``nullif``, ``coalesce``), so nested
    standardizers redo their inner regexes many times per row (an email 20-60 times: 4x slower measured).
    Binding the value as the lambda variable of a one-element array's ``transform`` evaluates it once.
    """
    return F.element_at(F.transform(F.array(value), body), 1)


def collapse_whitespace(text: Column) -> Column:
    """Every run of whitespace (Unicode spaces included) becomes one space; leading/trailing ones go."""
    return F.trim(F.regexp_replace(text, WHITESPACE + "+", " "))


def blank_to_null(text: Column) -> Column:
    return F.nullif(text, F.lit(""))


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.translate(_SPECIAL_LETTERS))
    return unicodedata.normalize("NFC", _LATIN_MARKS.sub("", decomposed))


@pandas_udf(StringType())
def _nfkc_udf(text: pd.Series) -> pd.Series:
    return text.map(_nfkc, na_action="ignore")


@pandas_udf(StringType())
def _fold_udf(text: pd.Series) -> pd.Series:
    return text.map(_fold, na_action="ignore")


def _non_ascii_only(udf, text: Column) -> Column:
    # ASCII strings are their own NFKC and fold; they cross to Python as nulls and keep their value.
    return F.coalesce(udf(F.when(text.rlike(_NON_ASCII), text)), text)


def nfkc(text: Column) -> Column:
    """Unicode NFKC: fullwidth letters, ligatures (ﬁ) and decomposed accents become their usual form."""
    return _non_ascii_only(_nfkc_udf, text)


def fold_accents(text: Column) -> Column:
    """NFKC plus accents dropped from Latin letters and ß, æ, ø, ł ... spelt in ASCII: José -> Jose."""
    return _non_ascii_only(_fold_udf, text)
