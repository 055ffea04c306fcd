"""Amortized Opti-CAM: the head's start, the refinement is Opti-CAM's own loop, and every way a head can be wrong.

A head is made here without training (a seeded :class:`ExplainerHead` saved with the tiny model's fingerprint),
so each test says exactly what it starts from. The objective the training maximizes is checked against
:class:`OptiCAM`'s own evaluation on the same weights; ``refine=k`` against Opti-CAM's loop run by hand from
the head's prediction.
"""

from __future__ import annotations

import pickle

import pytest
import torch

from opticam import OptiCAM
from opticam.errors import ConfigValueError, InputError, UsageError
from opticam.methods.amortized import AmortizedOptiCAM
from opticam.methods.explainer_head import (
    DESCRIPTORS,
    SHIPPED,
    ExplainerHead,
    HeadInfo,
    channel_descriptors,
    load_head,
    save_head,
    shipped_heads,
)
from opticam.methods.registry import create_method, make_spec, method_names
from opticam.models.fingerprint import weights_fingerprint
from opticam.models.loading import LoadedModel, Preprocessing
from opticam.training import head_objective
from tests.tinymodels import tiny_images, tiny_pixel_model

LAYER = "model.features"


def make_head(tmp_path, model, *, layer="features", seed=3, name="head.pt"):
    torch.manual_seed(seed)
    head = ExplainerHead(hidden=8)
    info = HeadInfo("tiny", layer, weights_fingerprint(model), channels=4, hidden=8)
    return save_head(tmp_path / name, head, info)


@pytest.fixture
def model():
    return tiny_pixel_model(channels=4, classes=3)


def test_descriptors_are_standardized_per_image_and_follow_the_class():
    feats = torch.rand(2, 5, 3, 3)
    alpha = torch.randn(2, 5)
    d = channel_descriptors(feats, alpha)
    assert d.shape == (2, 5, DESCRIPTORS)
    assert torch.allclose(d[..., :6].mean(dim=1), torch.zeros(2, 6), atol=1e-5)
    assert torch.allclose(
        d[..., 2], (alpha - alpha.mean(1, keepdim=True)) / alpha.std(1, unbiased=False, keepdim=True), atol=1e-4
    )
    assert not torch.allclose(channel_descriptors(feats, -alpha), d)  # another class, other descriptors


def test_a_channel_permutation_permutes_the_prediction():
    """One MLP for every channel, no per-channel parameter: the head serves any number of channels."""
    torch.manual_seed(0)
    head = ExplainerHead(hidden=8)
    feats, alpha = torch.rand(1, 6, 4, 4), torch.randn(1, 6)
    perm = torch.randperm(6)
    assert torch.allclose(head(feats[:, perm], alpha[:, perm]), head(feats, alpha)[:, perm], atol=1e-5)
    assert head(torch.rand(2, 11, 3, 3), torch.randn(2, 11)).shape == (2, 11)


@pytest.mark.parametrize("kind", ["mask", "log-prob", "diff", "io-mask"])
def test_the_training_objective_is_opticams_on_the_same_weights(model, kind):
    """head_objective at u = 0 is what paper Opti-CAM's first evaluation gives (its objective_initial)."""
    x = tiny_images(3)
    cam = OptiCAM(model, LAYER, iterations=0, objective=kind, warn_pixel_space=False)
    result = cam.explain(x)
    logits, feats = cam.features(x)
    classes = result.class_indices
    original = logits[torch.arange(3), classes]
    with torch.no_grad():
        ours = head_objective(model, x, feats, torch.zeros(3, 4), classes, kind, "range", original)
    assert torch.allclose(ours, result.objective_final, atol=1e-6)


def test_refine_zero_is_the_heads_map_and_its_objective(model, tmp_path):
    path = make_head(tmp_path, model)
    x = tiny_images(2)
    cam = AmortizedOptiCAM(model, LAYER, head=path, refine=0, warn_pixel_space=False)
    result = cam.explain(x)
    assert result.iterations.tolist() == [0, 0]
    head, _ = load_head(path)
    logits, classes, feats, alpha = OptiCAM(model, LAYER, warn_pixel_space=False).features_and_gradcam(x, None)
    with torch.no_grad():
        u = head(feats, alpha)
        value = head_objective(model, x, feats, u, classes, "log-prob", "range")
    assert torch.allclose(result.objective_final, value, atol=1e-6)
    assert torch.allclose(result.weights, torch.softmax(u, dim=1), atol=1e-6)
    assert "head" in result.diagnostics.notes and str(path) in result.diagnostics.notes["head"]


