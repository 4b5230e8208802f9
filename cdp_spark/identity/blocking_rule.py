"""Blocking rules as SQL: ``l.a = r.a and <filter>`` parsed into equi-join keys and filters.

A rule reads record columns through the sides ``l.`` and ``r.``; pairs carry each record column twice, as
``<column>_l`` and ``<column>_r`` (see ``blocking.candidate_pairs``), and a rule is rewritten over those. Pure
text work: the settings are checked with it before any Spark job runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyspark.sql import Column
from pyspark.sql import functions as F

from cdp_spark.config import ConfigError

_SIDE_REF = re.compile(r"(?<![\w.`])([lrLR])\.(`(?:[^`]|``)+`|[A-Za-z_][A-Za-z0-9_]*)")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LOOSER_THAN_EQUALS = {"not", "or", "and", "is", "in", "like", "ilike", "rlike", "regexp", "between", "case"}


@dataclass(frozen=True)
class BlockingRule:
    """A parsed blocking rule: equi-join keys (expression over l., expression over r.) and other filters."""

    text: str
    keys: tuple[tuple[str, str], ...]
    filters: tuple[str, ...]

    @property
    def columns(self) -> list[str]:
        """Record columns the rule reads, in order of appearance."""
        return list(dict.fromkeys(col for part in _parts(self) for _, col in _references(part)))

    def join_keys(self) -> list[Column]:
        return [F.expr(to_pair_columns(left)) == F.expr(to_pair_columns(right)) for left, right in self.keys]

    def condition(self) -> str:
        """The whole rule as SQL over the pair columns (``<column>_l``, ``<column>_r``)."""
        return " AND ".join(
            [f"({to_pair_columns(a)}) = ({to_pair_columns(b)})" for a, b in self.keys]
            + [f"({to_pair_columns(f)})" for f in self.filters]
        )

    def mirrored(self) -> BlockingRule | None:
        """The rule with l and r swapped, or None when its keys are symmetric (``l.x = r.x``).

        Pairs are emitted once, with ``id_l < id_r``; an asymmetric key such as ``l.email = r.alt_email``
        must also be tried the other way round or pairs whose larger id holds the email are lost.
        Filters are taken to be symmetric (documented for users).
        """
        swapped = tuple((_swap_sides(b), _swap_sides(a)) for a, b in self.keys)
        if {_normal(k) for k in self.keys} == {_normal(k) for k in swapped}:
            return None
        return BlockingRule(self.text, swapped, tuple(_swap_sides(f) for f in self.filters))


def _parts(rule: BlockingRule) -> list[str]:
    return [side for key in rule.keys for side in key] + list(rule.filters)


def _normal(key: tuple[str, str]) -> tuple[str, str]:
    return tuple(" ".join(side.split()).lower() for side in key)


def _code_segments(text: str) -> list[tuple[bool, str]]:
    """Split SQL into (is_code, text) pieces; string literals ('..' or "..") are not code."""
    pieces, start, i, quote = [], 0, 0, None
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                pieces.append((False, text[start : i + 1]))
                start, quote = i + 1, None
        elif ch in "'\"":
            pieces.append((True, text[start:i]))
            start, quote = i, ch
        i += 1
    if quote:
        raise ConfigError(f"blocking rule {text!r}: unterminated string literal")
    pieces.append((True, text[start:]))
    return [p for p in pieces if p[1]]


def _map_code(text: str, fn) -> str:
    return "".join(fn(piece) if is_code else piece for is_code, piece in _code_segments(text))


def _references(text: str) -> list[tuple[str, str]]:
    """(side, column) of every ``l.col`` / ``r.col`` outside string literals."""
    refs = []
    for is_code, piece in _code_segments(text):
        if is_code:
            for match in _SIDE_REF.finditer(piece):
                name = match.group(2)
                if name.startswith("`"):
                    name = name[1:-1].replace("``", "`")
                refs.append((match.group(1).lower(), name))
    return refs


def to_pair_columns(text: str) -> str:
    """Rewrite ``l.x`` / ``r.x`` to the pair columns `` `x_l` `` / `` `x_r` ``."""

    def rewrite(piece: str) -> str:
        def one(match: re.Match) -> str:
            name = match.group(2)
            name = name[1:-1].replace("``", "`") if name.startswith("`") else name
            return "`" + f"{name}_{match.group(1).lower()}".replace("`", "``") + "`"

        return _SIDE_REF.sub(one, piece)

    return _map_code(text, rewrite)


def _swap_sides(text: str) -> str:
    return _map_code(
        text,
        lambda piece: _SIDE_REF.sub(lambda m: ("r" if m.group(1).lower() == "l" else "l") + "." + m.group(2), piece),
    )


def _scan_top_level(text: str) -> tuple[list[str], set[str], list[tuple[int, int]]]:
    """Conjuncts split at top-level AND (not the AND of BETWEEN), the words outside parentheses and
    quotes (lower case), and the positions (start, length) of top-level ``=`` / ``==`` operators."""
    conjuncts, equals, words = [], [], set()
    start, depth, i, quote, between = 0, 0, 0, None, False
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\" and quote != "`":
                i += 2
                continue
            if ch == quote:
                quote = None
            i += 1
            continue
        if ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"blocking rule {text!r}: unbalanced parentheses")
        elif depth == 0 and ch == "=":
            before, after = text[i - 1] if i else "", text[i + 1] if i + 1 < len(text) else ""
            if before not in "<>!=" and after != ">":
                equals.append((i, 2 if after == "=" else 1))
                i += 2 if after == "=" else 1
                continue
        elif (
            depth == 0
            and (ch.isalpha() or ch == "_")
            and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] in "_.`"))
        ):
            word = _WORD.match(text, i).group(0)
            lowered = word.lower()
            words.add(lowered)
            if lowered == "between":
                between = True
            elif lowered == "and":
                if between:
                    between = False
                else:
                    conjuncts.append(text[start:i])
                    start = i + len(word)
            i += len(word)
            continue
        i += 1
    if quote or depth:
        raise ConfigError(f"blocking rule {text!r}: unbalanced quotes or parentheses")
    conjuncts.append(text[start:])
    return [c.strip() for c in conjuncts], words, equals


def _strip_parentheses(text: str) -> str:
    while text.startswith("(") and text.endswith(")"):
        depth = 0
        for i, ch in enumerate(text):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(text) - 1:
                return text  # "(a) = (b)": the first parenthesis closes before the end
        text = text[1:-1].strip()
    return text


def parse_blocking_rule(text: str) -> BlockingRule:
    """Parse ``l.a = r.a and <filter> ...`` into equi-join keys and filters; a ConfigError if no key."""
    if not text.strip():
        raise ConfigError("blocking rule is empty")
    conjuncts, words, _ = _scan_top_level(text)
    if "or" in words:
        # AND binds tighter than OR: with a top-level OR no conjunct constrains every pair
        conjuncts = [text.strip()]
    keys, filters = [], []
    for conjunct in conjuncts:
        if not conjunct:
            raise ConfigError(f"blocking rule {text!r}: an AND with nothing on one side")
        conjunct = _strip_parentheses(conjunct)
        _, words, equals = _scan_top_level(conjunct)
        key = None
        # an operator binding looser than = (NOT, OR, IS, IN, LIKE ...) would change what the = compares
        if len(equals) == 1 and not words & _LOOSER_THAN_EQUALS:
            at, width = equals[0]
            left, right = conjunct[:at].strip(), conjunct[at + width :].strip()
            sides_left = {side for side, _ in _references(left)}
            sides_right = {side for side, _ in _references(right)}
            if sides_left == {"l"} and sides_right == {"r"}:
                key = (left, right)
            elif sides_left == {"r"} and sides_right == {"l"}:
                key = (right, left)
        if key:
            keys.append(key)
        else:
            filters.append(conjunct)
    if not keys:
        raise ConfigError(
            f"blocking rule {text!r} has no equality term like 'l.x = r.x' joined by AND: it would compare "
            "every record with every other (a cross join). Add an equality on a column both sides share."
        )
    return BlockingRule(text, tuple(keys), tuple(filters))
