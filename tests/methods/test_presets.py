"""Presets and the options behind them: the Grad-CAM warm start, the cosine schedule, batch independence."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from opticam import OptiCAM
from opticam.cli import main
from opticam.methods.presets import PRESETS, preset_config
from tests.tinymodels import tiny_images, tiny_pixel_model


def test_paper_preset_is_the_default_algorithm():
    model = tiny_pixel_model()
    x = tiny_images(2)
    paper = OptiCAM.from_preset("paper", model, "features").explain(x)
    default = OptiCAM(model, "features").explain(x)
    assert torch.equal(paper.maps, default.maps)
    assert torch.equal(paper.iterations, default.iterations)


def test_presets_are_frozen_configs_and_unknown_names_fail():
    config = preset_config("fast")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.iterations = 999
    assert PRESETS["fast"].iterations != 999
    with pytest.raises(ValueError, match="unknown preset 'warp'"):
        preset_config("warp")


def test_from_preset_overrides_win():
    cam = OptiCAM.from_preset("fast", tiny_pixel_model(), "features", iterations=3)
    assert cam.config.iterations == 3
    assert cam.config.init == PRESETS["fast"].init
    assert cam.config.schedule == PRESETS["fast"].schedule


def test_fast_preset_uses_at_most_a_third_of_the_paper_passes():
    model, x = tiny_pixel_model(), tiny_images(1)
    # The tiny model never converges to 1e-10, so both run every iteration.
    fast = OptiCAM.from_preset("fast", model, "features").explain(x)
    paper = OptiCAM.from_preset("paper", model, "features").explain(x)
    assert paper.passes == 102
    assert fast.passes <= paper.passes / 3


def test_gradcam_weights_by_hand():
    # TinyNet: y = W mean_ij(A) + b, so dy_c / dA_kij = W[c, k] / (h w) and Grad-CAM's alpha_k = W[c, k] / (h w).
    model = tiny_pixel_model(channels=4, classes=3)
    x = tiny_images(2, size=6)
    cam = OptiCAM(model, "features")
    _, alpha = cam.gradcam_weights(x, [2, 0])
    w = model.model.head.weight
    assert torch.allclose(alpha, torch.stack([w[2], w[0]]) / 36, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())


def test_gradcam_start_is_the_mixed_positive_weights():
    cam = OptiCAM(tiny_pixel_model(channels=3), "features", init="gradcam", init_mix=0.5)
    alpha = torch.tensor([[1.0, -1.0, 3.0], [-1.0, -2.0, -0.5]])
    u0 = cam.initial_weights(torch.zeros(2, 3, 4, 4), alpha)
    share = torch.tensor([0.25, 0.0, 0.75])
    assert torch.allclose(torch.softmax(u0[0], 0), 0.5 * share + 0.5 / 3)
    assert torch.allclose(torch.softmax(u0[1], 0), torch.full((3,), 1 / 3))  # no positive weight: uniform
    uniform = OptiCAM(tiny_pixel_model(channels=3), "features")
    assert torch.equal(uniform.initial_weights(torch.zeros(2, 3, 4, 4), alpha), torch.zeros(2, 3))


def test_gradcam_start_is_what_iteration_zero_evaluates():
    model, x = tiny_pixel_model(), tiny_images(2)
    cam = OptiCAM(model, "features", init="gradcam", init_mix=0.2, iterations=0)
    result = cam.explain(x)
    _, alpha = cam.gradcam_weights(x)
    expected = torch.softmax(cam.initial_weights(torch.zeros(2, 4, 1, 1), alpha), dim=1)
    assert torch.allclose(result.weights, expected, atol=1e-6)


def test_cosine_schedule_first_step_is_lr_then_decays():
    # Adam's first step moves every coordinate with a nonzero gradient by exactly lr; with a cosine
    # schedule over T = 2 iterations the second step uses lr * (1 + cos(pi / 2)) / 2 = lr / 2.
    model, x = tiny_pixel_model(), tiny_images(1)
    seen: list[float] = []

    class Spy(OptiCAM):
        def _optimize(self, *args, **kwargs):
            original = torch.optim.Adam.step

            def step(opt, *a, **k):
                seen.append(opt.param_groups[0]["lr"])
                return original(opt, *a, **k)

            torch.optim.Adam.step = step
            try:
                return super()._optimize(*args, **kwargs)
            finally:
                torch.optim.Adam.step = original

    Spy(model, "features", iterations=2, lr=0.4, schedule="cosine", early_stop=False).explain(x)
    assert seen == pytest.approx([0.4, 0.4 * (1 + math.cos(math.pi / 2)) / 2])
    seen.clear()
    Spy(model, "features", iterations=2, lr=0.4, early_stop=False).explain(x)
    assert seen == pytest.approx([0.4, 0.4])


def test_fast_preset_batch_equals_one_at_a_time():
    model, x = tiny_pixel_model(channels=5), tiny_images(3, size=10)
    cam = OptiCAM.from_preset("fast", model, "features", iterations=6)
    batch = cam.explain(x, [0, 1, 2])
    for i in range(3):
        single = cam.explain(x[i : i + 1], [i])
        assert torch.allclose(batch.maps[i], single.maps[0], atol=1e-5)
        assert torch.allclose(batch.objective_final[i], single.objective_final[0], atol=1e-5)


@pytest.mark.parametrize("bad", [{"init": "zeros"}, {"schedule": "step"}, {"precision": "int8"}, {"init_mix": 0.0}])
def test_bad_options_are_rejected(bad):
    with pytest.raises(ValueError, match="init|schedule|precision"):
        OptiCAM(tiny_pixel_model(), "features", **bad)


def test_gradcam_weights_match_pytorch_grad_cam_on_the_real_model(lite0, sample_batch):
    """An independent route: pytorch-grad-cam's own hooks and its ``get_cam_weights`` (Grad-CAM)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x, classes = sample_batch
    x, classes = x[:1], classes[:1]
    cam = OptiCAM(lite0.model, lite0.target_layer)
    _, alpha = cam.gradcam_weights(x, classes)
    layer = cam.target_layer(x)
    reference = GradCAM(lite0.model, [layer])
    try:
        for p in lite0.model.parameters():
            assert not p.requires_grad
        x_in = x.clone().requires_grad_(True)  # the model's parameters are frozen: give autograd a leaf
        outputs = reference.activations_and_grads(x_in)
        loss = sum(ClassifierOutputTarget(int(c))(o) for c, o in zip(classes, outputs, strict=True))
        loss.backward()
        acts = reference.activations_and_grads.activations[-1].numpy()
        grads = reference.activations_and_grads.gradients[-1].numpy()
        expected = reference.get_cam_weights(x_in, layer, None, acts, grads)
    finally:
        reference.activations_and_grads.release()
    np.testing.assert_allclose(alpha.numpy(), expected, rtol=1e-4, atol=1e-7)


