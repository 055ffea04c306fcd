"""Compare two runs of docs/results.md section 8 image by image: the converted int8 weights against torchvision's
official IMAGENET1K_V1 file (or any two runs of the same methods on the same images).

    python examples/mobilenet_v2/compare_runs.py results/mnv2-val227-rows.csv.gz results/mnv2-official-val227.sqlite

Each side is a rows export (``benchmarks/export_rows.py``, ``.csv.gz``) or a result store (``.sqlite``, its one
run, read-only: it may still be running). Only the images both sides have scored, for every method, count. Prints
per method AD / AG / AI / PG / EPG (percent, as the tables) of both sides and their difference, the top-1
accuracy of each model on those images, how often the two models predict the same class, the mean absolute
per-image difference of the AG term and of EPG, and the claim checks of section 8 on the second side (Opti-CAM's
AG term above Grad-CAM's, its EPG below, Spearman of AG term against EPG, iterations).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import sqlite3
import statistics
from pathlib import Path

COLUMNS = {"AD": "ad_term", "AG": "ag_term", "AI": "ai_term", "PG": "pointing_game", "EPG": "energy_pointing_game"}
FIELDS = ("image", "method", "label", "predicted", "iterations", *COLUMNS.values())


def read_rows(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    """``{(image, method): row}`` of a rows export or of a store's one run."""
    if path.suffix == ".sqlite":
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        runs = [r[0] for r in db.execute("SELECT run_id FROM runs")]
        if len(runs) != 1:
            raise SystemExit(f"{path}: {len(runs)} runs; export the one to compare with benchmarks/export_rows.py")
        cursor = db.execute(f"SELECT {', '.join(FIELDS)} FROM results WHERE run_id = ?", runs)
        rows = [dict(zip(FIELDS, ("" if v is None else str(v) for v in r), strict=True)) for r in cursor]
    else:
        with gzip.open(path, "rt", newline="") as f:
            rows = list(csv.DictReader(f))
    return {(r["image"], r["method"]): r for r in rows}


def number(row: dict[str, str], column: str) -> float:
    value = row.get(column, "")
    return float(value) if value not in ("", "None") else math.nan


def mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return statistics.mean(kept) if kept else math.nan


def ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2
        i = j + 1
    return out


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.mean(ra), statistics.mean(rb)
    num = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    den = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return num / den if den else math.nan


NAMES = {
    "opticam": ("Opti-CAM (paper)", "1.5 / 68.8 / 92.8; 1.3 / 71.2 / 92.7"),
    "fakecam": ("Fake-CAM", "0.8 / 1.6 / 46.0; 0.5 / 0.6 / 42.6"),
    "gradcam": ("Grad-CAM", "12.2 / 17.6 / 44.4; 14.2 / 14.7 / 40.6"),
    "gradcampp": ("Grad-CAM++", "12.9 / 16.0 / 42.1; 17.1 / 10.2 / 33.4"),
    "xgradcam": ("XGrad-CAM", "12.2 / 17.6 / 44.4; 13.8 / 14.8 / 41.2"),
    "layercam": ("Layer-CAM", "15.6 / 15.0 / 38.8; 48.9 / 3.1 / 13.5"),
    "hirescam": ("HiRes-CAM", "12.2 / 17.6 / 44.4; 15.8 / 13.2 / 37.8"),
}
"""Section 8's methods: the table's name, the paper's Table 1 AD / AG / AI (ResNet50; VGG16)."""
SUMMARY = [("AD", True), ("AG", False), ("AI", False), ("pointing_game", False), ("energy_pointing_game", False)]
SUMMARY += [("max_box_acc", False), ("top1_loc", False)]


