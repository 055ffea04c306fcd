"""The package's shape: no import cycle between its modules, and one definition of each shared job.

The import graph is read from the source with :mod:`ast` (every ``import`` statement, at module level or
inside a function), not from ``sys.modules``, so a cycle hidden behind a deferred import counts too.
A shared job is checked by what callers get (one object, whichever module they import it from) and by what
it does (the layer capture runs the model once and leaves no hook; no method leaves one; files and uploads
decode alike), never by grepping the source for a ``def`` or a call.
"""

from __future__ import annotations

import ast
import importlib
import io
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn.modules import module as torch_module

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


def test_the_graph_sees_relative_and_deferred_imports(tmp_path):
    """On a package written here: relative imports (a sibling, a parent's module, a submodule imported by name
    from its package), absolute ones, an import inside a function; outside modules are left out."""
    files = {
        "pkg/__init__.py": "from .a import thing\n",
        "pkg/a.py": "import os\nfrom . import c\nfrom .b import helper\nthing = 1\n",
        "pkg/b.py": "def helper():\n    import pkg.c\n    from pkg.sub import d\n",
        "pkg/c.py": "",
        "pkg/sub/__init__.py": "",
        "pkg/sub/d.py": "from ..a import thing\nfrom ..sub import e\nfrom . import e as again\n",
        "pkg/sub/e.py": "def later():\n    from .. import b\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    names = {rel: rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for rel in files}
    known = set(names.values())
    graph = {names[rel]: imports_of(names[rel], tmp_path / rel, known) for rel in files}
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.b", "pkg.c"},
        "pkg.b": {"pkg.c", "pkg.sub.d"},
        "pkg.c": set(),
        "pkg.sub": set(),
        "pkg.sub.d": {"pkg.a", "pkg.sub.e"},  # ``from ..sub import e``: the module e, not its package
        "pkg.sub.e": {"pkg.b"},
    }


def test_the_graph_accounts_for_everything_the_modules_hold_at_run_time():
    """Each object of the package that a module holds once imported (a class, a function, a module) comes
    from a module the graph has it import, directly or through others: the graph is not missing imports
    (and not empty), whatever the modules import today."""
    graph = import_graph()

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    checked, missing = 0, []
    for name, module in package_modules().items():
        reach = reachable(name)
        for attr, value in vars(module).items():
            if isinstance(value, types.ModuleType):
                owner = None if value.__name__.startswith(name + ".") else value.__name__  # a package's children
            else:
                owner = getattr(value, "__module__", None) if isinstance(value, type) or callable(value) else None
            if owner in graph and owner != name:
                checked += 1
                if owner not in reach:
                    missing.append(f"{name}.{attr} from {owner}")
    assert checked > len(graph) and not missing, missing


def test_no_import_cycle_inside_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_data_flows_one_way_between_rooms():
    """models <- methods <- metrics/evaluation <- training <- cli/web: no room imports a room downstream of it."""
    order = [
        "errors",
        "options",
        "images",
        "models",
        "methods",
        "metrics",
        "viz",
        "evaluation",
        "training",
        "perf",
        "cli",
        "web",
    ]
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


SHARED_JOBS = {
    "explain_and_score": (),
    "OptiCAMConfig": (),
    "capture_layer": (),
    "parse_method_list": (),
    "decode_image": (),
    "UsageError": (),
}


def package_modules() -> dict[str, object]:
    """Every module of the package, imported (``__main__`` runs the command line when imported: left out)."""
    names = sorted(n for n in modules() if not n.endswith("__main__"))
    return {name: importlib.import_module(name) for name in names}


@pytest.mark.parametrize("name", sorted(SHARED_JOBS))
def test_each_shared_job_is_one_object_wherever_it_is_imported_from(name):
    """Whichever module of the package a caller takes a shared job from, it gets the one definition: a copy
    (a second ``def`` or ``class`` of that name anywhere in the package) would be another object. Where the
    one definition lives is free to change."""
    found = package_modules()
    wrappers = {id(getattr(found[w], name)) for w in SHARED_JOBS[name]}
    holders: dict[int, list[str]] = {}
    for module_name_, module in found.items():
        if hasattr(module, name) and id(getattr(module, name)) not in wrappers:
            holders.setdefault(id(getattr(module, name)), []).append(module_name_)
    assert len(holders) == 1, f"{name} has {len(holders)} definitions: {sorted(holders.values())}"


def test_the_identity_check_sees_a_second_definition(monkeypatch):
    """The check above fails on a copy: a module binding a look-alike ``UsageError`` is one more object."""
    import opticam.cli.paths

    class UsageError(Exception):  # a copy by name
        pass

    monkeypatch.setattr(opticam.cli.paths, "UsageError", UsageError)
    with pytest.raises(AssertionError, match="UsageError has 2 definitions"):
        test_each_shared_job_is_one_object_wherever_it_is_imported_from("UsageError")


# -- the layer capture: one pass, no hook left ----------------------------------------------------------
HOOK_KINDS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def hooks_on(model: nn.Module) -> int:
    """Hooks on ``model``'s modules and torch's global module hooks: what a method could leave behind."""
    local = sum(len(getattr(m, kind, {})) for m in model.modules() for kind in HOOK_KINDS)
    return local + sum(len(getattr(torch_module, f"_global{kind}", {})) for kind in HOOK_KINDS)


class CountingReLU(nn.ReLU):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().forward(x)


