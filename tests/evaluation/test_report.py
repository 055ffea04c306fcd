"""The HTML report: numbers from a hand-made store, then a real small run opened in Chromium.

The hand-made store pins what the table shows (means of the stored per-image terms, x 100) and what the
mean curves are; the real run (2 images, Opti-CAM at 2 steps + Fake-CAM, coarse insertion/deletion) checks
that the grid's recomputed maps are the ones the run scored, and that the file opens in Chromium without
console errors and shows the table and the grid.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import sqlite3

import numpy as np
import pytest
import torch
from PIL import Image

from opticam.evaluation.report import (  # noqa: E402
    ReportError,
    ReportOptions,
    build_report,
    curves_of,
    load_run,
    recompute_grid,
    write_report,
)
from opticam.evaluation.store import ResultRow, ResultStore  # noqa: E402
from opticam.metrics import class_probabilities  # noqa: E402
from opticam.viz.grid import GridRow  # noqa: E402

CONFIG = {
    "schema": 1,
    "model": "efficientnet_lite0",
    "checkpoint": None,
    "random_weights": False,
    "layer": "bn2",
    "input_size": [224, 224],
    "target": "gt",
    "dataset": "/nowhere",
    "insdel": {"step": 1, "fractions": [0.0, 0.5, 1.0]},
    "method_options": {"opticam": {"iterations": 2}},
}


def row(image: str, method: str, ad: float, ag: float, ai: int, ins: list[float], dele: list[float]) -> ResultRow:
    return ResultRow(
        image=image,
        method=method,
        label=3,
        class_index=3,
        predicted=3,
        seconds=0.25,
        iterations=2 if method == "opticam" else None,
        extra=None,
        device="cpu",
        values={
            "p": 0.5,
            "o": 0.5,
            "ad_term": ad,
            "ag_term": ag,
            "ai_term": ai,
            "insertion": float(np.trapezoid(ins, [0, 0.5, 1])),
            "deletion": float(np.trapezoid(dele, [0, 0.5, 1])),
            "insertion_curve": json.dumps(ins),
            "deletion_curve": json.dumps(dele),
        },
    )


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "run.sqlite"
    with ResultStore(path) as s:
        run_id = s.open_run(CONFIG)
        s.add(
            run_id,
            [
                row("a.png", "opticam", 0.1, 0.5, 1, [0.0, 1.0, 1.0], [1.0, 0.0, 0.0]),
                row("b.png", "opticam", 0.3, 0.0, 0, [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]),
                row("a.png", "fakecam", 0.0, 0.0, 1, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]),
            ],
        )
    return path, run_id


def fake_grid(run, images, methods, loaded=None, progress=False):
    return [GridRow(torch.rand(3, 8, 8), i, {m: torch.rand(8, 8) for m in methods}) for i in images]


def cells(text: str) -> list[list[str]]:
    body = text.split("<table id='results'>", 1)[1].split("</table>", 1)[0]
    return [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in body.split("<tr>")[2:]]


def test_table_and_curves_from_a_hand_made_store(store, tmp_path):
    path, run_id = store
    text = build_report(path, options=ReportOptions(grid_images=2, progress=False), grid=fake_grid)
    # opticam: AD = 100 * mean(.1, .3) = 20, AG = 25, AI = 50; I = 100 * mean(.75, .25) = 50, D = 100 * mean(.25, .75)
    # the columns: method, n, AD, AG, AI, I, D, steps (Opti-CAM's mean iterations), T
    assert cells(text) == [
        ["opticam", "2", "20.0", "25.0", "50.0", "50.0", "50.0", "2.0", "0.250"],
        ["fakecam", "1", "0.0", "0.0", "100.0", "100.0", "100.0", "-", "0.250"],
    ]
    run = load_run(path)
    assert run.run_id == run_id and run.methods == ["opticam", "fakecam"] and run.images == ["a.png", "b.png"]
    curves = curves_of(run.rows, run.methods)
    assert np.allclose(curves["opticam"]["insertion"], [[0, 1, 1], [0, 0, 1]])
    assert np.allclose(curves["fakecam"]["deletion"], [[1, 1, 1]])
    for ident in ("curves-mean", "grid", "curves-images"):
        assert f"id='{ident}'" in text
    # self-contained: every picture inline, nothing fetched
    assert "src='http" not in text and 'src="http' not in text and "<link rel='stylesheet'" not in text
    uris = re.findall(r"src='(data:image/png;base64,[^']+)'", text)
    assert len(uris) == 3
    Image.open(io.BytesIO(base64.b64decode(uris[1].split(",", 1)[1]))).verify()
    # only some methods
    only_fakecam = build_report(path, options=ReportOptions(methods=["fakecam"], grid_images=0))
    assert [c[0] for c in cells(only_fakecam)] == ["fakecam"]
    out = write_report(path, tmp_path / "sub" / "r.html", options=ReportOptions(grid_images=0))
    assert out.read_text().startswith("<!doctype html>")


def test_table_has_the_localization_columns_when_the_run_has_boxes(tmp_path):
    """By hand: image a hits (PG 1, EPG 0.8, IoU 0.6 at every threshold), image b misses (0, 0.4, 0.2):
    PG 50, EPG 60, MaxBoxAccV2 = mean(50, 50, 0) over IoU 0.3 / 0.5 / 0.7, top-1 loc 50 (both classes right).
    A method without boxes shows 0 scored images and dashes."""
    from dataclasses import replace

    from opticam.metrics.box_accuracy import THRESHOLDS

    def boxed(image, pg, epg, iou):
        base = row(image, "opticam", 0.0, 0.0, 1, [0.0, 1.0, 1.0], [1.0, 0.0, 0.0])
        ious = json.dumps([iou] * len(THRESHOLDS))
        scores = {"n_boxes": 1, "pointing_game": pg, "energy_pointing_game": epg, "box_ious": ious}
        return replace(base, values={**base.values, **scores})

    path = tmp_path / "boxes.sqlite"
    with ResultStore(path) as s:
        run_id = s.open_run(CONFIG)
        s.add(run_id, [boxed("a.png", 1, 0.8, 0.6), boxed("b.png", 0, 0.4, 0.2),
                       row("a.png", "fakecam", 0.0, 0.0, 1, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0])])  # fmt: skip
    text = build_report(path, options=ReportOptions(grid_images=0, progress=False))
    assert "EPG↑" in text and "MaxBoxAcc↑" in text
    assert [c[7:12] for c in cells(text)] == [["2", "50.0", "60.0", "33.3", "50.0"], ["0", "-", "-", "-", "-"]]
    # (A run without boxes has no localization columns: test_table_and_curves_from_a_hand_made_store.)


def test_values_from_the_store_are_escaped(tmp_path):
    """A method name, a setting and an exception message holding markup come out as text, never as tags."""
    attack = "<script>alert(1)</script>"
    path = tmp_path / "evil.sqlite"
    with ResultStore(path) as s:
        run_id = s.open_run({**CONFIG, "layer": attack, "method_options": {"opticam": {"note": attack}}})
        s.add(run_id, [row("a.png", attack, 0.1, 0.5, 1, [0.0, 1.0, 1.0], [1.0, 0.0, 0.0])])

    def broken(*args, **kwargs):
        raise FileNotFoundError(attack)

    text = build_report(path, options=ReportOptions(grid_images=1, progress=False), grid=broken)
    assert "<script" not in text
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in text  # the layer row and the method's row
    assert cells(text)[0][0] == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert "FileNotFoundError: &lt;script&gt;" in text


def test_grid_failure_is_reported_not_fatal(store):
    path, _ = store

    def broken(*args, **kwargs):
        raise FileNotFoundError("/nowhere/a.png")

    text = build_report(path, options=ReportOptions(grid_images=1, progress=False), grid=broken)
    assert "id='grid-error'" in text and "FileNotFoundError: /nowhere/a.png" in text
    assert "id='results'" in text


def test_clear_errors(store, tmp_path):
    path, run_id = store
    with pytest.raises(ReportError, match="no such result file"):
        load_run(tmp_path / "missing.sqlite")
    assert not (tmp_path / "missing.sqlite").exists()
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(ReportError, match="not an opticam result file"):
        load_run(other)
    (tmp_path / "junk.sqlite").write_text("this is not sqlite at all, just text that is long enough" * 20)
    with pytest.raises(ReportError, match="not an SQLite file"):
        load_run(tmp_path / "junk.sqlite")
    with pytest.raises(ReportError, match="no run matching 'zzz'"):
        load_run(path, "zzz")
    assert load_run(path, run_id[:4]).run_id == run_id
    with pytest.raises(ReportError, match="no results for gradcam"):
        build_report(path, options=ReportOptions(methods=["gradcam"], grid_images=0))
    with pytest.raises(ReportError, match="no image 'c.png'"):
        build_report(path, options=ReportOptions(images=["c.png"]))


def test_report_options_are_frozen_with_tuples():
    options = ReportOptions(methods=["fakecam"], images=["a.png"])  # as the command line gives them
    assert options.methods == ("fakecam",) and options.images == ("a.png",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.grid_images = 0


# -- a real small run ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_run(lite0, samples_dir, tmp_path_factory):
    """``opticam evaluate`` on 2 real images: Opti-CAM (2 steps) and Fake-CAM, 5-point insertion/deletion."""
    from opticam.cli import evaluate, main

    db = tmp_path_factory.mktemp("run") / "run.sqlite"
    mp = pytest.MonkeyPatch()
    mp.setattr(evaluate, "model_from_args", lambda args: lite0)
    try:
        args = ["evaluate", "--images", str(samples_dir), "--limit", "2", "--methods", "opticam,fakecam"]
        args += ["--iterations", "2", "--insdel-step", str(224 * 56), "--db", str(db), "--no-progress"]
        assert main(args) == 0
    finally:
        mp.undo()
    return db


@pytest.fixture(scope="module")
def real_grid(real_run, lite0):
    run = load_run(real_run)
    return recompute_grid(run, run.images, run.methods, loaded=lite0, progress=False)


def test_real_run_grid_maps_are_the_ones_the_run_scored(real_run, real_grid, lite0):
    run, rows = load_run(real_run), real_grid
    assert len(rows) == 2
    for i, image in enumerate(run.images):
        x = rows[i].image[None]
        for method in run.methods:
            stored = run.row(image, method)
            c = torch.tensor([stored["class_index"]])
            p, o = class_probabilities(lite0.model, x, rows[i].maps[method][None, None], c)
            assert float(p) == pytest.approx(stored["p"], abs=1e-4)
            assert float(o) == pytest.approx(stored["o"], abs=1e-4), (image, method)
            assert rows[i].scores[method]["AD"] == pytest.approx(100 * stored["ad_term"])


def test_real_report_opens_in_chromium_without_errors(real_run, real_grid, tmp_path):
    try:  # tests/ as a package or as a plain folder on sys.path
        from tests.web.test_web_browser import CHROMIUM, CHROMIUM_ARGS, chromium_or_skip
    except ImportError:
        from test_web_browser import CHROMIUM, CHROMIUM_ARGS, chromium_or_skip

    # The grid's maps come from real_grid (recomputed once for this module, checked above).
    out = write_report(
        real_run, tmp_path / "report.html", options=ReportOptions(grid_images=2), grid=lambda *a, **k: real_grid
    )
    sync_playwright = chromium_or_skip()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("console", lambda msg: msg.type == "error" and problems.append(f"console: {msg.text}"))
            page.on("requestfailed", lambda req: problems.append(f"request failed: {req.url}"))
            page.goto(out.as_uri())
            page.wait_for_load_state("load")
            assert page.locator("#results tbody tr").count() == 2
            assert page.inner_text("#results tbody tr:first-child td:first-child") == "opticam(iterations=2)"  # its key
            for ident in ("grid", "curves-mean", "curves-images"):
                assert page.evaluate(f"document.getElementById('{ident}').naturalWidth") > 300, ident
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            assert problems == []
        finally:
            browser.close()


def test_report_cli(store, tmp_path, capsys):
    from opticam.cli import main

    path, run_id = store
    out = tmp_path / "r.html"
    assert main(["report", str(path), "--out", str(out), "--grid-images", "0", "--no-progress"]) == 0
    assert "id='results'" in out.read_text() and f"wrote {out}" in capsys.readouterr().out
    assert main(["report", str(path), "--list"]) == 0
    assert run_id in capsys.readouterr().out
    assert main(["report", str(tmp_path / "none.sqlite")]) == 2
    assert "no such result file" in capsys.readouterr().err
