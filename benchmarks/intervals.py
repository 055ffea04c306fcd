"""Means with 95 % intervals and paired verdicts, from a store's exported per-image rows (docs/results.md).

Reads ``results/<store>-rows.csv.gz`` (written by ``benchmarks/export_rows.py``) and prints two markdown tables:

1. per method and column: the mean, ``± h`` where ``h`` is half the width of the 95 % interval of the mean, and n
   (the images with a value in that column);
2. paired differences ``A - B`` over the images both methods have, with their 95 % interval and a verdict:
   ``A > B`` or ``A < B`` when the interval excludes 0, ``within noise`` when it includes 0. The pairs are every
   method against the best other method of the column, Opti-CAM against every other method, and Fake-CAM against
   Grad-CAM (those present).

The interval is a **percentile bootstrap** over images (``--resamples`` draws, ``--seed``, default 10000 and 0),
or with ``--interval se`` the normal interval ``mean ± 1.96 · SE`` (SE = sample standard deviation / sqrt(n)).
The per-image values are the stored terms in %: AD, AG and AI are means of the rows' ``ad_term``, ``ag_term``
and ``ai_term`` (AI's term is a 0/1 indicator, so its interval is a proportion's), I / D the curve areas, PG and
EPG the pointing games over the images with a box, ROAD as stored (not in %). MaxBoxAccV2 and top-1 localization
are not means of a per-image value (a threshold is chosen over all images), so they are left out.

    python benchmarks/intervals.py results/mnv2-val227-rows.csv.gz
    python benchmarks/intervals.py results/lite0-gt-rows.csv.gz --methods opticam,scorecam,gradcam --common
    python benchmarks/intervals.py results/mnv2-val227-rows.csv.gz --ranks   # ranks, ties = within noise

``--ranks`` ranks each column with ties by paired interval rather than by printed digits (``benchmarks/ranks.py``):
the best mean leads, every method within noise of the leader shares its rank, and the next best of the rest leads
the next group.
"""

from __future__ import annotations

import argparse
import csv
import gzip
from pathlib import Path

import numpy as np

# (title, row column, scale, lower is better)
COLUMNS = [
    ("AD", "ad_term", 100.0, True),
    ("AG", "ag_term", 100.0, False),
    ("AI", "ai_term", 100.0, False),
    ("I", "insertion", 100.0, False),
    ("D", "deletion", 100.0, True),
    ("PG", "pointing_game", 100.0, False),
    ("EPG", "energy_pointing_game", 100.0, False),
    ("ROAD", "road", 1.0, False),
]


def read(path: Path) -> list[dict[str, str]]:
    """The rows of an exported ``.csv.gz`` (or plain ``.csv``) as strings."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:
        return list(csv.DictReader(f))


def values(rows: list[dict[str, str]], methods: list[str] | None = None, run: str | None = None) -> dict:
    """``{method: {column title: {image: value}}}`` for the columns with at least one value; scaled as printed."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in rows:
        if run and row.get("run_id") != run:
            continue
        method = row["method"]
        if methods is not None and method not in methods:
            continue
        for title, key, scale, _ in COLUMNS:
            text = row.get(key, "")
            if text not in ("", None):
                out.setdefault(method, {}).setdefault(title, {})[row["image"]] = float(text) * scale
    return out


