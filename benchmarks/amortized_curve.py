"""Amortized Opti-CAM's numbers from one `opticam evaluate` store (issue 28): the table with intervals, the AG-versus-
time curve, and the break-even count.

Reads every row of one run (the per-image AD / AG / AI terms and seconds), and prints per method: n, AD / AG / AI
with 95 % bootstrap intervals (benchmarks/intervals.py), seconds per image and their ratio to ``opticam``'s, the
paired AG and AD difference to ``opticam`` with its interval; then the break-even count for a head that took
``--train-seconds`` to train: the number of images after which training plus ``opticam-amortized`` costs less
than paper Opti-CAM, ``train / (t_opticam - t_amortized)``. ``--png`` draws AG against seconds per image (both
axes from the same run), one point per method, the ``refine`` settings joined by a line.

    .venv/bin/python benchmarks/amortized_curve.py STORE.sqlite --train-seconds 185 --png docs/amortized-curve.png
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from intervals import interval  # noqa: E402


def load(store: Path, run: str | None) -> dict[str, dict[str, dict[str, float]]]:
    """``{method: {column: {image: value}}}`` for ``ad``, ``ag``, ``ai`` (percent) and ``seconds``."""
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    if run is None:
        (run,) = db.execute("SELECT run_id FROM results GROUP BY run_id ORDER BY COUNT(*) DESC LIMIT 1").fetchone()
    out: dict[str, dict[str, dict[str, float]]] = {}
    query = "SELECT method, image, ad_term, ag_term, ai_term, seconds FROM results WHERE run_id = ?"
    for method, image, ad, ag, ai, seconds in db.execute(query, (run,)):
        row = out.setdefault(method, {"AD": {}, "AG": {}, "AI": {}, "seconds": {}})
        row["AD"][image], row["AG"][image], row["AI"][image] = 100 * ad, 100 * ag, 100 * ai
        row["seconds"][image] = seconds
    return out


def refine_of(method: str) -> int | None:
    if not method.startswith("opticam-amortized"):
        return None
    found = re.search(r"refine=(\d+)", method)
    return int(found.group(1)) if found else 0


def table(data: dict, reference: str = "opticam") -> list[dict]:
    ref = data[reference]
    t_ref = float(np.mean(list(ref["seconds"].values())))
    rows = []
    for method, cols in data.items():
        images = sorted(set(cols["AG"]) & set(ref["AG"]))
        row = {"method": method, "n": len(cols["AG"]), "seconds": float(np.mean(list(cols["seconds"].values())))}
        row["ratio"] = row["seconds"] / t_ref
        for name in ("AD", "AG", "AI"):
            v = np.array(list(cols[name].values()))
            row[name] = (float(v.mean()), *interval(v))
        for name in ("AG", "AD"):
            d = np.array([cols[name][i] - ref[name][i] for i in images])
            row[f"d{name}"] = (float(d.mean()), *interval(d))
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| method | n | AD [95 % CI] | AG [95 % CI] | AI | s / image | x opticam | AG - opticam's [95 % CI] | "
        "AD - opticam's [95 % CI] |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        ad, ag, ai = r["AD"], r["AG"], r["AI"]
        lines.append(
            f"| {r['method']} | {r['n']} | {ad[0]:.1f} [{ad[1]:.1f}, {ad[2]:.1f}] "
            f"| {ag[0]:.1f} [{ag[1]:.1f}, {ag[2]:.1f}] "
            f"| {ai[0]:.0f} | {r['seconds']:.3f} | {r['ratio']:.3f} | {r['dAG'][0]:+.1f} [{r['dAG'][1]:+.1f}, "
            f"{r['dAG'][2]:+.1f}] | {r['dAD'][0]:+.1f} [{r['dAD'][1]:+.1f}, {r['dAD'][2]:+.1f}] |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    amortized = sorted((refine_of(r["method"]), r) for r in rows if refine_of(r["method"]) is not None)
    if amortized:
        xs = [r["seconds"] for _, r in amortized]
        ys = [r["AG"][0] for _, r in amortized]
        ax.plot(xs, ys, "o-", color="tab:blue", label="opticam-amortized, refine = 0, 1, 2, ...")
        for (k, r), x, y in zip(amortized, xs, ys, strict=True):
            ax.errorbar(x, y, yerr=[[y - r["AG"][1]], [r["AG"][2] - y]], color="tab:blue", capsize=2)
            ax.annotate(str(k), (x, y), textcoords="offset points", xytext=(5, -10), fontsize=8)
    for r in rows:
        if refine_of(r["method"]) is None:
            y = r["AG"][0]
            err = [[y - r["AG"][1]], [r["AG"][2] - y]]
            ax.errorbar(r["seconds"], y, yerr=err, fmt="s", capsize=2, label=r["method"])
    ref = next(r for r in rows if r["method"] == "opticam")
    ax.axvline(0.10 * ref["seconds"], color="grey", ls=":", label="0.10 x opticam's time")
    ax.axhline(ref["AG"][0] - 1, color="grey", ls="--", label="opticam's AG - 1")
    ax.set_xscale("log")
    ax.set_xlabel("seconds per image (log scale, same run)")
    ax.set_ylabel("AG (%, 95 % CI)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--run")
    parser.add_argument("--train-seconds", type=float, help="the head's training time, for the break-even count")
    parser.add_argument("--png", type=Path)
    parser.add_argument("--title", default="EfficientNet-Lite0, first 100 samples, ground-truth class")
    args = parser.parse_args()
    rows = table(load(args.store, args.run))
    print(markdown(rows))
    if args.train_seconds is not None:
        ref = next(r for r in rows if r["method"] == "opticam")
        for r in rows:
            if refine_of(r["method"]) is not None and r["seconds"] < ref["seconds"]:
                count = args.train_seconds / (ref["seconds"] - r["seconds"])
                print(f"break-even {r['method']}: {count:.0f} images ({args.train_seconds:.0f} s of training)")
    if args.png:
        plot(rows, args.png, args.title)
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
