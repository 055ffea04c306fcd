"""train-explainer: seeded and reproducible, resumable to the same head, and its refusals; the CLI on an npz split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import opticam.cli.model_args as model_args
import opticam.training.explainer as explainer
from opticam.cli import main
from opticam.errors import UsageError
from opticam.methods.amortized import AmortizedOptiCAM
from opticam.methods.explainer_head import load_head
from opticam.models.loading import LoadedModel, Preprocessing
from opticam.training import TrainingImages, TrainSettings, augment, train_explainer, training_images
from tests.tinymodels import tiny_images, tiny_pixel_model


def loaded_tiny(seed: int = 0) -> LoadedModel:
    model = tiny_pixel_model(channels=4, classes=3, seed=seed)
    return LoadedModel("tiny", model, Preprocessing((8, 8)), ["a", "b", "c"], target_layer="features")


def data(n: int = 12, labels: bool = True) -> TrainingImages:
    return TrainingImages(
        tiny_images(n, size=8, seed=5).half(),
        [f"img{i}" for i in range(n)],
        torch.arange(n) % 3 if labels else None,
        [],
    )


QUIET = {"log": lambda _line: None}
SETTINGS = TrainSettings(epochs=2, batch_size=4, lr=0.01, seed=1)


def state(path):
    head, info = load_head(path)
    return head.state_dict(), info


def test_training_is_reproducible_with_a_seed(tmp_path):
    a = train_explainer(loaded_tiny(), None, data(), tmp_path / "a.pt", SETTINGS, **QUIET)
    b = train_explainer(loaded_tiny(), None, data(), tmp_path / "b.pt", SETTINGS, **QUIET)
    c = train_explainer(
        loaded_tiny(), None, data(), tmp_path / "c.pt", TrainSettings(epochs=2, batch_size=4, lr=0.01, seed=2), **QUIET
    )
    sa, sb, sc = state(a.path)[0], state(b.path)[0], state(c.path)[0]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    info = state(a.path)[1]
    assert info.layer == "features" and info.channels == 4 and len(info.training["history"]) == 2


def test_training_moves_the_objective_up(tmp_path):
    out = train_explainer(
        loaded_tiny(),
        None,
        data(24),
        tmp_path / "h.pt",
        TrainSettings(epochs=8, batch_size=8, lr=0.05, augment=False),
        **QUIET,
    )
    values = [h["value"] for h in out.info.training["history"]]
    assert values[-1] > values[0]


def interrupt_in_epoch(monkeypatch, number: int):
    """Make the ``number``-th objective epoch of the next run raise KeyboardInterrupt (a kill mid-epoch)."""
    real = explainer._objective_epoch
    calls = []

    def epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == number:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(explainer, "_objective_epoch", epoch)
    return lambda: monkeypatch.setattr(explainer, "_objective_epoch", real)


def test_an_interrupted_run_resumes_to_the_same_head(tmp_path, monkeypatch):
    whole = train_explainer(loaded_tiny(), None, data(), tmp_path / "whole.pt", SETTINGS, **QUIET)
    restore = interrupt_in_epoch(monkeypatch, 2)
    out = tmp_path / "cut.pt"
    with pytest.raises(KeyboardInterrupt):
        train_explainer(loaded_tiny(), None, data(), out, SETTINGS, **QUIET)
    assert not out.exists() and (tmp_path / "cut.pt.partial").exists()
    restore()
    resumed = train_explainer(loaded_tiny(), None, data(), out, SETTINGS, **QUIET)
    assert resumed.resumed_from == 1 and not (tmp_path / "cut.pt.partial").exists()
    sw, sr = state(whole.path)[0], state(out)[0]
    assert all(torch.equal(sw[k], sr[k]) for k in sw)
    again = train_explainer(loaded_tiny(), None, data(), out, SETTINGS, **QUIET)
    assert again.already_done


def test_a_checkpoint_of_other_settings_is_refused(tmp_path, monkeypatch):
    restore = interrupt_in_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train_explainer(loaded_tiny(), None, data(), tmp_path / "h.pt", SETTINGS, **QUIET)
    restore()
    other = TrainSettings(epochs=2, batch_size=4, lr=0.02, seed=1)
    with pytest.raises(UsageError, match="other settings"):
        train_explainer(loaded_tiny(), None, data(), tmp_path / "h.pt", other, **QUIET)
    (tmp_path / "h.pt.partial").write_bytes(b"damaged")
    with pytest.raises(UsageError, match="not a readable training checkpoint"):
        train_explainer(loaded_tiny(), None, data(), tmp_path / "h.pt", SETTINGS, **QUIET)


def test_refusals(tmp_path):
    with pytest.raises(UsageError, match="no labels"):
        train_explainer(
            loaded_tiny(), None, data(labels=False), tmp_path / "h.pt", TrainSettings(target="labels"), **QUIET
        )
    with pytest.raises(UsageError, match="--distill"):
        train_explainer(loaded_tiny(), None, data(), tmp_path / "h.pt", TrainSettings(distill_epochs=2), **QUIET)
    train_explainer(loaded_tiny(), None, data(), tmp_path / "h.pt", SETTINGS, **QUIET)
    with pytest.raises(UsageError, match="trained otherwise"):
        train_explainer(loaded_tiny(), None, data(), tmp_path / "h.pt", TrainSettings(epochs=3), **QUIET)
    for bad in ({"epochs": -1}, {"epochs": 0}, {"batch_size": 0}, {"lr": 0.0}, {"lr": float("nan")}, {"hidden": 0}):
        with pytest.raises(UsageError):
            TrainSettings(**bad)


def test_the_trained_head_serves_its_model_and_refuses_another(tmp_path):
    out = train_explainer(loaded_tiny(), None, data(), tmp_path / "h.pt", SETTINGS, **QUIET)
    model = loaded_tiny().model
    cam = AmortizedOptiCAM(model, "features", head=out.path, refine=1, warn_pixel_space=False)
    assert cam.explain(tiny_images(2)).maps.shape == (2, 1, 8, 8)
    with pytest.raises(UsageError, match="trained for model"):
        AmortizedOptiCAM(loaded_tiny(seed=4).model, "features", head=out.path, warn_pixel_space=False)


def test_augment_is_seeded_and_keeps_shape_and_range():
    x = tiny_images(3, size=16)
    a = augment(x, torch.Generator().manual_seed(0))
    b = augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, augment(x, torch.Generator().manual_seed(1)))


def fake_npz(path, n=10):
    rng = np.random.default_rng(0)
    arrays = {f"{s}_images": rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8) for s in ("train", "val", "test")}
    arrays |= {f"{s}_labels": rng.integers(0, 3, (n, 1)) for s in ("train", "val", "test")}
    np.savez(path, **arrays)
    return path


def test_training_images_from_an_npz_split_and_rows(tmp_path):
    source = fake_npz(tmp_path / "d.npz")
    pre = Preprocessing((8, 8))
    got = training_images(source, pre, split="train", rows=(2, 7))
    assert len(got) == 5 and got.labels is not None and got.keys[0] == "train/000002"


def test_cli_trains_on_an_npz_split_resumes_and_the_head_loads(tmp_path, monkeypatch, capsys):
    source = fake_npz(tmp_path / "d.npz")
    monkeypatch.setattr(model_args, "load_model", lambda *a, **k: loaded_tiny())
    out = tmp_path / "head.pt"
    argv = ["train-explainer", "--images", str(source), "--split", "train", "--out", str(out), "--epochs", "2",
            "--batch-size", "4", "--target", "labels", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "use it as opticam-amortized(head=" in capsys.readouterr().out
    head, info = load_head(out)
    assert info.training["identity"]["settings"]["target"] == "labels"
    assert main(argv) == 0  # done already: said, not retrained
    assert "already trained" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--rows", "abc", "START:STOP"),
        ("--rows", "5:2", "START < STOP"),
        ("--epochs", "-1", "--epochs"),
        ("--batch-size", "0", "--batch-size"),
        ("--head-lr", "0", "--lr"),
        ("--hidden", "0", "--hidden"),
        ("--out", "h.txt", "--out"),
        ("--distill", "missing.pt", "--distill"),
        ("--distill-epochs", "3", "--distill"),
    ],
)
def test_cli_bad_values_are_one_line(tmp_path, monkeypatch, capsys, flag, value, message):
    source = fake_npz(tmp_path / "d.npz")
    monkeypatch.setattr(model_args, "load_model", lambda *a, **k: loaded_tiny())
    monkeypatch.chdir(tmp_path)
    argv = ["train-explainer", "--images", str(source), "--split", "train", "--out", "h.pt", flag, value]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
