"""Shared fixtures: the offline pretrained model, real sample images (skipped when absent), tiny models."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch

import opticam.cli.model_args as common
import opticam.models.loading as loading
from opticam.models.specs import DEFAULT_MODEL
from tests.tinymodels import mini_model

# The real ImageNet samples live beside the repository (read-only); tests that need them skip without.
SAMPLES = Path(os.environ.get("OPTICAM_SAMPLES", Path(__file__).resolve().parents[2] / "shared/data/imagenet-samples"))

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def sample_rows(limit: int | None = None) -> list[tuple[Path, int]]:
    """``(path, class_index)`` from the samples' labels.csv, in file order."""
    labels = SAMPLES / "labels.csv"
    if not labels.is_file():
        pytest.skip(f"real sample images not found at {SAMPLES}")
    with labels.open() as f:
        rows = [(SAMPLES / r["file"], int(r["class_index"])) for r in csv.DictReader(f)]
    return rows[:limit] if limit else rows


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: on a shared, loaded CPU two threads spin-wait on each other
    (10x slower); use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    sample_rows(1)
    return SAMPLES


@pytest.fixture(scope="session")
def lite0():
    """The offline pretrained EfficientNet-Lite0 (loaded once per test session)."""
    from opticam import load_model

    return load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def sample_batch(lite0):
    """Eight real images ``[8, 3, 224, 224]`` in [0, 1] and their ground-truth classes."""
    from opticam import load_image

    rows = sample_rows(8)
    x = torch.stack([lite0.preprocess(load_image(p)) for p, _ in rows])
    return x, torch.tensor([c for _, c in rows])


@pytest.fixture
def mini(monkeypatch):
    """The default model is :func:`tests.tinymodels.mini_model` (other names and checkpoints go to the real
    loader): the commands' flags, checks and outputs are tested without the real model's seconds."""
    real = loading.load_model

    def load(name=DEFAULT_MODEL, pretrained=True, checkpoint=None, device="cpu", **kwargs):
        if name == DEFAULT_MODEL and checkpoint is None:
            return mini_model(device)
        return real(name, pretrained=pretrained, checkpoint=checkpoint, device=device, **kwargs)

    monkeypatch.setattr(loading, "load_model", load)
    monkeypatch.setattr(common, "load_model", load)
