"""The import rule, enforced: every package says in its docstring what it may import ("May import: ..."),
and a new arrow the wrong way fails here (function-level and TYPE_CHECKING imports included).

Besides each package's own list: the module graph of blender_core has no cycle, LangChain / LlamaIndex are
imported only by their adapter and by what may import that adapter, nothing outside tests, benchmarks and
scripts imports ``blender_core.testing``, and the core tests (but the application's) import no framework.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# source folder -> the name it installs as
PACKAGES = {
    "core": "blender_core",
    "langchain_blender": "langchain_blender",
    "llamaindex_blender": "llamaindex_blender",
}
# third-party frameworks -> the adapter that owns them
FRAMEWORKS = {
    "langchain": "langchain_blender",
    "langchain_core": "langchain_blender",
    "langchain_huggingface": "langchain_blender",
    "langchain_openai": "langchain_blender",
    "langgraph": "langchain_blender",
    "llama_index": "llamaindex_blender",
}
# the core's top-level package only re-exports; every package and module below it states its own rule
FACADE = "blender_core"
RULE = re.compile(r"May import:\s*(.+?)(?:\n\s*\n|\Z)", re.S)


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool


def find_modules(root: Path, packages: dict[str, str]) -> dict[str, Module]:
    out = {}
    for folder, top in packages.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            name = ".".join([top, *parts[:-1]] if is_package else [top, *parts])
            out[name] = Module(name, path, is_package)
    return out


def imports_of(module: Module, known: set[str]) -> set[str]:
    """Every module ``module`` imports (absolute names), wherever the import statement stands."""
    tree = ast.parse(module.path.read_text(), str(module.path))
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:  # `from pkg import submodule` is an import of the submodule
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return found


def unit_of(name: str, units: set[str]) -> str | None:
    """The package whose rule governs ``name``: the longest declared unit that is ``name`` or contains it."""
    best = None
    for unit in units:
        if (name == unit or name.startswith(unit + ".")) and (best is None or len(unit) > len(best)):
            best = unit
    return best


def rules(modules: dict[str, Module]) -> dict[str, set[str]]:
    """Unit -> what it may import, read from the "May import:" line of its docstring."""
    out = {}
    for m in modules.values():
        doc = ast.get_docstring(ast.parse(m.path.read_text())) or ""
        match = RULE.search(doc)
        if match is None:
            continue
        text = match.group(1).strip().rstrip(".")
        allowed = set() if text.startswith("nothing") else {x.strip() for x in text.split(",")}
        out[m.name] = {a.rstrip(".") for a in allowed if a}
    return out


def violations(root: Path, packages: dict[str, str]) -> list[str]:
    modules = find_modules(root, packages)
    known = set(modules)
    allowed = rules(modules)
    units = set(allowed)
    problems = []
    tops = set(packages.values())
    for name, module in modules.items():
        unit = unit_of(name, units)
        if unit is None or (unit == FACADE and name != unit):  # each part of the core states its own rule
            problems.append(f"{name}: no 'May import:' rule in its docstring or its package's")
            continue
        may = allowed[unit]
        for target in sorted(imports_of(module, known)):
            top = target.split(".")[0]
            if top in FRAMEWORKS:
                owner = FRAMEWORKS[top]
                if unit != owner and owner not in may:
                    problems.append(
                        f"{name} imports {target}, which only {owner} (and what may import it) may use"
                    )
                continue
            if top not in tops:
                continue
            target_unit = unit_of(target, units)
            if target_unit in (None, unit) or name.startswith(target_unit + "."):
                continue  # inside its own unit, or a submodule importing its package's own names
            if target_unit not in may:
                problems.append(
                    f"{name} imports {target}, but {unit} may import only: {', '.join(sorted(may)) or 'nothing'}"
                )
    problems.extend(cycles(modules, known))
    return problems


def cycles(modules: dict[str, Module], known: set[str]) -> list[str]:
    graph = {n: {t for t in imports_of(m, known) if t in known and t != n} for n, m in modules.items()}
    # a package's __init__ re-exporting its own submodules is not an arrow back to it
    for n, m in modules.items():
        if m.is_package:
            graph[n] = {t for t in graph[n] if not t.startswith(n + ".")}
    state: dict[str, int] = {}
    found: list[str] = []

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for t in sorted(graph[n]):
            if state.get(t) == 1:
                found.append("import cycle: " + " -> ".join([*stack[stack.index(t) :], t]))
            elif t not in state:
                visit(t, [*stack, t])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    return found


def test_the_tree_follows_the_import_rule() -> None:
    assert violations(ROOT, PACKAGES) == []


def test_every_package_states_its_rule() -> None:
    modules = find_modules(ROOT, PACKAGES)
    declared = set(rules(modules))
    expected = {
        "blender_core",
        "blender_core.app",
        "blender_core.base",
        "blender_core.batch",
        "blender_core.compat",
        "blender_core.data",
        "blender_core.ensemble",
        "blender_core.evaluation",
        "blender_core.evaluation.calibrate",
        "blender_core.fusion",
        "blender_core.local_models",
        "blender_core.observability",
        "blender_core.ranking",
        "blender_core.ranking.judge",
        "blender_core.ranking.pairrm",
        "blender_core.ranking.reward",
        "blender_core.recording",
        "blender_core.testing",
        "blender_core.training",
        "langchain_blender",
        "llamaindex_blender",
    }
    assert declared == expected


def test_core_tests_need_no_framework() -> None:
    """The core's tests (the application's aside) import neither LangChain nor LlamaIndex nor an adapter."""
    banned = (*FRAMEWORKS, "langchain_blender", "llamaindex_blender")
    offenders = []
    for path in sorted((ROOT / "tests" / "core").rglob("*.py")):
        if "app" in path.relative_to(ROOT / "tests" / "core").parts:
            continue
        module = Module(
            "tests." + ".".join(path.relative_to(ROOT / "tests").with_suffix("").parts), path, False
        )
        for target in imports_of(module, set()):
            if target.split(".")[0] in banned:
                offenders.append(f"{path.relative_to(ROOT)} imports {target}")
    assert offenders == []


_BLOCKED_RUN = """
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BANNED:
            raise ModuleNotFoundError(f"{name} is not installed (blocked by the test)")
