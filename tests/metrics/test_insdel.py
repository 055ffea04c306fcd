"""Insertion / deletion: a case computed by hand, a naive pixel-by-pixel implementation, batching,
and torchcam's DeletionInsertionMetric configured alike (tiny model and the real model)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torchcam.metrics import DeletionInsertionMetric

from opticam import PixelSpaceModel
from opticam.methods.gradcam import GradCAM
from opticam.metrics.insdel import blur, curve_counts, insertion_deletion, saliency_ranks
from tests.tinymodels import FixedMaps

pytestmark = pytest.mark.usefixtures("one_thread")


class SumModel(nn.Module):
    """Two classes with logits ``[sum(x), 0]``: ``p_0 = sigmoid(sum of all pixel values)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], dim=1)


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_hand_computed_deletion_on_a_2x2_image():
    # One channel-summed value per pixel: pixel values 0.1, 0.2, 0.3, 0.4 (all three channels alike).
    values = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    x = values.expand(1, 3, 2, 2).clone()
    # Saliency ranks: (1,1) first, then (0,0), then (1,0), then (0,1).
    maps = torch.tensor([[[[0.9, 0.1], [0.5, 1.0]]]])
    assert saliency_ranks(maps).tolist() == [[1, 3, 2, 0]]
    r = insertion_deletion(SumModel(), x, maps, torch.tensor([0]), step=1, blur_kernel=1, blur_sigma=1.0)
    # Deletion: remaining sums 3 * (1.0, 0.6, 0.5, 0.2, 0.0).
    expected = [sigmoid(3 * s) for s in (1.0, 0.6, 0.5, 0.2, 0.0)]
    np.testing.assert_allclose(r.deletion[0].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(r.fractions.numpy(), [0, 0.25, 0.5, 0.75, 1.0])
    # Trapezoid by hand.
    auc = sum((expected[i] + expected[i + 1]) / 2 * 0.25 for i in range(4))
    assert float(r.deletion_auc[0]) == pytest.approx(auc, rel=1e-6)
    # A 1 x 1 blur is the identity: insertion is flat at p(x).
    np.testing.assert_allclose(r.insertion[0].numpy(), [sigmoid(3.0)] * 5, rtol=1e-6)


def test_curve_counts():
    assert curve_counts(10, 3) == [0, 3, 6, 9, 10]
    assert curve_counts(224 * 224, 224)[-3:] == [223 * 224 - 224, 223 * 224, 224 * 224]
    assert len(curve_counts(224 * 224, 224)) == 225
    with pytest.raises(ValueError):
        curve_counts(10, 0)


def naive_curves(model, image, saliency, cls, step, start):
    """Pixel by pixel, one forward per point: the RISE procedure written out plainly."""
    c, h, w = image.shape
    order = sorted(range(h * w), key=lambda i: (-float(saliency.flatten()[i]), i))
    points_del, points_ins = [], []
    for count in curve_counts(h * w, step):
        deleted = image.clone().view(c, -1)
        inserted = start.clone().view(c, -1)
        for i in order[:count]:
            deleted[:, i] = 0
            inserted[:, i] = image.view(c, -1)[:, i]
        with torch.no_grad():
            points_del.append(float(torch.softmax(model(deleted.view(1, c, h, w)), 1)[0, cls]))
            points_ins.append(float(torch.softmax(model(inserted.view(1, c, h, w)), 1)[0, cls]))
    return np.array(points_del), np.array(points_ins)


def test_matches_naive_loop_and_is_batch_independent():
    model = PixelSpaceModel(TinyCNN(), (0.5,) * 3, (0.3,) * 3).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 6, 6, generator=gen)
    maps = torch.rand(2, 1, 6, 6, generator=gen)
    maps[1, 0, :2] = 0.5  # ties, broken in raster order
    classes = torch.tensor([1, 4])
    result = insertion_deletion(model, x, maps, classes, step=5, batch_size=7)
    one = insertion_deletion(model, x, maps, classes, step=5, batch_size=1)
    torch.testing.assert_close(result.deletion, one.deletion)
    torch.testing.assert_close(result.insertion, one.insertion)
    start = blur(x)
    for i in range(2):
        d, ins = naive_curves(model, x[i], maps[i, 0], int(classes[i]), 5, start[i])
        np.testing.assert_allclose(result.deletion[i].numpy(), d, atol=1e-6)
        np.testing.assert_allclose(result.insertion[i].numpy(), ins, atol=1e-6)
        assert float(result.deletion_auc[i]) == pytest.approx(np.trapezoid(d, result.fractions.numpy()), abs=1e-6)
    # Each image alone gives its own curves (no leakage within a batch).
    alone = insertion_deletion(model, x[1:], maps[1:], classes[1:], step=5)
    torch.testing.assert_close(alone.insertion[0], result.insertion[1])


