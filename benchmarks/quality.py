"""Quality against model passes: AD / AG / AI of Opti-CAM configurations on the real ImageNet samples.

Each configuration explains the **ground-truth** class (as the paper's Table 1) of a fixed subset of
the shared samples with the offline EfficientNet-Lite0; per-image results (p, o, passes) are appended to
a JSONL file as each batch finishes, so an interrupted run continues where it stopped.

    nice -n 10 .venv/bin/python benchmarks/quality.py run --set explore --configs adam100 fast
    nice -n 10 .venv/bin/python benchmarks/quality.py run --set confirm --configs adam100 fast
    .venv/bin/python benchmarks/quality.py summary [--plot docs/speed-quality.png]

Subsets (disjoint): ``explore`` = samples 1, 21, 41, ... (48 images, one every 20 in labels.csv order),
``confirm`` = samples 0, 5, 10, ... (200 images, one every 5). labels.csv is sorted by class, so both
spread over the whole label range.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import torch

from opticam import OptiCAM, load_image, load_model
from opticam.metrics import average_drop_gain_increase, class_probabilities
from opticam.presets import PRESETS

SAMPLES = Path(os.environ.get("OPTICAM_SAMPLES", Path(__file__).resolve().parents[2] / "shared/data/imagenet-samples"))
RESULTS = Path(__file__).resolve().parent / "results" / "quality.jsonl"

# Name -> OptiCAM options. "adamN" is the paper's algorithm stopped after N iterations.
CONFIGS: dict[str, dict] = {
    "adam100": dict(iterations=100),
    "adam50": dict(iterations=50),
    "adam32": dict(iterations=32),
    "adam20": dict(iterations=20),
    "adam10": dict(iterations=10),
    "gradcam-init0": dict(iterations=0, init="gradcam", init_mix=0.1),
    "uniform0": dict(iterations=0),
    "cos-lr0.3-32": dict(iterations=32, lr=0.3, schedule="cosine"),
    "cos-lr0.5-32": dict(iterations=32, lr=0.5, schedule="cosine"),
    "gc0.5-32": dict(iterations=32, init="gradcam", init_mix=0.5),
    "gc0.1-32": dict(iterations=32, init="gradcam", init_mix=0.1),
    "gc0.5-cos0.3-32": dict(iterations=32, init="gradcam", init_mix=0.5, lr=0.3, schedule="cosine"),
    "gc0.1-cos0.3-32": dict(iterations=32, init="gradcam", init_mix=0.1, lr=0.3, schedule="cosine"),
    "gc0.1-cos0.3-20": dict(iterations=20, init="gradcam", init_mix=0.1, lr=0.3, schedule="cosine"),
    "cos-lr0.3-20": dict(iterations=20, lr=0.3, schedule="cosine"),
}
for _name, _options in PRESETS.items():
    CONFIGS.setdefault(f"preset-{_name}", dict(_options))


def subset(name: str) -> list[tuple[str, int]]:
    """``(file, ground-truth class)`` of the named subset of the shared samples."""
    labels = SAMPLES / "labels.csv"
    if not labels.is_file():
        sys.exit(f"quality: the real samples are not at {SAMPLES} (set OPTICAM_SAMPLES)")
    with labels.open() as f:
        rows = [(r["file"], int(r["class_index"])) for r in csv.DictReader(f)]
    if name == "explore":
        return rows[1::20][:48]
    if name == "confirm":
        return rows[::5][:200]
    raise SystemExit(f"quality: unknown subset {name!r} (explore, confirm)")


def done(path: Path) -> set[tuple[str, str]]:
    if not path.is_file():
        return set()
    keys = set()
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            keys.add((r["config"], r["file"]))
    return keys


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    loaded = load_model("efficientnet_lite0")
    rows = subset(args.set)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    finished = done(out)
    for config in args.configs:
        if config not in CONFIGS:
            raise SystemExit(f"quality: unknown config {config!r}; known: {sorted(CONFIGS)}")
        cam = OptiCAM(loaded.model, loaded.target_layer, loaded.reshape_transform, **CONFIGS[config])
        todo = [r for r in rows if (config, r[0]) not in finished]
        print(f"{config}: {len(todo)} of {len(rows)} images to do", flush=True)
        for start in range(0, len(todo), args.batch):
            chunk = todo[start : start + args.batch]
            x = torch.stack([loaded.preprocess(load_image(SAMPLES / f)) for f, _ in chunk])
            classes = torch.tensor([c for _, c in chunk])
            result = cam.explain(x, classes)
            p, o = class_probabilities(loaded.model, x, result.maps, classes)
            with out.open("a") as f:
                for i, (file, c) in enumerate(chunk):
                    record = {
                        "config": config,
                        "set": args.set,
                        "file": file,
                        "class_index": c,
                        "p": float(p[i]),
                        "o": float(o[i]),
                        "iterations": int(result.iterations[i]),
                        "passes": result.passes / len(chunk),
                        "objective_initial": float(result.objective_initial[i]),
                        "objective_final": float(result.objective_final[i]),
                        "seconds": result.seconds / len(chunk),
                    }
                    f.write(json.dumps(record) + "\n")
            print(f"  {config}: {start + len(chunk)}/{len(todo)} ({result.seconds / len(chunk):.2f} s/img)", flush=True)


def summarize(path: Path, subset_name: str | None = None) -> list[dict]:
    """One row per (set, config): N, AD, AG, AI, mean model passes per image."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if subset_name is None or r["set"] == subset_name:
                groups.setdefault((r["set"], r["config"]), []).append(r)
    table = []
    for (set_name, config), records in sorted(groups.items()):
        p = torch.tensor([r["p"] for r in records])
        o = torch.tensor([r["o"] for r in records])
        scores = average_drop_gain_increase(p, o)
        passes = sum(r["passes"] for r in records) / len(records)
        table.append({"set": set_name, "config": config, "n": len(records), **scores, "passes": passes})
    return table