def interval(x: np.ndarray, kind: str = "boot", resamples: int = 10000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of the mean of ``x``: percentile bootstrap (fixed seed) or ``mean ± 1.96 · SE``."""
    x = np.asarray(x, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, mean
    if kind == "se":
        half = 1.96 * float(x.std(ddof=1)) / np.sqrt(len(x))
        return mean - half, mean + half
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // len(x))
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = x[rng.integers(0, len(x), (stop - start, len(x)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def paired(a: dict[str, float], b: dict[str, float], **kw) -> tuple[int, float, float, float]:
    """``(n, mean, lo, hi)`` of the per-image difference ``a - b`` over the images both have."""
    images = sorted(set(a) & set(b))
    d = np.array([a[i] - b[i] for i in images])
    lo, hi = interval(d, **kw)
    return len(images), float(d.mean()), lo, hi


# Differences this small are the exported rows' rounding (6 significant digits), not a difference between methods:
# Grad-CAM, XGrad-CAM and HiRes-CAM give the same maps on a layer followed by global average pooling, and their
# stored terms differ only in the last digit. Column units: points for the % columns, ROAD as stored.
TOL = {"ROAD": 1e-5}
TOL_POINTS = 1e-3


def verdict(lo: float, hi: float, a: str = "A", b: str = "B", tol: float = 0.0) -> str:
    """``a > b`` / ``a < b`` when the interval of ``a - b`` excludes [-tol, tol] (0 by default), else
    ``within noise``."""
    if lo > tol:
        return f"{a} > {b}"
    if hi < -tol:
        return f"{a} < {b}"
    return "within noise"


def pairs(table: dict, title: str, lower: bool) -> list[tuple[str, str]]:
    """The pairs compared on one column: each method vs the best other, Opti-CAM vs each, Fake-CAM vs Grad-CAM."""
    methods = [m for m in table if title in table[m]]
    mean = {m: float(np.mean(list(table[m][title].values()))) for m in methods}
    chosen: list[tuple[str, str]] = []
    for m in methods:
        others = [o for o in methods if o != m]
        if others:
            best = min(others, key=mean.get) if lower else max(others, key=mean.get)
            chosen.append((m, best))
    if "opticam" in methods:
        chosen += [("opticam", o) for o in methods if o != "opticam"]
    if "fakecam" in methods and "gradcam" in methods:
        chosen.append(("fakecam", "gradcam"))
    seen, unique = set(), []
    for a, b in chosen:
        if frozenset((a, b)) not in seen:  # one direction of each pair is enough
            seen.add(frozenset((a, b)))
            unique.append((a, b))
    return unique


def ranked(table: dict, title: str, lower: bool, **kw) -> dict[str, int]:
    """Ranks on one column with ties by paired interval: the best mean leads, and every method whose paired
    difference with the leader includes 0 shares its rank; the next best of the rest leads the next group, whose
    rank counts the methods ranked before it ("min" ranking: 1, 1, 3, ...)."""
    methods = [m for m in table if title in table[m]]
    mean = {m: float(np.mean(list(table[m][title].values()))) for m in methods}
    left = sorted(methods, key=lambda m: mean[m] if lower else -mean[m])
    ranks: dict[str, int] = {}
    while left:
        leader, rank = left[0], len(ranks) + 1
        group = [leader] + [
            m
            for m in left[1:]
            if verdict(*paired(table[m][title], table[leader][title], **kw)[2:], tol=TOL.get(title, TOL_POINTS))
            == "within noise"
        ]
        for m in group:
            ranks[m] = rank
        left = [m for m in left if m not in group]
    return ranks


def rank_table(table: dict, **kw) -> str:
    """Markdown: one row per group of methods with the same ranks on every column (rank 1 in bold)."""
    titles, per = [], {m: [] for m in table}
    for title, _, _, lower in sorted(COLUMNS, key=lambda c: c[0] != "AG"):  # the paper's AG first, as ranks.py
        if all(title in table[m] for m in table):
            titles.append(title)
            r = ranked(table, title, lower, **kw)
            for m in table:
                per[m].append(r[m])
    groups: dict[tuple[int, ...], list[str]] = {}
    for m, row in per.items():
        groups.setdefault(tuple(row), []).append(m)
    lines = ["| method | " + " | ".join(titles) + " |", "| --- |" + " ---: |" * len(titles)]
    for row, members in groups.items():
        cells = [f"**{r}**" if r == 1 else str(r) for r in row]
        lines.append(f"| {' / '.join(members)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(x: float, title: str) -> str:
    return f"{x:.3f}" if title == "ROAD" else f"{x:.1f}"


def report(table: dict, kind: str = "boot", resamples: int = 10000, seed: int = 0) -> str:
    """Both markdown tables for ``values(...)``'s output."""
    kw = {"kind": kind, "resamples": resamples, "seed": seed}
    titles = [t for t, *_ in COLUMNS if any(t in table[m] for m in table)]
    lines = ["| method | " + " | ".join(f"{t} (n)" for t in titles) + " |", "| --- |" + " ---: |" * len(titles)]
    for m, cols in table.items():
        cells = []
        for t in titles:
            if t not in cols:
                cells.append("-")
                continue
            x = np.array(list(cols[t].values()))
            lo, hi = interval(x, **kw)
            cells.append(f"{_fmt(x.mean(), t)} ± {_fmt((hi - lo) / 2, t)} ({len(x)})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "| column | A | B | n | A - B | 95 % interval | verdict |"]
    lines += ["| --- | --- | --- | ---: | ---: | --- | --- |"]
    for title, _, _, lower in COLUMNS:
        if title not in titles:
            continue
        for a, b in pairs(table, title, lower):
            n, d, lo, hi = paired(table[a][title], table[b][title], **kw)
            lines.append(
                f"| {title}{'↓' if lower else '↑'} | {a} | {b} | {n} | {_fmt(d, title)} | "
                f"[{_fmt(lo, title)}, {_fmt(hi, title)}] | {verdict(lo, hi, a, b, TOL.get(title, TOL_POINTS))} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", type=Path, help="rows written by benchmarks/export_rows.py (.csv.gz)")
    parser.add_argument("--methods", default="", help="comma-separated methods (default: all in the file)")
    parser.add_argument("--run", default=None, help="keep only this run id")
    parser.add_argument("--common", action="store_true", help="keep only the images every listed method has")
    parser.add_argument("--limit", type=int, default=0, help="keep only the first N images of the file")
    parser.add_argument("--interval", choices=("boot", "se"), default="boot")
    parser.add_argument("--resamples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ranks", action="store_true", help="print ranks with ties by paired interval instead")
    args = parser.parse_args()
    rows = read(args.rows)
    if args.limit:
        first: list[str] = []
        for row in rows:
            if row["image"] not in first:
                first.append(row["image"])
        keep = set(first[: args.limit])
        rows = [r for r in rows if r["image"] in keep]
    methods = [m for m in args.methods.split(",") if m] or None
    table = values(rows, methods, args.run)
    if methods:
        table = {m: table[m] for m in methods if m in table}
    if args.common:
        images = set.intersection(*(set(r["image"] for r in rows if r["method"] == m) for m in table))
        table = {
            m: {t: {i: v for i, v in c.items() if i in images} for t, c in cols.items()} for m, cols in table.items()
        }
    if args.ranks:
        print(rank_table(table, kind=args.interval, resamples=args.resamples, seed=args.seed))
    else:
        print(report(table, args.interval, args.resamples, args.seed))


if __name__ == "__main__":
    main()
