"""Image files: odd modes, tiny sizes and broken files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from opticam import ImageLoadError, OptiCAM, load_image
from opticam.models import Preprocessing
from tests.tinymodels import tiny_pixel_model


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "1", "LA"])
def test_odd_modes_become_rgb(tmp_path, mode):
    image = Image.new("RGB", (20, 10), (200, 100, 50)).convert(mode)
    path = tmp_path / f"x.{'tiff' if mode in ('CMYK', 'I;16') else 'png'}"
    image.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (20, 10)


def test_grayscale_and_tiny_images_explain(tmp_path):
    Image.fromarray(np.full((3, 2), 128, np.uint8), mode="L").save(tmp_path / "tiny.png")
    pre = Preprocessing((16, 16))
    x = pre(load_image(tmp_path / "tiny.png"))
    assert x.shape == (3, 16, 16) and torch.allclose(x[0], x[1])
    r = OptiCAM(tiny_pixel_model(), "features", iterations=2).explain(x[None])
    assert r.maps.shape == (1, 1, 16, 16) and torch.isfinite(r.maps).all()


def test_broken_files_raise_clear_errors(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(tmp_path / "empty.jpg")
    (tmp_path / "text.jpg").write_text("hello, I am not a JPEG")
    with pytest.raises(ImageLoadError, match="not an image"):
        load_image(tmp_path / "text.jpg")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="corrupt or truncated"):
        load_image(tmp_path / "cut.jpg")
    with pytest.raises(ImageLoadError, match="folder"):
        load_image(tmp_path)


def test_too_many_pixels_refused_before_decoding(tmp_path):
    Image.new("1", (3000, 3000)).save(tmp_path / "big.png")
    with pytest.raises(ImageLoadError, match="more than the limit"):
        load_image(tmp_path / "big.png", max_pixels=1_000_000)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (30, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    image.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (10, 30)
