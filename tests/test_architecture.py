"""The layering the README describes, checked on the source (static: `ast`, nothing imported).

- no import cycle among the modules of app/ and worker/ (imports inside functions count too);
- app/ml imports no web, database or queue library, and nothing of app/ outside app/ml;
- the domain packages import neither the web layer, the worker, the CLI nor the bench package;
- nothing in app/ imports the worker package; nothing but the CLI imports the bench package;
- the web process (app.main) does not import torch.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "worker")
FORBIDDEN_IN_ML = ("fastapi", "starlette", "sqlalchemy", "alembic", "celery", "kombu", "redis", "limits")
DOMAIN = ("app.users", "app.cases", "app.cells", "app.audit", "app.exports", "app.processing", "app.auth",
          "app.taxonomy", "app.differential", "app.reports", "app.rerun", "app.agreement")
ABOVE_DOMAIN = ("app.web", "worker", "app.cli", "app.bench", "app.main")
CORE = ("app.config", "app.db", "app.errors", "app.storage", "app.queue")  # below the domain, beside app.ml


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _imports(name: str, path: Path) -> set[str]:
    """Every module `name` imports (absolute names; `from x import y` counts y when it is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: {i for i in _imports(m, p) if i in modules and i != m} for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_no_import_cycle_in_app_and_worker():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_ml_imports_no_web_database_or_queue_library():
    bad = []
    for name, path in _modules().items():
        if _within(name, ("app.ml",)):
            for i in _imports(name, path):
                top = i.split(".")[0]
                if top in FORBIDDEN_IN_ML or (top == "app" and not _within(i, ("app.ml",))):
                    bad.append(f"{name} imports {i}")
    assert bad == []


def test_layers_point_one_way():
    bad = []
    graph = _graph()
    for name, deps in graph.items():
        for d in deps:
            if _within(name, DOMAIN) and _within(d, ABOVE_DOMAIN):
                bad.append(f"{name} (domain) imports {d}")
            if _within(name, ("app",)) and _within(d, ("worker",)):
                bad.append(f"{name} imports the worker package ({d})")
            if _within(d, ("app.bench",)) and not _within(name, ("app.bench", "app.cli")):
                bad.append(f"{name} imports the bench package ({d})")
            if _within(name, CORE) and _within(d, ("app.ml",)):
                bad.append(f"{name} (core) reaches into app/ml ({d})")
    assert bad == []


def test_the_settings_default_model_is_the_shipped_one():
    from app.config import DEFAULT_MODEL_DIR
    from app.ml.card import SHIPPED_MODEL

    assert DEFAULT_MODEL_DIR == SHIPPED_MODEL


def test_the_settings_backends_are_the_ml_sides():
    from app.config import BACKEND_NAMES
    from app.ml.backends import BACKENDS

    assert BACKEND_NAMES == ("auto", *BACKENDS)


def test_the_settings_roles_are_the_accounts():
    from app.config import ROLE_NAMES
    from app.users.models import ROLES

    assert ROLE_NAMES == ROLES


def test_the_web_app_does_not_load_torch():
    code = "import sys, app.main; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_pages_take_nothing_from_the_api_routers():
    """What the pages and the JSON API share lives in the domain packages, not in a router module."""
    bad = [f"{name} imports {d}" for name, deps in _graph().items() if _within(name, ("app.web",))
           for d in deps if _within(d, DOMAIN) and d.rpartition(".")[2] == "routes"]
    assert bad == []
