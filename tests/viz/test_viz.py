"""Grids, curves and encodings (opticam.viz), per-image scoring, and ``opticam compare``."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from opticam.evaluation.scoring import explain_with
from opticam.methods import method_names
from opticam.viz import (
    GridRow,
    area_under_curve,
    cell_title,
    comparison_grid,
    curves_figure,
    curves_rows,
    data_uri,
    fractions,
    overlay,
    png_bytes,
    to_pil,
)


# -- encodings ------------------------------------------------------------------------------------------
def test_data_uri_round_trips_a_picture():
    image = to_pil(torch.rand(3, 7, 5))
    uri = data_uri(image)
    assert uri.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert np.array_equal(np.asarray(decoded), np.asarray(image))
    assert data_uri(b"\x00\x01", "image/x-test") == "data:image/x-test;base64,AAE="
    assert png_bytes(image)[:8] == b"\x89PNG\r\n\x1a\n"


# -- curves ---------------------------------------------------------------------------------------------
def test_area_under_curve_by_hand():
    assert area_under_curve(np.array([0.0, 1.0])) == pytest.approx(0.5)
    assert area_under_curve(np.array([1.0, 1.0, 1.0])) == pytest.approx(1.0)
    # evenly at 0, .25, .5, .75, 1: trapezoids 0.25 * (0.25 + 0.75 + 0.75 + 0.25) = 0.5
    assert area_under_curve(np.array([0.0, 0.5, 1.0, 0.5, 0.0])) == pytest.approx(0.5)
    # uneven x (a shorter last step, as a run stores): 0.5*(0+1)/2 + 0.4*(1+1)/2 + 0.1*(1+0)/2 = 0.7
    assert area_under_curve(np.array([0.0, 1.0, 1.0, 0.0]), np.array([0, 0.5, 0.9, 1.0])) == pytest.approx(0.7)
    curves = np.random.default_rng(0).random((3, 9))
    assert area_under_curve(curves) == pytest.approx(np.trapezoid(curves, fractions(9), axis=1))
    with pytest.raises(ValueError, match="at least 2 points"):
        area_under_curve(np.array([1.0]))


def test_curves_figure_draws_the_mean_and_labels_the_auc():
    ramp = np.array([[0.0, 0.5, 1.0], [0.0, 0.0, 0.0]])  # mean [0, .25, .5], AUCs .5 and 0 -> mean .25
    fig = curves_figure({"a": {"insertion": ramp, "deletion": torch.tensor([1.0, 0.0, 0.0])}}, title="t")
    insertion, deletion = fig.axes[:2]
    (line,) = insertion.get_lines()
    assert np.allclose(line.get_xdata(), [0, 0.5, 1]) and np.allclose(line.get_ydata(), [0, 0.25, 0.5])
    assert [t.get_text() for t in insertion.get_legend().get_texts()] == ["a (AUC 0.250)"]
    assert [t.get_text() for t in deletion.get_legend().get_texts()] == ["a (AUC 0.250)"]
    assert len(insertion.collections) == 1 and len(deletion.collections) == 0  # the band only for N > 1
    assert "insertion" in insertion.get_title() and "deletion" in deletion.get_title()
    with pytest.raises(ValueError, match="at least one method"):
        curves_figure({})
    with pytest.raises(ValueError, match="expected"):
        curves_figure({"a": {"insertion": np.zeros((2, 2, 2))}})


def test_curves_rows_one_row_per_image():
    fig = curves_rows([("img1", {"a": {"insertion": [0, 1]}}), ("img2", {"a": {"deletion": [1, 0]}})])
    assert len(fig.axes) == 4
    assert fig.axes[0].get_title() == "img1: insertion" and fig.axes[3].get_title() == "img2: deletion"


# -- the grid ------------------------------------------------------------------------------------------
def test_comparison_grid_layout_titles_and_pixels():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 16, 16)
    maps = {"opticam": torch.rand(2, 16, 16), "gradcam": torch.rand(2, 1, 16, 16)}
    rows = [
        GridRow(
            image=images[i],
            label=f"class {i}",
            maps={m: maps[m][i] for m in maps},
            scores={"opticam": {"AD": 1.234, "AG": 56.78, "AI": 100.0}},
        )
        for i in range(2)
    ]
    fig = comparison_grid(rows, ["opticam", "gradcam"])
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == ["class 0", "opticam\nAD 1.2  AG 56.8", "gradcam"]
    shown = fig.axes[1].get_images()[0].get_array()
    assert np.array_equal(np.asarray(shown), np.asarray(overlay(images[0], maps["opticam"][0])))
    assert np.allclose(fig.axes[3].get_images()[0].get_array(), images[1].permute(1, 2, 0).numpy())
    with pytest.raises(ValueError, match="no map for gradcam"):
        comparison_grid([GridRow(images[0], "x", {"opticam": maps["opticam"][0]})], ["opticam", "gradcam"])
    with pytest.raises(ValueError, match="at least one image"):
        comparison_grid([])


def test_cell_title():
    assert cell_title("m", None) == "m"
    assert cell_title("m", {"AD": 0.04, "AG": 99.96}) == "m\nAD 0.0  AG 100.0"


# -- per-image scores on the real model ----------------------------------------------------------------------
def test_explain_with_scores_each_image_by_the_papers_terms(lite0, sample_batch):
    """AD/AG per image equal the definitions applied to an independent forward pass on x and x * M."""
    x, _ = sample_batch
    x = x[:2]
    methods = ["opticam", "fakecam"] if "fakecam" in method_names() else ["opticam"]
    calls = []
    results = explain_with(lite0, x, methods, iterations=2, progress=lambda *a: calls.append(a))
    assert list(results) == methods
    for name, r in results.items():
        with torch.no_grad():
            logits = lite0.model(x)
            masked = lite0.model(x * r.maps)
        c = logits.argmax(dim=1)  # targets=None: the predicted class
        assert torch.equal(r.classes, c)
        rows = torch.arange(2)
        p = torch.softmax(logits, 1)[rows, c]
        o = torch.softmax(masked, 1)[rows, c]
        for i in range(2):
            ad = 100 * max(float(p[i] - o[i]), 0) / float(p[i])
            ag = 100 * max(float(o[i] - p[i]), 0) / (1 - float(p[i]))
            assert r.scores[i]["AD"] == pytest.approx(ad, abs=1e-3), name
            assert r.scores[i]["AG"] == pytest.approx(ag, abs=1e-3), name
    assert calls[-1] == (1, 1, len(methods) - 1, len(methods))  # each method reports when it finishes
    assert (2, 2, 0, len(methods)) in calls  # Opti-CAM's own steps come through
    top = lite0.top_k(results["opticam"].logits[0])
    assert [t["class_index"] for t in top] == torch.softmax(logits[0], 0).topk(5).indices.tolist()


def test_explain_with_rejects_unknown_methods(lite0, sample_batch):
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        explain_with(lite0, sample_batch[0][:1], ["nope"])


def test_compare_cli_writes_a_grid(lite0, samples_dir, tmp_path, capsys, monkeypatch):
    """``opticam compare`` end to end on two real images (2 Opti-CAM steps; the session's model)."""
    import opticam.cli.compare as compare
    from opticam.cli import main

    monkeypatch.setattr(compare, "model_from_args", lambda args: lite0)
    out = tmp_path / "grid.png"
    images = [str(samples_dir / "n01440764_tench.JPEG"), str(samples_dir / "n01443537_goldfish.JPEG")]
    methods = "opticam,fakecam" if "fakecam" in method_names() else "opticam"
    curves = tmp_path / "curves.png"
    args = ["compare", *images, "--methods", methods, "--iterations", "2", "--out", str(out), "--dpi", "50"]
    assert main([*args, "--curves", str(curves), "--insdel-step", str(224 * 56)]) == 0
    assert Image.open(curves).size == (450, 300)  # 9 x 3 inches per image row at 50 dpi, two images
    text = capsys.readouterr().out
    assert "image 1: tench |" in text and "image 2: goldfish |" in text and "opticam: AD" in text
    picture = Image.open(out)
    n_methods = len(methods.split(","))
    assert picture.size[0] == pytest.approx(50 * 2.3 * (1 + n_methods), abs=2)  # one column per method + image
    assert main(["compare", images[0], "--methods", "nope", "--out", str(out)]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err


def test_sanity_figures_layout():
    from opticam.viz import randomization_grid, similarity_plot

    stages = ["intact", "fc", "conv"]
    means = {"a": {"spearman": [1.0, 0.5, None], "ssim": [1.0, 0.2, 0.1]}}
    plot = similarity_plot(stages, means, "t")
    assert len(plot.axes) == 2 and [t.get_text() for t in plot.axes[0].get_xticklabels()] == stages
    maps = {"a": np.random.default_rng(0).random((3, 8, 8)), "b": np.full((3, 8, 8), np.nan)}
    grid = randomization_grid(torch.rand(3, 8, 8), stages, maps)
    assert len(grid.axes) == 2 * (1 + len(stages))
    assert [ax.get_title() for ax in grid.axes[1:4]] == stages
