"""Bad flag values get one line that names the flag and exit status 2, never a traceback; output names
never depend on an earlier call in the same process."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from opticam.cli import main


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "cat.png"
    Image.new("RGB", (48, 40), (120, 80, 40)).save(path)
    return path


def run(capsys, args):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--iterations", "-5"], "--iterations: option iterations=-5: expected a whole number >= 0"),
        (["--lr", "-1"], "--lr: option lr=-1.0: expected a finite number > 0"),
        (["--lr", "nan"], "--lr: option lr=nan: expected a finite number > 0"),
        (["--lr", "inf"], "--lr: option lr=inf: expected a finite number > 0"),
        (["--coarse-iterations", "3"], "--coarse-iterations: coarse_iterations needs coarse_size"),
        (
            ["--iterations", "2", "--coarse-size", "8", "--coarse-iterations", "5"],
            "--coarse-iterations: coarse_iterations (5) cannot exceed iterations (2)",
        ),
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--device", "tpu"], "--device 'tpu' is not a device name"),
    ],
)
def test_explain_bad_values_are_one_line_usage_errors(capsys, tmp_path, image, flags, message):
    code, err = run(capsys, ["explain", str(image), "--random-weights", "--out", str(tmp_path / "o"), *flags])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"opticam: error: {message}"), err
    assert not (tmp_path / "o").exists()  # refused before any work


@pytest.mark.parametrize("command", ["evaluate", "compare"])
def test_other_commands_refuse_the_same_values(capsys, tmp_path, image, command):
    target = ["--images", str(tmp_path)] if command == "evaluate" else [str(image)]
    code, err = run(capsys, [command, *target, "--random-weights", "--iterations", "-5"])
    assert code == 2 and "--iterations" in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_is_a_usage_error(capsys, tmp_path, image):
    code, err = run(capsys, ["explain", str(image), "--device", "cuda", "--random-weights", "--out", str(tmp_path)])
    assert code == 2
    expected = "opticam: error: --device cuda: this machine has no CUDA GPU that PyTorch can use; use --device cpu"
    assert err.strip() == expected


def test_a_checkpoint_that_is_not_one_says_so(capsys, tmp_path, image):
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    code, err = run(capsys, ["explain", str(image), "--checkpoint", str(text), "--out", str(tmp_path / "o")])
    assert code == 2
    assert f"cannot read checkpoint {text}: it is not a file written by torch.save" in err
    assert "list index out of range" not in err.split("(")[0] and len(err.strip().splitlines()) == 1


def test_output_names_do_not_depend_on_an_earlier_call(tmp_path, image):
    """Two calls in one process write cat.png each time; two cat images in one call get cat and cat-2."""
    other = tmp_path / "b" / "cat.png"
    other.parent.mkdir()
    Image.new("RGB", (40, 48), (10, 200, 30)).save(other)
    args = ["--random-weights", "--iterations", "1"]
    assert main(["explain", str(image), "--out", str(tmp_path / "one"), *args]) == 0
    assert main(["explain", str(image), "--out", str(tmp_path / "two"), *args]) == 0
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["cat.json", "cat.png"]
    assert main(["explain", str(image), str(other), "--out", str(tmp_path / "three"), *args]) == 0
    assert sorted(p.name for p in (tmp_path / "three").iterdir()) == ["cat-2.json", "cat-2.png", "cat.json", "cat.png"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compare", "IMAGE", "--dpi", "0"], "--dpi must be at least 1, got 0"),
        (["bench", "--threads", "0", "--random-images"], "--threads must be at least 1, got 0"),
        (
            ["evaluate", "--images", "IMAGE", "--insdel-step", "-1"],
            "--insdel-step -1: metric insdel: option step=-1: expected a whole number >= 0",
        ),
        (["evaluate", "--images", "IMAGE", "--methods", "opticam,nope"], "unknown method 'nope'"),
        (["report", "missing.sqlite", "--grid-images", "-1"], "--grid-images must be >= 0"),
    ],
)
def test_every_command_answers_bad_values_in_one_line(capsys, image, args, message):
    code, err = run(capsys, [str(image) if a == "IMAGE" else a for a in args])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], err


def test_serve_loads_its_checkpoint_before_serving(capsys, tmp_path, monkeypatch):
    """A checkpoint that does not fit is one line at startup, not a failed first job (issue 29)."""
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: pytest.fail("the server started"))
    bad = tmp_path / "weights.pt"
    torch.save({"nope": torch.zeros(1)}, bad)
    port = str(free_port())
    assert main(["serve", "--models", "efficientnet_lite0", "--checkpoint", str(bad), "--port", port]) == 2
    err = capsys.readouterr().err
    assert err.startswith("opticam: error:") and len(err.strip().splitlines()) == 1


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
