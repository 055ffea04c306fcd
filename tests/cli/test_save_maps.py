"""``opticam explain --save-maps`` writes each map at the image file's resolution, laid where the model's
crop came from, so that it overlays the original image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from opticam.cli import main
from opticam.evaluation.explain_job import image_size, map_at_image_size
from opticam.models.loading import Preprocessing


@pytest.mark.parametrize("size", [(512, 600), (600, 512)])
def test_save_maps_are_at_the_images_resolution(mini, tmp_path, capsys, size):
    width, height = size
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    assert main(["explain", str(image), "--save-maps", "--iterations", "2", "--out", str(out), "--no-progress"]) == 0
    record = json.loads((out / "photo.json").read_text())
    saved = np.load(out / record["map"])
    assert saved.dtype == np.float32 and saved.shape == (height, width)
    assert saved.min() >= 0 and saved.max() <= 1
    assert Image.open(out / "photo.png").size == (16, 16)  # the overlay stays the model's input crop


def square_map(size: int = 224) -> torch.Tensor:
    """1 in a square from 1/4 to 3/4 of each side of the model's input, 0 elsewhere."""
    saliency = torch.zeros(size, size)
    saliency[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    return saliency


def nonzero_box(array: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(array > 0.5)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize("size", [(512, 600), (600, 512), (375, 500), (160, 100)])
def test_the_map_lands_where_the_crop_came_from(size):
    """The bright square, found in the map at the image's resolution, goes back through the preprocessing's
    own box transform (the one the localization metrics use) onto the square in the model's input."""
    preprocess = Preprocessing((224, 224), crop_pct=0.875)
    full = map_at_image_size(square_map(), preprocess, size)
    assert full.shape == (size[1], size[0]) and full.dtype == np.float32
    (back,) = preprocess.transform_boxes([nonzero_box(full)], size)
    scale = max(224 / min(size) / 0.875, 1)  # one image pixel, in input pixels
    assert np.allclose(back, (56, 56, 168, 168), atol=1.5 * scale), back


def test_pixels_the_model_never_saw_are_zero():
    preprocess = Preprocessing((224, 224), crop_pct=0.875)
    full = map_at_image_size(torch.ones(224, 224), preprocess, (512, 600))
    x0, y0, x1, y1 = nonzero_box(full)
    (back,) = preprocess.transform_boxes([(x0, y0, x1, y1)], (512, 600))
    assert np.allclose(back, (0, 0, 224, 224), atol=1.5)
    assert full[:y0].max() == 0 and full[y1:].max() == 0 and full[:, :x0].max() == 0 and full[:, x1:].max() == 0
    assert full[y0:y1, x0:x1].min() == 1


def test_without_a_crop_the_map_covers_the_whole_image():
    preprocess = Preprocessing((28, 28), interpolation="bilinear", channels=1, crop=False)
    full = map_at_image_size(square_map(28), preprocess, (300, 200))
    assert full.shape == (200, 300)
    assert nonzero_box(full) == (75, 50, 225, 150)


def test_image_size_follows_exif_orientation(tmp_path):
    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned by 90 degrees: load_image shows it 200 wide, 300 high
    Image.new("RGB", (300, 200)).save(path, exif=exif)
    from opticam import load_image

    assert image_size(path) == load_image(path).size == (200, 300)
