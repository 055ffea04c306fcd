"""The ``opticam explain`` and ``opticam demo`` commands, end to end on the offline model."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from opticam.cli import main

FIELDS = {
    "image", "model", "layer", "class_index", "class_name", "topk",
    "objective_initial", "objective_final", "iterations", "seconds",
}  # fmt: skip


def test_explain_tench_writes_png_and_json(samples_dir, tmp_path, capsys):
    image = samples_dir / "n01440764_tench.JPEG"
    assert main(["explain", str(image), "--out", str(tmp_path), "--iterations", "10"]) == 0
    record = json.loads((tmp_path / "n01440764_tench.json").read_text())
    assert set(record) >= FIELDS
    assert record["model"] == "efficientnet_lite0" and record["layer"] == "bn2"
    assert 0 in [t["class_index"] for t in record["topk"]] and record["topk"][0]["name"] == "tench"
    assert record["class_index"] == 0 and record["class_name"] == "tench"
    assert record["objective_final"] > record["objective_initial"]
    assert Image.open(tmp_path / "n01440764_tench.png").size == (224, 224)
    out = capsys.readouterr().out
    assert "tench" in out and "wrote" in out


def test_explain_batch_invariant_flag(samples_dir, tmp_path):
    images = [str(samples_dir / n) for n in ("n01440764_tench.JPEG", "n01443537_goldfish.JPEG")]
    args = ["--iterations", "3", "--batch-size", "2", "--batch-invariant"]
    assert main(["explain", *images, "--out", str(tmp_path / "b"), *args]) == 0
    for image in images:
        assert main(["explain", image, "--out", str(tmp_path / "s"), "--iterations", "3"]) == 0
    for stem in ("n01440764_tench", "n01443537_goldfish"):
        assert (
            Image.open(tmp_path / "b" / f"{stem}.png").tobytes() == Image.open(tmp_path / "s" / f"{stem}.png").tobytes()
        )


def test_explain_reports_bad_images_and_keeps_going(samples_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    code = main(
        ["explain", str(bad), str(samples_dir / "n01443537_goldfish.JPEG"), "--out", str(tmp_path / "o"),
         "--iterations", "2", "--class", "1"]
    )  # fmt: skip
    assert code == 1
    assert (tmp_path / "o" / "n01443537_goldfish.json").exists()
    assert "bad.jpg: not an image" in capsys.readouterr().err


def test_explain_user_errors_exit_2(tmp_path, capsys):
    Image.new("RGB", (40, 40)).save(tmp_path / "a.png")
    assert main(["explain", str(tmp_path / "a.png"), "--class", "1000", "--out", str(tmp_path)]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["explain", str(tmp_path / "a.png"), "--layer", "nope", "--out", str(tmp_path)]) == 2
    assert "no layer named 'nope'" in capsys.readouterr().err
    assert main(["explain", str(tmp_path / "a.png"), "--model", "nope_net", "--out", str(tmp_path)]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_demo_runs_on_the_bundled_sample(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--iterations", "3"]) == 0
    assert (tmp_path / "grace_hopper.png").exists() and (tmp_path / "grace_hopper.json").exists()
    assert "Demo output is in" in capsys.readouterr().out


def test_python_m_entry_point():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "opticam", "--help"], capture_output=True, text=True, check=True)
    assert "explain" in out.stdout


@pytest.mark.parametrize("args", [["explain"], ["explain", "x.png", "--iterations", "abc"]])
def test_argument_errors(args, capsys):
    """argparse's complaints are the same one line as every other bad value (exit status 2), not its usage."""
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("opticam: error: ") and "usage:" not in err


def test_explain_topk_save_maps_writes_one_npy_and_json_per_class(samples_dir, tmp_path):
    import json

    import numpy as np

    image = samples_dir / "n01440764_tench.JPEG"
    out = tmp_path / "d"
    assert main(["explain", str(image), "--topk", "3", "--save-maps", "--out", str(out), "--iterations", "2"]) == 0
    maps = sorted(out.glob("*.npy"))
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert len(maps) == 3 and len(records) == 3 and len(list(out.glob("*.png"))) == 3
    top3 = [t["class_index"] for t in records[0]["topk"][:3]]
    assert sorted(r["class_index"] for r in records) == sorted(top3)
    for record in records:
        stem = f"n01440764_tench_c{record['class_index']}"
        assert record["map"] == f"{stem}.npy"
        m = np.load(out / record["map"])
        width, height = Image.open(image).size  # the map is at the image's resolution, not the model's 224
        assert m.dtype == np.float32 and m.shape == (height, width) and m.min() >= 0 and m.max() <= 1


def test_topk_user_errors(tmp_path, capsys):
    assert main(["explain", str(tmp_path / "a.png"), "--topk", "0", "--out", str(tmp_path)]) == 2
    assert "--topk" in capsys.readouterr().err
    assert main(["explain", str(tmp_path / "a.png"), "--topk", "2", "--class", "1", "--out", str(tmp_path)]) == 2


def test_explain_with_the_shipped_amortized_head_on_the_real_model(samples_dir, tmp_path, capsys):
    """The issue's must-show: `opticam explain IMG --method opticam-amortized`, offline, with the shipped head."""
    image = samples_dir / "n01440764_tench.JPEG"
    assert main(["explain", str(image), "--out", str(tmp_path), "--method", "opticam-amortized(refine=2)"]) == 0
    record = json.loads((tmp_path / "n01440764_tench.json").read_text())
    assert record["method"] == "opticam-amortized(refine=2)" and record["iterations"] == 2
    assert record["notes"]["head"].startswith("shipped:efficientnet_lite0-bn2.pt")
    assert record["objective_final"] >= record["objective_initial"]
    assert "with opticam-amortized(refine=2)" in capsys.readouterr().out


def test_explain_method_runs_any_registered_method(samples_dir, tmp_path):
    image = samples_dir / "n01440764_tench.JPEG"
    assert main(["explain", str(image), "--out", str(tmp_path), "--method", "gradcam"]) == 0
    record = json.loads((tmp_path / "n01440764_tench.json").read_text())
    assert record["method"] == "gradcam" and "iterations" not in record and record["settings"] == {}
