"""The promises the package's docstrings make about its structure, checked from the source.

Each check reads the code (AST), not a running process, so it costs milliseconds and fails the
moment a change breaks a promise, naming the file and line. ``python -m tests.test_layout`` prints
the same findings without pytest.
"""

from __future__ import annotations

import ast
import re
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("auditor", "ui")

# The model layer, and the providers that plug into LiteLLM: the only code that imports it or the
# openai SDK (the pipeline, the store, the reports and the UI call the gateway instead).
MODEL_LAYER = {
    "auditor.gateway",
    "auditor.models",
    "auditor.limits",
    "auditor.batch",
    "auditor.finetune.jobs",
    "auditor.sim.provider",
}
MODEL_LIBRARIES = ("litellm", "openai")
# The core: importing any of these must not load the simulation.
CORE = ("auditor.gateway", "auditor.runner", "auditor.store", "auditor.judge", "auditor.metrics")
MAX_LINES = 600
# Modules allowed over MAX_LINES until they are split, each with the most lines it may have (it may
# shrink, never grow); none today, and a module not listed may not cross the line.
OVERSIZE: dict[str, int] = {}
# SQL in a string: what a query, a write or the schema looks like.
SQL = re.compile(
    r"\bselect\b[\s\S]+\bfrom\b|\binsert\s+(or\s+\w+\s+)?into\b|\bdelete\s+from\b|\bcreate\s+(table|index)\b"
    r"|\bupdate\s+\[?\w+\]?\s+set\b|\bpragma\s+\w+",
    re.I,
)
# Exceptions that are not a user's problem to fix, and so not AuditorError.
NOT_USER_ERRORS = {
    "auditor.gateway.JobCancelled": "control flow: a cancelled job's call stops waiting",
    "auditor.netguard.BlockedAddress": "must be a ConnectionRefusedError for the HTTP clients",
}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _imports(name: str, path: Path, *, top_level_only: bool) -> list[tuple[str, int]]:
    """(imported module, line) for each import; relative imports resolved. ``top_level_only``
    skips imports inside functions and ``if TYPE_CHECKING:`` blocks (those run later, or never)."""
    package = _package_of(name, path)
    found: list[tuple[str, int]] = []

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.Import):
                found.extend((a.name, node.lineno) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                found.append((module, node.lineno))
                # ``from . import x`` imports the submodule x
                found.extend((f"{module}.{a.name}", node.lineno) for a in node.names)
            elif top_level_only and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            elif top_level_only and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, ast.ClassDef | ast.If | ast.Try | ast.With):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(node, field, []) or [])
            elif isinstance(node, ast.ExceptHandler):
                visit(node.body)
            elif not top_level_only:
                visit(ast.iter_child_nodes(node))

    visit(_tree(path).body)
    return found


def model_library_imports() -> list[str]:
    bad = []
    for name, path in _modules().items():
        if name in MODEL_LAYER:
            continue
        for module, line in _imports(name, path, top_level_only=False):
            if module.split(".")[0] in MODEL_LIBRARIES:
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {module} (only the model layer may)")
    return bad


def sql_outside_store() -> list[str]:
    bad = []
    for name, path in _modules().items():
        if name.startswith("auditor.store"):
            continue
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: SQL outside auditor/store/")
            elif isinstance(node, ast.Attribute) and node.attr == "db" and isinstance(node.ctx, ast.Load):
                owner = ast.unparse(node.value)
                if "store" in owner.lower():
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {owner}.db (ask the store instead)")
        for module, line in _imports(name, path, top_level_only=False):
            if module.split(".")[0] in ("sqlite3", "sqlite_utils"):
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {module} outside auditor/store/")
    return bad


def ui_private_imports() -> list[str]:
    bad = []
    for name, path in _modules().items():
        if not name.startswith("ui"):
            continue
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("auditor"):
                private = [p for p in node.module.split(".") if p.startswith("_") and not p.endswith("__")]
                private += [
                    a.name for a in node.names if a.name.startswith("_") and not a.name.endswith("__")
                ]
                if private:
                    bad.append(
                        f"{path.relative_to(ROOT)}:{node.lineno}: imports private {', '.join(private)}"
                    )
    return bad


def core_loads_simulation() -> list[str]:
    """Follow the import-time graph from the core: it must not reach ``auditor.sim``."""
    modules = _modules()
    bad, seen = [], {}
    todo = [(c, None) for c in CORE]
    while todo:
        name, via = todo.pop()
        if name in seen or name not in modules:
            continue
        seen[name] = via
        if name.startswith("auditor.sim"):
            chain, step = [name], via
            while step is not None:
                chain.append(step)
                step = seen[step]
            bad.append(" <- ".join(chain))
            continue
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        for module in [*parents, *(m for m, _ in _imports(name, modules[name], top_level_only=True))]:
            todo.append((module, name))
    return bad


