"""The work of ``opticam explain``, in one process or on a Ray worker: maps for image files, as file bytes.

:class:`ExplainJob` says what is computed per image (the class to explain, ``--topk``, ``--save-maps``) and
turns one batch into :class:`ExplainOutput` s (the overlay PNG, the JSON record and the optional ``.npy``, as
bytes, under the file stem they will be written as). The command line (:mod:`opticam.cli.explain`) runs it
in its own process, or hands it to a pool of :class:`ExplainWorker` actors (``--ray``) next to the
evaluation's workers in :mod:`.distributed`; either way the driver writes the files and prints.

The worker lives here, not in ``cli/``, because Ray pickles an actor class by its module path: each worker
process imports this module, which needs nothing of the command line.
"""

from __future__ import annotations

import glob
import io
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ImageLoadError
from ..images import load_image
from ..methods.base import SaliencyMethod, SaliencyResult
from ..methods.opticam import OptiCAM
from ..methods.opticam_config import OptiCAMConfig
from ..methods.registry import MethodSpec, create_method
from ..models.loading import LoadedModel, Preprocessing
from ..viz.encode import png_bytes
from ..viz.overlay import overlay
from .distributed import WorkerRecipe, worker_setup


@dataclass
class ExplainOutput:
    """One map's files as bytes (a Ray worker sends them to the driver, which writes them).

    Attributes:
        stem: the file name without suffix (``cat``, or ``cat_c281`` with ``--topk``).
        png: the overlay. record: the JSON record (:func:`image_record`). npy: the raw map, or ``None``.
    """

    stem: str
    png: bytes
    record: dict[str, Any]
    npy: bytes | None

    def write(self, out: Path) -> list[Path]:
        """Write the files into ``out``; returns their paths (PNG, JSON, then the ``.npy`` if any)."""
        written = [out / f"{self.stem}.png", out / f"{self.stem}.json"]
        written[0].write_bytes(self.png)
        if self.npy is not None:
            written.append(out / f"{self.stem}.npy")
            written[2].write_bytes(self.npy)
        written[1].write_text(json.dumps(self.record, indent=2) + "\n")
        return written


