"""The Python API keeps its promise: input it cannot explain raises an ``OpticamError`` subclass that still
inherits the matching built-in (``ValueError``, ``TypeError``) and says what to do, or warns once saying what
was assumed; it never fails deep inside a layer or explains the wrong thing without a word."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from opticam import InputError, InputTypeError, InputWarning, OptiCAM, OpticamError, overlay
from opticam.models.loading import LoadedModel, Preprocessing
from tests.tinymodels import tiny_images, tiny_pixel_model


@pytest.fixture
def cam():
    return OptiCAM(tiny_pixel_model(), "features", iterations=2)


@pytest.mark.parametrize(
    ("x", "error", "words"),
    [
        ((tiny_images() * 255).to(torch.uint8), InputTypeError, "x.float() / 255"),
        (tiny_images()[:0], InputError, "empty input"),
        (tiny_images()[0], InputError, "use x[None]"),
        (tiny_images().numpy(), InputTypeError, "torch.from_numpy"),
        (tiny_images().double(), InputTypeError, "use x.float() (or model.double()"),
        (tiny_images()[:, :1], InputError, "1 channel(s) but the model takes 3"),
        (tiny_images().expand(-1, 3, -1, -1)[:, :2], InputError, "2 channel(s) but the model takes 3"),
        (tiny_images() * 255, InputError, "divide 0-255 pixels by 255"),
        ((tiny_images() - 0.45) / 0.225, InputError, "images must be in [0, 1]"),
    ],
    ids=["uint8", "empty", "3-d", "numpy", "float64", "1-channel", "2-channel", "0-255", "normalized"],
)
def test_images_the_model_cannot_take_raise_a_clear_opticam_error(cam, x, error, words):
    with pytest.raises(error) as info:
        cam.explain(x)
    assert isinstance(info.value, OpticamError) and words in str(info.value)
    builtin = TypeError if error is InputTypeError else ValueError
    assert isinstance(info.value, builtin)  # `except ValueError` / `except TypeError` keep working


def test_a_double_model_takes_double_images():
    cam = OptiCAM(tiny_pixel_model().double(), "features", iterations=1)
    assert cam.explain(tiny_images().double()).maps.dtype == torch.float64


def test_slightly_out_of_range_pixels_are_accepted(cam):
    """Resampling overshoot and a metric's noise stay within the slack: no refusal for those."""
    x = (tiny_images() * 1.04 - 0.02).clamp(-0.03, 1.03)
    assert cam.explain(x).maps.shape == (2, 1, 8, 8)


def test_images_so_small_that_the_feature_grid_is_one_cell_warn():
    cam = OptiCAM(tiny_pixel_model(stride=8), "features", iterations=1)
    with pytest.warns(InputWarning, match="1 x 1 feature grid"):
        result = cam.explain(tiny_images(size=8))
    assert result.maps.shape == (2, 1, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        OptiCAM(tiny_pixel_model(), "features", iterations=1).explain(tiny_images(size=8))  # 8 x 8 grid: quiet


def test_overlay_shape_mismatch_is_an_input_error():
    image = tiny_images(1)[0]
    with pytest.raises(InputError, match=r"the map \(4, 4\) does not match the image \(8, 8\)"):
        overlay(image, torch.rand(4, 4))
    with pytest.raises(InputError, match=r"one image \[3, H, W\] \(RGB\) or \[1, H, W\] \(grayscale\)"):
        overlay(tiny_images(2), torch.rand(8, 8))
    assert overlay(image[:1], torch.rand(8, 8)).size == (8, 8)  # a grayscale image is drawn too
    with pytest.raises(InputTypeError):
        overlay(image.numpy(), torch.rand(8, 8))
    assert overlay(image, torch.rand(1, 1, 8, 8)).size == (8, 8)


def test_top_k_given_an_image_instead_of_logits_is_an_input_error():
    loaded = LoadedModel("tiny", tiny_pixel_model(), Preprocessing((8, 8)), ["a", "b", "c"])
    with pytest.raises(InputError, match=r"top_k takes one image's logits \[3\]"):
        loaded.top_k(tiny_images(1)[0])
    with pytest.raises(InputError):
        loaded.top_k(torch.zeros(2, 3))  # a batch: which image?
    top = loaded.top_k(torch.tensor([[0.0, 2.0, 1.0]]), k=2)
    assert [t["name"] for t in top] == ["b", "c"]


def test_grayscale_hint_points_at_the_fix(cam):
    with pytest.raises(InputError, match=r"x.expand\(-1, 3, -1, -1\)"):
        cam.explain(tiny_images()[:, :1])
    gray = tiny_images()[:, :1].expand(-1, 3, -1, -1)
    assert np.isfinite(cam(gray)).all()
