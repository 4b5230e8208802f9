"""Stages depend downward only (issue 20): read from the source with ``ast``, no Spark.

A stage package (``cdp_spark/<stage>/``, in the pipeline order of :data:`cdp_spark.pipeline.STAGES`) imports shared
modules (``cdp_spark/*.py``, ``cdp_spark/normalize/``) and, from another stage, at most the typed options of an
earlier one (its ``config`` module, e.g. activation reads segment definitions). What two stages share lives below
both; shared modules import no stage; no cdp_spark module imports itself back through others.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import cdp_spark
from cdp_spark.pipeline import STAGES

PACKAGE = Path(cdp_spark.__file__).parent
# The modules above the stages: they run or check every stage, so they may import any of them.
ABOVE_THE_STAGES = {"cdp_spark.__main__", "cdp_spark.check", "cdp_spark.cli", "cdp_spark.pipeline"}


def stage_order() -> list[str]:
    """Stage packages in the order their first stage appears in STAGES (generate, ingest, standardize, ...)."""
    order: list[str] = []
    for stage in STAGES.values():
        package = stage.target.partition(":")[0].split(".")[1]
        if package not in order:
            order.append(package)
    return order


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its ``__init__.py``)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = ("cdp_spark", *path.relative_to(package).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


@dataclass(frozen=True)
class Import:
    importer: str
    line: int
    module: str  # the cdp_spark module imported from
    name: str | None  # the name taken from it (None: the module itself)

    def where(self, modules: dict[str, Path]) -> str:
        path = modules[self.importer]
        return f"{path.relative_to(modules['cdp_spark'].parent.parent)}:{self.line}"


def imports_of(importer: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """The cdp_spark imports of one module, at module level or inside functions alike."""
    found = []
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name:
                    found.append(Import(importer, node.lineno, name, None))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = importer.split(".")[: len(importer.split(".")) - node.level + is_package]
                base = ".".join([*anchor, *([base] if base else [])])
            if base not in modules:
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules:
                    found.append(Import(importer, node.lineno, submodule, None))
                else:
                    found.append(Import(importer, node.lineno, base, alias.name))
    return found


def all_imports(package: Path = PACKAGE) -> tuple[dict[str, Path], list[Import]]:
    modules = module_files(package)
    return modules, [i for name, path in modules.items() for i in imports_of(name, path, modules)]


def stage_of(module: str, stages: list[str]) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in stages else None


def layer_violations(package: Path = PACKAGE) -> list[str]:
    """Every import that breaks the layering, as ``file:line: what``."""
    stages = stage_order()
    modules, imports = all_imports(package)
    problems = []
    for imp in imports:
        importer_stage, imported_stage = stage_of(imp.importer, stages), stage_of(imp.module, stages)
        if imported_stage is None or imported_stage == importer_stage:
            continue
        what = imp.module + (f".{imp.name}" if imp.name else "")
        if importer_stage is None:
            if imp.importer not in ABOVE_THE_STAGES:
                problems.append(f"{imp.where(modules)}: shared module imports {what} of the {imported_stage} stage")
            continue
        if stages.index(imported_stage) > stages.index(importer_stage):
            problems.append(
                f"{imp.where(modules)}: {importer_stage} imports {what} of the later stage {imported_stage}"
            )
        elif (imp.name or "").startswith("_") or any(p.startswith("_") for p in imp.module.split(".")[1:]):
            problems.append(f"{imp.where(modules)}: {importer_stage} imports the private {what} of {imported_stage}")
        elif imp.module != f"cdp_spark.{imported_stage}.config":
            problems.append(
                f"{imp.where(modules)}: {importer_stage} imports {what} of {imported_stage}; another stage's "
                "typed options (its config module) at most: move what both use below them"
            )
    return problems


def import_cycles(package: Path = PACKAGE, stages_only: bool = False) -> list[list[str]]:
    """The import cycles among cdp_spark modules (or among stage packages, a module standing for its stage), one
    per strongly connected group (Tarjan's algorithm)."""
    stages = stage_order()
    modules, imports = all_imports(package)

    def unit(module: str) -> str | None:
        return stage_of(module, stages) if stages_only else module

    graph: dict[str, set[str]] = {u: set() for m in modules if (u := unit(m))}
    for imp in imports:
        importer, imported = unit(imp.importer), unit(imp.module)
        if importer and imported and (importer != imported or not stages_only):
            graph[importer].add(imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph[module]):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1 or module in graph[module]:
                groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return groups


def test_stage_order_comes_from_the_pipeline():
    assert stage_order() == [
        "generate",
        "ingest",
        "standardize",
        "identity",
        "gold",
        "ml",
        "segments",
        "activation",
        "privacy",
    ]


def test_stages_import_no_later_stage_no_private_name_and_at_most_an_earlier_stage_config():
    assert layer_violations() == []


def test_cdp_spark_modules_import_no_cycle():
    assert import_cycles() == []


def test_stage_packages_import_no_cycle():
    assert import_cycles(stages_only=True) == []


def test_the_checks_see_a_later_stage_a_private_name_a_function_and_a_cycle(tmp_path):
    package = tmp_path / "cdp_spark"
    files = {
        "__init__.py": "",
        "tables.py": "",
        "ingest/__init__.py": "",
        "ingest/bronze.py": "from cdp_spark.standardize.rules import Rules\n",
        "standardize/__init__.py": "",
        "standardize/rules.py": "from cdp_spark.ingest import bronze\nfrom ..ingest.bronze import _helper\n",
        "standardize/config.py": "",
        "identity/__init__.py": "",
        "identity/job.py": "from cdp_spark.standardize.config import Rules\nfrom cdp_spark import tables\n",
        "privacy/__init__.py": "",
        "privacy/erase.py": "def later():\n    from cdp_spark.standardize.rules import normalize\n",
        "lakefiles.py": "import cdp_spark.privacy.erase\n",
    }
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)

    problems = [p.split(": ", 1)[1] for p in layer_violations(package)]

    assert problems == [
        "ingest imports cdp_spark.standardize.rules.Rules of the later stage standardize",
        "shared module imports cdp_spark.privacy.erase of the privacy stage",
        "privacy imports cdp_spark.standardize.rules.normalize of standardize; another stage's typed options "
        "(its config module) at most: move what both use below them",
        "standardize imports cdp_spark.ingest.bronze of ingest; another stage's typed options (its config module) "
        "at most: move what both use below them",
        "standardize imports the private cdp_spark.ingest.bronze._helper of ingest",
    ]
    assert import_cycles(package) == [["cdp_spark.ingest.bronze", "cdp_spark.standardize.rules"]]
    assert import_cycles(package, stages_only=True) == [["ingest", "standardize"]]
