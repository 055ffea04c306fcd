"""The result store at ImageNet scale: 450,000 synthetic rows (50,000 images x 9 methods, default 225-point
insertion/deletion curves), written as `opticam evaluate` writes them (one transaction per chunk of 8 images
and method), then the evaluate command's table read back. Prints file size, insert rate and table time.

    PYTHONPATH=src python benchmarks/store_scale.py [--rows 450000] [--db /tmp/store-scale.sqlite]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from opticam.evaluation import ResultRow, ResultStore, markdown_table, summarize

METHODS = ["opticam", "fakecam", "gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "scorecam", "ablation"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=450_000)
    ap.add_argument("--db", default="/tmp/store-scale.sqlite")
    ap.add_argument("--chunk", type=int, default=8)
    args = ap.parse_args()
    db = Path(args.db)
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    rng = random.Random(0)
    curve = lambda: json.dumps([rng.random() for _ in range(225)])  # noqa: E731  (225 points: --insdel-step 224)
    images = args.rows // len(METHODS)
    keys = [f"n{i // 50:08d}/ILSVRC2012_val_{i:08d}.JPEG" for i in range(images)]
    with ResultStore(db) as store:
        run_id = store.open_run({"synthetic": True})
        t0 = time.perf_counter()
        n = 0
        build = 0.0
        for start in range(0, images, args.chunk):
            for method in METHODS:
                b0 = time.perf_counter()
                rows = [
                    ResultRow(
                        key,
                        method,
                        1,
                        1,
                        1,
                        0.01,
                        None,
                        None,
                        "cpu",
                        values={
                            "p": rng.random(),
                            "o": rng.random(),
                            "ad_term": rng.random(),
                            "ag_term": rng.random(),
                            "ai_term": rng.randint(0, 1),
                            "insertion": rng.random(),
                            "deletion": rng.random(),
                            "insertion_curve": curve(),
                            "deletion_curve": curve(),
                        },
                    )  # fmt: skip
                    for key in keys[start : start + args.chunk]
                ]
                build += time.perf_counter() - b0
                store.add(run_id, rows)
                n += len(rows)
        write = time.perf_counter() - t0 - build
    size = sum(Path(str(db) + s).stat().st_size for s in ("", "-wal") if Path(str(db) + s).exists())
    print(f"rows {n}, file {size / 1e9:.2f} GB")
    print(f"insert: {n / write:,.0f} rows/s ({write:.1f} s in SQLite, transactions of {args.chunk} rows)")
    # What `opticam evaluate` does at the end: open the store, read the table's columns, summarise, print.
    t0 = time.perf_counter()
    with ResultStore(db) as store:
        summary = summarize(store.summary_rows(run_id, METHODS, keys), METHODS)
    table = markdown_table(summary)
    print(table)
    print(f"table: {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
