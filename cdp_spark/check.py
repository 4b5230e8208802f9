"""`cdp-spark check`: every declarative config file loaded and cross-checked in seconds, without Spark.

Each stage validates its own file when it runs; this finds the same mistakes, and the references between
files, before any stage runs: a destination naming a segment that does not exist, a segment condition or an
expectation naming a column its table lacks, a source mapping a column onto a silver contract that has no such
column, identity, survivorship or churn settings naming columns that silver or gold never holds.

The columns come from where they are declared: the silver contracts (``silver.SILVER``),
``gold.customer_profile`` as ``gold.profiles`` selects it (with the attributes of conf/profiles.yaml), the
features (``features.FEATURES``) and the scores (``ml.scoring.SCORE_COLUMNS``).

SQL conditions (segments, expectations, a fact's ``record_id``) are read by :func:`sql_columns`, a tokenizer,
not Spark's parser: it finds the unqualified names a condition reads and checks that quotes and parentheses
balance. It does not check syntax, types or function names; a column named like an SQL keyword or type
(``date``, ``user``) is only checked when backquoted; struct fields and map keys are not checked.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TypeVar

from cdp_spark import tables
from cdp_spark.activation.config import DestinationsConfig, check_destinations, load_destinations
from cdp_spark.config import CdpConfig, ConfigError
from cdp_spark.features import FEATURE_NAMES
from cdp_spark.gold.profiles import profile_columns
from cdp_spark.gold.survivorship import ProfilesConfig, load_profiles, record_columns
from cdp_spark.identity.blocking_rule import parse_blocking_rule
from cdp_spark.identity.rules import IdentityConfig, load_identity
from cdp_spark.ml.config import ModelsConfig, load_models
from cdp_spark.ml.scoring import SCORE_COLUMNS
from cdp_spark.segments.config import SegmentsConfig, load_segments
from cdp_spark.silver import SILVER, check_target
from cdp_spark.sources import SourcesConfig, load_sources
from cdp_spark.standardize.expectations import ExpectationsConfig, load_expectations

M = TypeVar("M")

RECORDS = tables.CUSTOMER_RECORDS
# Columns standardize's frames carry besides the contract when expectations and a fact's record_id are evaluated.
_STANDARDIZE_COLUMNS = frozenset({"_raw", "_source_file", "_batch_id", "_key_missing", "_source"})
# survivorship.prepare reads a person's records joined with the identity map and the record's fact activity.
_PERSON_RECORD_COLUMNS = frozenset({"cdp_id", "first_fact_ts", "last_fact_ts"})


@dataclass(frozen=True)
class Problem:
    """One mistake: the YAML file at fault, the key or item inside it, and what is wrong."""

    file: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.message}"


def checked_files(config: CdpConfig) -> list[str]:
    """The declarative files :func:`check_config` loads (``files:`` of the config), each once."""
    return list(dict.fromkeys(config.files.model_dump().values()))


def check_config(config: CdpConfig) -> list[Problem]:
    """Every problem of every declarative file, then of the references between them (none: all good).

    A file that does not load is reported and the references that need it are not checked.
    """
    files = config.files
    problems: list[Problem] = []

    def load(loader: Callable[[str], M], path: str) -> M | None:
        try:
            return loader(path)
        except ConfigError as exc:
            problems.extend(_problems_of(exc, path))
            return None

    sources = load(load_sources, files.sources)
    expectations = load(load_expectations, files.expectations)
    identity = load(load_identity, files.identity)
    profiles = load(load_profiles, files.profiles)
    models = load(load_models, files.models)
    segments = load(load_segments, files.segments)
    destinations = load(load_destinations, files.destinations)

    if sources is not None:
        problems += _check_sources(sources, files.sources)
    if expectations is not None:
        problems += _check_expectations(expectations, sources, files.expectations)
    if identity is not None:
        problems += _check_identity(identity, files.identity)
    if profiles is not None:
        problems += _check_profiles(profiles, files.profiles)
    if models is not None:
        problems += _check_models(models, files.models)
    if segments is not None and profiles is not None:
        problems += _check_segments(segments, profiles, files.segments)
    if destinations is not None and segments is not None:
        problems += _check_destinations(destinations, segments, profiles, files.destinations)
    return problems


def raise_if_invalid(config: CdpConfig) -> None:
    """Raise a ConfigError listing every problem of :func:`check_config`, one per line, if there is any."""
    problems = check_config(config)
    if problems:
        raise ConfigError("\n".join(str(p) for p in problems))


# --------------------------------------------------------------------------------------------
# Each file against what the stages read
# --------------------------------------------------------------------------------------------


def _check_sources(sources: SourcesConfig, file: str) -> list[Problem]:
    """Mappings onto the silver contracts (standardize's own check), and each fact's record_id SQL, which
    standardize evaluates over the standardized columns."""
    problems = []
    for source in sources.sources:
        for target in source.silver:
            try:
                check_target(source, target)
            except ConfigError as exc:
                problems += _problems_of(exc, file)
            sql = target.columns.get("record_id")
            if sql is None or target.table == RECORDS.name:
                continue
            known = _standardized_columns(target.table, sources) - {"record_id"}
            problem = _check_sql(sql, known, f"{SILVER[target.table].table.full_name}'s standardized row")
            if problem:
                problems.append(
                    Problem(file, f"sources[{source.name}].silver[{target.table}].columns.record_id", problem)
                )
    return problems


def _check_expectations(expectations: ExpectationsConfig, sources: SourcesConfig | None, file: str) -> list[Problem]:
    """Expectations run per silver table, on its standardized rows: the table must exist, and (when the sources
    load: their key columns ride along) the expressions must read its columns."""
    problems = []
    for table, checks in expectations.tables.items():
        if table not in SILVER:
            problems.append(
                Problem(file, f"tables.{table}", f"no silver table {table!r}; expectations apply to {sorted(SILVER)}")
            )
            continue
        if sources is None:
            continue
        known = _standardized_columns(table, sources)
        for expectation in checks:
            problem = _check_sql(expectation.expr, known, SILVER[table].table.full_name)
            if problem:
                problems.append(Problem(file, f"tables.{table}[{expectation.name}].expr", problem))
    return problems


def _check_identity(identity: IdentityConfig, file: str) -> list[Problem]:
    """resolve reads silver.customer_records by the names given (exactly, as ``resolve`` and the probabilistic
    model check them) and the fact tables' identifier columns (resolved by Spark: any case)."""
    records = list(SILVER[RECORDS.name].columns)
    what = RECORDS.full_name
    named = [("record_id", [identity.record_id])]
    named += [(f"identifiers[{rule.name}].column", [rule.column]) for rule in identity.identifiers if rule.column]
    if identity.probabilistic is not None:
        for comparison in identity.probabilistic.comparisons:
            named.append((f"probabilistic.comparisons[{comparison.name}]", comparison.source_columns))
        for i, text in enumerate(identity.probabilistic.blocking_rules):
            named.append((f"probabilistic.blocking_rules[{i}]", parse_blocking_rule(text).columns))
    problems = [
        Problem(file, where, problem) for where, columns in named if (problem := _unknown(columns, records, what))
    ]
    for fact in identity.facts:
        columns = list(SILVER[fact.table].columns)
        for name, column in fact.identifiers.items():
            problem = _unknown([column], columns, SILVER[fact.table].table.full_name, ignore_case=True)
            if problem:
                problems.append(Problem(file, f"facts[{fact.table}].identifiers.{name}", problem))
    return problems


def _check_profiles(profiles: ProfilesConfig, file: str) -> list[Problem]:
    """Survivorship reads each attribute's record columns from a person's silver.customer_records rows."""
    known = [*SILVER[RECORDS.name].columns, *sorted(_PERSON_RECORD_COLUMNS)]
    problems = []
    for name, rule in profiles.attributes.items():
        problem = _unknown(record_columns(name, rule), known, RECORDS.full_name)
        if problem:
            problems.append(Problem(file, f"attributes[{name}].columns", problem))
    return problems


def _check_models(models: ModelsConfig, file: str) -> list[Problem]:
    """Churn trains on gold.customer_features columns; every one of ``FEATURES`` is numeric or boolean."""
    what = tables.CUSTOMER_FEATURES.full_name
    named = [
        ("churn.features", models.churn.features or []),
        ("churn.baseline_feature", [models.churn.baseline_feature]),
    ]
    return [
        Problem(file, where, problem) for where, columns in named if (problem := _unknown(columns, FEATURE_NAMES, what))
    ]


def _check_segments(segments: SegmentsConfig, profiles: ProfilesConfig, file: str) -> list[Problem]:
    """Conditions run on the segment view: profile + features + scores at one as-of (Spark: any case)."""
    view = _profile_columns(profiles) | {"cdp_id", "as_of", *FEATURE_NAMES} | set(SCORE_COLUMNS)
    what = f"{tables.CUSTOMER_PROFILE.full_name}, {tables.CUSTOMER_FEATURES.name} or {tables.CUSTOMER_SCORES.name}"
    problems = []
    for segment in segments.segments:
        problem = _check_sql(segment.condition, view, what)
        if problem:
            problems.append(Problem(file, f"segments[{segment.name}].condition", problem))
    return problems


def _check_destinations(
    destinations: DestinationsConfig, segments: SegmentsConfig, profiles: ProfilesConfig | None, file: str
) -> list[Problem]:
    """activate's own check: known segments, and attributes among the profile and score columns."""
    if profiles is not None:
        available = _profile_columns(profiles) | set(SCORE_COLUMNS)
    else:  # the profile's columns are unknown: only the segments can be checked
        available = {a for d in destinations.destinations for a in d.attributes}
    try:
        check_destinations(destinations, segments, sorted(available), file)
    except ConfigError as exc:
        return _problems_of(exc, file)
    return []


def _standardized_columns(table: str, sources: SourcesConfig) -> set[str]:
    """Columns of a silver table's rows in standardize: the contract, every key a source maps it by, internals."""
    keys = {k for s in sources.sources for t in s.silver if t.table == table for k in t.key}
    return set(SILVER[table].columns) | keys | _STANDARDIZE_COLUMNS


def _profile_columns(profiles: ProfilesConfig) -> set[str]:
    """gold.customer_profile's columns, as ``gold.profiles.golden_profiles`` selects them."""
    return set(profile_columns(profiles.attributes))


def _problems_of(exc: ConfigError, file: str) -> list[Problem]:
    """A stage's ConfigError (lines of ``[file: ]where: message``) as problems of ``file``.

    Lines that do not start with the file continue the previous problem (YAML's parse error spans several).
    """
    messages: list[str] = []
    prefix = f"{file}: "
    for line in str(exc).splitlines():
        if not messages or line.startswith(prefix) or line.startswith("..."):
            messages.append(line.removeprefix(prefix))
        elif line.strip(" ^"):
            messages[-1] += " " + line.strip()
    problems = []
    for message in messages:
        # A key has no spaces; "config file not found (...)", "not valid YAML: ..." and a model's own check
        # (an empty key) are about the whole file.
        match = re.fullmatch(r"(\S*?): (.*)", message, re.DOTALL)
        where, text = match.groups() if match else ("", message)
        problems.append(Problem(file, where or "(file)", text))
    return problems


def _unknown(names: Iterable[str], known: Collection[str], what: str, ignore_case: bool = False) -> str | None:
    """'unknown column(s) [...] of <what>' with the closest known names, or None when every name is known."""
    fold = str.lower if ignore_case else str
    known_folded = {fold(k) for k in known}
    unknown = list(dict.fromkeys(n for n in names if fold(n) not in known_folded))
    if not unknown:
        return None
    hints = [f"{close[0]!r} for {n!r}" for n in unknown if (close := difflib.get_close_matches(n, list(known), 1))]
    hint = f"; did you mean {', '.join(hints)}?" if hints else ""
    return f"unknown column(s) {unknown} of {what}{hint}"


def _check_sql(sql: str, known: Collection[str], what: str) -> str | None:
    """What is wrong with the columns a Spark SQL expression reads (Spark resolves them in any case), or None."""
    try:
        columns = sql_columns(sql)
    except ValueError as exc:
        return str(exc)
    return _unknown(columns, known, what, ignore_case=True)


# --------------------------------------------------------------------------------------------
# The columns a Spark SQL expression reads
# --------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|--[^\n]*|/\*.*?\*/)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<quoted>`(?:[^`]|``)*`)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:BD|[LSYDF])?(?!\w))
  | (?P<word>\w+)
  | (?P<symbol>->|=>|::|.)
    """,
    re.VERBOSE | re.DOTALL | re.IGNORECASE,
)

# Words of Spark SQL expressions that are no column: operators, literals, types (after CAST ... AS, in typed
# literals), interval units, the arguments of TRIM/EXTRACT/OVERLAY, window clauses, parameterless functions.
_SQL_WORDS = frozenset(
    {
        "and", "or", "not", "is", "null", "true", "false", "unknown", "in", "between", "like", "ilike",
        "rlike", "regexp", "similar", "escape", "any", "some", "all", "exists", "distinct", "from", "case",
        "when", "then", "else", "end", "cast", "as", "div", "interval", "to",
        "boolean", "tinyint", "byte", "smallint", "short", "int", "integer", "bigint", "long", "float",
        "real", "double", "decimal", "dec", "numeric", "string", "varchar", "char", "character", "binary",
        "date", "timestamp", "timestamp_ntz", "timestamp_ltz", "time", "array", "map", "struct", "void",
        "variant",
        "year", "years", "month", "months", "week", "weeks", "day", "days", "hour", "hours", "minute",
        "minutes", "second", "seconds", "millisecond", "milliseconds", "microsecond", "microseconds",
        "nanosecond", "nanoseconds",
        "both", "leading", "trailing", "placing", "for",
        "over", "partition", "by", "order", "asc", "desc", "nulls", "first", "last", "rows", "range",
        "preceding", "following", "unbounded", "current", "row", "filter", "where", "within", "group",
        "respect", "ignore",
        "current_date", "current_timestamp", "current_time", "current_user", "user", "session_user",
        "localtimestamp",
    }
)  # fmt: skip


def sql_columns(sql: str) -> list[str]:
    """The unqualified column names a Spark SQL expression reads, in order of appearance.

    Not columns: string literals, comments, numbers, SQL keywords and type names, function names (a name
    followed by ``(``), struct fields (after ``.``), lambda variables (``x -> ...``), named arguments
    (``name => ...``), typed literals (``DATE '2026-01-01'``) and what follows ``AS`` or ``::``. Backquoted
    names are always columns. A ValueError for unbalanced quotes or parentheses.
    """
    tokens = []
    for match in _TOKEN.finditer(sql):
        kind, text = match.lastgroup, match.group()
        if kind == "space":
            continue
        if kind == "symbol" and text in "'\"`":
            raise ValueError(f"unterminated string literal or quoted name in {sql!r}")
        tokens.append((kind, text))
    depth = 0
    for kind, text in tokens:
        depth += (kind, text) == ("symbol", "(")
        depth -= (kind, text) == ("symbol", ")")
        if depth < 0:
            break
    if depth:
        raise ValueError(f"unbalanced parentheses in {sql!r}")

    lambda_variables = set()
    for i, (kind, text) in enumerate(tokens):
        if (kind, text) != ("symbol", "->") or i == 0:
            continue
        if tokens[i - 1][0] == "word":
            lambda_variables.add(tokens[i - 1][1].lower())
        elif tokens[i - 1][1] == ")":  # (acc, x) -> ...
            j = i - 2
            while j >= 0 and tokens[j][1] != "(":
                if tokens[j][0] == "word":
                    lambda_variables.add(tokens[j][1].lower())
                j -= 1

    columns = []
    for i, (kind, text) in enumerate(tokens):
        if kind not in ("word", "quoted"):
            continue
        before = tokens[i - 1] if i > 0 else ("", "")
        after = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if before[1] in (".", "::") or before[1].lower() == "as" or after[1] in ("(", "=>", ":"):
            continue
        if kind == "quoted":
            columns.append(text[1:-1].replace("``", "`"))
        elif text.lower() not in _SQL_WORDS and text.lower() not in lambda_variables and after[0] != "string":
            columns.append(text)
    return list(dict.fromkeys(columns))
