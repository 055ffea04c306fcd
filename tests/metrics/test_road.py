"""ROAD (remove and debias): equal to pytorch-grad-cam's ROADCombined under a seed, equal to an independent
re-implementation (dense solve of the paper's noisy linear imputation, the same noise draws), a model whose
evidence lives in one region, the seed and RNG contract, and the real model with a Grad-CAM map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.road import ROADCombined
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from torch import nn

from opticam.methods import create_method
from opticam.metrics import road_combined
from opticam.metrics.road import PERCENTILES
from tests.tinymodels import tiny_images, tiny_pixel_model

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # pytorch-grad-cam's threshold, `np.float32(tensor < threshold)`, warns under numpy 2 (direct calls).
    pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning"),
]

NOISE = 0.01  # NoisyLinearImputer's default, absolute, in the input's units


def direct_road(model, x, maps, classes, seed, percentiles=PERCENTILES):
    """pytorch-grad-cam called the way its docs show, with the global seed set just before."""
    torch.manual_seed(seed)
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in classes]
    return ROADCombined(percentiles=list(percentiles))(x, maps[:, 0].numpy(), targets, model)


def test_equals_pytorch_grad_cam_on_a_tiny_model():
    model = tiny_pixel_model(classes=3)
    x = tiny_images(3, 12)
    maps = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    classes = torch.tensor([0, 2, 1])
    ours = road_combined(model, x, maps, classes, seed=7)
    assert ours.shape == (3,) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), direct_road(model, x, maps, classes, 7), rtol=0, atol=1e-7)
    some = road_combined(model, x, maps, [0, 2, 1], percentiles=(25, 75), seed=7)
    np.testing.assert_allclose(some.numpy(), direct_road(model, x, maps, classes, 7, (25, 75)), rtol=0, atol=1e-7)


# --- an independent implementation, from the definitions -------------------------------------------------


def impute(image: torch.Tensor, removed: np.ndarray, noise: torch.Tensor) -> torch.Tensor:
    """Noisy linear imputation (Rong et al., section 4): every removed pixel equals the weighted mean of its
    in-image 8 neighbours (weight 1/6 edge-adjacent, 1/12 diagonal), removed or kept, solved jointly
    (dense, float64); then ``NOISE * noise`` is added to the removed pixels."""
    _, h, w = image.shape
    cells = [(i, j) for i in range(h) for j in range(w) if removed[i, j]]  # raster order
    index = {cell: k for k, cell in enumerate(cells)}
    a = np.zeros((len(cells), len(cells)))
    b = np.zeros((len(cells), image.shape[0]))
    values = image.double().numpy()
    for k, (i, j) in enumerate(cells):
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                ni, nj = i + di, j + dj
                if (di, dj) == (0, 0) or not (0 <= ni < h and 0 <= nj < w):
                    continue
                weight = 1 / 12 if di and dj else 1 / 6
                a[k, k] -= weight
                if removed[ni, nj]:
                    a[k, index[(ni, nj)]] += weight
                else:
                    b[k] -= weight * values[:, ni, nj]
    solution = torch.tensor(np.linalg.solve(a, b).T, dtype=torch.float32)  # [C, n]
    out = image.clone()
    rows, cols = zip(*cells, strict=True)
    out[:, list(rows), list(cols)] = solution + NOISE * noise
    return out


def independent_road(model, x, maps, classes, seed, percentiles=PERCENTILES) -> np.ndarray:
    """ROAD from the definitions: remove ``m >= percentile(m, p)`` (MoRF) or ``1 - m >= percentile(1 - m, p)``
    (LeRF), impute, and average (LeRF - MoRF) / 2 of the probability changes. The noise is drawn from the
    global generator in pytorch-grad-cam's order: LeRF then MoRF, percentiles, images; one ``randn`` per
    imputation, ``[C, n]`` in that order (``randn_like`` of the transposed ``[n, C]`` solution draws in logical
    order, not memory order: checked, ``randn(n, C).t()`` does not match)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        base = torch.softmax(model(x), 1)[torch.arange(len(x)), classes].double()
    changes = {}
    for order in ("lerf", "morf"):
        for p in percentiles:
            for i in range(len(x)):
                m = maps[i, 0].numpy().astype(np.float32)
                ranked = 1 - m if order == "lerf" else m
                removed = ranked >= np.percentile(ranked, p)
                noise = torch.randn(x.shape[1], int(removed.sum()))
                with torch.no_grad():
                    prob = torch.softmax(model(impute(x[i], removed, noise)[None]), 1)[0, classes[i]].double()
                changes[order, p, i] = float(prob - base[i])
    return np.array(
        [np.mean([(changes["lerf", p, i] - changes["morf", p, i]) / 2 for p in percentiles]) for i in range(len(x))]
    )


def test_equals_an_independent_implementation():
    """7 x 7 images (49 pixels, dense solves), two images, default percentiles, plus a map with ties."""
    model = tiny_pixel_model(classes=3, seed=3)
    x = tiny_images(2, 7, seed=5)
    maps = torch.rand(2, 1, 7, 7, generator=torch.Generator().manual_seed(4))
    maps[1, 0, 3:] = 0.25  # a plateau: ties at the thresholds are removed together
    classes = torch.tensor([1, 2])
    ours = road_combined(model, x, maps, classes, seed=11).numpy()
    np.testing.assert_allclose(ours, independent_road(model, x, maps, classes, 11), rtol=0, atol=1e-6)


