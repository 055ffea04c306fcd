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


@pytest.fixture(scope="session", autouse=True)
def test_model_heads(tmp_path_factory):
    """Explainer heads (seeded, untrained) for the test doubles, in a folder on ``$OPTICAM_HEADS``: every test that
    runs each registered method runs ``opticam-amortized`` too, the way a user's own heads are found."""
    from opticam.methods.explainer_head import HEADS_ENV, ExplainerHead, HeadInfo, save_head
    from opticam.models.fingerprint import weights_fingerprint
    from tests.methods.test_baselines import small_model
    from tests.tinymodels import tiny_pixel_model

    folder = tmp_path_factory.mktemp("heads")
    for name, model, layer, channels in [
        ("small", small_model(), "last", 5),
        ("mini", mini_model().model, "bn2", 4),
        ("tiny", tiny_pixel_model(), "features", 4),
    ]:
        torch.manual_seed(0)
        save_head(
            folder / f"{name}.pt",
            ExplainerHead(hidden=8),
            HeadInfo(name, layer, weights_fingerprint(model), channels, 8),
        )
    before = os.environ.get(HEADS_ENV)
    os.environ[HEADS_ENV] = str(folder)
    yield folder
    if before is None:
        os.environ.pop(HEADS_ENV, None)
    else:
        os.environ[HEADS_ENV] = before


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
