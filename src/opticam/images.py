"""Reading images from disk into RGB PIL images, with clear errors for everything that can go wrong."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError

# PIL refuses images over twice this many pixels (decompression bombs) and warns above it; we refuse
# above it, with a message, instead of a warning nobody reads.
MAX_PIXELS = 178_956_970


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open ``path`` as an RGB image, honouring EXIF orientation.

    Grayscale, palette, RGBA, CMYK and 16-bit images are converted to RGB.

    Raises:
        ImageLoadError: the file is missing, empty, not an image, truncated or corrupt, has zero size,
            or has more than ``max_pixels`` pixels.
    """
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageLoadError(f"{path}: is a folder, not an image")
    if path.stat().st_size == 0:
        raise ImageLoadError(f"{path}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageLoadError(f"{path}: {width} x {height} pixels is more than the limit of {max_pixels}")
                if width == 0 or height == 0:
                    raise ImageLoadError(f"{path}: the image has zero size ({width} x {height})")
                image.load()
                image = ImageOps.exif_transpose(image)
                return to_rgb(image)
    except ImageLoadError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageLoadError(f"{path}: not an image file PIL can read") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(f"{path}: too many pixels ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"{path}: the image is corrupt or truncated ({exc})") from exc


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy of any PIL image; transparent pixels become white, 16-bit images are rescaled."""
    if image.mode == "RGB":
        return image.copy()
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v * (1 / 256)).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
