"""Compare the rows of two ``opticam evaluate`` result stores, number by number.

Used to check that a change of code leaves the stored numbers alone: run the same ``opticam evaluate``
command before and after (into two files), then

    .venv/bin/python benchmarks/store_diff.py before.sqlite after.sqlite [--run RUN_ID]

prints, per method, how many rows both files have and the largest absolute difference of every numeric
column (p, o, the AD/AG/AI terms, insertion/deletion AUCs, every curve point and box IoU, Opti-CAM's
objectives and iterations), and the numbers that only one file has (a diagnostic added since, say).
Timings (``seconds``), ``created``, ``device`` and ``input_hash`` are not compared. Exit status 1 when a row is
missing on one side.
"""

from __future__ import annotations

import argparse
import json
import sys

from opticam.evaluation.store import ResultStore

SKIP = {"seconds", "created", "device", "run_id", "image", "method", "input_hash"}


def numbers(row: dict) -> dict[str, float]:
    """Every number of a row, curves and ``extra`` JSON flattened to ``name[i]`` / ``extra.key``."""
    out: dict[str, float] = {}
    for key, value in row.items():
        if key in SKIP or value is None:
            continue
        if key.endswith("_curve") or key == "box_ious":
            out.update({f"{key}[{i}]": float(v) for i, v in enumerate(json.loads(value))})
        elif key == "extra":
            out.update({f"extra.{k}": float(v) for k, v in json.loads(value).items()})
        else:
            out[key] = float(value)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--run", help="run id (default: the only run with rows in each file)")
    args = parser.parse_args()
    sides = []
    for path in (args.before, args.after):
        with ResultStore(path, readonly=True) as store:
            run = args.run or next(r for r, n in store.row_counts().items() if n)
            sides.append({(r["image"], r["method"]): r for r in store.rows(run)})
    before, after = sides
    missing = sorted(set(before) ^ set(after))
    for method in sorted({m for _, m in before} | {m for _, m in after}):
        keys = [k for k in before if k[1] == method and k in after]
        worst: dict[str, float] = {}
        one_side: dict[str, set[str]] = {"before": set(), "after": set()}
        for key in keys:
            a, b = numbers(before[key]), numbers(after[key])
            one_side["before"] |= {n.split("[")[0] for n in a.keys() - b.keys()}
            one_side["after"] |= {n.split("[")[0] for n in b.keys() - a.keys()}
            for name in a.keys() & b.keys():
                worst[name] = max(worst.get(name, 0.0), abs(a[name] - b[name]))
        top = max(worst.values(), default=0.0)
        column = max(worst, key=lambda n: worst[n], default="-") if top else f"all {len(worst)} numbers equal"
        only = "; ".join(f"only {side}: {', '.join(sorted(n))}" for side, n in one_side.items() if n)
        print(
            f"{method:12s} {len(keys):4d} rows in both; largest difference {top:.3g} ({column})"
            + (f"; {only}" if only else "")
        )
    if missing:
        print(f"{len(missing)} rows only on one side, e.g. {missing[:3]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
