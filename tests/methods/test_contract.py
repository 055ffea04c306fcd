"""The method contract: SaliencyMethod.explain owns checks, state, timing, pass counting and the result for
every method; a method writes only ``compute``; specs with options are checked against each method's own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from opticam.errors import ConfigValueError, InputError, InputTypeError, NumericalError, UsageError
from opticam.methods import (
    METHODS,
    Diagnostics,
    Maps,
    SaliencyMethod,
    SaliencyResult,
    create_method,
    parse_method_list,
    parse_method_specs,
)
from opticam.methods.registry import register_method
from opticam.options import Option
from tests.methods.test_baselines import small_images, small_loaded, small_model

pytestmark = pytest.mark.usefixtures("one_thread")
SRC = Path(__file__).resolve().parents[2] / "src" / "opticam"
FAST = [n for n in METHODS if n not in ("extremal", "fullgrad", "scorecam", "ablationcam")]


class Halves(SaliencyMethod):
    """A method that writes only ``compute``: the left half of each image, and it measures one thing."""

    name = "halves"
    needs_layer = False

    def compute(self, x: torch.Tensor, targets) -> Maps:
        logits, classes = self.classify(x, targets)
        maps = torch.zeros(x.shape[0], 1, *x.shape[-2:])
        maps[..., : x.shape[-1] // 2] = 1.5  # out of [0, 1]: explain clips it
        self.step_done(1, 1, 0)
        return Maps(maps, classes, logits, Diagnostics(values={"width": torch.full((x.shape[0],), 8.0)}))


def test_a_method_that_writes_only_compute_gets_the_whole_contract():
    model = small_model().train()
    grads = [p.requires_grad for p in model.parameters()]
    method = Halves(model)
    seen_training = []
    handle = model.register_forward_pre_hook(lambda m, a: seen_training.append(m.training))
    steps = []
    method.callback = lambda step, total, active: steps.append((step, total, active))
    try:
        result = method.explain(small_images(2), [[1, 3], [2]])  # three maps: two targets for image 0
    finally:
        handle.remove()
    assert isinstance(result, SaliencyResult)
    assert result.maps.shape == (3, 1, 16, 16) and result.maps.max() == 1.0  # clipped
    assert result.class_indices.tolist() == [1, 3, 2] and result.image_indices.tolist() == [0, 0, 1]
    assert result.seconds > 0 and torch.equal(method.outputs, result.logits)
    assert result.passes == 3  # counted at the model's forward: one pass over three images
    assert result.record(0) == {"passes_per_map": 1.0, "width": 8.0}
    assert seen_training == [False] and model.training  # eval during the call, restored after
    assert [p.requires_grad for p in model.parameters()] == grads
    assert not model._forward_pre_hooks and steps == [(1, 1, 0)]


@pytest.mark.parametrize(
    ("x", "error", "message"),
    [
        (small_images(1).numpy(), InputTypeError, "got ndarray"),
        ((small_images(1) * 255).byte(), InputTypeError, "x.float\\(\\) / 255"),
        (small_images(1)[0], InputError, "use x\\[None\\]"),
        (torch.zeros(0, 3, 16, 16), InputError, "empty input"),
        (torch.full((1, 3, 16, 16), float("nan")), NumericalError, "NaN"),
    ],
)
def test_bad_images_are_opticam_errors_for_every_method(x, error, message):
    for name in ("fakecam", "gradcam", "opticam"):
        with pytest.raises(error, match=message):
            create_method(name, small_loaded()).explain(x)
    assert issubclass(InputTypeError, TypeError) and issubclass(InputError, ValueError)


def test_maps_that_are_not_maps_are_refused():
    class Broken(Halves):
        def compute(self, x, targets):
            out = super().compute(x, targets)
            return Maps(out.maps * float("nan"), out.class_indices, out.logits)

    class Wrong(Halves):
        def compute(self, x, targets):
            out = super().compute(x, targets)
            return Maps(out.maps[:, :, :4], out.class_indices, out.logits)

    with pytest.raises(NumericalError, match="halves produced NaN"):
        Broken(small_model()).explain(small_images(1))
    with pytest.raises(InputError, match="maps of shape"):
        Wrong(small_model()).explain(small_images(1))


@pytest.mark.parametrize("name", FAST)
def test_every_method_reports_diagnostics_the_same_way(name):
    """Every registered method: passes counted, iterations for the iterative ones, objectives for Opti-CAM."""
    declared = {o.name for o in METHODS[name].options}
    options = {"iterations": 3} if "iterations" in declared else {"refine": 3} if "refine" in declared else {}
    method = create_method(name, small_loaded(), **options)
    result = method.explain(small_images(2), [1, 2])
    d = result.diagnostics
    assert d.passes is not None and d.passes >= 2, name
    record = result.record(1)
    assert record["passes_per_map"] == d.passes / 2
    if name.startswith("opticam"):
        assert d.iterations.tolist() == [3, 3] or (d.iterations <= 3).all()
        assert {"iterations", "objective_initial", "objective_final"} <= set(record)
        assert result.weights.shape[0] == 2 and torch.allclose(result.weights.sum(1), torch.ones(2))
    else:
        assert d.iterations is None and "iterations" not in record


def test_opticam_counts_its_passes_and_reports_each_step():
    steps = []
    cam = create_method("opticam", small_loaded(), iterations=3, early_stop=False)
    cam.callback = lambda step, total, active: steps.append((step, total, active))
    result = cam.explain(small_images(2), [0, 1])
    assert steps == [(1, 3, 2), (2, 3, 2), (3, 3, 2)]
    assert result.passes == 2 + 4 * 2  # the capture pass and four evaluations (steps 0..3) of two images
    assert result.iterations.tolist() == [3, 3]


# -- specs ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("opticam", ["opticam"]),
        ("opticam(iterations=100)", ["opticam"]),  # the default: the same maps, the same key
        ("opticam(normalization=max, objective=diff)", ["opticam(objective=diff,normalization=max)"]),
        ("opticam(lr=0.30)", ["opticam(lr=0.3)"]),
        ("gradcam(layer=conv1),gradcam", ["gradcam(layer=conv1)", "gradcam"]),
        ("opticam,opticam(iterations=100),fakecam", ["opticam", "fakecam"]),
        ("scorecam(batch_size=8)", ["scorecam"]),  # speed only: not part of what names the maps
        ("opticam-fast(iterations=10)", ["opticam-fast(iterations=10)"]),
        ("opticam(early_stop=false)", ["opticam(early_stop=false)"]),
    ],
)
def test_specs_have_one_canonical_key(text, keys):
    assert parse_method_list(text) == keys


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("nope", "unknown method 'nope'"),
        ("opticam(foo=1)", "unknown option 'foo'"),
        ("opticam(lr=abc)", "lr=abc: expected a finite number > 0"),
        ("opticam(iterations=1.5)", "expected a whole number"),
        ("opticam(objective=bad)", "expected one of mask, diff"),
        ("opticam(early_stop=maybe)", "true or false"),
        ("opticam(lr=0.1", "unbalanced"),
        ("opticam)", "unbalanced"),
        ("opticam(lr)", "name=value"),
        ("opticam(lr=1,lr=2)", "given twice"),
        ("fakecam(layer=x)", "fakecam takes no options"),
        ("gradcam(iterations=3)", "unknown option 'iterations'"),
        ("opticam(lr=0.1)x", "parentheses at the end"),
    ],
)
def test_bad_specs_say_what_is_wrong(text, message):
    with pytest.raises((UsageError, ConfigValueError), match=message):
        parse_method_specs(text)


def test_invalid_option_values_are_caught_when_the_method_is_built():
    with pytest.raises(ValueError, match="option lr=-1.0: expected a finite number > 0"):
        create_method("opticam(lr=-1)", small_loaded())


def test_a_spec_builds_the_method_it_names():
    cam = create_method("opticam(objective=diff,normalization=max,iterations=2)", small_loaded())
    assert (cam.config.objective, cam.config.normalization, cam.config.iterations) == ("diff", "max", 2)
    layered = create_method("gradcam(layer=conv1)", small_loaded())
    assert layered.target_layer_name == "conv1"
    assert create_method("opticam-fast", small_loaded()).config.iterations == 32
    settings = parse_method_specs("opticam-tenth")[0].settings()
    assert settings["iterations"] == 9 and settings["schedule"] == "cosine" and "compile" not in settings


def test_a_new_method_is_one_class_with_declared_options():
    """A subclass that declares its options and is decorated: the registry parses, checks, keys and builds it."""

    class Ones(Halves):
        name = "ones"
        needs_layer = False
        options = (Option("level", "float", 1.0, "the map's value", low=0, high=1),)

        def __init__(self, model, target_layers=None, reshape_transform=None, **options) -> None:
            super().__init__(model)
            self.level = self.check_options(**options)["level"]

    try:
        register_method(Ones)
        assert parse_method_list("ones(level=0.5)") == ["ones(level=0.5)"]
        assert parse_method_list("ones(level=1)") == ["ones"]  # the default is not spelled
        assert create_method("ones(level=0.5)", small_loaded()).level == 0.5
        assert create_method("ones", small_loaded()).level == 1.0
        with pytest.raises(ValueError, match=r"method ones: option level=x: expected a finite number in \[0, 1\]"):
            parse_method_list("ones(level=x)")
        with pytest.raises(ValueError, match="level=2"):
            Ones(small_model(), level=2)  # the same check in Python
        with pytest.raises(ValueError, match="registered twice"):
            register_method(Ones)
    finally:
        del METHODS["ones"]


# -- nothing outside methods/ asks which method it holds ----------------------------------------------------
def test_no_code_outside_methods_tests_a_method_name_or_probes_a_result():
    names = set(METHODS) | {"opticam-fast", "opticam-tenth"}
    probes = {"objective_final", "objective_initial", "iterations", "passes", "weights", "coarse_passes"}
    found = []
    for path in SRC.rglob("*.py"):
        if "methods" in path.relative_to(SRC).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                for operand in [node.left, *node.comparators]:
                    values = operand.elts if isinstance(operand, ast.Tuple | ast.List | ast.Set) else [operand]
                    for v in values:
                        if isinstance(v, ast.Constant) and v.value in names:
                            found.append(f"{path.name}:{node.lineno} compares with {v.value!r}")
            probing = isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("hasattr", "getattr")
            probed = node.args[1] if probing and len(node.args) > 1 else None
            if isinstance(probed, ast.Constant) and probed.value in probes:
                found.append(f"{path.name}:{node.lineno} probes {probed.value!r}")
    assert not found, found


def test_no_getattr_forwarding_in_methods():
    for path in (SRC / "methods").glob("*.py"):
        assert "__getattr__" not in path.read_text(), path.name