def test_blur_is_gaussian_11_sigma_5():
    x = torch.zeros(1, 1, 21, 21)
    x[0, 0, 10, 10] = 1
    k = blur(x)[0, 0]
    g = torch.exp(-((torch.arange(11) - 5.0) ** 2) / (2 * 25))
    g = g / g.sum()
    torch.testing.assert_close(k[5:16, 5:16], g[:, None] * g[None, :])


def test_bad_shapes():
    model = SumModel()
    with pytest.raises(ValueError, match="do not match"):
        insertion_deletion(model, torch.rand(1, 3, 4, 4), torch.rand(1, 1, 5, 5), torch.tensor([0]))
    with pytest.raises(ValueError, match="maps"):
        insertion_deletion(model, torch.rand(1, 3, 4, 4), torch.rand(1, 4, 4), torch.tensor([0]))


def torchcam_insdel(model, x, maps, classes, steps):
    metric = DeletionInsertionMetric(
        FixedMaps(model, maps), lambda t: torch.softmax(t, dim=-1), steps=steps, baseline=blur, batch_size=64
    )
    metric.update(x, classes.tolist())
    insertion = metric.summary()["insertion_auc"]
    zeros = DeletionInsertionMetric(FixedMaps(model, maps), lambda t: torch.softmax(t, dim=-1), steps=steps)
    zeros.update(x, classes.tolist())
    return insertion, zeros.summary()["deletion_auc"]


def test_agrees_with_torchcam_on_a_tiny_model():
    """torchcam with steps = ceil(N / step) has the same points (here 16 x 16, step 5 -> 52 steps)."""
    model = PixelSpaceModel(TinyCNN(), (0.5,) * 3, (0.3,) * 3).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 16, 16, generator=gen)
    maps = torch.rand(3, 1, 16, 16, generator=gen)
    classes = torch.tensor([0, 2, 4])
    ours = insertion_deletion(model, x, maps, classes, step=5)
    ins, dele = torchcam_insdel(model, x, maps, classes, steps=52)
    assert float(ours.insertion_auc.mean()) == pytest.approx(ins, abs=1e-5)
    assert float(ours.deletion_auc.mean()) == pytest.approx(dele, abs=1e-5)


def test_agrees_with_torchcam_on_the_real_model(lite0, sample_batch):
    """EfficientNet-Lite0, a real image, its Grad-CAM map, 8 steps of 6272 pixels (kept short for CPU)."""
    x, labels = sample_batch
    x, labels = x[:1], labels[:1]
    maps = GradCAM(lite0.model, lite0.target_layer).explain(x, labels).maps
    ours = insertion_deletion(lite0.model, x, maps, labels, step=6272)
    ins, dele = torchcam_insdel(lite0.model, x, maps, labels, steps=8)
    assert float(ours.insertion_auc.mean()) == pytest.approx(ins, abs=1e-4)
    assert float(ours.deletion_auc.mean()) == pytest.approx(dele, abs=1e-4)
    # A meaningful map: deleting its top pixels hurts faster than inserting them helps the blurred start.
    assert float(ours.deletion_auc.mean()) < float(ours.insertion_auc.mean())