def test_fast_preset_on_real_images_improves_the_objective(lite0, sample_batch):
    x, classes = sample_batch
    cam = OptiCAM.from_preset("fast", lite0.model, lite0.target_layer, iterations=2)
    result = cam.explain(x[:1], classes[:1])
    assert result.maps.shape == (1, 1, 224, 224)
    assert bool((result.objective_final > result.objective_initial).all())
    assert result.objective_final.item() < 0  # a log-probability
    assert result.passes == 2 + 2


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], {"iterations": 100, "init": "uniform", "objective": "mask", "lr": 0.1}),
        (["--preset", "fast"], PRESETS["fast"].as_dict()),
        (
            ["--preset", "fast", "--iterations", "7", "--objective", "mask"],
            {**PRESETS["fast"].as_dict(), "iterations": 7, "objective": "mask"},
        ),
    ],
)
def test_explain_cli_preset_flag(tmp_path, samples_dir, monkeypatch, flags, expected):
    import opticam.evaluation.explain_job as explain_job  # where `opticam explain` builds its OptiCAM

    seen = {}

    class Built(Exception):
        """Stops the command once the method is configured: the options are all this test checks."""

    class Spy(OptiCAM):
        def __init__(self, *args, config=None, **kwargs):
            seen.update(config.as_dict())
            raise Built

    monkeypatch.setattr(explain_job, "OptiCAM", Spy)
    image = sorted(samples_dir.glob("*.JPEG"))[0]
    with pytest.raises(Built):
        main(["explain", str(image), "--random-weights", "--out", str(tmp_path), *flags])
    assert {k: seen.get(k, getattr(OptiCAM(tiny_pixel_model(), "features").config, k)) for k in expected} == expected


