"""Opti-CAM on the real pretrained model and real images (skipped when the samples are absent)."""

from __future__ import annotations

import copy

import torch

from opticam import OptiCAM


def test_optimization_improves_every_image(lite0, sample_batch):
    """8 images, ground-truth classes, 100 iterations: the masked logit rises above its value at the
    initial uniform weights for every image, and the maps are in [0, 1] without NaN."""
    x, classes = sample_batch
    r = OptiCAM(lite0.model, lite0.target_layer, iterations=100).explain(x, classes)
    assert (r.objective_final > r.objective_initial).all(), (r.objective_initial, r.objective_final)
    assert torch.isfinite(r.maps).all() and r.maps.min() >= 0 and r.maps.max() <= 1
    assert r.maps.shape == (8, 1, 224, 224)
    # objective_final is the masked logit of the returned map, recomputed independently here.
    with torch.no_grad():
        masked = lite0.model(x * r.maps)[torch.arange(8), classes]
    assert torch.allclose(masked, r.objective_final, atol=1e-3)


def test_batch_equals_one_image_at_a_time_in_float64(lite0, sample_batch):
    """Each image's optimization is independent of the others in its batch.

    Run in float64: in float32 the CPU kernels of the 1x1 head convolution and the classifier sum in a
    batch-size-dependent order (outputs differ by ~1e-6), and Opti-CAM's Adam steps amplify any
    perturbation that small (an input change of 1e-7 moves the map by ~1e-3 after 10 steps), so float32
    batch and single runs agree only to ~1e-2. See the README, "Batches and precision"."""
    model = copy.deepcopy(lite0.model).double()
    x, classes = sample_batch
    x = x.double()
    cam = OptiCAM(model, lite0.target_layer, iterations=10, early_stop=False)
    batch = cam.explain(x, classes)
    single = [cam.explain(x[i : i + 1], classes[i : i + 1]) for i in range(8)]
    assert batch.maps.dtype == torch.float64
    assert (batch.maps - torch.cat([s.maps for s in single])).abs().max().item() <= 1e-4
    assert torch.allclose(batch.objective_final, torch.cat([s.objective_final for s in single]), atol=1e-6)


def test_batch_and_single_reach_the_same_objective_in_float32(lite0, sample_batch):
    """In float32 the maps of a batch and of single images differ slightly (see above), but each image's
    optimized objective is the same to well within the gain Opti-CAM makes."""
    x, classes = sample_batch
    cam = OptiCAM(lite0.model, lite0.target_layer, iterations=10, early_stop=False)
    batch = cam.explain(x[:4], classes[:4])
    single = torch.cat([cam.explain(x[i : i + 1], classes[i : i + 1]).objective_final for i in range(4)])
    gain = batch.objective_final - batch.objective_initial
    assert ((batch.objective_final - single).abs() < 0.05 * gain).all()
