"""MedMNIST ``.npz`` data sets (``--images FILE.npz --split``): reading, keys, the pixels that reach the model,
fingerprints of a sample's own pixels, clear errors, and ``opticam evaluate`` end to end on a tiny ``.npz`` and a
factory model (resume, ``--ray``, the report); on the shared PneumoniaMNIST file when it is there, the grayscale
conversion and the documented command for the example CNN and ViT."""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from opticam.evaluation import DatasetError, find_boxes_file, load_sample, read_dataset
from opticam.evaluation.dataset import fingerprint, image_for_key
from opticam.models import load_model
from tests.evaluation.test_evaluate import run_here
from tests.models.test_factory import MODELS, write_models

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]
PNEUMONIA = REPO.parent / "shared/data/pneumoniamnist/pneumoniamnist.npz"
EXAMPLE = REPO / "examples/pneumoniamnist"


def make_npz(path: Path, *, rgb: bool = False, sizes: dict[str, int] | None = None, size: int = 12, **extra) -> Path:
    """A MedMNIST-layout file: ``<split>_images`` uint8 ``[N, size, size(, 3)]``, ``<split>_labels`` ``[N, 1]``."""
    gen = np.random.default_rng(0)
    arrays = {}
    for split, n in (sizes or {"train": 5, "test": 6}).items():
        shape = (n, size, size, 3) if rgb else (n, size, size)
        arrays[f"{split}_images"] = gen.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 3).reshape(n, 1).astype(np.uint8)
    arrays.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def test_reads_a_split_with_stable_keys_and_small_picklable_samples(tmp_path):
    path = make_npz(tmp_path / "d.npz")
    root, samples = read_dataset(path, split="test")
    assert root == path and [s.key for s in samples] == [f"test/{i:06d}" for i in range(6)]
    assert [s.class_index for s in samples] == [0, 1, 2, 0, 1, 2]
    assert samples[0].boxes is None and samples[3].split == "test" and samples[3].index == 3
    assert pickle.loads(pickle.dumps(samples[3])) == samples[3]
    assert len(pickle.dumps(samples[3])) < 400  # the file, the split and the row travel, never the pixels
    assert [s.key for s in read_dataset(path, 2, split="train")[1]] == ["train/000000", "train/000001"]


def test_grayscale_stays_grayscale_and_rgb_stays_rgb(tmp_path):
    gray = make_npz(tmp_path / "g.npz")
    images = np.load(gray)["test_images"]
    _, samples = read_dataset(gray, split="test")
    image = load_sample(samples[4])
    assert image.mode == "L" and np.array_equal(np.asarray(image), images[4])
    assert np.array_equal(np.asarray(image_for_key(gray, "test/000004")), images[4])
    rgb = make_npz(tmp_path / "c.npz", rgb=True)
    _, samples = read_dataset(rgb, split="train")
    image = load_sample(samples[1])
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), np.load(rgb)["train_images"][1])


def test_fingerprint_is_the_sample_pixels_and_label_not_the_file(tmp_path):
    path = make_npz(tmp_path / "d.npz")
    _, samples = read_dataset(path, split="test")
    before = [fingerprint(s) for s in samples]
    arrays = dict(np.load(path))
    arrays["test_images"][2, 0, 0] ^= 1
    arrays["train_images"][0] ^= 7  # another split: no test row changes
    np.savez_compressed(path, **arrays)
    os.utime(path, ns=(1, 1))  # a new modification time whatever the clock's resolution: read again
    changed = [s.key for s, b in zip(samples, before, strict=True) if fingerprint(s) != b]
    assert changed == ["test/000002"]


def test_boxes_beside_an_npz_are_not_taken_for_its_own(tmp_path):
    path = make_npz(tmp_path / "d.npz")
    (tmp_path / "boxes.csv").write_text("file,x0,y0,x1,y1\ntest/000000,0,0,4,4\n")
    assert find_boxes_file(path) is None
    _, samples = read_dataset(path, split="test", boxes=tmp_path / "boxes.csv")  # named explicitly: by key
    assert samples[0].boxes == ((0.0, 0.0, 4.0, 4.0),) and samples[1].boxes == ()