@pytest.mark.parametrize("k", [1, 3])
def test_refine_k_takes_exactly_k_steps_of_opticams_loop_from_the_prediction(model, tmp_path, k):
    path = make_head(tmp_path, model)
    x = tiny_images(2)
    cam = AmortizedOptiCAM(model, LAYER, head=path, refine=k, early_stop=False, warn_pixel_space=False)
    result = cam.explain(x)
    assert result.iterations.tolist() == [k, k]
    # the same loop by hand: Opti-CAM at the refinement's settings, started from the head's prediction
    head, _ = load_head(path)
    by_hand = OptiCAM(model, LAYER, config=cam.config, warn_pixel_space=False)
    logits, classes, feats, alpha = by_hand.features_and_gradcam(x, None)
    with torch.no_grad():
        u0 = head(feats, alpha)
    loop = by_hand._optimize(x, feats, classes, logits[torch.arange(2), classes], u0)
    assert torch.allclose(result.weights, torch.softmax(loop.best_u, dim=1), atol=1e-6)
    assert result.passes == 2 * (k + 1) + 2  # k + 1 evaluations per image, plus the capture pass


def test_the_map_depends_on_the_class(model, tmp_path):
    cam = AmortizedOptiCAM(model, LAYER, head=make_head(tmp_path, model), warn_pixel_space=False)
    x = tiny_images(1)
    a, b = cam.explain(x, 0).maps, cam.explain(x, 2).maps
    assert not torch.allclose(a, b)


def test_registered_with_declared_options(model, tmp_path):
    assert "opticam-amortized" in method_names()
    with pytest.raises(ConfigValueError, match="refine"):
        make_spec("opticam-amortized", {"refine": -1})
    loaded = LoadedModel("tiny", model, Preprocessing((8, 8)), ["a", "b", "c"], target_layer=LAYER)
    path = make_head(tmp_path, model)
    method = create_method(f"opticam-amortized(head={path},refine=2)", loaded)
    assert isinstance(method, AmortizedOptiCAM) and method.config.iterations == 2


def test_an_edited_head_file_changes_what_a_run_records(model, tmp_path):
    path = make_head(tmp_path, model, seed=1)
    spec = make_spec("opticam-amortized", {"head": str(path)})
    before = spec.settings()["head_digest"]
    make_head(tmp_path, model, seed=2)  # same path, other weights
    assert spec.settings()["head_digest"] != before


def test_missing_head_is_one_line(model, tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        AmortizedOptiCAM(model, LAYER, head=tmp_path / "none.pt", warn_pixel_space=False)


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"not a torch file"),
        lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
        lambda p: torch.save({"format": "other"}, p),
        lambda p: torch.save({"format": "opticam-explainer-head/1", "info": "{}", "state_dict": {}}, p),
    ],
    ids=["garbage", "truncated", "other-format", "no-info"],
)
def test_a_corrupt_head_file_is_one_line(model, tmp_path, damage):
    path = make_head(tmp_path, model)
    damage(path)
    with pytest.raises(InputError, match="head"):
        AmortizedOptiCAM(model, LAYER, head=path, warn_pixel_space=False)


class _Boom:
    def __reduce__(self):
        return (print, ("code ran",))


def test_a_head_file_that_would_run_code_is_refused(model, tmp_path, capsys):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(InputError):
        AmortizedOptiCAM(model, LAYER, head=path, warn_pixel_space=False)
    assert "code ran" not in capsys.readouterr().out


def test_a_head_for_another_model_is_refused(model, tmp_path):
    other = tiny_pixel_model(channels=4, classes=3, seed=7)
    path = make_head(tmp_path, other)
    with pytest.raises(UsageError, match="trained for model"):
        AmortizedOptiCAM(model, LAYER, head=path, warn_pixel_space=False)


