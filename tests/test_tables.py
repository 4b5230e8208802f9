"""The table catalog (issue 20): docs/tables.md is its rendering, entries are consistent, one module writes each
table. Read from the source, no Spark (the lakehouse a pipeline run builds is checked against the catalog in
tests/test_pipeline.py)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import cdp_spark
from cdp_spark import tables
from cdp_spark.features import FEATURE_NAMES
from cdp_spark.silver import SILVER

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(cdp_spark.__file__).parent

# The write primitives of cdp_spark.tables: the table is their third argument.
PRIMITIVES = {"append", "overwrite", "overwrite_if_changed", "replace_where", "upsert"}
# Delta table methods that change rows.
ROW_CHANGES = {"merge", "update", "delete"}
# Modules that change the rows of whatever table they are given (the lakehouse walk of erase and maintain).
EVERY_TABLE = {"cdp_spark.privacy.erase", "cdp_spark.privacy.maintain"}
# Writers besides a table's one module, each documented in docs/tables.md: standardize deletes the bronze rows of
# an erased person that arrive again.
ALSO_WRITTEN_BY = {"bronze.<source>": {"cdp_spark.standardize.job"}}
# A write whose table is an attribute of a local spec: the tables that spec can be.
SPEC_TABLES = {("cdp_spark.standardize.job", "spec.table"): {t.table.full_name for t in SILVER.values()}}


def test_docs_tables_md_is_the_rendering_of_the_catalog():
    rendered = tables.render_markdown()
    written = (REPO / "docs" / "tables.md").read_text(encoding="utf-8")
    assert written == rendered, (
        "docs/tables.md differs from the catalog: run `python -m cdp_spark.tables > docs/tables.md`"
    )


def test_every_table_constant_is_in_the_catalog_once_and_its_entry_is_consistent():
    constants = [v for v in vars(tables).values() if isinstance(v, tables.Table)]
    assert sorted(t.full_name for t in constants) == sorted(t.full_name for t in tables.CATALOG if t.layer != "bronze")
    assert len({t.full_name for t in tables.CATALOG}) == len(tables.CATALOG)
    for table in tables.CATALOG:
        columns = set(table.columns)
        assert table.layer in tables.LAYERS and table.description, table.full_name
        assert set(table.keys) <= columns and set(table.partition_by) <= columns, table.full_name
        assert table.personal_columns <= columns or table.layer == "bronze", table.full_name
        assert set(table.statistics or ()) <= columns, table.full_name
        owners = [o.strip() for o in table.owner.split(",")]
        assert table.owner == tables.EVERY_STAGE or set(owners) <= set(tables.OWNERS), table.full_name


def test_the_features_are_the_feature_columns_in_order_and_the_silver_kinds_cover_the_silver_columns():
    assert tables.CUSTOMER_FEATURES.columns == ["cdp_id", "as_of", *FEATURE_NAMES]
    assert {name for name, spec in SILVER.items() if list(spec.columns) == spec.table.columns} == set(SILVER)


def test_erasure_finds_a_person_in_every_table_it_erases():
    """Erasure deletes a person's rows from every table not kept, by the columns that say whose a row is: a table it
    erases without such a column would be skipped without a word. Bronze and the quarantine hold raw rows, matched
    through the sources' mappings instead."""
    raw = {tables.bronze("<source>").full_name, tables.QUARANTINE.full_name}
    erased = [t for t in tables.CATALOG if t.erased and t.full_name not in raw]
    blind = [t.full_name for t in erased if not tables.identifying_columns(t.columns)]
    assert blind == [], "erased but no identifying column (mark it erased=False and say why, or declare the column)"
    assert tables.identifying_columns(["as_of", "segment", "members"]) == []  # a table of counts names nobody
    assert tables.identifying_columns(["identifier_type", "identifier", "cdp_id"]) == ["cdp_id", "identifier"]


def test_catalog_entries_are_found_by_layer_and_name():
    assert tables.entry("silver", "orders") is tables.ORDERS
    assert tables.entry("bronze", "crm") == tables.bronze("crm") and tables.entry("bronze", "crm").owner == "ingest"
    unknown = tables.entry("gold", "left_by_an_older_version")
    assert unknown.statistics == () and tables.stats_columns(unknown, tables.ORDERS.schema) == []


BRONZE_CRM = tables.schema(("email", tables.STRING), *[(f.name, f.dataType) for f in tables.BRONZE_LINEAGE.fields])


@pytest.mark.parametrize(
    ("table", "schema", "expected"),
    [
        (
            tables.ORDERS,
            None,
            ["order_id", "channel", "store_id", "order_ts", "amount", "currency", "items", "updated_at"],
        ),
        (tables.bronze("crm"), BRONZE_CRM, ["_ingested_at", "_source_file", "_batch_id"]),
        (tables.SEGMENT_MEMBERSHIP, None, ["segment", "cdp_id", "entered_at", "exited_at", "last_as_of"]),
        (tables.RUN_METRICS, None, ["run_id", "stage", "step", "metric", "recorded_at"]),
    ],
)
def test_statistics_skip_personal_and_partition_columns(table, schema, expected):
    assert tables.stats_columns(table, schema or table.schema) == expected


