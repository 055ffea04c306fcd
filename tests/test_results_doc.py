"""docs/results.md's MobileNetV2 tables print what the committed summaries hold (section 8, both weights)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "results.md"
NAMES = {"Opti-CAM (paper)": "opticam", "Fake-CAM": "fakecam", "Grad-CAM": "gradcam", "Grad-CAM++": "gradcampp",
         "XGrad-CAM": "xgradcam", "Layer-CAM": "layercam", "HiRes-CAM": "hirescam"}  # fmt: skip
COLUMNS = ("AD", "AG", "AI", "pointing_game", "energy_pointing_game", "max_box_acc", "top1_loc")


def tables(section: str) -> list[dict[str, list[float]]]:
    """Each table of ``section`` with a ``| method | n |`` header: method -> its first numbers (n, then the
    seven columns, bold and ``± h`` dropped)."""
    out = []
    for block in section.split("| method | n |")[1:]:
        rows = {}
        for line in block.splitlines()[2:]:
            if not line.startswith("| "):
                break
            cells = [c.strip() for c in line.strip("|").split("|")]
            numbers = [float(re.sub(r"\*\*|±.*", "", c).strip()) for c in cells[1:9]]
            rows[NAMES[cells[0]]] = numbers
        out.append(rows)
    return out


@pytest.mark.parametrize(("index", "summary"), [(0, "mnv2-official-val227-400.json"), (1, "mnv2-val227-400.json")])
def test_section_8_prints_its_summaries(index, summary):
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## 8. ", 1)[1].split("\n## ", 1)[0]
    printed = tables(section)[index]
    methods = json.loads((ROOT / "results" / summary).read_text())["methods"]
    assert set(printed) == set(methods)
    for method, numbers in printed.items():
        want = [methods[method]["n"], *(round(methods[method][c], 1) for c in COLUMNS)]
        assert numbers == pytest.approx(want, abs=0.051), method