sys.meta_path.insert(0, Blocked())
import pytest
code = pytest.main(["-q", "-p", "no:cacheprovider", "-p", "no:langsmith_plugin", *sys.argv[1:]])
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BANNED)
print("LEAKED", leaked)
sys.exit(code or bool(leaked))
"""


def test_engine_and_pipeline_tests_pass_without_any_framework() -> None:
    """The engine's and the pipeline's own tests, run with LangChain, LlamaIndex and both adapters made
    unimportable, as on a machine where no framework extra is installed."""
    banned = {*FRAMEWORKS, "langchain_blender", "llamaindex_blender", "langchain_tests", "langsmith"}
    code = f"BANNED = {sorted(banned)!r}\n" + _BLOCKED_RUN
    targets = ["tests/core/ensemble", "tests/core/ranking/test_interface.py"]
    proc = subprocess.run(
        [sys.executable, "-c", code, *targets], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "LEAKED []" in proc.stdout
    assert " passed" in proc.stdout


def test_ranker_kinds_use_only_the_shared_ranking_modules() -> None:
    """A ranker kind (a package under ``ranking/``) imports no other kind and, of ``blender_core.ranking``, only
    the shared modules: never the registry nor the package itself, which import the kinds (the "May import"
    rules cannot say this, since a kind's parent is open to it)."""
    modules = find_modules(ROOT, PACKAGES)
    known = set(modules)
    kinds = {n for n, m in modules.items() if m.is_package and n.startswith("blender_core.ranking.")}
    assert kinds == {"blender_core.ranking.judge", "blender_core.ranking.pairrm", "blender_core.ranking.reward"}
    shared = {
        n
        for n in known
        if n.startswith("blender_core.ranking.") and unit_of(n, kinds) is None and n != "blender_core.ranking.registry"
    }
    offenders = []
    for name, module in modules.items():
        kind = unit_of(name, kinds)
        if kind is None:
            continue
        for target in sorted(imports_of(module, known)):
            if target.split(".")[:2] != ["blender_core", "ranking"] or unit_of(target, kinds) == kind:
                continue
            if target not in shared:
                offenders.append(f"{name} imports {target}")
    assert offenders == []


# ---------------------------------------------------------------------------- the checker itself
def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, []),
        (
            {"core/ranking/late.py": "def f():\n    from blender_core.ensemble.engine import X\n"},
            [
                "blender_core.ranking.late imports blender_core.ensemble.engine, but blender_core.ranking may import only: blender_core.base"
            ],
        ),
        (
            {
                "core/base/lc.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import langchain_core\n"
            },
            [
                "blender_core.base.lc imports langchain_core, which only langchain_blender (and what may import it) may use"
            ],
        ),
        (
            {"core/extra/__init__.py": '"""No rule."""\n'},
            ["blender_core.extra: no 'May import:' rule in its docstring or its package's"],
        ),
        (
            {
                "core/ensemble/a.py": "from blender_core.ensemble import b\n",
                "core/ensemble/b.py": "def f():\n    from blender_core.ensemble import a\n",
            },
            ["import cycle: blender_core.ensemble.a -> blender_core.ensemble.b -> blender_core.ensemble.a"],
        ),
    ],
)
def test_the_checker_finds_wrong_arrows(tmp_path: Path, extra: dict[str, str], expected: list[str]) -> None:
    _write(
        tmp_path,
        {
            "core/__init__.py": '"""Facade.\n\nMay import: blender_core.ranking, blender_core.ensemble.\n"""\n',
            "core/base/__init__.py": '"""Base.\n\nMay import: nothing from blender_core.\n"""\n',
            "core/ranking/__init__.py": '"""Ranking.\n\nMay import: blender_core.base.\n"""\n',
            "core/ranking/r.py": "from blender_core.base import x\n",
            "core/ensemble/__init__.py": '"""Engine.\n\nMay import: blender_core.base,\nblender_core.ranking.\n"""\n',
            "core/ensemble/engine.py": "from blender_core.ranking.r import R\n",
            "langchain_blender/__init__.py": '"""LC.\n\nMay import: blender_core.ensemble.\n"""\nimport langchain_core\n',
            **extra,
        },
    )
    packages = {"core": "blender_core", "langchain_blender": "langchain_blender"}
    assert violations(tmp_path, packages) == expected
