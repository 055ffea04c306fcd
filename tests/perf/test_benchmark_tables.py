"""Scripts under benchmarks/: ablation_tables.py (rows grouped by what their settings change from the paper's,
not by key), ranks.py (columns from the metric declarations) and export_rows.py (column types likewise)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ablation_tables.py"


def _script(name: str):
    """``benchmarks/<name>.py`` imported by path (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPT.parent / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ablation():
    return _script("ablation_tables")


def _opticam(**changes):
    return {"method": "opticam", "layer": "bn2", "iterations": 100, "objective": "mask", "normalization": "range",
            "lr": 0.1, **changes}  # fmt: skip


def _row(ad, ag, ai, seconds=1.0, iterations=100.0):
    return {"n": 4, "AD": ad, "AG": ag, "AI": ai, "seconds_per_image": seconds, "iterations": iterations}


def summary():
    settings = {
        "opticam": _opticam(),
        "opticam(objective=diff)": _opticam(objective="diff"),
        "opticam(normalization=max)": _opticam(normalization="max"),
        "opticam(layer=blocks.4)": _opticam(layer="blocks.4"),
        "opticam(iterations=10)": _opticam(iterations=10),
        "gradcam": {"method": "gradcam", "layer": "bn2"},
        "gradcam(layer=blocks.4)": {"method": "gradcam", "layer": "blocks.4"},
        "fakecam": {"method": "fakecam"},
    }
    methods = {
        "opticam": _row(1.0, 60.0, 90.0, seconds=10.0),
        "opticam(objective=diff)": _row(7.0, 20.0, 50.0),
        "opticam(normalization=max)": _row(2.0, 55.0, 88.0),
        "opticam(layer=blocks.4)": _row(3.0, 45.0, 80.0),
        "opticam(iterations=10)": _row(4.0, 30.0, 70.0, seconds=1.5, iterations=10.0),
        "gradcam": _row(18.0, 11.0, 35.0, iterations=None),
        "gradcam(layer=blocks.4)": _row(25.0, 8.0, 30.0, iterations=None),
        "fakecam": _row(0.0, 0.1, 50.0, iterations=None),
    }
    return {"config": {"layer": "bn2"}, "methods": methods, "method_settings": settings}


def test_each_row_lands_in_its_table_beside_the_paper(ablation):
    lines = ablation.tables(summary()).splitlines()
    assert "| mask | range | 4 | 1.0 / 60.0 / 90.0 | 1.4 / 66.3 / 92.5 |" in lines
    assert "| diff | range | 4 | 7.0 / 20.0 / 50.0 | 7.1 / 18.5 / 54.9 |" in lines
    assert "| mask | max | 4 | 2.0 / 55.0 / 88.0 | 1.6 / 66.2 / 90.3 |" in lines
    assert not any(line.startswith("| mask | sigmoid") for line in lines)  # not in the run: no row
    # Depth: the run's own layer first, Grad-CAM at the same layer beside; the paper's VGG16 layers apart.
    assert "| `bn2` |  | 1.0 / 60.0 / 90.0 | 18.0 / 11.0 / 35.0 |" in lines
    assert "| `blocks.4` |  | 3.0 / 45.0 / 80.0 | 25.0 / 8.0 / 30.0 |" in lines
    assert "| 6 | 13.5 / 23.5 / 50.2 |" in lines
    # Iterations: AG and time relative to the paper's 100 in the same run.
    assert "| 10 | 4 | 4.0 / 30.0 / 70.0 | 0.50 | 10.0 | 0.15 |" in lines
    assert "| 100 | 4 | 1.0 / 60.0 / 90.0 | 1.00 | 100.0 | 1.00 |" in lines
    assert not any("fakecam" in line for line in lines)


def test_a_run_without_exactly_one_paper_row_is_refused(ablation):
    broken = summary()
    broken["method_settings"]["opticam"]["lr"] = 0.1
    broken["method_settings"]["opticam(normalization=max)"]["normalization"] = "range"  # a second paper row
    with pytest.raises(SystemExit, match="one Opti-CAM row with the paper's settings"):
        ablation.tables(broken)


def test_feature_shapes_of_the_real_model_leave_its_output_alone(ablation):
    """One forward pass with hooks that only look (a hook that returned its record would replace the output)."""
    shapes = ablation.feature_shapes("efficientnet_lite0", ["bn2", "blocks.4", "blocks.1"])
    assert shapes == {"bn2": "1280 x 7 x 7", "blocks.4": "112 x 14 x 14", "blocks.1": "24 x 56 x 56"}
    lines = ablation.tables(summary(), "efficientnet_lite0").splitlines()
    assert "| `blocks.4` | 112 x 14 x 14 | 3.0 / 45.0 / 80.0 | 25.0 / 8.0 / 30.0 |" in lines


# -- benchmarks/ranks.py ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ranks():
    return _script("ranks")


def test_ranks_follow_the_metric_declarations_at_their_printed_precision(ranks):
    summary = {
        "a": {"AD": 1.04, "AG": 60.0, "AI": 90.0, "road": 0.1604},
        "b": {"AD": 0.96, "AG": 10.0, "AI": 95.0, "road": 0.2214},
        "c": {"AD": 18.0, "AG": 10.0, "AI": 30.0, "road": 0.2196},
    }
    columns, table = ranks.ranks(summary, ["a", "b", "c"])
    assert columns == ["AG", "AD", "AI", "ROAD"]  # AG first; I / D and localization absent from the summary
    # AD 1.04 and 0.96 print alike (1.0): a tie; ROAD is compared to 0.001, so 0.221 beats 0.220.
    assert table == {"a": [1, 1, 2, 3], "b": [2, 1, 1, 1], "c": [2, 3, 3, 2]}
    assert "| b | 2 | **1** | **1** | **1** |" in ranks.markdown(columns, table).splitlines()


# -- benchmarks/export_rows.py ----------------------------------------------------------------------------------
def test_exported_columns_read_back_with_their_declared_types():
    module = _script("export_rows")
    types = module.column_types()
    assert set(types) == set(module.columns()) and "insertion_curve" not in types
    assert types["ai_term"] is int and types["pointing_game"] is int and types["iterations"] is int
    assert types["road"] is float and types["p"] is float and types["seconds"] is float
    assert types["box_ious"] is str and types["run_id"] is str and types["input_hash"] is str
