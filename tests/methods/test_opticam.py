"""OptiCAM on tiny models: the optimization, its bookkeeping, and the guarantees around the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from opticam import NumericalError, OptiCAM, TargetError
from opticam.methods.opticam import split_targets
from opticam.methods.opticam_maths import normalize, upsample
from tests.tinymodels import TinyNet, tiny_images, tiny_pixel_model


def _reference_opticam(model, x, c, iterations, lr=0.1, kind="range"):
    """Opti-CAM for ONE image, written independently: torch.optim.Adam, best-seen u, explicit loop."""
    net = model.model
    with torch.no_grad():
        feats = torch.relu(net.conv((x[None] - model.mean) / model.std))[0]
    u = torch.zeros(feats.shape[0], requires_grad=True)
    opt = torch.optim.Adam([u], lr=lr)
    best, best_w, first = -float("inf"), None, None
    for step in range(iterations + 1):
        w = torch.softmax(u, 0)
        s = (w[:, None, None] * feats).sum(0)[None, None]
        m = normalize(upsample(s, tuple(x.shape[-2:])), kind)[0]
        value = model((x * m)[None])[0, c]
        if first is None:
            first = value.item()
        if value.item() > best:
            best, best_w = value.item(), w.detach().clone()
        if step == iterations:
            break
        opt.zero_grad()
        (-value).backward()
        opt.step()
    return best_w, first, best


@pytest.mark.parametrize("kind", ["range", "max", "sigmoid"])
def test_matches_an_independent_single_image_implementation(kind):
    model = tiny_pixel_model()
    x = tiny_images(3)
    classes = [0, 2, 1]
    result = OptiCAM(model, "features", normalization=kind, iterations=15, early_stop=False).explain(x, classes)
    for i, c in enumerate(classes):
        w, first, best = _reference_opticam(model, x[i], c, 15, kind=kind)
        assert torch.allclose(result.weights[i], w, atol=1e-5)
        assert result.objective_initial[i].item() == pytest.approx(first, abs=1e-5)
        assert result.objective_final[i].item() == pytest.approx(best, abs=1e-5)


def test_result_shapes_ranges_and_bookkeeping():
    model = tiny_pixel_model(stride=2)
    x = tiny_images(4, size=16)
    r = OptiCAM(model, "features", iterations=10, early_stop=False).explain(x)
    assert r.maps.shape == (4, 1, 16, 16)
    assert r.maps.min() >= 0 and r.maps.max() <= 1 and torch.isfinite(r.maps).all()
    assert r.weights.shape == (4, 4)
    assert torch.allclose(r.weights.sum(1), torch.ones(4))
    assert torch.equal(r.class_indices, r.logits.argmax(1))  # no targets -> predicted class
    assert torch.equal(r.iterations, torch.full((4,), 10))
    assert (r.objective_final >= r.objective_initial).all()
    assert r.passes == 4 * (1 + 11)  # capture + 11 evaluations (10 steps + the final u)


def test_final_objective_is_that_of_the_returned_map():
    model = tiny_pixel_model()
    x = tiny_images(2)
    r = OptiCAM(model, "features", iterations=8).explain(x, [1, 1])
    with torch.no_grad():
        again = model(x * r.maps)[:, 1]
    assert torch.allclose(again, r.objective_final, atol=1e-5)


def test_batch_equals_one_at_a_time():
    model = tiny_pixel_model()
    x = tiny_images(5)
    cam = OptiCAM(model, "features", iterations=12, early_stop=False)
    batch = cam.explain(x, [0, 1, 2, 0, 1]).maps
    single = torch.cat([cam.explain(x[i : i + 1], [c]).maps for i, c in enumerate([0, 1, 2, 0, 1])])
    assert (batch - single).abs().max() <= 1e-5


def test_early_stopping_is_per_image_and_shrinks_the_batch():
    # Image 0 has a constant feature map (all-black image, zero conv bias): its objective cannot move,
    # so it leaves the batch as soon as a step shows no change; image 1 keeps optimizing. Batch results
    # equal single-image results.
    net = TinyNet()
    with torch.no_grad():
        net.conv.bias.zero_()
    from opticam import PixelSpaceModel

    model = PixelSpaceModel(net, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)).eval()
    x = torch.cat([torch.zeros(1, 3, 8, 8), tiny_images(1)])
    seen = []
    cam = OptiCAM(model, "features", iterations=20, tol=1e-6, callback=lambda s, t, a: seen.append(a))
    r = cam.explain(x, [0, 0])
    assert r.iterations[0].item() == 1  # one step, then no change: it leaves before a second step
    assert r.iterations[1].item() > 5
    assert seen[0] == 2 and seen[-1] <= 1 and 1 in seen  # the batch shrank from 2 to 1
    assert r.passes < 2 * (1 + 21)
    alone = OptiCAM(model, "features", iterations=20, tol=1e-6).explain(x[1:], [0])
    assert torch.allclose(alone.maps, r.maps[1:], atol=1e-6)
    assert torch.isfinite(r.maps).all()


def test_constant_features_give_a_defined_map():
    net = TinyNet()
    with torch.no_grad():
        net.conv.weight.zero_()
        net.conv.bias.fill_(1.0)  # every feature map is the constant 1
    from opticam import PixelSpaceModel

    model = PixelSpaceModel(net, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)).eval()
    r = OptiCAM(model, "features", iterations=3).explain(tiny_images(2))
    assert torch.equal(r.maps, torch.zeros_like(r.maps))


@pytest.mark.parametrize("objective", ["diff", "io-mask"])
def test_other_objectives_improve(objective):
    model = tiny_pixel_model()
    x = tiny_images(2)
    r = OptiCAM(model, "features", objective=objective, iterations=20, early_stop=False).explain(x, [0, 1])
    assert (r.objective_final >= r.objective_initial).all()
    if objective == "io-mask":
        assert r.passes == 2 + 2 * 2 * 21  # two images through the model per evaluation


def test_model_state_is_restored_and_parameters_get_no_gradients():
    model = tiny_pixel_model().train()
    for p in model.parameters():
        p.requires_grad_(True)
    OptiCAM(model, "features", iterations=3).explain(tiny_images(2))
    assert model.training and model.model.conv.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert not model.model.features._forward_hooks


class Exploding(torch.nn.Module):
    """Raises on its third call: checks that hooks and state are cleaned up after an exception."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_pixel_model()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("boom")
        return self.net(x)