def test_a_column_the_entry_does_not_declare_is_personal_when_another_entry_says_so():
    assert tables.CUSTOMER_PROFILE.is_personal("record_id") and not tables.CUSTOMER_PROFILE.is_personal("cdp_id")
    assert not tables.CUSTOMER_PROFILE.is_personal("vip")


@dataclass(frozen=True)
class Write:
    module: str
    line: int
    table: str | None  # full name; None when the target is a parameter no caller in the module binds


def _module_name(path: Path) -> str:
    parts = ("cdp_spark", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_tables(node: ast.AST, attr: str | None = None) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "tables"
        and (attr is None or node.attr == attr)
    )


class _Scanner:
    """The writes of one module: each primitive call, Delta row change and call of a local writing helper, with
    the table its target expression names."""

    def __init__(self, module: str, tree: ast.Module) -> None:
        self.module = module
        self.functions = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        self.parent: dict[ast.AST, ast.FunctionDef] = {}
        for function in self.functions.values():
            for node in ast.walk(function):
                self.parent.setdefault(node, function)
        self.helpers: dict[str, int] = {}  # local function -> index of the parameter it writes to

    def target(self, node: ast.AST, scope: ast.FunctionDef | None) -> set[str] | int | None:
        """The full names ``node`` can be, or the index of the scope's parameter it is, or None (unknown)."""
        if _is_tables(node):
            value = getattr(tables, node.attr)
            return {value.full_name} if isinstance(value, tables.Table) else None
        if isinstance(node, ast.Call) and _is_tables(node.func, "bronze"):
            return {"bronze.<source>"}
        if isinstance(node, ast.Attribute) and (self.module, ast.unparse(node)) in SPEC_TABLES:
            return SPEC_TABLES[(self.module, ast.unparse(node))]
        if isinstance(node, ast.Name) and scope is not None:
            params = [a.arg for a in scope.args.args]
            for statement in ast.walk(scope):
                if isinstance(statement, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == node.id for t in statement.targets
                ):
                    return self.target(statement.value, scope)
            if node.id in params:
                return params.index(node.id)
        return None

    def write_sites(self, tree: ast.Module) -> list[tuple[ast.AST, ast.AST]]:
        """(call or change, target expression) pairs."""
        sites = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _is_tables(node.func) and node.func.attr in PRIMITIVES:
                sites.append((node, node.args[2] if len(node.args) > 2 else next(k.value for k in node.keywords)))
            elif isinstance(node, ast.Call) and _is_tables(node.func, "audit"):
                sites.append((node, ast.parse("tables.AUDIT_LOG", mode="eval").body))
            elif isinstance(node, ast.Attribute) and node.attr in ROW_CHANGES:
                for inner in ast.walk(node.value):
                    if (
                        isinstance(inner, ast.Call)
                        and ast.unparse(inner.func) == "DeltaTable.forPath"
                        and isinstance(inner.args[1], ast.Call)
                        and isinstance(inner.args[1].func, ast.Attribute)
                        and inner.args[1].func.attr == "path"
                    ):
                        sites.append((node, inner.args[1].func.value))
        return sites

    def writes(self, tree: ast.Module) -> list[Write]:
        found: list[Write] = []
        pending = self.write_sites(tree)
        while pending:
            next_round = []
            for site, expression in pending:
                scope = self.parent.get(site)
                target = self.target(expression, scope)
                if isinstance(target, int):
                    if scope.name not in self.helpers:
                        self.helpers[scope.name] = target
                        for call in ast.walk(tree):
                            if isinstance(call, ast.Call) and ast.unparse(call.func) == scope.name:
                                next_round.append((call, call.args[target]))
                    continue
                found += [Write(self.module, site.lineno, t) for t in sorted(target or {None})]
            pending = next_round
        return found


def all_writes() -> list[Write]:
    writes = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if module == "cdp_spark.tables":  # the primitives themselves
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        writes += _Scanner(module, tree).writes(tree)
    return writes


def test_the_scanner_sees_writes_through_helpers_and_specs():
    writes = all_writes()
    by_table = {w.table for w in writes}
    assert {"gold.customer_profile", "silver.customer_records", "gold.segment_membership"} <= by_table
    assert {w.module for w in writes if w.table == "gold.customer_features"} == {"cdp_spark.features"}


def test_each_table_is_written_from_one_module_and_an_ops_log_from_one_stage():
    writes = all_writes()
    unknown = [w for w in writes if w.table is None and w.module not in EVERY_TABLE]
    assert not unknown, f"writes whose table the scanner cannot tell (name the table or extend SPEC_TABLES): {unknown}"
    for table in tables.CATALOG:
        if table.layer == "ops":
            packages = {w.module.split(".")[1] for w in writes if w.table == table.full_name}
            assert table.owner == tables.EVERY_STAGE or len(packages) == 1, f"{table.full_name}: {sorted(packages)}"
            continue
        modules = {w.module for w in writes if w.table == table.full_name} - ALSO_WRITTEN_BY.get(table.full_name, set())
        assert len(modules) == 1, (
            f"{table.full_name} is written from {sorted(modules) or 'no module'}: one module writes a table (owner "
            f"{table.owner}); the others call it"
        )