def long_modules() -> list[str]:
    bad = []
    for path in _modules().values():
        rel = str(path.relative_to(ROOT))
        n = len(path.read_text(encoding="utf-8").splitlines())
        limit = OVERSIZE.get(rel, MAX_LINES)
        if n > limit:
            bad.append(f"{rel}: {n} lines (at most {limit}; split it by concern)")
    return bad


def defined_once() -> list[str]:
    """One trigger placement, one list of placements, one default judge, one attempt loop, one
    percent and one interval formatter."""
    wanted = {
        "function place": ("auditor.triggers",),
        "assignment PLACEMENTS": ("auditor.triggers",),
        "assignment DEFAULT_JUDGE": ("auditor.config",),
        "function _send": ("auditor.gateway",),
        "function pct": ("auditor.report.format",),
        "function ci": ("auditor.report.format",),
    }
    where: dict[str, list[str]] = {k: [] for k in wanted}
    for name, path in _modules().items():
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names = [f"function {node.name}", f"function {node.name.lstrip('_')}"]
            elif isinstance(node, ast.Assign):
                names = [f"assignment {t.id}" for t in node.targets if isinstance(t, ast.Name)]
            else:
                continue
            for key in set(names) & set(where):
                where[key].append(name)
    return [
        f"{key}: defined in {', '.join(found) or 'nowhere'} (expected once, in {wanted[key][0]})"
        for key, found in where.items()
        if found != list(wanted[key])
    ]


def literal_default_judge() -> list[str]:
    bad = []
    allowed = {"auditor.config", "auditor.sim.offline_judge", "auditor.sim.server.app"}
    for name, path in _modules().items():
        if name in allowed:
            continue
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Constant) and node.value == "offline/judge":
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: write config.DEFAULT_JUDGE")
    return bad


def user_errors_without_the_base() -> list[str]:
    sys.path.insert(0, str(ROOT))
    import importlib

    from auditor.errors import AuditorError

    bad = []
    for name in _modules():
        if name.startswith("ui") or name.endswith("__main__"):
            continue
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__ == name
                and not issubclass(value, AuditorError)
                and f"{name}.{value.__name__}" not in NOT_USER_ERRORS
            ):
                bad.append(f"{name}.{value.__name__} does not derive from auditor.errors.AuditorError")
    return bad


CHECKS = {
    "litellm and openai are imported by the model layer only": model_library_imports,
    "SQL appears only under auditor/store/": sql_outside_store,
    "ui/ imports only public names of auditor": ui_private_imports,
    "importing the core loads nothing from auditor.sim": core_loads_simulation,
    f"no module over {MAX_LINES} lines": long_modules,
    "one definition of each shared idea": defined_once,
    "the default judge is named by its constant": literal_default_judge,
    "every user-facing error derives from AuditorError": user_errors_without_the_base,
}


@pytest.mark.parametrize("check", list(CHECKS), ids=[f.__name__ for f in CHECKS.values()])
def test_layout(check):
    problems = CHECKS[check]()
    assert not problems, check + ":\n" + "\n".join(problems)


def test_the_checks_catch_a_break(tmp_path, monkeypatch):
    """Each invariant fails on a deliberately broken module (so none of them passes vacuously)."""
    broken = tmp_path / "auditor"
    (broken / "store").mkdir(parents=True)
    (broken / "sim").mkdir()
    (broken / "__init__.py").write_text("")
    (broken / "store" / "__init__.py").write_text("")
    (broken / "sim" / "__init__.py").write_text("")
    (broken / "runner.py").write_text(
        "import litellm\nfrom .sim import organisms\nQ = 'select id from runs where x = ?'\n"
        "def place():\n    pass\n" + "x = 1\n" * 700
    )
    (broken / "metrics.py").write_text("def f(store):\n    return store.db.execute('x')\n")
    (broken / "sim" / "organisms.py").write_text("")
    (tmp_path / "ui").mkdir()
    (tmp_path / "ui" / "__init__.py").write_text("")
    (tmp_path / "ui" / "app.py").write_text("from auditor.gateway import _pick\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    _tree.cache_clear()
    try:
        assert any("runner.py:1: imports litellm" in p for p in model_library_imports())
        sql = sql_outside_store()
        assert any("runner.py:3: SQL" in p for p in sql) and any("store.db" in p for p in sql)
        assert ui_private_imports() == ["ui/app.py:1: imports private _pick"]
        assert "auditor.sim.organisms <- auditor.runner" in core_loads_simulation()
        assert long_modules() == ["auditor/runner.py: 705 lines (at most 600; split it by concern)"]
        assert "function place: defined in auditor.runner" in " ".join(defined_once())
    finally:
        _tree.cache_clear()


if __name__ == "__main__":
    failed = 0
    for title, check in CHECKS.items():
        problems = check()
        failed += bool(problems)
        print(("FAIL " if problems else "ok   ") + title)
        for p in problems:
            print("     " + p)
    raise SystemExit(1 if failed else 0)