def test_warmup_cosine_factors_by_hand():
    from opticam.methods.opticam import lr_factor

    # 16 iterations: warm-up over 16 // 8 = 2 steps (1/2, 1), then cosine over the 14 left.
    factors = [lr_factor("warmup-cosine", s, 16) for s in range(16)]
    assert factors[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert factors[2 + 7] == pytest.approx(0.5)  # halfway through the cosine
    assert factors[-1] == pytest.approx((1 + math.cos(math.pi * 13 / 14)) / 2)
    assert [lr_factor("cosine", s, 4) for s in range(4)] == pytest.approx(
        [1, (1 + 2**-0.5) / 2, 0.5, (1 - 2**-0.5) / 2]
    )
    assert lr_factor("constant", 7, 10) == 1.0


def test_log_prob_objective_by_hand():
    from opticam.methods.opticam_maths import objective

    model = tiny_pixel_model(classes=3)
    x = tiny_images(1)
    masks = torch.full((1, 1, 8, 8), 0.5)
    logits = model(x * 0.5)[0].tolist()
    expected = logits[2] - math.log(sum(math.exp(v) for v in logits))
    value = objective(model, x, masks, torch.tensor([2]), "log-prob")
    assert value.item() == pytest.approx(expected, abs=1e-5)


def test_opticam_fast_is_in_the_method_registry(lite0):
    from opticam.methods import create_method

    cam = create_method("opticam-fast", lite0)
    assert isinstance(cam, OptiCAM)
    assert cam.config == PRESETS["fast"]
    assert create_method("opticam-fast", lite0, iterations=3).config.iterations == 3


def test_tenth_preset_costs_at_most_a_tenth_of_the_paper_passes():
    """Counting a backward pass as two forward passes (docs/speed.md measures about 2 on the CPU), the
    ``tenth`` preset's model work per image is under 0.10 x the paper's 100 Adam steps."""
    model, x = tiny_pixel_model(), tiny_images(1)
    tenth = OptiCAM.from_preset("tenth", model, "features").explain(x)
    paper = OptiCAM.from_preset("paper", model, "features").explain(x)

    def work(result):  # forward passes + 2 x backward passes (one per optimizer step)
        return result.passes + 2 * int(result.iterations.sum())

    assert work(tenth) <= 0.10 * work(paper)
    assert tenth.iterations.tolist() == [9]
    assert OptiCAM(model, "features").config == PRESETS["paper"]  # the class defaults stay the paper's


def test_tenth_preset_is_a_registry_method():
    from opticam.methods.registry import METHODS

    assert "opticam-tenth" in METHODS


def test_coarse_steps_see_small_images_and_the_rest_full_size():
    """The first ``coarse_iterations`` evaluations run on images resized to ``coarse_size``; the capture
    pass, the later steps and the final evaluation at the input's size; passes are counted apart."""
    model, x = tiny_pixel_model(), tiny_images(2, size=16)
    sizes: list[int] = []
    handle = model.register_forward_pre_hook(lambda _m, args: sizes.append(args[0].shape[-1]))
    try:
        cam = OptiCAM(model, "features", iterations=5, coarse_size=8, coarse_iterations=3, early_stop=False)
        result = cam.explain(x)
    finally:
        handle.remove()
    assert sizes == [16, 8, 8, 8, 16, 16, 16]
    assert result.diagnostics.counts["coarse_passes"] == 3 * 2
    assert result.passes == 2 + 3 * 2  # capture + steps 3, 4, 5 (the last one only evaluated)
    assert result.maps.shape == (2, 1, 16, 16)


def test_coarse_images_keep_the_aspect_and_antialias():
    import torch.nn.functional as F

    from opticam.methods.opticam import coarse_images

    x = torch.rand(1, 3, 20, 40)
    small = coarse_images(x, 10)
    assert small.shape == (1, 3, 10, 20)
    assert torch.equal(small, F.interpolate(x, size=(10, 20), mode="bilinear", align_corners=False, antialias=True))
    assert coarse_images(x, 20) is x


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"coarse_iterations": 3}, "needs coarse_size"),
        ({"coarse_size": 8, "coarse_iterations": 200}, "cannot exceed"),
        ({"coarse_size": -1}, "coarse_size"),
    ],
)
def test_bad_coarse_options(bad, match):
    with pytest.raises(ValueError, match=match):
        OptiCAM(tiny_pixel_model(), "features", **bad)
