"""The package's shape: no import cycle between its modules, and one definition of each shared job.

The import graph is read from the source with :mod:`ast` (every ``import`` statement, at module level or
inside a function), not from ``sys.modules``, so a cycle hidden behind a deferred import counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "opticam"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports (``from .x import y`` counts ``x.y`` when that is a module)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in known else stem for alias in node.names]
        else:
            continue
        out.update(t for t in targets if t in known and t != name)
    return out


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or ``None``: a depth-first search with colours."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_relative_and_deferred_imports():
    graph = import_graph()
    assert "opticam.methods.base" in graph["opticam.methods.opticam"]  # from .base import ...
    assert "opticam.models.hooks" in graph["opticam.methods.base"]  # from ..models.hooks import ...
    assert "opticam.web.app" in graph["opticam.cli.serve"]  # imported inside a function


def test_no_import_cycle_inside_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_data_flows_one_way_between_rooms():
    """models <- methods <- metrics/evaluation <- cli/web: no room imports a room downstream of it."""
    order = ["errors", "options", "images", "models", "methods", "metrics", "viz", "evaluation", "perf", "cli", "web"]
    upstream_of = {room: set(order[: i + 1]) for i, room in enumerate(order)}
    upstream_of["cli"] |= {"web"}  # `opticam serve` starts the web app
    bad = []
    for name, targets in import_graph().items():
        parts = name.split(".")
        if len(parts) < 2:
            continue
        room = parts[1]
        for target in targets:
            other = target.split(".")[1] if target.count(".") else None
            if other and other not in upstream_of.get(room, {other}):
                bad.append(f"{name} -> {target}")
    assert not bad, bad


def test_the_web_app_imports_nothing_from_the_command_line():
    """web/ is a door of its own: what it shares with cli/ (the sample image, the checks) lives upstream of both,
    so the web app never depends on the command line's modules (only cli/serve.py starts the web app)."""
    graph = import_graph()
    web = [name for name in graph if name.startswith("opticam.web")]
    assert "opticam.web.app" in web
    bad = [f"{name} -> {t}" for name in web for t in graph[name] if t == "opticam.cli" or t.startswith("opticam.cli.")]
    assert not bad, bad


@pytest.mark.parametrize(
    ("definition", "where"),
    [
        ("def explain_and_score(", "evaluation/scoring.py"),
        ("class OptiCAMConfig", "methods/opticam_config.py"),
        ("def capture_layer(", "models/hooks.py"),
        ("def parse_method_list(", "methods/registry.py"),
        ("def decode_image(", "images.py"),
        ("class UsageError", "errors.py"),
    ],
)
def test_each_shared_job_is_defined_once(definition, where):
    hits = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if definition in p.read_text()]
    assert hits == [where]


def test_only_the_capture_helper_hooks_a_layer():
    """Forward hooks are registered in models/hooks.py (one layer) and models/layers.py (finding a layer)."""
    hooked = sorted(
        p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if "register_forward_hook" in p.read_text()
    )
    assert hooked == ["models/hooks.py", "models/layers.py"]
