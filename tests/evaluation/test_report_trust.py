"""`opticam report` never runs code from a result file unless asked (issue 29, part 6).

A run made with ``--model FILE.py:factory`` records the file; the report's grid would import it to recompute the
maps. The factory here writes a marker file when it is imported, so each test sees whether the code ran.
"""

from __future__ import annotations

import sys
import textwrap

from PIL import Image

from opticam.cli import main
from opticam.models.factory import module_name_for

FACTORY = """
import pathlib
import torch
from torch import nn

pathlib.Path(__file__).with_name("IMPORTED").write_text("the factory file ran")
INPUT_SIZE = 12
CLASS_NAMES = ("a", "b", "c")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.relu(self.conv(x)).mean((2, 3)))


def net():
    return Net()
"""


def run_with_a_factory(tmp_path):
    """A store made with a factory model (the marker it left while evaluating removed afterwards)."""
    code = tmp_path / "bundle" / "zoo.py"
    code.parent.mkdir()
    code.write_text(textwrap.dedent(FACTORY))
    data = tmp_path / "bundle" / "data"
    data.mkdir()
    Image.new("RGB", (12, 12), (200, 40, 40)).save(data / "a.png")
    (data / "labels.csv").write_text("file,class_index\na.png,1\n")
    db = tmp_path / "bundle" / "run.sqlite"
    argv = [
        "evaluate",
        "--images",
        str(data),
        "--model",
        f"{code}:net",
        "--methods",
        "fakecam,gradcam",
        "--db",
        str(db),
    ]
    assert main([*argv, "--metrics", "drop-gain", "--no-progress"]) == 0
    marker = code.with_name("IMPORTED")
    marker.unlink()
    sys.modules.pop(module_name_for(code.resolve()), None)  # as in a fresh process: the report would import it again
    return db, marker


def test_a_report_refuses_to_run_the_runs_model_code(tmp_path, capsys):
    db, marker = run_with_a_factory(tmp_path)
    capsys.readouterr()
    assert main(["report", str(db), "--out", str(tmp_path / "r.html"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--trust-code" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "r.html").exists()


def test_without_a_grid_the_report_needs_no_code(tmp_path):
    db, marker = run_with_a_factory(tmp_path)
    assert main(["report", str(db), "--out", str(tmp_path / "r.html"), "--grid-images", "0"]) == 0
    assert not marker.exists() and (tmp_path / "r.html").is_file()


def test_trust_code_runs_it_when_asked(tmp_path):
    db, marker = run_with_a_factory(tmp_path)
    assert main(["report", str(db), "--out", str(tmp_path / "r.html"), "--trust-code", "--no-progress"]) == 0
    assert marker.exists() and (tmp_path / "r.html").is_file()