def test_hooks_removed_and_state_restored_after_an_exception():
    model = Exploding().train()
    layer = model.net.model.features
    with pytest.raises(RuntimeError, match="boom"):
        OptiCAM(model, layer, iterations=5, warn_pixel_space=False).explain(tiny_images(1))
    assert not layer._forward_hooks
    assert all(not m._forward_hooks for m in model.modules())
    assert model.training
    with pytest.raises(RuntimeError, match="boom"):  # the automatic layer search cleans up too
        model.calls = 0
        OptiCAM(model, warn_pixel_space=False).explain(tiny_images(1))  # call 1: layer search, 2: capture, 3: boom
    assert all(not m._forward_hooks for m in model.modules())


def test_out_of_range_class_and_wrong_target_count():
    cam = OptiCAM(tiny_pixel_model(), "features", iterations=1)
    with pytest.raises(TargetError, match="out of range"):
        cam.explain(tiny_images(1), [3])
    with pytest.raises(TargetError, match="out of range"):
        cam.explain(tiny_images(1), [-1])
    with pytest.raises(TargetError, match="2 targets for 1"):
        cam.explain(tiny_images(1), [0, 1])


def test_nan_logits_and_bad_inputs_raise_clear_errors():
    class NaNNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return self.conv(x).mean(dim=(2, 3)) * float("nan")

    with pytest.raises(NumericalError, match="NaN"):
        OptiCAM(NaNNet(), "conv", iterations=2, warn_pixel_space=False).explain(tiny_images(1))
    cam = OptiCAM(tiny_pixel_model(), "features", iterations=1)
    with pytest.raises(ValueError, match="empty"):
        cam.explain(torch.zeros(1, 3, 0, 8))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        cam.explain(torch.zeros(3, 8, 8))
    with pytest.raises(NumericalError):
        cam.explain(torch.full((1, 3, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="iterations"):
        OptiCAM(tiny_pixel_model(), iterations=-1)
    with pytest.raises(ValueError, match="objective"):
        OptiCAM(tiny_pixel_model(), objective="plain")


def test_grad_cam_style_call():
    model = tiny_pixel_model()
    x = tiny_images(2)
    cam = OptiCAM(model, target_layers=[model.model.features], iterations=5)
    with cam:
        out = cam(input_tensor=x, targets=[ClassifierOutputTarget(1), ClassifierOutputTarget(2)])
    assert isinstance(out, np.ndarray) and out.shape == (2, 8, 8) and out.dtype == np.float32
    same = cam.explain(x, [1, 2]).maps[:, 0].numpy()
    assert np.allclose(out, same)


def test_zero_iterations_returns_the_uniform_map():
    model = tiny_pixel_model()
    x = tiny_images(1)
    r = OptiCAM(model, "features", iterations=0).explain(x, [0])
    assert torch.allclose(r.weights, torch.full((1, 4), 0.25))
    assert r.objective_final.item() == pytest.approx(r.objective_initial.item())


def test_batch_invariant_mode_gives_exactly_the_single_image_maps():
    model = tiny_pixel_model()
    x = tiny_images(3)
    cam = OptiCAM(model, "features", iterations=6, early_stop=False, batch_invariant=True)
    for targets in (None, 1, [0, 2, 1], torch.tensor([2, 2, 0]), [ClassifierOutputTarget(c) for c in (1, 0, 2)]):
        batch = cam.explain(x, targets)
        singles = [cam.explain(x[i : i + 1], t) for i, t in enumerate(split_targets(targets, 3))]
        assert torch.equal(batch.maps, torch.cat([s.maps for s in singles]))
        assert torch.equal(batch.class_indices, torch.cat([s.class_indices for s in singles]))
        assert batch.passes == sum(s.passes for s in singles) and batch.iterations.shape == (3,)
    with pytest.raises(TargetError, match="2 targets for 3"):
        cam.explain(x, [0, 1])


def test_several_targets_per_image_in_one_batch():
    model = tiny_pixel_model(classes=3)
    x = tiny_images(2)
    cam = OptiCAM(model, "features", iterations=3, batch_invariant=True)
    result = cam.explain(x, [[0, 2], 1])
    assert result.maps.shape == (3, 1, 8, 8)
    assert result.class_indices.tolist() == [0, 2, 1] and result.image_indices.tolist() == [0, 0, 1]
    alone = cam.explain(x[1:], [1])  # batch_invariant: the same map as the image gets alone
    assert torch.equal(result.maps[2], alone.maps[0]) and alone.image_indices is None
    grid = cam.explain(x, torch.tensor([[2, 0], [1, 0]]))
    assert grid.class_indices.tolist() == [2, 0, 1, 0] and grid.image_indices.tolist() == [0, 0, 1, 1]
    with pytest.raises(TargetError):
        cam.explain(x, [[0], [1], [2]])
    with pytest.raises(TargetError):
        cam.explain(x, [[], [1]])


def test_outputs_hold_the_logits_of_the_last_call():
    model = tiny_pixel_model(classes=3)
    x = tiny_images(2)
    cam = OptiCAM(model, "features", iterations=1)
    assert cam.outputs is None
    cam(input_tensor=x)
    assert torch.allclose(cam.outputs, model(x))


def test_bare_model_warns_once_and_the_keyword_silences_it():
    from opticam.models.pixel_space import PixelSpaceWarning

    net = TinyNet()
    with pytest.warns(PixelSpaceWarning, match="PixelSpaceModel"):
        OptiCAM(net, "features")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OptiCAM(net, "features")  # once per model
        OptiCAM(TinyNet(), "features", warn_pixel_space=False)
        OptiCAM(tiny_pixel_model(), "features")


def test_model_returning_an_output_object_is_unwrapped():
    from opticam.models.outputs import LogitsModel, logits_of

    class Output:
        def __init__(self, logits):
            self.logits = logits

    class ObjectNet(TinyNet):
        def forward(self, x):
            return Output(super().forward(x))

    from opticam import PixelSpaceModel

    model = PixelSpaceModel(ObjectNet(), (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    x = tiny_images(1)
    assert model(x).shape == (1, 3)
    assert OptiCAM(model, "features", iterations=2).explain(x).maps.shape == (1, 1, 8, 8)
    assert LogitsModel(ObjectNet())(x).shape == (1, 3)
    assert torch.equal(logits_of({"logits": torch.ones(1)}), torch.ones(1))
    with pytest.raises(TypeError, match="not logits"):
        logits_of("nope")