def test_a_head_trained_at_another_layer_is_refused(model, tmp_path):
    path = make_head(tmp_path, model, layer="conv")
    with pytest.raises(UsageError, match="trained at layer conv"):
        AmortizedOptiCAM(model, LAYER, head=path, warn_pixel_space=False)


def test_no_shipped_head_for_a_model_says_how_to_get_one():
    model = tiny_pixel_model(channels=4, classes=3, seed=9)  # no head anywhere has its fingerprint
    with pytest.raises(UsageError, match="train-explainer"):
        AmortizedOptiCAM(model, LAYER, warn_pixel_space=False)


def test_heads_on_the_environment_folders_are_found_by_fingerprint(model, tmp_path, monkeypatch):
    monkeypatch.setenv("OPTICAM_HEADS", str(tmp_path))
    other = tiny_pixel_model(channels=4, classes=3, seed=11)
    with pytest.raises(UsageError, match="no explainer head ships"):
        AmortizedOptiCAM(other, LAYER, warn_pixel_space=False)
    make_head(tmp_path, other, name="mine.pt")
    cam = AmortizedOptiCAM(other, LAYER, warn_pixel_space=False)
    assert "mine.pt" in cam.head()[2]


def test_match_weights_false_applies_a_head_to_other_weights_but_not_another_layer(model, tmp_path):
    other = tiny_pixel_model(channels=4, classes=3, seed=7)
    path = make_head(tmp_path, other)
    cam = AmortizedOptiCAM(model, LAYER, head=path, match_weights=False, warn_pixel_space=False)
    assert cam.explain(tiny_images(1)).maps.shape == (1, 1, 8, 8)
    with pytest.raises(UsageError, match="trained at layer"):
        AmortizedOptiCAM(model, LAYER, head=make_head(tmp_path, other, layer="conv", name="c.pt"), match_weights=False)


def test_the_shipped_heads_are_small_and_load():
    heads = [p for p in shipped_heads() if p.parent == SHIPPED]
    assert heads, "a head ships for the default model"
    for path in heads:
        assert path.stat().st_size <= 5 * 1024 * 1024
        _, info = load_head(path)
        assert info.training["identity"]["weights_fingerprint"] == info.weights_fingerprint


def test_the_shipped_head_matches_the_real_default_model(lite0, sample_batch):
    """The shipped head was trained for these very weights at bn2, and its start beats uniform weights' objective."""
    from opticam.methods.explainer_head import shipped_head

    cam = AmortizedOptiCAM(lite0.model, lite0.target_layer, lite0.reshape_transform)
    assert cam.head()[2] == "shipped:efficientnet_lite0-bn2.pt"
    assert shipped_head(weights_fingerprint(lite0.model), "bn2") == SHIPPED / "efficientnet_lite0-bn2.pt"
    x, labels = sample_batch
    result = cam.explain(x[:4], labels[:4])
    assert result.iterations.tolist() == [0, 0, 0, 0] and result.maps.shape == (4, 1, 224, 224)
    refined = AmortizedOptiCAM(lite0.model, lite0.target_layer, refine=3).explain(x[:4], labels[:4])
    assert (refined.objective_final >= refined.objective_initial).all()


def test_a_report_rebuilds_the_method_from_what_a_run_recorded(model, tmp_path):
    """A run records the head's digest beside the options; the report's grid rebuilds the method from the options."""
    from types import SimpleNamespace

    from opticam.evaluation.report import method_from_settings

    path = make_head(tmp_path, model)
    spec = make_spec("opticam-amortized", {"head": str(path), "refine": 2})
    recorded = {"method": spec.name, **spec.entry.settings(spec.options)}
    assert "head_digest" in recorded
    run = SimpleNamespace(method_settings={spec.key: recorded}, config={"layer": "features"})
    loaded = LoadedModel("tiny", model, Preprocessing((8, 8)), ["a", "b", "c"], target_layer="features")
    rebuilt = method_from_settings(run, spec.key, loaded)
    assert isinstance(rebuilt, AmortizedOptiCAM) and rebuilt.config.iterations == 2
