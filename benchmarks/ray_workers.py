"""Throughput of `opticam evaluate --ray` with 1 and with 2 workers (one torch thread each) on the same images.

Starts a local Ray with 2 CPUs, builds each pool (model loading is not timed), then times the run itself
(rows stored per second, as the progress bar shows it) into a fresh store, and checks that both runs stored
the same numbers.

    PYTHONPATH=src python benchmarks/ray_workers.py --methods gradcam,fakecam [--limit 32] [--insdel-step 224]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

from opticam import load_model, tune_cpu_allocator
from opticam.evaluation import EvaluationSettings, ResultStore, read_dataset, run_config
from opticam.evaluation.distributed import EvaluationWorker, WorkerPool, WorkerRecipe, evaluate_on_ray, start_ray

NUMBERS = "image, method, class_index, predicted, p, o, ad_term, ag_term, ai_term, insertion, deletion, iterations"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default=str(Path(__file__).resolve().parents[2] / "shared/data/imagenet-samples"))
    ap.add_argument("--methods", default="gradcam,fakecam")
    ap.add_argument("--limit", type=int, default=32)
    ap.add_argument("--insdel-step", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args()
    methods = args.methods.split(",")
    root, samples = read_dataset(args.images, args.limit)
    settings = EvaluationSettings(batch_size=args.batch_size, metric_options={"insdel": {"step": args.insdel_step}})
    config = run_config(load_model("efficientnet_lite0"), dataset_root=str(root), layer=None, settings=settings)
    start_ray(num_cpus=2)
    stored = {}
    for workers in (int(w) for w in args.workers.split(",")):
        # Workers tune the CPU allocator as `opticam evaluate --ray` has them do.
        recipe = WorkerRecipe(model="efficientnet_lite0", methods={m: {} for m in methods}, setup=tune_cpu_allocator)
        pool = WorkerPool(EvaluationWorker, recipe, settings, workers=workers, cpus_per_worker=1)
        db = Path(tempfile.mkdtemp()) / "r.sqlite"
        with ResultStore(db) as store:
            run_id = store.open_run(config)
            t0 = time.perf_counter()
            added = evaluate_on_ray(pool, samples, methods, store, run_id, settings, progress=False)
            seconds = time.perf_counter() - t0
        pool.shutdown()
        rows = sum(added.values())
        print(f"workers {workers}: {rows} rows in {seconds:.1f} s = {rows / seconds:.3f} rows/s", flush=True)
        with sqlite3.connect(db) as con:
            stored[workers] = sorted(con.execute(f"SELECT {NUMBERS} FROM results").fetchall())
    first = next(iter(stored.values()))
    print("same numbers in every run:", all(v == first for v in stored.values()))


if __name__ == "__main__":
    main()
