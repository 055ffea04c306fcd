"""benchmarks/intervals.py: means with 95 % intervals and paired verdicts from exported per-image rows, on a
hand-computable rows file (4 images, 2 methods)."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "intervals.py"


@pytest.fixture(scope="module")
def iv():
    spec = importlib.util.spec_from_file_location("intervals", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# AG terms: b is spread widely over the images, a = b + 0.01 on every image (paired: a always 1 point higher);
# AI: c and d differ on two of four images, in opposite directions (paired difference 0 on average).
ROWS = [
    # method, image, ag_term, ai_term
    ("a", "i1", 0.11, 1),
    ("a", "i2", 0.51, 0),
    ("a", "i3", 0.91, 1),
    ("a", "i4", 0.31, 1),
    ("b", "i1", 0.10, 0),
    ("b", "i2", 0.50, 1),
    ("b", "i3", 0.90, 1),
    ("b", "i4", 0.30, 1),
]


def _write(path: Path) -> Path:
    with gzip.open(path, "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run_id", "image", "method", "ad_term", "ag_term", "ai_term", "insertion"])
        for method, image, ag, ai in ROWS:
            w.writerow(["r", image, method, 0, ag, ai, ""])
    return path


def test_means_and_se_interval(iv, tmp_path):
    table = iv.values(iv.read(_write(tmp_path / "rows.csv.gz")))
    assert set(table["a"]) == {"AD", "AG", "AI"}  # insertion is empty in every row: no column
    ag = np.array(list(table["b"]["AG"].values()))
    assert ag.mean() == pytest.approx(45.0)
    # sample sd of 10, 50, 90, 30 is sqrt(((35**2) + 5**2 + 45**2 + 15**2) / 3) = sqrt(3500 / 3)
    half = 1.96 * math.sqrt(3500 / 3) / 2
    lo, hi = iv.interval(ag, kind="se")
    assert (lo, hi) == pytest.approx((45.0 - half, 45.0 + half))
    # AI of a: 3 of 4 images -> 75 %
    assert np.mean(list(table["a"]["AI"].values())) == pytest.approx(75.0)


def test_bootstrap_is_seeded_and_percentile(iv):
    x = np.array([10.0, 50.0, 90.0, 30.0])
    assert iv.interval(x, seed=3) == iv.interval(x, seed=3)
    lo, hi = iv.interval(x, resamples=20000)
    assert 10.0 <= lo < 45.0 < hi <= 90.0  # resampled means stay within the data's range
    assert iv.interval(np.full(5, 2.0)) == (2.0, 2.0)


def test_difference_is_paired_not_from_two_means(iv, tmp_path):
    table = iv.values(iv.read(_write(tmp_path / "rows.csv.gz")))
    a, b = table["a"]["AG"], table["b"]["AG"]
    # each mean's own interval is wide and they overlap ...
    la, ha = iv.interval(np.array(list(a.values())), kind="se")
    lb, hb = iv.interval(np.array(list(b.values())), kind="se")
    assert la < hb and lb < ha
    # ... but the per-image difference is 1 point on every image: the interval is [1, 1], A > B
    for kind in ("se", "boot"):
        n, d, lo, hi = iv.paired(a, b, kind=kind)
        assert n == 4 and d == pytest.approx(1.0)
        assert (lo, hi) == pytest.approx((1.0, 1.0))
        assert iv.verdict(lo, hi, "a", "b") == "a > b"


def test_paired_uses_the_images_both_have(iv):
    n, d, _, _ = iv.paired({"x": 3.0, "y": 5.0, "z": 100.0}, {"x": 1.0, "y": 1.0})
    assert (n, d) == (2, 3.0)


def test_within_noise(iv, tmp_path):
    table = iv.values(iv.read(_write(tmp_path / "rows.csv.gz")))
    # AI: a - b = +100, -100, 0, 0 -> mean 0, the interval includes 0
    n, d, lo, hi = iv.paired(table["a"]["AI"], table["b"]["AI"])
    assert (n, d) == (4, 0.0) and lo < 0 < hi
    assert iv.verdict(lo, hi, "a", "b") == "within noise"
    assert iv.verdict(-2.0, -0.5, "a", "b") == "a < b"
    assert iv.verdict(-0.5, 0.0, "a", "b") == "within noise"  # an end at 0 does not exclude 0


def test_report_pairs_and_cells(iv, tmp_path):
    table = iv.values(iv.read(_write(tmp_path / "rows.csv.gz")))
    text = iv.report(table, kind="se")
    assert "| a | 0.0 ± 0.0 (4) | 46.0 ±" in text
    assert "| AG↑ | a | b | 4 | 1.0 | [1.0, 1.0] | a > b |" in text
    assert "| AI↑ | a | b | 4 | 0.0 |" in text and "within noise" in text
    # one direction per pair
    assert "| AG↑ | b | a |" not in text


def test_ranks_tie_by_paired_interval(iv):
    # x leads; y is 0.1 below x on most images but not all (paired interval includes 0): y shares rank 1;
    # z is 5 below x on every image: rank 3 ("min" ranking after two tied at 1)
    x = {f"i{k}": float(v) for k, v in enumerate([10, 20, 30, 40, 50, 60])}
    y = {i: v + d for (i, v), d in zip(x.items(), [-1, 1, -1, 1, -1, 0.4], strict=True)}
    z = {i: v - 5 for i, v in x.items()}
    table = {"x": {"AG": x}, "y": {"AG": y}, "z": {"AG": z}}
    assert iv.ranked(table, "AG", lower=False, kind="se") == {"x": 1, "y": 1, "z": 3}
    # lower is better (AD): z leads alone, x and y tie at 2
    table = {m: {"AD": c["AG"]} for m, c in table.items()}
    assert iv.ranked(table, "AD", lower=True, kind="se") == {"z": 1, "x": 2, "y": 2}
    text = iv.rank_table(table, kind="se")
    assert "| z | **1** |" in text and "| x / y | 2 |" in text


def test_storage_rounding_is_not_a_difference(iv):
    # two methods with the same maps whose stored terms differ in the 6th digit: within noise, shared rank
    a = {f"i{k}": 10.0 * k for k in range(8)}
    b = {i: v + (1e-4 if k % 3 else 0.0) for k, (i, v) in enumerate(a.items())}
    table = {"a": {"AG": a}, "b": {"AG": b}}
    assert iv.ranked(table, "AG", lower=False) == {"a": 1, "b": 1}
    assert "| AG↑ | a | b | 8 | -0.0 |" in iv.report(table) and "within noise" in iv.report(table)
    assert iv.verdict(0.0005, 0.002, tol=1e-3) == "within noise"
