"""What the tuned CPU allocator (``opticam.perf.allocator``) buys: the same work with glibc's defaults and tuned.

Each measurement runs in a fresh child process (the setting is process-wide), alternating default and
tuned, ``--repeats`` times each; the figure is the median per setting and their ratio. Two workloads on
EfficientNet-Lite0 (offline weights, random images: it needs no samples):

* ``opticam``: Opti-CAM on a batch of 8 images, ``--iterations`` steps (forward + backward per step);
* ``forward``: forward passes at batch 16 without gradients, the work of insertion/deletion.

    .venv/bin/python benchmarks/allocator.py --repeats 3 --json benchmarks/results/allocator-lite0.json

It also reports minor page faults per image, the cause the tuning removes. Timings depend on the machine
and its load; only the ratio within one run means anything.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, resource, sys, time, torch
from opticam import OptiCAM, load_model
from opticam.perf.allocator import tune_cpu_allocator
setting, workload, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3])
if setting == "tuned":
    assert tune_cpu_allocator(), "allocator tuning needs Linux with glibc"
torch.manual_seed(0)
loaded = load_model("efficientnet_lite0")
model = loaded.model.eval()
if workload == "opticam":
    x = torch.rand(8, 3, 224, 224)
    cam = OptiCAM(model, loaded.target_layer, iterations=iterations, early_stop=False)
    run = lambda: cam.explain(x)
    images = 8
else:
    x = torch.rand(16, 3, 224, 224)
    def run():
        with torch.no_grad():
            for _ in range(iterations):
                model(x)
    images = 16 * iterations
OptiCAM(model, loaded.target_layer, iterations=1).explain(x[:2])  # warm-up
run()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
start = time.perf_counter()
run()
seconds = time.perf_counter() - start
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
print(json.dumps({"seconds_per_image": seconds / images, "minor_faults_per_image": faults / images}))
"""


def measure(setting: str, workload: str, iterations: int) -> dict[str, float]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {"PYTHONPATH": src, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, setting, workload, str(iterations)],
        capture_output=True,
        text=True,
        env=env,
    )
    if out.returncode != 0:
        raise SystemExit(f"child failed ({setting}, {workload}):\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=20, help="Opti-CAM steps / forward rounds per run")
    parser.add_argument("--workloads", nargs="+", choices=("opticam", "forward"), default=["opticam", "forward"])
    parser.add_argument("--json", type=Path, help="write the runs and ratios here")
    args = parser.parse_args(argv)
    report: dict[str, dict] = {}
    for workload in args.workloads:
        runs: dict[str, list[dict[str, float]]] = {"default": [], "tuned": []}
        for rep in range(args.repeats):
            for setting in ("default", "tuned") if rep % 2 == 0 else ("tuned", "default"):
                runs[setting].append(measure(setting, workload, args.iterations))
                last = runs[setting][-1]
                print(
                    f"{workload} rep {rep + 1} {setting}: {last['seconds_per_image'] * 1000:.1f} ms/image, "
                    f"{last['minor_faults_per_image']:.0f} page faults/image",
                    flush=True,
                )
        median = {s: statistics.median(r["seconds_per_image"] for r in runs[s]) for s in runs}
        report[workload] = {
            "runs": runs,
            "median_seconds_per_image": median,
            "speedup": median["default"] / median["tuned"],
        }
        print(f"{workload}: tuned is {report[workload]['speedup']:.2f}x faster than glibc's defaults", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"iterations": args.iterations, "repeats": args.repeats, **report}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
