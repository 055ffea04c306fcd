"""Per-method ranks on each metric, from an ``opticam evaluate --json`` summary (docs/results.md, section 4).

The columns are the metric declarations' table columns that have a direction (``opticam.metrics.registry``:
a new metric is ranked with no edit here), AG first. Rank 1 is best (lowest AD / deletion, highest everything
else); ties share the best rank of their group ("min" ranking: 1, 2, 2, 4). Values are compared as the tables
print them (0.1 point; ROAD to 0.001): a smaller difference is not one a reader can check, and methods whose
maps coincide up to float rounding (Grad-CAM, XGrad-CAM and HiRes-CAM on a model whose last layer is followed
by global average pooling, results.md section 1) must tie; methods tied on every column share one row. Metrics
the summary lacks (insertion / deletion when the run skipped them, localization without boxes) are left out.

    python benchmarks/ranks.py results/lite0-val227-1200.json --skip opticam-tenth
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def ranked_columns() -> list[tuple[str, str, bool, int]]:
    """``(title, summary key, lower is better, digits)`` for every table column the metric declarations
    rank (those with a ``better`` direction), the paper's AG first, then in declaration order."""
    from opticam.metrics.registry import METRICS

    columns = [(c.header, c.key, c.better == "lower", c.digits) for m in METRICS.values() for c in m.table if c.better]
    return sorted(columns, key=lambda c: c[1] != "AG")


NAMES = {
    "opticam": "Opti-CAM (paper)",
    "opticam-fast": "Opti-CAM `fast` preset",
    "opticam-tenth": "Opti-CAM `tenth` preset",
    "fakecam": "Fake-CAM",
    "gradcam": "Grad-CAM",
    "gradcampp": "Grad-CAM++",
    "xgradcam": "XGrad-CAM",
    "layercam": "Layer-CAM",
    "hirescam": "HiRes-CAM",
    "scorecam": "Score-CAM",
    "ablationcam": "Ablation-CAM",
    "extremal": "ExtremalPerturbation",
}


def ranks(summary: dict[str, dict], methods: list[str]) -> tuple[list[str], dict[str, list[int]]]:
    """``(column titles, {method: [rank per column]})`` for the metrics every listed method has."""
    from scipy.stats import rankdata

    columns, table = [], {m: [] for m in methods}
    for title, key, lower, digits in ranked_columns():
        values = [summary[m].get(key) for m in methods]
        if any(v is None for v in values):
            continue
        keyed = [round(v if lower else -v, digits) for v in values]
        columns.append(title)
        for method, rank in zip(methods, rankdata(keyed, method="min"), strict=True):
            table[method].append(int(rank))
    return columns, table


def markdown(columns: list[str], table: dict[str, list[int]]) -> str:
    """One row per group of methods tied on every column; rank 1 in bold."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for method, row in table.items():
        groups.setdefault(tuple(row), []).append(method)
    lines = ["| method | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    for row, members in groups.items():
        name = " / ".join(NAMES.get(m, m) for m in members)
        cells = [f"**{r}**" if r == 1 else str(r) for r in row]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("summary", type=Path, help="JSON written by `opticam evaluate --json`")
    parser.add_argument("--skip", default="", help="comma-separated methods to leave out of the ranking")
    args = parser.parse_args()
    summary = json.loads(args.summary.read_text())["methods"]
    skip = {m for m in args.skip.split(",") if m}
    unknown = skip - set(summary)
    if unknown:
        raise SystemExit(f"--skip names methods not in {args.summary}: {', '.join(sorted(unknown))}")
    methods = [m for m in summary if m not in skip]
    columns, table = ranks(summary, methods)
    print(markdown(columns, table))


if __name__ == "__main__":
    main()