@pytest.mark.parametrize(
    ("arrays", "split", "message"),
    [
        ({}, None, r"say which split, --split \{train,val,test\}"),
        ({}, "val", r"has no val_images or val_labels array: the splits it has are train, test"),
        ({}, "dev", r"--split must be one of train, val, test"),
        ({"val_images": np.zeros((3, 4, 4), np.uint8), "val_labels": np.zeros((2, 1))}, "val", r"integer"),
        ({"val_images": np.zeros((3, 4, 4), np.uint8), "val_labels": np.zeros((2, 1), np.int64)}, "val",
         r"val_images has 3 images but val_labels has 2 labels"),
        ({"val_images": np.zeros((3, 4, 4), np.float32), "val_labels": np.zeros((3, 1), np.int64)}, "val",
         r"expected uint8 \[N, H, W\]"),
        ({"val_images": np.zeros((3, 4, 4), np.uint8), "val_labels": np.zeros((3, 14), np.int64)}, "val",
         r"multi-label"),
        ({"val_images": np.zeros((3, 4, 4), np.uint8)}, "val", r"has no val_labels array"),
    ],
)  # fmt: skip
def test_clear_errors(tmp_path, arrays, split, message):
    path = make_npz(tmp_path / "d.npz", **arrays)
    with pytest.raises(DatasetError, match=message) as err:
        read_dataset(path, split=split)
    assert "\n" not in str(err.value)


def test_split_is_for_npz_files_and_a_bad_file_is_named(tmp_path):
    (tmp_path / "labels.csv").write_text("file,class_index\na.png,0\n")
    with pytest.raises(DatasetError, match=r"--split test is for MedMNIST \.npz files"):
        read_dataset(tmp_path, split="test")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match=r"junk\.npz is not a readable \.npz file"):
        read_dataset(tmp_path / "junk.npz", split="test")


# -- opticam evaluate on an .npz and a factory model ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("npz")
    make_npz(root / "data" / "tiny.npz", sizes={"test": 6, "val": 3})
    write_models(root / "zoo", MODELS)
    return root


def evaluate_args(root: Path, db: Path, *extra: str) -> list[str]:
    return ["evaluate", "--model", str(root / "zoo/models.py") + ":gray", "--images", str(root / "data/tiny.npz"),
            "--split", "test", "--methods", "fakecam,gradcam,opticam", "--iterations", "3", "--insdel-step", "16",
            "--batch-size", "4", "--db", str(db), "--device", "cpu", "--no-progress", *extra]  # fmt: skip


def rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return sorted(con.execute("SELECT image, method, label, p, o, insertion, deletion FROM results").fetchall())


def test_evaluate_resumes_and_writes_every_method(tiny, tmp_path, capsys):
    db = tmp_path / "r.sqlite"
    code, out, err = run_here(capsys, evaluate_args(tiny, db, "--limit", "4", "--json", str(tmp_path / "s.json")))
    assert code == 0, err
    assert "stored 12 new rows" in err
    assert "(found automatically)" in err and "layer None" not in err  # no layer named: the found one, by name
    code, out, err = run_here(capsys, evaluate_args(tiny, db, "--json", str(tmp_path / "s.json")))
    assert code == 0 and "stored 6 new rows" in err  # --limit extends the run: only the 2 new images x 3
    code, out, err = run_here(capsys, evaluate_args(tiny, db, "--json", str(tmp_path / "s.json")))
    assert "stored 0 new rows" in err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert set(summary["methods"]) == {"fakecam", "gradcam", "opticam(iterations=3)"}
    assert all(m["n"] == 6 and m["insertion"] is not None for m in summary["methods"].values())
    assert summary["config"]["model"] == os.path.relpath(tiny / "zoo/models.py", tmp_path) + ":gray"  # like the data
    assert summary["config"]["input_size"] == [12, 12]
    images = {r[0] for r in rows(db)}
    assert images == {f"test/{i:06d}" for i in range(6)}


def test_split_flag_errors_are_one_line(tiny, tmp_path, capsys):
    args = evaluate_args(tiny, tmp_path / "x.sqlite")
    no_split = [a for i, a in enumerate(args) if a != "--split" and args[i - 1] != "--split"]
    code, _, err = run_here(capsys, no_split)
    assert code == 2 and "say which split" in err and err.strip().count("\n") == 0
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "labels.csv").write_text("file,class_index\na.png,0\n")
    code, _, err = run_here(
        capsys, ["evaluate", "--images", str(folder), "--split", "test", "--db", str(tmp_path / "y")]
    )
    assert code == 2 and "is for MedMNIST .npz files" in err


def test_report_of_an_npz_run_redraws_its_maps(tiny, tmp_path, capsys, monkeypatch):
    db = tmp_path / "r.sqlite"
    assert run_here(capsys, evaluate_args(tiny, db, "--limit", "2", "--methods", "fakecam,gradcam"))[0] == 0
    monkeypatch.chdir(tiny)  # the run recorded the model and the .npz relative to the store, not to here
    argv = ["report", str(db), "--out", str(tmp_path / "r.html"), "--no-progress"]
    code, _, err = run_here(capsys, argv)
    assert code == 2 and "--trust-code" in err  # the run's model is a factory file: code, refused by default
    code, _, err = run_here(capsys, [*argv, "--trust-code"])
    assert code == 0, err
    assert "id='grid'" in (tmp_path / "r.html").read_text()  # the maps of test/000000 and 000001, recomputed


