"""Extremal Perturbation through TorchRay: the adapter equals TorchRay's own call, the extra's error, the CLI."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from opticam.cli import main
from opticam.errors import UsageError
from opticam.methods import create_method
from opticam.methods.extremal import ExtremalPerturbation

from ..conftest import sample_rows

pytestmark = pytest.mark.usefixtures("one_thread")


def test_missing_torchray_is_one_clear_error(lite0, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchray.attribution.extremal_perturbation", None)
    with pytest.raises(UsageError, match=r"pip install 'opticam\[extremal\]'"):
        create_method("extremal", lite0)


def test_missing_torchray_stops_evaluate_before_anything_starts(monkeypatch, tmp_path, capsys):
    """One line and exit 2 from the command line, also with --ray (checked before a pool starts)."""
    monkeypatch.setitem(sys.modules, "torchray.attribution.extremal_perturbation", None)
    code = main(["evaluate", "--images", str(tmp_path), "--methods", "gradcam,extremal", "--ray",
                 "--db", str(tmp_path / "x.sqlite")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "pip install 'opticam[extremal]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.sqlite").exists()


def test_bad_options(lite0):
    pytest.importorskip("torchray", reason="TorchRay (the 'extremal' extra) is not installed")
    with pytest.raises(ValueError, match="areas"):
        ExtremalPerturbation(lite0.model, areas=[1.5])
    with pytest.raises(ValueError, match="iterations"):
        ExtremalPerturbation(lite0.model, iterations=0)


def test_nan_logits_are_a_clear_error_before_torchray_runs():
    pytest.importorskip("torchray", reason="TorchRay (the 'extremal' extra) is not installed")
    from opticam import NumericalError
    from tests.tinymodels import tiny_images, tiny_pixel_model

    model = tiny_pixel_model()
    with torch.no_grad():
        model.model.head.bias.fill_(float("nan"))
    with pytest.raises(NumericalError, match="NaN or infinite logits"):
        ExtremalPerturbation(model, iterations=1).explain(tiny_images(1))


def test_adapter_equals_torchray_on_a_real_image(lite0, sample_batch):
    """Our map is TorchRay's mask for the same call (second route: TorchRay called directly), averaged over
    areas; the model's parameters keep their gradient flags (TorchRay switches them off and leaves them)."""
    extremal = pytest.importorskip("torchray.attribution.extremal_perturbation", reason="TorchRay is not installed")
    x, labels = sample_batch
    x, labels = x[:1], labels[:1]
    flags = [p.requires_grad for p in lite0.model.parameters()]
    result = create_method("extremal", lite0, iterations=12, areas=[0.1, 0.3]).explain(x, labels)
    assert [p.requires_grad for p in lite0.model.parameters()] == flags
    label = int(labels[0])
    masks, _ = extremal.extremal_perturbation(lite0.model, x, label, areas=[0.1, 0.3], max_iter=12, resize=True)
    assert result.maps.shape == (1, 1, 224, 224)
    assert result.class_indices.tolist() == labels.tolist()
    torch.testing.assert_close(result.maps, masks.mean(0, keepdim=True).clamp(0, 1))
    assert result.maps.min() >= 0 and result.maps.max() <= 1


def test_evaluate_extremal_on_one_real_image(tmp_path, capsys):
    """``opticam evaluate --methods extremal`` on one real sample: a scored row, and the run records the
    changed step count (20 here: TorchRay's 800 take minutes per image on a CPU)."""
    pytest.importorskip("torchray", reason="TorchRay (the 'extremal' extra) is not installed")
    path, label = sample_rows(1)[0]
    data = tmp_path / "data"
    data.mkdir()
    (data / path.name).symlink_to(path)
    (data / "labels.csv").write_text(f"file,class_index\n{path.name},{label}\n")
    db, summary = tmp_path / "e.sqlite", tmp_path / "s.json"
    code = main(["evaluate", "--images", str(data), "--methods", "extremal", "--db", str(db), "--json", str(summary),
                 "--insdel-step", "0", "--no-progress", "--extremal-iterations", "20"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    written = json.loads(summary.read_text())
    row = written["methods"]["extremal(iterations=20)"]  # --extremal-iterations sets the method's option
    assert written["method_settings"]["extremal(iterations=20)"]["iterations"] == 20
    assert row["iterations"] == 20 and row["diagnostics"]["passes_per_map"] > 20
    assert row["n"] == 1
    assert 0 <= row["AD"] <= 100 and 0 <= row["AG"] <= 100