class Net(nn.Module):
    """conv -> counted ReLU ("features") -> mean over space -> linear; raises on the call ``explode_at``."""

    def __init__(self, explode_at: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.features = CountingReLU()
        self.unused = CountingReLU()
        self.head = nn.Linear(4, 5)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        self.calls = 0
        self.explode_at = explode_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.explode_at:
            raise RuntimeError("boom")
        return self.head(self.features(self.conv(x)).mean(dim=(2, 3)))


def test_capture_layer_runs_the_model_once_and_leaves_no_hook():
    from opticam.models import capture_layer

    net = Net()
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        activations = torch.relu(net.conv(x))  # computed here, not through the model
        logits = net.head(activations.mean(dim=(2, 3)))

    captured = capture_layer(net, net.features, x)
    assert (net.calls, net.features.calls) == (1, 1)
    assert torch.allclose(captured.output, activations) and torch.allclose(captured.logits, logits)
    assert captured.gradient is None and hooks_on(net) == 0

    # With a score: the gradient of the class-2 logits' sum with respect to the layer's output is
    # W[2] / (H * W) at every position (a linear head on the spatial mean), from the same single pass.
    captured = capture_layer(net, net.features, x, score=lambda out: (out[:, 2].sum(), "info"))
    assert (net.calls, net.features.calls) == (2, 2)
    expected = (net.head.weight[2] / 36).detach().view(1, 4, 1, 1).expand(2, 4, 6, 6)
    assert torch.allclose(captured.gradient, expected) and captured.score_info == "info"
    assert hooks_on(net) == 0


def test_capture_layer_leaves_no_hook_when_the_pass_fails():
    from opticam.models import capture_layer

    net = Net()
    with pytest.raises(RuntimeError, match="layer unused did not run"):
        capture_layer(net, net.unused, torch.rand(1, 3, 4, 4), name="unused")
    assert hooks_on(net) == 0
    net = Net(explode_at=1)
    with pytest.raises(RuntimeError, match="boom"):
        capture_layer(net, net.features, torch.rand(1, 3, 4, 4), score=lambda out: (out.sum(), None))
    assert hooks_on(net) == 0


FAST_METHODS = ["opticam", "fakecam", "gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "eigencam",
                "eigengradcam", "gradcamelementwise", "kpcacam", "shapleycam", "finercam"]  # fmt: skip


@pytest.mark.parametrize("name", FAST_METHODS)
def test_no_method_leaves_a_hook_on_the_model(name):
    """Whatever a method hooks to read a layer, the model has no hook after ``explain``: neither when it
    returns nor when the model raises part-way (at its first, second or third pass)."""
    from opticam import PixelSpaceModel
    from opticam.methods import create_method
    from opticam.models import LoadedModel, Preprocessing

    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    options = {"iterations": 2} if name == "opticam" else {}
    outcomes = []
    for explode_at in (0, 1, 2, 3):
        net = Net(explode_at)
        model = PixelSpaceModel(net, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).eval()
        loaded = LoadedModel("net", model, Preprocessing((8, 8)), list("abcde"), target_layer="features")
        method = create_method(name, loaded, **options)
        try:
            method.explain(x, [1, 2])
            outcomes.append("done")
        except RuntimeError as exc:
            assert "boom" in str(exc)
            outcomes.append("raised")
        assert hooks_on(model) == 0, (name, explode_at)
    assert outcomes[0] == "done" and outcomes[1] == "raised"  # both paths were taken


def test_the_hook_count_sees_a_hook():
    net = Net()
    handle = net.features.register_forward_hook(lambda *_: None)
    assert hooks_on(net) == 1
    handle.remove()
    assert hooks_on(net) == 0


# -- one decoder for files and uploads ------------------------------------------------------------------
def image_bytes(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def payloads() -> dict[str, bytes]:
    pixels = (torch.rand(7, 9, 3, generator=torch.Generator().manual_seed(4)) * 255).byte().numpy()
    rgb = Image.fromarray(pixels)
    rgba = rgb.convert("RGBA")
    rgba.putpixel((0, 0), (10, 20, 30, 0))  # transparent: white for both
    return {
        "rgb.png": image_bytes(rgb, "PNG"),
        "gray.png": image_bytes(rgb.convert("L"), "PNG"),
        "rgba.png": image_bytes(rgba, "PNG"),
        "palette.gif": image_bytes(rgb.convert("P"), "GIF"),
        "photo.jpg": image_bytes(rgb, "JPEG"),
        "truncated.png": image_bytes(rgb, "PNG")[:60],
        "text.png": b"not an image at all",
        "empty.png": b"",
    }


@pytest.mark.parametrize("case", sorted(payloads()))
def test_the_web_page_decodes_an_upload_as_the_command_line_reads_the_file(case, tmp_path):
    """The same bytes give the same RGB pixels as a file and as an upload, or a refusal by both."""
    from opticam.errors import ImageLoadError
    from opticam.images import load_image
    from opticam.web.uploads import UploadRejected, decode_upload

    data = payloads()[case]
    path = tmp_path / case
    path.write_bytes(data)
    try:
        from_file = np.asarray(load_image(path))
    except ImageLoadError:
        from_file = None
    try:
        from_upload = np.asarray(decode_upload(data, max_pixels=10_000))
    except UploadRejected:
        from_upload = None
    refused = {"truncated.png", "text.png", "empty.png"}
    assert (from_file is None) == (from_upload is None) == (case in refused)
    if from_file is not None:
        assert from_file.shape == (7, 9, 3) and np.array_equal(from_file, from_upload)
