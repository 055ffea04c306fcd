"""The pure pieces of the map, each pinned by a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from opticam.methods.opticam_maths import combine, normalize, objective, saliency_mask, upsample
from tests.tinymodels import tiny_images, tiny_pixel_model


def test_combine_is_softmax_weighted_sum():
    a = torch.tensor([[[[1.0, 2.0]], [[3.0, 5.0]]]])  # K=2, h=1, w=2
    u = torch.tensor([[0.0, math.log(3.0)]])  # softmax = (1/4, 3/4)
    s = combine(a, u)
    assert s.shape == (1, 1, 1, 2)
    assert torch.allclose(s, torch.tensor([[[[0.25 * 1 + 0.75 * 3, 0.25 * 2 + 0.75 * 5]]]]))


def test_uniform_weights_average_the_maps():
    a = torch.rand(3, 5, 4, 4)
    assert torch.allclose(combine(a, torch.zeros(3, 5)), a.mean(dim=1, keepdim=True), atol=1e-6)


def test_bilinear_upsample_half_pixel_centres():
    # 1-d [a, b] -> 4 samples at source coordinates (-0.25, 0.25, 0.75, 1.25), clamped: a, .75a+.25b, .25a+.75b, b
    s = torch.tensor([[[[0.0, 4.0], [8.0, 12.0]]]])
    up = upsample(s, (4, 4))
    row = torch.tensor([0.0, 1.0, 3.0, 4.0])
    expected = torch.stack([row, row + 2, row + 6, row + 8])  # rows mix 0 and 8 the same way
    assert torch.allclose(up[0, 0], expected)


def test_normalizations_by_hand():
    s = torch.tensor([[[[1.0, 3.0], [2.0, 5.0]]]])
    assert torch.allclose(normalize(s, "range"), torch.tensor([[[[0.0, 0.5], [0.25, 1.0]]]]))
    assert torch.allclose(normalize(s, "max"), torch.tensor([[[[0.2, 0.6], [0.4, 1.0]]]]))
    assert torch.allclose(normalize(s, "sigmoid"), 1 / (1 + torch.exp(-s)))


def test_constant_maps_are_defined_not_nan():
    s = torch.stack([torch.full((1, 3, 3), 2.0), torch.zeros(1, 3, 3)])
    # range: max == min has no saliency to show -> zeros
    assert torch.equal(normalize(s, "range"), torch.zeros_like(s))
    # max: S / max S is 1 for a positive constant; an all-zero map (max == 0) is defined as zeros
    assert torch.equal(normalize(s, "max"), torch.stack([torch.ones(1, 3, 3), torch.zeros(1, 3, 3)]))


def test_normalization_is_per_image():
    s = torch.stack([torch.arange(4.0).view(1, 2, 2), 10 * torch.arange(4.0).view(1, 2, 2)])
    out = normalize(s, "range")
    assert torch.allclose(out[0], out[1])


def test_unknown_kinds_are_rejected():
    with pytest.raises(ValueError, match="normalization"):
        normalize(torch.rand(1, 1, 2, 2), "softmax")
    model = tiny_pixel_model()
    x = tiny_images(1)
    with pytest.raises(ValueError, match="objective"):
        objective(model, x, torch.ones(1, 1, 8, 8), torch.tensor([0]), "logit")


@torch.no_grad()
def _manual_logit(model, image: torch.Tensor, c: int) -> float:
    """Independent forward of TinyNet on one [3, H, W] image in pixel space."""
    net = model.model
    z = (image - model.mean[0]) / model.std[0]
    a = torch.relu(torch.nn.functional.conv2d(z[None], net.conv.weight, net.conv.bias, padding=1))[0]
    pooled = a.mean(dim=(1, 2))
    return float(net.head.weight[c] @ pooled + net.head.bias[c])


@pytest.mark.parametrize("kind", ["mask", "diff", "io-mask"])
def test_objectives_match_an_independent_forward(kind):
    model = tiny_pixel_model()
    x = tiny_images(2)
    m = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    c = torch.tensor([2, 0])
    original = torch.tensor([_manual_logit(model, x[i], int(c[i])) for i in range(2)])
    got = objective(model, x, m, c, kind, original)
    for i in range(2):
        ci = int(c[i])
        inside = _manual_logit(model, x[i] * m[i], ci)
        if kind == "mask":
            want = inside
        elif kind == "diff":
            want = -abs(float(original[i]) - inside)
        else:
            want = inside - _manual_logit(model, x[i] * (1 - m[i]), ci)
        assert got[i].item() == pytest.approx(want, abs=1e-5)


def test_saliency_mask_composes_the_steps():
    a = torch.rand(2, 3, 4, 4)
    u = torch.randn(2, 3)
    want = normalize(upsample(combine(a, u), (8, 8)), "max")
    assert torch.allclose(saliency_mask(a, u, (8, 8), "max"), want)