@dataclass(frozen=True)
class ExplainJob:
    """What ``opticam explain`` computes per image (the same in one process and on a Ray worker).

    Attributes:
        class_index: the class explained in every image (``None``: each image's top-1).
        topk: explain each image's ``topk`` most probable classes instead (file stems then carry the class).
        save_maps: also produce each raw map as ``.npy`` bytes, at the image file's resolution
            (:func:`map_at_image_size`).
        preset: the named Opti-CAM settings the configuration started from (``--preset``), recorded in each
            JSON record beside the settings actually used (explicit flags override the preset's values).
        spec: the method to run (``--method``, any registered method with its options); ``None``: Opti-CAM
            with the configuration the flags give.
    """

    class_index: int | None
    topk: int | None
    save_maps: bool
    preset: str | None = None
    spec: MethodSpec | None = None

    @property
    def method_key(self) -> str:
        """What the JSON records call the method: the spec's key, ``opticam`` without a spec."""
        return self.spec.key if self.spec is not None else "opticam"

    def method(
        self, loaded: LoadedModel, layer: str | None, config: OptiCAMConfig, progress: bool = False
    ) -> SaliencyMethod:
        """The method that :meth:`explain` runs on ``layer`` or the model's default: the spec's, or Opti-CAM
        with ``config``."""
        if self.spec is not None:
            return create_method(self.spec, loaded, layer=layer)
        return OptiCAM(loaded.model, layer or loaded.target_layer, loaded.reshape_transform, config=config,
                       progress=progress)  # fmt: skip

    def explain(
        self,
        loaded: LoadedModel,
        cam: SaliencyMethod,
        chunk: Sequence[tuple[Path, torch.Tensor]],
        stems: Sequence[str],
        device: str | torch.device,
        sizes: Sequence[tuple[int, int]] | None = None,
    ) -> list[ExplainOutput]:
        """Maps for ``chunk`` (``[(path, preprocessed image)]``, one batch) as :class:`ExplainOutput`;
        ``stems[i]`` is the file stem of ``chunk[i]``. ``sizes[i]``: the ``(width, height)`` of ``chunk[i]``'s
        image file, for the ``.npy`` maps (``None``: read from each file's header)."""
        x = torch.stack([t for _, t in chunk]).to(device)
        begin = time.perf_counter()
        if self.topk is None:
            targets = self.class_index
        else:
            with torch.no_grad():
                targets = loaded.model(x).topk(self.topk, dim=1).indices  # [B, K]: one map per image and class
        result = cam.explain(x, targets)
        seconds = (time.perf_counter() - begin) / result.maps.shape[0]
        rows = result.image_indices.tolist() if result.image_indices is not None else list(range(len(chunk)))
        outputs = []
        for i, image in enumerate(rows):
            path, tensor = chunk[image]
            record = image_record(path, loaded, cam, result, i, seconds, preset=self.preset, method=self.method_key)
            stem = stems[image] if self.topk is None else f"{stems[image]}_c{record['class_index']}"
            npy = None
            if self.save_maps:
                size = sizes[image] if sizes is not None else image_size(path)
                buffer = io.BytesIO()
                np.save(buffer, map_at_image_size(result.maps[i, 0], loaded.preprocess, size))
                npy = buffer.getvalue()
                record["map"] = f"{stem}.npy"
            outputs.append(ExplainOutput(stem, png_bytes(overlay(tensor, result.maps[i])), record, npy))
        return outputs

    def done(self, out: Path, stem: str) -> bool:
        """Whether an earlier run wrote every output of the image with this stem into ``out`` (``--ray``
        resumes by skipping those images)."""
        if self.topk is not None:
            return len(list(out.glob(f"{glob.escape(stem)}_c*.json"))) >= self.topk
        names = [f"{stem}.png", f"{stem}.json"] + ([f"{stem}.npy"] if self.save_maps else [])
        return all((out / n).is_file() for n in names)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of the image file as :func:`~opticam.images.load_image` returns it (EXIF
    orientation applied), from its header."""
    with Image.open(path) as image:
        orientation = image.getexif().get(0x0112, 1)  # 5-8: the picture is stored turned by 90 degrees
        width, height = image.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def map_at_image_size(saliency: torch.Tensor, preprocess: object, size: tuple[int, int]) -> np.ndarray:
    """A map of the model's input, ``[h, w]``, laid back onto the image file's pixels: float32 ``[H, W]``
    for ``size = (W, H)``, in [0, 1], so that it overlays the original image.

    With a :class:`~opticam.models.loading.Preprocessing` that centre-crops, the map covers the crop: it is
    resized (bilinear, as Opti-CAM upsamples its maps) onto the part of the image the crop came from, and
    the pixels the model never saw are 0. Without a crop (or with a preprocessing of another kind) the map
    is resized onto the whole image."""
    saliency = torch.nan_to_num(saliency.detach().float().cpu(), nan=0.0).clamp(0, 1)
    width, height = size
    if not (isinstance(preprocess, Preprocessing) and preprocess.crop):
        return _resized(saliency, (height, width), 0, 0, (height, width))
    new_w, new_h = preprocess.resized_size(size)
    crop_h, crop_w = preprocess.input_size
    # where the crop's corner lies in the resized image (torchvision's CenterCrop; negative: padded)
    left = int(round((new_w - crop_w) / 2.0)) if new_w >= crop_w else -((crop_w - new_w) // 2)
    top = int(round((new_h - crop_h) / 2.0)) if new_h >= crop_h else -((crop_h - new_h) // 2)
    sx, sy = width / new_w, height / new_h
    x0, y0 = round(left * sx), round(top * sy)
    box = (round((top + crop_h) * sy) - y0, round((left + crop_w) * sx) - x0)
    return _resized(saliency, (height, width), y0, x0, box)


def _resized(saliency: torch.Tensor, shape: tuple[int, int], y0: int, x0: int, box: tuple[int, int]) -> np.ndarray:
    """A ``shape`` array of zeros with ``saliency`` resized to ``box = (h, w)`` at row ``y0``, column ``x0``
    (the parts outside ``shape`` cut off)."""
    resized = F.interpolate(saliency[None, None], size=box, mode="bilinear", align_corners=False,
                            antialias=box[0] < saliency.shape[0] or box[1] < saliency.shape[1])[0, 0]  # fmt: skip
    out = np.zeros(shape, dtype=np.float32)
    ys, xs = slice(max(y0, 0), min(y0 + box[0], shape[0])), slice(max(x0, 0), min(x0 + box[1], shape[1]))
    out[ys, xs] = resized[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0].clamp(0, 1).numpy()
    return out


def image_record(
    path: Path,
    loaded: LoadedModel,
    cam: SaliencyMethod,
    result: SaliencyResult,
    i: int,
    seconds: float,
    *,
    preset: str | None = None,
    method: str = "opticam",
) -> dict[str, Any]:
    """The JSON record of map ``i`` of ``result``: the image, model and layer, the class explained and the
    top-5, the method (its spec key) and its diagnostics (objective before and after, iterations, passes per
    map, and its ``notes`` where it has some: amortized Opti-CAM's head), every setting the method reports
    (``settings``: Opti-CAM's whole configuration), the preset they started from (``preset``, ``None`` when
    not given) and the seconds per map."""
    c = int(result.class_indices[i])
    settings = cam.settings()
    return {
        "image": str(path),
        "model": loaded.name,
        "layer": cam.target_layer_name,
        "class_index": c,
        "class_name": loaded.class_name(c),
        "class_prob": float(torch.softmax(result.logits[i].float(), dim=0)[c]),
        "topk": [{**t, "prob": round(t["prob"], 6)} for t in loaded.top_k(result.logits[i])],
        "method": method,
        "objective": settings.get("objective"),
        "normalization": settings.get("normalization"),
        **result.record(i),
        **({"notes": dict(result.diagnostics.notes)} if result.diagnostics.notes else {}),
        "settings": settings,
        "preset": preset,
        "seconds": round(seconds, 4),
    }


@dataclass
class ExplainChunk:
    """What an :class:`ExplainWorker` sends back for one chunk: the outputs, the unreadable images'
    messages, and which process computed it."""

    outputs: list[ExplainOutput]
    reports: list[str]
    pid: int


class ExplainWorker:
    """A Ray actor for ``opticam explain --ray``: builds the model and Opti-CAM once, decodes its own images."""

    def __init__(self, threads: int, recipe: WorkerRecipe, config: OptiCAMConfig, job: ExplainJob) -> None:
        self.device = worker_setup(threads, recipe.setup)
        self.loaded, _ = recipe.build(self.device)
        self.cam = job.method(self.loaded, recipe.layer, config)
        self.job = job

    def pid(self) -> int:
        return os.getpid()

    def run(self, number: int, items: list[tuple[str, str, str]]) -> ExplainChunk:
        """``items``: ``(absolute path, the path as given, stem)`` (a worker's working folder is its own)."""
        chunk, stems, sizes, reports = [], [], [], []
        for absolute, path, stem in items:
            try:
                image = load_image(absolute)
                chunk.append((Path(path), self.loaded.preprocess(image)))
                stems.append(stem)
                sizes.append(image.size)
            except ImageLoadError as exc:
                reports.append(f"skipping {exc}")
        outputs = self.job.explain(self.loaded, self.cam, chunk, stems, self.device, sizes) if chunk else []
        return ExplainChunk(outputs, reports, os.getpid())