def summary(args: argparse.Namespace) -> None:
    table = summarize(Path(args.out), args.set)
    print("| set | config | N | AD | AG | AI | model passes / image |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for t in sorted(table, key=lambda t: (t["set"], t["passes"])):
        scores = f"{t['AD']:.2f} | {t['AG']:.2f} | {t['AI']:.1f}"
        print(f"| {t['set']} | {t['config']} | {t['n']} | {scores} | {t['passes']:.1f} |")
    if args.plot:
        plot(table, Path(args.plot))


def plot(table: list[dict], path: Path) -> None:
    """AG and AD against model passes per image, one marker per configuration, one panel per subset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = sorted({t["set"] for t in table})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for set_name, marker in zip(sets, "os^", strict=False):
        rows = sorted((t for t in table if t["set"] == set_name), key=lambda t: t["passes"])
        for ax, metric in zip(axes, ("AG", "AD"), strict=True):
            adam = [t for t in rows if t["config"].startswith("adam") or t["config"] == "uniform0"]
            ax.plot([t["passes"] for t in adam], [t[metric] for t in adam], "-", color="gray", alpha=0.6)
            for t in rows:
                ax.scatter(t["passes"], t[metric], marker=marker, s=30)
                ax.annotate(f"{t['config']} ({set_name})", (t["passes"], t[metric]), fontsize=6, alpha=0.8)
    for ax, metric in zip(axes, ("AG (higher is better)", "AD (lower is better)"), strict=True):
        ax.set_xlabel("model passes per image")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.suptitle("Opti-CAM on EfficientNet-Lite0, ground-truth class: quality against model passes")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--set", default="explore", choices=["explore", "confirm"])
    r.add_argument("--configs", nargs="+", required=True)
    r.add_argument("--batch", type=int, default=8)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--out", default=str(RESULTS))
    r.set_defaults(func=run)
    s = sub.add_parser("summary")
    s.add_argument("--set", choices=["explore", "confirm"])
    s.add_argument("--out", default=str(RESULTS))
    s.add_argument("--plot")
    s.set_defaults(func=summary)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
