"""Per-image scatter for the paper's claim (docs/results.md, section 4): class keeping against localization.

One point per image and method: the AG term ``max(o - p, 0) / (1 - p)`` against the energy pointing game
(share of the map inside the boxes), read from an ``opticam evaluate`` store that has boxes, or from its rows
exported to ``results/`` (``benchmarks/export_rows.py``). The run is chosen as ``opticam report`` chooses it
(``--run``: an id or unique prefix; default: the latest run with rows).

    python benchmarks/claim_scatter.py results/lite0-val227-rows.csv.gz --out docs/claim-scatter.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from opticam.evaluation.report import ReportError, load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("db", type=Path)
    parser.add_argument("--methods", default="opticam,gradcam")
    parser.add_argument("--out", type=Path, default=Path("claim-scatter.png"))
    parser.add_argument("--run", help="run id or unique prefix (default: the latest run with rows)")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import spearmanr

    if args.db.name.endswith(".csv.gz"):
        from export_rows import read_rows

        rows = read_rows(args.db)
        run_ids = [r["run_id"] for r in rows if r["energy_pointing_game"] is not None]
        matches = sorted({r for r in run_ids if r.startswith(args.run or "")}, key=run_ids.index)
        if not matches:
            raise SystemExit(f"no run with boxes matching {args.run!r} in {args.db}")
        run_id = matches[-1]
        stored = [r for r in rows if r["run_id"] == run_id]
    else:
        try:
            run = load_run(args.db, args.run)
        except ReportError as exc:
            raise SystemExit(str(exc)) from None
        run_id, stored = run.run_id, run.rows
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    for method, color in zip(args.methods.split(","), ("tab:red", "tab:blue", "tab:green", "tab:gray"), strict=False):
        rows = [r for r in stored if r["method"] == method and r["energy_pointing_game"] is not None]
        if not rows:
            raise SystemExit(f"no rows with boxes for {method!r} in run {run_id} of {args.db}")
        ag, epg = [100 * r["ag_term"] for r in rows], [100 * r["energy_pointing_game"] for r in rows]
        rho = spearmanr(ag, epg).statistic
        means = f"mean AG {sum(ag) / len(ag):.1f}, mean EPG {sum(epg) / len(epg):.1f}"
        label = f"{method}: n = {len(rows)}, {means}, Spearman {rho:.2f}"
        ax.scatter(epg, ag, s=12, alpha=0.6, color=color, label=label)
        print(label)
    ax.set_xlabel("energy pointing game, % of the map inside the boxes (localization)")
    ax.set_ylabel("AG term, % of headroom gained (class keeping)")
    ax.set_title("One point per image: keeping the class vs localizing the object", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
