"""Quantus metrics evaluate Opti-CAM through ``opticam.quantus.explain_func`` (real images, offline model)."""

from __future__ import annotations

import numpy as np
import pytest

import opticam.quantus
from tests.tinymodels import tiny_images, tiny_pixel_model

quantus = pytest.importorskip("quantus", reason="quantus is not installed (pip install '.[test]')")


def test_explain_func_returns_numpy_attributions_in_quantus_shape():
    model = tiny_pixel_model(classes=3)
    x = tiny_images(2).numpy()
    a = opticam.quantus.explain_func(model, x, np.array([0, 2]), iterations=2, channel_first=True)
    assert isinstance(a, np.ndarray) and a.dtype == np.float32 and a.shape == (2, 1, 8, 8)
    g = opticam.quantus.explain_func(model=model, inputs=x, targets=np.array([1, 1]), method="gradcam")
    assert g.shape == (2, 1, 8, 8)


def test_quantus_faithfulness_and_localisation_on_real_images(lite0, sample_batch):
    x, y = sample_batch
    x, y = x[:2].numpy(), y[:2].numpy()
    kwargs = {"method": "opticam", "layer": lite0.target_layer, "iterations": 5}
    # What both Quantus metrics get: the model, the batch, and opticam as the explainer (no precomputed maps).
    call = dict(
        model=lite0.model,
        x_batch=x,
        y_batch=y,
        a_batch=None,
        device="cpu",
        explain_func=opticam.quantus.explain_func,
        explain_func_kwargs=kwargs,
    )
    faithfulness = quantus.FaithfulnessCorrelation(
        nr_runs=4, subset_size=224 * 16, perturb_baseline="black", return_aggregate=False, disable_warnings=True
    )
    scores = faithfulness(**call)
    assert len(scores) == 2 and all(np.isfinite(s) for s in scores)
    # The samples have no boxes; a central box (ImageNet objects are mostly centred after the crop)
    # checks the wiring of a localisation metric, not a localisation claim.
    s = np.zeros((2, 1, 224, 224), dtype=np.float32)
    s[:, :, 56:168, 56:168] = 1
    pointing = quantus.PointingGame(disable_warnings=True)
    hits = pointing(**call, s_batch=s)
    assert len(hits) == 2 and all(h in (True, False, 0, 1) for h in hits)