def test_ray_workers_import_the_same_file(tiny, tmp_path, capsys, monkeypatch):
    ray = pytest.importorskip("ray")
    one = tmp_path / "one.sqlite"
    assert run_here(capsys, evaluate_args(tiny, one, "--methods", "fakecam,gradcam"))[0] == 0
    monkeypatch.chdir(tiny)  # a relative model file: the workers get it made absolute
    args = evaluate_args(tiny, tmp_path / "ray.sqlite", "--methods", "fakecam,gradcam", "--ray", "--workers", "1")
    args[args.index("--model") + 1] = "zoo/models.py:gray"
    ours = not ray.is_initialized()
    if ours:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        code, _, err = run_here(capsys, args)
    finally:
        if ours:
            ray.shutdown()
    assert code == 0, err
    assert rows(tmp_path / "ray.sqlite") == rows(one)


# -- the shared PneumoniaMNIST file and the example models --------------------------------------------------------

needs_pneumonia = pytest.mark.skipif(not PNEUMONIA.is_file(), reason=f"PneumoniaMNIST not found at {PNEUMONIA}")


@needs_pneumonia
def test_pneumoniamnist_pixels_reach_the_model_unchanged():
    root, samples = read_dataset(PNEUMONIA, split="test")
    assert len(samples) == 624 and samples[123].key == "test/000123"
    loaded = load_model(f"{EXAMPLE / 'models.py'}:cnn", checkpoint=EXAMPLE / "cnn.pt")
    stored = np.load(PNEUMONIA)["test_images"][123]
    x = loaded.preprocess(load_sample(samples[123]))
    assert x.shape == (1, 28, 28) and torch.equal(x[0], torch.from_numpy(stored).float() / 255)


@needs_pneumonia
@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_the_documented_command_for_both_example_models(kind, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    args = ["evaluate", "--model", f"examples/pneumoniamnist/models.py:{kind}",
            "--checkpoint", f"examples/pneumoniamnist/{kind}.pt",
            "--images", "../shared/data/pneumoniamnist/pneumoniamnist.npz", "--split", "test",
            "--methods", "fakecam,gradcam,opticam", "--limit", "8", "--insdel-step", "0",
            "--json", str(tmp_path / "s.json"), "--db", str(tmp_path / "r.sqlite"), "--no-progress"]  # fmt: skip
    code, out, err = run_here(capsys, args)
    assert code == 0, err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert set(summary["methods"]) == {"fakecam", "gradcam", "opticam"}
    assert all(m["n"] == 8 for m in summary["methods"].values())
    assert summary["config"]["layer"] == {"cnn": "layer3", "vit": "blocks.3.norm1"}[kind]
    assert summary["methods"]["opticam"]["AD"] < summary["methods"]["gradcam"]["AD"]


def test_sanity_bench_and_serve_take_a_factory_model(tiny, tmp_path, capsys):
    import argparse

    from opticam.cli.serve import model_cache, register, settings_from_args
    from opticam.errors import UsageError

    model = str(tiny / "zoo/models.py") + ":gray"
    npz = str(tiny / "data/tiny.npz")
    code, out, err = run_here(capsys, ["sanity", "--images", npz, "--split", "test", "--model", model,
                                       "--methods", "fakecam,gradcam", "--limit", "2", "--device", "cpu",
                                       "--json", str(tmp_path / "s.json")])  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "s.json").read_text())["images"] == ["test/000000", "test/000001"]
    code, out, err = run_here(capsys, ["bench", "--model", model, "--device", "cpu", "--random-images",
                                       "--batches", "2", "--iterations", "2", "--repeats", "1"])  # fmt: skip
    assert code == 0, err
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    torch.save(load_model(model).model.model.state_dict(), tmp_path / "w.pt")
    args = parser.parse_args(["serve", "--models", model, "--checkpoint", str(tmp_path / "w.pt"), "--device", "cpu"])
    loaded = model_cache(args, settings_from_args(args)).get(model)  # loaded at start: a bad factory fails here
    assert loaded.channels == 1 and loaded.class_names == ["a", "b", "c"]
    args = parser.parse_args(
        ["serve", "--models", f"{model},efficientnet_lite0", "--checkpoint", str(tmp_path / "w.pt")]
    )
    with pytest.raises(UsageError, match="exactly one model"):
        model_cache(args, settings_from_args(args))