def table(summary_json: Path) -> None:
    summary = json.loads(summary_json.read_text())["methods"]
    best = {c: (min if low else max)(round(v[c], 1) for v in summary.values()) for c, low in SUMMARY}
    head = "| method | n | AD | AG | AI | PG | EPG | MaxBoxAcc | Top1Loc | T (s/img) |"
    print(head + " paper ResNet50 / VGG16 AD / AG / AI |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for method, (name, paper) in NAMES.items():
        v = summary[method]
        cells = [f"**{v[c]:.1f}**" if round(v[c], 1) == best[c] else f"{v[c]:.1f}" for c, _ in SUMMARY]
        print(f"| {name} | {v['n']} | " + " | ".join(cells) + f" | {v['seconds_per_image']:.2f} | {paper} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path, nargs="?", help="rows .csv.gz or store .sqlite (the converted weights)")
    parser.add_argument("second", type=Path, nargs="?", help="rows .csv.gz or store .sqlite (the official weights)")
    parser.add_argument("--table", type=Path, metavar="SUMMARY.json", help="print section 8's table of this summary")
    args = parser.parse_args()
    if args.table is not None:
        table(args.table)
        return
    if args.second is None:
        parser.error("give two runs to compare, or --table SUMMARY.json")
    old, new = read_rows(args.first), read_rows(args.second)
    methods = sorted({m for _, m in new}, key=lambda m: (m != "opticam", m != "fakecam", m))
    images = sorted({i for i, _ in new if all((i, m) in new and (i, m) in old for m in methods)})
    print(f"{len(images)} images scored by both for all of {', '.join(methods)}\n")
    print("new - old per image: mean and its normal 95 % interval (1.96 SE of the paired differences)\n")
    print("| method | " + " | ".join(f"{c} new (new - old [95 %])" for c in COLUMNS) + " |")
    print("| --- | " + " | ".join("---:" for _ in COLUMNS) + " |")
    for m in methods:
        cells = []
        for column in COLUMNS.values():
            b = 100 * mean([number(new[(i, m)], column) for i in images])
            d = [100 * (number(new[(i, m)], column) - number(old[(i, m)], column)) for i in images]
            d = [x for x in d if not math.isnan(x)]
            h = 1.96 * statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else math.nan
            cells.append(
                f"{b:.1f} ({statistics.mean(d):+.1f} [{statistics.mean(d) - h:+.1f}, {statistics.mean(d) + h:+.1f}])"
            )
        print(f"| {m} | " + " | ".join(cells) + " |")
    print()
    for name, rows in (("first", old), ("second", new)):
        right = sum(rows[(i, "opticam")]["predicted"] == rows[(i, "opticam")]["label"] for i in images)
        print(f"top-1 of the {name} model: {right} / {len(images)} = {100 * right / len(images):.1f} %")
    same = sum(old[(i, "opticam")]["predicted"] == new[(i, "opticam")]["predicted"] for i in images)
    print(f"same predicted class: {same} / {len(images)}")
    for m in methods:
        parts = []
        for column in ("ag_term", "energy_pointing_game"):
            d = [number(new[(i, m)], column) - number(old[(i, m)], column) for i in images]
            parts.append(f"{column} mean |new - old| {100 * mean([abs(x) for x in d]):.1f}")
        print(f"{m}: " + ", ".join(parts))
    print()
    ag = [number(new[(i, "opticam")], "ag_term") for i in images]
    ag_grad = [number(new[(i, "gradcam")], "ag_term") for i in images]
    epg = [number(new[(i, "opticam")], "energy_pointing_game") for i in images]
    epg_grad = [number(new[(i, "gradcam")], "energy_pointing_game") for i in images]
    print(f"second: Opti-CAM AG term above Grad-CAM's on {sum(a > b for a, b in zip(ag, ag_grad, strict=True))}")
    gap = [a - b for a, b in zip(epg, epg_grad, strict=True)]
    half = 1.96 * statistics.stdev(gap) / math.sqrt(len(gap)) if len(gap) > 1 else math.nan
    print(
        f"second: Opti-CAM EPG below Grad-CAM's on {sum(g < 0 for g in gap)}, by {-100 * mean(gap):.1f} points "
        f"(95 % interval +-{100 * half:.1f})"
    )
    rho, rho_grad = spearman(ag, epg), spearman(ag_grad, epg_grad)
    print(f"second: Spearman AG term vs EPG, Opti-CAM {rho:.2f}, Grad-CAM {rho_grad:.2f}")
    iterations = [number(new[(i, "opticam")], "iterations") for i in images]
    print(f"second: Opti-CAM iterations {min(iterations):g} to {max(iterations):g}")


if __name__ == "__main__":
    main()
