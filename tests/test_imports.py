"""The package's shape: light imports, a public API that resolves, and an import graph without circles.

The graph test reads every module with `ast` (imports at the top and inside functions alike), so an import
hidden in a function cannot dodge it.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
import typing
from pathlib import Path

import personas
from personas.config import RANK_KEYS, RankConfig
from personas.scoring import KEYS

HEAVY = ("torch", "transformer_lens", "sae_lens", "matplotlib", "ray", "transformers")
PACKAGE = Path(personas.__file__).parent
#: The most lines a module may have without a reason stated at its top ("Why this module is long: ...").
MAX_LINES = 520
#: Over this many lines a stated reason is not enough for more than two modules.
MAX_WITH_REASON = 600
#: The loose modules allowed at the top of ``personas/`` (folders are steps: each has its row in the README's table).
TOP_LEVEL = {
    "__init__", "__main__", "artifacts", "capturing", "config", "devices", "errors", "logs", "offline_models",
    "plan", "testing",
}
#: At most this many (issue 35): a step that needs a second file becomes a folder.
MAX_TOP_LEVEL = 12
#: The README's layout rule, quoted by the test that enforces it.
RULE = ("the top level holds only the foundation (errors, config, artifacts, devices, logs, the public __init__) and "
        "the pipeline steps that the README's layout table names; a file that serves one step lives in that step's "
        "folder; pure array statistics live in scoring/; whatever writes a run folder is a job in jobs/; cli/ parses, "
        "calls one job and prints; test-only code lives in tests/")


def _modules() -> list[str]:
    names = ["personas"]
    for info in pkgutil.walk_packages(personas.__path__, "personas."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return names


def _path(module: str) -> Path:
    parts = module.split(".")[1:]
    folder = PACKAGE.joinpath(*parts)
    return folder / "__init__.py" if folder.is_dir() else folder.with_suffix(".py")


def _imports(module: str) -> set[str]:
    """The personas modules that ``module`` imports, wherever the import statement sits."""
    path = _path(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("personas")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("personas"):
                continue
            for alias in node.names:  # `from personas.report import plots` imports a module
                sub = f"{base}.{alias.name}"
                found.add(sub if _path_exists(sub) else base)
    return found - {module}


def _path_exists(module: str) -> bool:
    parts = module.split(".")[1:]
    folder = PACKAGE.joinpath(*parts)
    return folder.is_dir() or folder.with_suffix(".py").is_file()


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {m: set() for m in modules}
    for m in modules:
        for target in _imports(m):
            # importing personas.a.b runs personas/a/__init__.py first
            graph[m].add(target)
    return graph


def test_import_personas_and_its_modules_imports_nothing_heavy():
    modules = [m for m in _modules() if m not in ("personas.cache.engines.ray_engine",)]
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + f"print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"heavy modules imported at import time: {out}"


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    # personas/__init__.py re-exports lazily (by name, through importlib) and is the root of every import
    graph["personas"] = set()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def _layout_rows() -> list[tuple[list[str], str]]:
    """The README's layout table: per row, the top-level names it holds (``errors``, ``scoring``...) and the text of
    its "may import" cell."""
    import re

    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("| where | what it holds | may import |", 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in table.strip().splitlines()[1:]:
        where, _, may = (c.strip() for c in line.strip().strip("|").split("|"))
        rows.append(([n.rstrip("/").removesuffix(".py") for n in re.findall(r"`([^`]+)`", where)], may))
    return rows


def test_the_readme_layout_table_is_the_import_graph():
    """Every module of the package is in one row of the README's layout table, and imports only its own row and what
    the row's last column allows: "the above" (every row above it), the names it lists (a package, or one of its
    modules as ``report/highlight``), "everything"."""
    rows = _layout_rows()
    row_of = {name: i for i, (names, _) in enumerate(rows) for name in names}
    tops = {m.split(".")[1] for m in _modules() if m != "personas"}
    assert sorted(tops - set(row_of)) == [], "modules in no row of the README's layout table"
    assert sorted(set(row_of) - tops) == [], "rows of the README's layout table that name no module"
    wrong = []
    for module, targets in sorted(_graph().items()):
        if module == "personas":
            continue
        top = module.split(".")[1]
        i = row_of[top]
        may = rows[i][1]
        if may.startswith("everything"):
            continue
        allowed = {n for names, _ in rows[:i + 1 if "the above" in may else 0] for n in names} | set(rows[i][0])
        allowed |= {item.strip().strip("`").rstrip("/").removeprefix("nothing of personas but ").strip()
                    for item in may.replace("the above", "").split(",")}
        for target in targets:
            name = target.split(".")[1] if target != "personas" else "personas"
            if name not in allowed and target.removeprefix("personas.").replace(".", "/") not in allowed:
                wrong.append(f"{module} imports {target}, which its row ({rows[i][0][0]}: {may!r}) does not allow")
    assert wrong == [], "\n".join(wrong)


def test_the_top_level_holds_only_the_allowed_modules():
    """A new loose module at the top of the package fails with the README's rule; a listed one that moved away must
    leave the list (so that the list cannot let a module back in unnoticed)."""
    loose = {path.stem for path in PACKAGE.glob("*.py")}
    new = sorted(loose - TOP_LEVEL)
    assert new == [], (f"new module(s) at the top of personas/: {[f'{n}.py' for n in new]}. The rule (README, 'How "
                       f"the code is laid out'): {RULE}. Move each into the folder of the step it serves; a new "
                       "foundation module or step goes into TOP_LEVEL here and into the README's table.")
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8").split("## How the code is laid out", 1)[1]
    assert "the top level holds only the foundation" in readme.split("| where |", 1)[0], "the README lost the rule"
    assert f"The top level holds {len(loose)} modules" in readme, "the README's count of top-level modules is stale"
    assert len(loose) <= MAX_TOP_LEVEL, f"{len(loose)} modules at the top of personas/, more than {MAX_TOP_LEVEL}"
    gone = sorted(TOP_LEVEL - loose)
    assert gone == [], f"TOP_LEVEL in tests/test_imports.py lists {gone}, which are no longer at the top; remove them."


def test_nothing_outside_cli_imports_the_cli():
    offenders = [m for m, targets in _graph().items()
                 if not m.startswith("personas.cli") and any(t.startswith("personas.cli") for t in targets)]
    assert offenders == [], f"library modules importing the CLI: {offenders}"


def test_library_modules_import_the_package_at_the_top():
    """Imports of personas modules sit at module top; only heavy third-party libraries are imported lazily."""
    inner = []
    for m in _modules():
        tree = ast.parse(_path(m).read_text())
        top = {id(n) for n in tree.body}
        for n in tree.body:  # `if TYPE_CHECKING:` blocks count as top level
            if isinstance(n, ast.If):
                top |= {id(s) for s in n.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("personas") and id(node) not in top:
                inner.append(f"{m}:{node.lineno}")
    assert inner == [], f"imports of personas inside functions: {inner}"


def test_no_module_is_long_without_a_stated_reason():
    long = []
    for m in _modules():
        text = _path(m).read_text()
        if len(text.splitlines()) > MAX_LINES and "Why this module is long" not in text[:4000]:
            long.append(f"{m} ({len(text.splitlines())} lines)")
    assert long == [], f"modules over {MAX_LINES} lines without a reason at the top: {long}"
    very_long = [m for m in _modules() if len(_path(m).read_text().splitlines()) > MAX_WITH_REASON]
    assert len(very_long) <= 2, f"more than two modules over {MAX_WITH_REASON} lines: {very_long}; split one by job"
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8").split("## How the code is laid out", 1)[1]
    named = " ".join(readme.split("at most two may pass 600 (today ", 1)[1].split(")", 1)[0].split())
    assert sorted(named.replace("`", "").replace(" and ", ", ").split(", ")) == sorted(
        _path(m).relative_to(PACKAGE).as_posix() for m in very_long), f"the README names {named!r}"


def test_every_exported_name_resolves_and_has_a_docstring():
    for name in personas.__all__:
        value = getattr(personas, name)
        assert value is not None, name
        assert (getattr(value, "__doc__", None) or "").strip(), f"personas.{name} has no docstring"


def test_every_name_in_a_module_all_has_a_docstring():
    missing = []
    for m in _modules():
        module = importlib.import_module(m)
        for name in getattr(module, "__all__", []):
            value = getattr(module, name)
            if callable(value) and not (getattr(value, "__doc__", None) or "").strip():
                missing.append(f"{m}.{name}")
    assert missing == [], f"public names without a docstring: {missing}"


def test_submodules_are_reachable_as_attributes():
    assert personas.plots is importlib.import_module("personas.report.plots")
    assert callable(personas.plots.volcano) and callable(personas.examples.top_activating)
    assert callable(personas.capture) and callable(personas.steer)


def test_names_before_0_3_are_aliases_of_the_new_ones():
    """Issue 35 renamed the jobs so that names say their layer; the old names stay for one release, as the same
    objects (not copies that could drift), and the moved modules import from their new homes."""
    assert personas.rank is personas.rank_responses and personas.rank_from_cache is personas.rank_cache_job
    assert personas.rank_responses.__module__ == "personas.jobs.rank"
    assert importlib.import_module("personas.offline_models") is importlib.import_module("personas.models.offline")
    for old, new in (("personas.saes", "load_sae"), ("personas.detect", "PersonaDetector"),
                     ("personas.steering", "steer"), ("personas.models", "load_model")):
        assert callable(getattr(importlib.import_module(old), new)), f"{old}.{new}"


def test_ranking_keys_are_one_list():
    assert tuple(KEYS) == RANK_KEYS
    assert typing.get_args(typing.get_type_hints(RankConfig)["key"]) == RANK_KEYS
