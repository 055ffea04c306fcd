"""One declaration per metric: the store's columns, the table, the JSON and ``--metrics`` follow from the
registry; a new metric is one declaration plus one registration; ROAD and per-method options end to end."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import torch

from opticam.evaluation.store import BASE_COLUMNS, ResultStore
from opticam.evaluation.summary import markdown_table, summarize
from opticam.metrics.declaration import Column, Metric, MetricInput, TableColumn, mean
from opticam.metrics.registry import METRICS, metric_columns, parse_metric_list
from tests.evaluation.test_evaluate import cli_args, run_here, tiny_setup  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_store_schema_is_the_declarations(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        columns = [r[1] for r in store.db.execute("PRAGMA table_info(results)")]
        nullable = {r[1]: not r[3] for r in store.db.execute("PRAGMA table_info(results)")}
    declared = [c.name for c in metric_columns()]
    assert columns == ["run_id", *BASE_COLUMNS, "created", *declared]
    assert all(nullable[c] for c in declared)  # NULL = the run did not score that metric
    assert {"p", "ad_term", "insertion", "deletion_curve", "pointing_game", "road"} <= set(declared)


def test_every_metric_declares_its_columns_and_table():
    seen = set()
    for name, metric in METRICS.items():
        assert metric.name == name and metric.columns and metric.table and metric.description
        names = {c.name for c in metric.columns}
        assert not names & seen, f"{name} reuses a column"
        seen |= names
        assert all(c.better in ("higher", "lower", None) for c in metric.table)
    assert [c.label for c in METRICS["drop-gain"].table] == ["AD↓", "AG↑", "AI↑"]
    assert [c.label for c in METRICS["road"].table] == ["ROAD↑"]


def test_metric_lists_are_checked():
    assert parse_metric_list("road,drop-gain") == ["drop-gain", "road"]  # registry order
    for bad, message in (("", "empty"), ("drop-gain,nope", "unknown metric 'nope'")):
        with pytest.raises(ValueError, match=message):
            parse_metric_list(bad)


def _brightness(batch: MetricInput) -> list[dict[str, Any]]:
    """Mean pixel value under the map: a metric simple enough to recompute by hand."""
    inside = (batch.x.mean(1, keepdim=True) * batch.maps).sum((1, 2, 3)) / batch.maps.sum((1, 2, 3)).clamp(min=1e-12)
    return [{"brightness": float(v)} for v in inside]


def _brightness_mean(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"brightness": mean([r["brightness"] for r in rows], 100)}


BRIGHTNESS = Metric(
    name="brightness",
    description="mean pixel value under the map (a test metric)",
    columns=(Column("brightness", "REAL", "mean pixel value under the map"),),
    score=_brightness,
    aggregate=_brightness_mean,
    table=(TableColumn("brightness", "Bright", "higher"),),
)


def test_a_new_metric_is_one_declaration_and_one_registration(tiny_setup, tmp_path, capsys):  # noqa: F811
    """Registered, a metric gets its store column, its ``--metrics`` name, its table column and JSON key."""
    db, out = tmp_path / "r.sqlite", tmp_path / "s.json"
    METRICS["brightness"] = BRIGHTNESS
    try:
        args = cli_args(tiny_setup, db, "--limit", "2", "--metrics", "drop-gain,brightness", "--json", str(out))
        args[args.index("fakecam,gradcam,opticam")] = "fakecam,gradcam"
        code, table, err = run_here(capsys, args)
        assert code == 0, err
        assert table.splitlines()[0] == "| method | n | AD↓ | AG↑ | AI↑ | Bright↑ | T (s/img) |"
        summary = json.loads(out.read_text())
        assert summary["config"]["metrics"] == {"drop-gain": {}, "brightness": {}}
        assert summary["methods"]["fakecam"]["metrics"] == ["drop-gain", "brightness"]
        with sqlite3.connect(db) as con:
            stored = con.execute("SELECT method, brightness, insertion FROM results ORDER BY method").fetchall()
        assert len(stored) == 4 and all(b is not None and i is None for _, b, i in stored)
        # Fake-CAM's map is all ones but one pixel: its brightness is (nearly) the image's mean brightness.
        fake = [b for m, b, _ in stored if m == "fakecam"]
        assert summary["methods"]["fakecam"]["brightness"] == pytest.approx(100 * sum(fake) / 2)
    finally:
        del METRICS["brightness"]


def test_summary_table_follows_the_run_metrics():
    rows = [
        {"method": "m", "image": "a", "label": 0, "predicted": 0, "seconds": 1.0, "iterations": 4, "extra": None}
        | {"p": 0.5, "o": 0.25, "ad_term": 0.5, "ag_term": 0.0, "ai_term": 0, "road": 0.125}
    ]
    summary = summarize(rows, metrics=["drop-gain", "road"])
    assert summary["m"]["road"] == 0.125 and summary["m"]["AD"] == 50 and summary["m"]["iterations"] == 4
    assert markdown_table(summary).splitlines()[0] == "| method | n | AD↓ | AG↑ | AI↑ | ROAD↑ | steps | T (s/img) |"
    assert markdown_table(summary).splitlines()[2] == "| m | 1 | 50.0 | 0.0 | 0.0 | 0.125 | 4.0 | 1.000 |"


def test_an_ablation_is_one_command(tiny_setup, tmp_path, capsys):  # noqa: F811
    """``--methods`` with options gives each variant its own rows and recorded settings in the same run."""
    db, out = tmp_path / "r.sqlite", tmp_path / "s.json"
    methods = "gradcam,opticam(objective=diff,normalization=max),opticam-fast(iterations=2)"
    args = cli_args(tiny_setup, db, "--limit", "2", "--metrics", "drop-gain", "--json", str(out))
    args[args.index("fakecam,gradcam,opticam")] = methods
    code, _, err = run_here(capsys, args)
    assert code == 0, err
    summary = json.loads(out.read_text())
    keys = ["gradcam", "opticam(iterations=4,objective=diff,normalization=max)", "opticam-fast(iterations=2)"]
    assert list(summary["methods"]) == keys  # --iterations 4 applies to plain opticam only
    assert summary["methods"]["opticam-fast(iterations=2)"]["iterations"] == 2
    assert summary["methods"]["gradcam"]["iterations"] is None
    settings = summary["method_settings"]
    assert settings[keys[1]]["objective"] == "diff" and settings[keys[1]]["normalization"] == "max"
    assert settings[keys[2]]["objective"] == "log-prob"  # the preset's settings are recorded too
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(DISTINCT run_id), COUNT(*) FROM results").fetchone() == (1, 6)


def test_road_in_evaluate_equals_road_combined_on_the_same_maps(tiny_setup, tmp_path, capsys):  # noqa: F811
    """``--metrics drop-gain,road``: the stored ROAD of Grad-CAM equals road_combined on Grad-CAM's maps of
    the same chunk with seed 0, and the JSON has a ``road`` value per method."""
    from opticam.evaluation import read_dataset
    from opticam.images import load_image
    from opticam.methods import create_method
    from opticam.metrics import road_combined
    from opticam.models import load_model

    db, out = tmp_path / "r.sqlite", tmp_path / "s.json"
    args = cli_args(tiny_setup, db, "--limit", "1", "--metrics", "drop-gain,road", "--json", str(out))
    args[args.index("fakecam,gradcam,opticam")] = "gradcam"
    code, table, err = run_here(capsys, args)
    assert code == 0, err
    assert "ROAD↑" in table.splitlines()[0]
    summary = json.loads(out.read_text())
    assert -0.5 <= summary["methods"]["gradcam"]["road"] <= 0.5
    loaded = load_model("test_efficientnet", checkpoint=str(tiny_setup / "tiny.pth"), device="cpu")
    _, samples = read_dataset(tiny_setup / "data", 1)
    x = torch.stack([loaded.preprocess(load_image(s.path)) for s in samples])
    labels = torch.tensor([s.class_index for s in samples])
    maps = create_method("gradcam", loaded).explain(x, labels).maps
    expected = road_combined(loaded.model, x, maps, labels, seed=0)
    with sqlite3.connect(db) as con:
        stored = [r for (r,) in con.execute("SELECT road FROM results WHERE method = 'gradcam' ORDER BY image")]
    assert stored == pytest.approx(expected.tolist(), abs=1e-6)
    assert summary["methods"]["gradcam"]["road"] == pytest.approx(stored[0])


def test_metrics_flag_errors_are_one_line(tiny_setup, tmp_path, capsys):  # noqa: F811
    for extra, message in (
        (["--metrics", "nope"], "unknown metric 'nope'"),
        (["--metrics", "localization"], "needs ground-truth boxes"),
        (["--metrics", "insdel", "--insdel-step", "0"], "choose one"),
    ):
        code, _, err = run_here(capsys, cli_args(tiny_setup, tmp_path / "r.sqlite", *extra))
        assert code == 2 and err.count("\n") == 1 and message in err, err