@pytest.mark.parametrize("table", [tables.CUSTOMER_PROFILE, tables.IDENTITY_EDGES], ids=["by key", "by row"])
def test_overwrite_if_changed_writes_a_version_only_when_a_row_or_value_changed(spark, tmp_path, table):
    from delta.tables import DeltaTable
    from pyspark.sql import Row

    root = str(tmp_path / "lakehouse")
    base = {f.name: None for f in table.schema.fields}
    if table is tables.CUSTOMER_PROFILE:  # a key, a map column, values
        won = {"email": ("crm", "crm:1", "most_recent"), "phone": ("pos", "pos:2", "most_common")}
        rows = [Row(**{**base, "cdp_id": f"c{i}", "record_count": i, "provenance": won}) for i in range(3)]
        changed = {"record_count": 9}
    else:  # no key: whole rows, the run that wrote them ignored
        rows = [Row(**{**base, "src_record_id": f"r{i}", "dst_record_id": "r9", "score": 1.0, "run_id": "run-1"})
                for i in range(3)]  # fmt: skip
        changed = {"score": 0.5}

    def write(new_rows: list[Row]) -> int:
        return tables.overwrite_if_changed(spark.createDataFrame(new_rows, table.schema), root, table, ("run_id",))

    def version() -> int:
        return DeltaTable.forPath(spark, table.path(root)).history(1).first()["version"]

    assert write(rows) == 1 and version() == 0
    other_run = {"run_id": "run-2"} if "run_id" in table.columns else {"provenance": dict(reversed(won.items()))}
    reordered = [Row(**{**r.asDict(), **other_run}) for r in reversed(rows)]  # maps: the same entries, other order
    assert write(reordered) == 0 and version() == 0  # same rows, other order (and run): no new version
    assert write([*rows[:2], Row(**{**rows[2].asDict(), **changed})]) == 1 and version() == 1  # a value
    assert write(rows[:2]) == 1 and version() == 2  # a row gone
    assert write(rows) == 1 and version() == 3  # a row added
    assert sorted(map(tuple, tables.read(spark, root, table).collect()), key=str) == sorted(map(tuple, rows), key=str)


def _value(dtype, i: int):
    """A value of ``dtype`` (every type the catalog uses); timestamps alternate naive (local time) and aware."""
    from datetime import UTC, date, datetime

    from pyspark.sql import types as T

    if isinstance(dtype, T.StructType):
        return tuple(_value(f.dataType, i) for f in dtype.fields)
    if isinstance(dtype, T.ArrayType):
        return [_value(dtype.elementType, i), _value(dtype.elementType, i + 1)]
    if isinstance(dtype, T.MapType):
        return {_value(dtype.keyType, i): _value(dtype.valueType, i), _value(dtype.keyType, i + 1): None}
    if isinstance(dtype, T.TimestampType):
        moment = datetime(2026, 3, 1, 9, 30, 15, 123456 + i, tzinfo=UTC)
        return moment if i % 2 else moment.replace(tzinfo=None)
    simple = {
        T.StringType: f"v{i} é", T.LongType: 2**40 + i, T.IntegerType: 7 + i, T.DoubleType: 1.5 + i,
        T.BooleanType: bool(i % 2), T.DateType: date(2026, 3, 1 + i),
    }  # fmt: skip
    return simple[type(dtype)]


def test_rows_frame_holds_what_create_dataframe_holds_for_every_catalog_schema(spark, monkeypatch):
    import time

    # Naive datetimes are local time to createDataFrame: a zone away from UTC tells the two readings apart.
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        _compare_rows_frame_with_create_dataframe(spark)
    finally:
        monkeypatch.undo()
        time.tzset()


def _compare_rows_frame_with_create_dataframe(spark) -> None:
    for table in tables.CATALOG:
        fields = table.schema.fields
        rows = [tuple(_value(f.dataType, i) for f in fields) for i in range(2)]
        rows.append(tuple(_value(f.dataType, 2) if not f.nullable else None for f in fields))
        built = tables.rows_frame(spark, rows, table.schema)
        assert built.schema == table.schema, table.full_name
        expected = spark.createDataFrame(rows, table.schema).collect()
        assert sorted(built.collect(), key=str) == sorted(expected, key=str), table.full_name
    assert tables.rows_frame(spark, [], "a string, b date").count() == 0
    assert tables.rows_frame(spark, [("x", 2)], "a string, b long").collect() == [("x", 2)]


def test_rows_frame_refuses_rows_that_do_not_fit_the_schema(spark):
    with pytest.raises(ValueError, match="every row needs 2 values"):
        tables.rows_frame(spark, [("x",)], "a string, b long")
    with pytest.raises(ValueError, match="column a is not nullable"):
        tables.rows_frame(spark, [(None,)], tables.schema(("a", tables.STRING, False)))