# --- a model whose evidence is in one region ---------------------------------------------------------------


class QuadrantTexture(nn.Module):
    """Two classes; logit 0 = 40 (mean |horizontal pixel difference| in the top-left quadrant - 0.2), logit 1
    = 0. Uniform noise has mean |difference| 1/3 (p_0 ~ 0.995); an imputed, hence smooth, quadrant about the
    noise's 0.011 (p_0 ~ 5e-4). Nothing outside the quadrant matters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        quadrant = x[..., :half, :half]
        texture = (quadrant[..., 1:] - quadrant[..., :-1]).abs().mean(dim=(1, 2, 3))
        return torch.stack([40 * (texture - 0.2), torch.zeros_like(texture)], dim=1)


def quadrant_map(top_left: bool, size: int, gen: torch.Generator) -> torch.Tensor:
    """Random values, with one quadrant raised above all the rest: top-left or bottom-right."""
    m = 0.4 * torch.rand(1, 1, size, size, generator=gen)
    half = size // 2
    region = (slice(None), slice(None), slice(0, half), slice(0, half))
    if not top_left:
        region = (slice(None), slice(None), slice(half, None), slice(half, None))
    m[region] += 0.6
    return m


def test_a_map_on_the_evidence_beats_a_map_elsewhere():
    """Top-left map: MoRF removes the evidence at every percentile up to 70 (>= 30 % of the pixels, the
    quadrant is 25 %) while LeRF keeps it up to 70 (<= 70 % removed, outside first), so ROAD is near its
    maximum 0.5. Bottom-right map: the roles swap and ROAD is negative. A random map lies in between."""
    gen = torch.Generator().manual_seed(0)
    model = QuadrantTexture().eval()
    x = torch.rand(1, 3, 16, 16, generator=gen)
    classes = torch.tensor([0])
    on = float(road_combined(model, x, quadrant_map(True, 16, gen), classes, seed=0)[0])
    off = float(road_combined(model, x, quadrant_map(False, 16, gen), classes, seed=0)[0])
    random = float(road_combined(model, x, torch.rand(1, 1, 16, 16, generator=gen), classes, seed=0)[0])
    assert on > 0.3, on
    assert off < -0.1, off
    assert off < random < on, (off, random, on)


# --- seeds, gradients, devices, bad inputs -----------------------------------------------------------------


def test_seed_is_reproducible_and_leaves_the_global_stream_alone():
    model = tiny_pixel_model()
    x = tiny_images(2, 8)
    maps = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    classes = torch.tensor([0, 1])
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = road_combined(model, x, maps, classes, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(road_combined(model, x, maps, classes, seed=5), first)
    # The seed is exactly the global CPU generator's: seeding it by hand and passing None is the same call.
    torch.manual_seed(5)
    assert torch.equal(road_combined(model, x, maps, classes), first)
    assert not torch.equal(torch.get_rng_state(), before)  # seed=None draws from the global stream
    # The noise matters (a little): another seed gives other numbers.
    assert not torch.equal(road_combined(model, x, maps, classes, seed=6), first)


def test_inputs_with_grad_leave_the_model_frozen():
    model = tiny_pixel_model()
    x = tiny_images(2, 8).requires_grad_(True)
    maps = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    scores = road_combined(model, x, maps, torch.tensor([0, 2]), seed=0)
    assert not scores.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert scores.device == x.device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu():
    model = tiny_pixel_model()
    x = tiny_images(2, 8)
    maps = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    classes = torch.tensor([0, 2])
    cpu = road_combined(model, x, maps, classes, seed=0)
    gpu = road_combined(model.cuda(), x.cuda(), maps.cuda(), classes.cuda(), seed=0)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-5)


def test_bad_inputs():
    model = tiny_pixel_model()
    x = tiny_images(1, 8)
    maps = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="do not match"):
        road_combined(model, x, torch.rand(1, 1, 7, 8), [0])
    with pytest.raises(ValueError, match="maps"):
        road_combined(model, x, torch.rand(1, 8, 8), [0])
    with pytest.raises(ValueError, match="one class per image"):
        road_combined(model, x, maps, [0, 1])
    with pytest.raises(ValueError, match="percentiles"):
        road_combined(model, x, maps, [0], percentiles=())
    with pytest.raises(ValueError, match="percentiles"):
        road_combined(model, x, maps, [0], percentiles=(50, 120))
    with pytest.raises(ValueError, match="NaN"):
        road_combined(model, x, torch.full((1, 1, 8, 8), float("nan")), [0])


# --- the real model ---------------------------------------------------------------------------------------


def test_real_model_gradcam_equals_pytorch_grad_cam(lite0, sample_batch):
    """EfficientNet-Lite0, the first sample image, its Grad-CAM map, default percentiles, seed 0 (~30 s on
    one loaded CPU thread: two ROAD runs of 18 imputations at 224 x 224)."""
    x, labels = sample_batch
    x, labels = x[:1], labels[:1]
    maps = create_method("gradcam", lite0).explain(x, labels).maps
    ours = road_combined(lite0.model, x, maps, labels, seed=0)
    direct = direct_road(lite0.model, x, maps.detach(), labels, 0)
    np.testing.assert_allclose(ours.numpy(), direct, rtol=0, atol=1e-6)
    assert float(ours[0]) > 0.1  # Grad-CAM is far better than chance on this image
