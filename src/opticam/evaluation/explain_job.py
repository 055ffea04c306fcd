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

from ..errors import ImageLoadError
from ..images import load_image
from ..methods.base import SaliencyResult
from ..methods.opticam import OptiCAM
from ..methods.opticam_config import OptiCAMConfig
from ..models.loading import LoadedModel
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
        save_maps: also produce each raw map as ``.npy`` bytes.
        preset: the named Opti-CAM settings the configuration started from (``--preset``), recorded in each
            JSON record beside the settings actually used (explicit flags override the preset's values).
    """

    class_index: int | None
    topk: int | None
    save_maps: bool
    preset: str | None = None

    def method(self, loaded: LoadedModel, layer: str | None, config: OptiCAMConfig, progress: bool = False) -> OptiCAM:
        """The Opti-CAM that :meth:`explain` runs: ``layer`` or the model's default, with ``config``."""
        return OptiCAM(loaded.model, layer or loaded.target_layer, loaded.reshape_transform, config=config,
                       progress=progress)  # fmt: skip

    def explain(
        self,
        loaded: LoadedModel,
        cam: OptiCAM,
        chunk: Sequence[tuple[Path, torch.Tensor]],
        stems: Sequence[str],
        device: str | torch.device,
    ) -> list[ExplainOutput]:
        """Maps for ``chunk`` (``[(path, preprocessed image)]``, one batch) as :class:`ExplainOutput`;
        ``stems[i]`` is the file stem of ``chunk[i]``."""
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
            record = image_record(path, loaded, cam, result, i, seconds, preset=self.preset)
            stem = stems[image] if self.topk is None else f"{stems[image]}_c{record['class_index']}"
            npy = None
            if self.save_maps:
                buffer = io.BytesIO()
                np.save(buffer, result.maps[i, 0].detach().float().cpu().numpy().astype(np.float32))
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


def image_record(
    path: Path,
    loaded: LoadedModel,
    cam: OptiCAM,
    result: SaliencyResult,
    i: int,
    seconds: float,
    *,
    preset: str | None = None,
) -> dict[str, Any]:
    """The JSON record of map ``i`` of ``result``: the image, model and layer, the class explained and the
    top-5, the method's diagnostics (objective before and after, iterations, passes per map), every Opti-CAM
    setting used (``settings``), the preset they started from (``preset``, ``None`` when not given) and the
    seconds per map."""
    c = int(result.class_indices[i])
    return {
        "image": str(path),
        "model": loaded.name,
        "layer": cam.target_layer_name,
        "class_index": c,
        "class_name": loaded.class_name(c),
        "class_prob": float(torch.softmax(result.logits[i].float(), dim=0)[c]),
        "topk": [{**t, "prob": round(t["prob"], 6)} for t in loaded.top_k(result.logits[i])],
        "objective": cam.config.objective,
        "normalization": cam.config.normalization,
        **result.record(i),
        "settings": cam.config.as_dict(),
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
        chunk, stems, reports = [], [], []
        for absolute, path, stem in items:
            try:
                chunk.append((Path(path), self.loaded.preprocess(load_image(absolute))))
                stems.append(stem)
            except ImageLoadError as exc:
                reports.append(f"skipping {exc}")
        outputs = self.job.explain(self.loaded, self.cam, chunk, stems, self.device) if chunk else []
        return ExplainChunk(outputs, reports, os.getpid())
