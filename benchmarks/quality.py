"""Quality against model passes: AD / AG / AI of Opti-CAM configurations on the real ImageNet samples.

Each configuration explains the **ground-truth** class (as the paper's Table 1) of a fixed subset of
the shared samples with the offline EfficientNet-Lite0; per-image results (p, o, passes) are appended to
a JSONL file as each batch finishes, so an interrupted run continues where it stopped.

    nice -n 10 .venv/bin/python benchmarks/quality.py run --set explore --configs adam100 fast
    nice -n 10 .venv/bin/python benchmarks/quality.py run --set confirm --configs adam100 fast
    .venv/bin/python benchmarks/quality.py summary [--plot docs/speed-quality.png]

Subsets (disjoint): ``explore`` = samples 1, 21, 41, ... (48 images, one every 20 in labels.csv order,
spread over the whole label range), ``confirm`` = the first 200 samples of labels.csv, the same images as
``opticam evaluate --limit 200``, so that the 100-iteration baseline can be shared with an evaluation run
of the paper's defaults: ``import-eval DB`` copies that run's per-image Opti-CAM ``(p, o)`` in, and
``run --reverse`` computes the rest from the end of the list, so the two meet in the middle. Where both
computed an image, ``summary`` reports how far they agree.

    nice -n 10 .venv/bin/python benchmarks/quality.py run --set confirm --configs adam100 --reverse
    .venv/bin/python benchmarks/quality.py import-eval results/lite0-gt.sqlite
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import torch

from opticam import OptiCAM, load_image, load_model, tune_cpu_allocator
from opticam.evaluation.scoring import explain_and_score
from opticam.methods.presets import PRESETS
from opticam.metrics import average_drop_gain_increase

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
    "gc0.1-cos1.0-32": dict(iterations=32, init="gradcam", init_mix=0.1, lr=1.0, schedule="cosine"),
    "gc0.1-cos0.5-32": dict(iterations=32, init="gradcam", init_mix=0.1, lr=0.5, schedule="cosine"),
    "cos-lr1.0-32": dict(iterations=32, lr=1.0, schedule="cosine"),
    "gc0.1-cos2.0-32": dict(iterations=32, init="gradcam", init_mix=0.1, lr=2.0, schedule="cosine"),
    "cos-lr2.0-32": dict(iterations=32, lr=2.0, schedule="cosine"),
    "gc0.1-lr0.5-32": dict(iterations=32, init="gradcam", init_mix=0.1, lr=0.5),
    "gc0.01-cos1.0-32": dict(iterations=32, init="gradcam", init_mix=0.01, lr=1.0, schedule="cosine"),
    "gc0.1-cos1.5-32": dict(iterations=32, init="gradcam", init_mix=0.1, lr=1.5, schedule="cosine"),
    "gc0.1-wcos1.0-32": dict(iterations=32, init="gradcam", init_mix=0.1, lr=1.0, schedule="warmup-cosine"),
    "gc0.1-wcos2.0-32": dict(iterations=32, init="gradcam", init_mix=0.1, lr=2.0, schedule="warmup-cosine"),
    "wcos1.0-32": dict(iterations=32, lr=1.0, schedule="warmup-cosine"),
    "lp-gc0.1-cos1.0-32": dict(
        iterations=32, init="gradcam", init_mix=0.1, lr=1.0, schedule="cosine", objective="log-prob"
    ),
    "lp-gc0.1-cos1.0-10": dict(
        iterations=10, init="gradcam", init_mix=0.1, lr=1.0, schedule="cosine", objective="log-prob"
    ),
    "lp-gc0.1-cos1.0-20": dict(
        iterations=20, init="gradcam", init_mix=0.1, lr=1.0, schedule="cosine", objective="log-prob"
    ),
    "lp-adam32": dict(iterations=32, objective="log-prob"),
    "lp-cos1.0-32": dict(iterations=32, lr=1.0, schedule="cosine", objective="log-prob"),
    "lp-gc0.1-cos0.5-32": dict(
        iterations=32, init="gradcam", init_mix=0.1, lr=0.5, schedule="cosine", objective="log-prob"
    ),
}
# Issue 11 (a tenth of Adam-100's time; docs/speed.md, "A tenth"). "lp-c112-26+1": log-prob objective,
# cosine rate from 1.0, 26 steps at 112 px then 1 at 224 (the last evaluation is always at full size).
for _side, _coarse, _fine, _lr in ((112, 26, 1, 1.0), (112, 30, 0, 1.0), (96, 36, 0, 1.0), (128, 28, 0, 1.0),
                                  (112, 30, 0, 2.0), (112, 30, 0, 0.5)):  # fmt: skip
    CONFIGS[f"lp-c{_side}-{_coarse}+{_fine}" + ("" if _lr == 1.0 else f"-lr{_lr}")] = dict(
        iterations=_coarse + _fine, coarse_iterations=_coarse, coarse_size=_side, lr=_lr, schedule="cosine",
        objective="log-prob",
    )  # fmt: skip
CONFIGS["lp-gc-c112-30+0"] = dict(CONFIGS["lp-c112-30+0"], init="gradcam", init_mix=0.1)
# Nine Adam steps (0.096 x Adam-100's passes): rate, schedule, start and normalization.
for _lr in (1.0, 2.0, 3.0):
    CONFIGS[f"lp-cos{_lr}-9"] = dict(iterations=9, lr=_lr, schedule="cosine", objective="log-prob")
CONFIGS["lp-const2.0-9"] = dict(iterations=9, lr=2.0, objective="log-prob")
CONFIGS["lp-max-cos2.0-9"] = dict(CONFIGS["lp-cos2.0-9"], normalization="max")
CONFIGS["lp-max-cos1.0-9"] = dict(CONFIGS["lp-cos1.0-9"], normalization="max")
CONFIGS["lp-gc0.1-cos2.0-9"] = dict(CONFIGS["lp-cos2.0-9"], init="gradcam", init_mix=0.1)
# Cost of one forward + backward pass at a coarse side, as a share of one at 224 (batch 8, two threads, this
# machine, medians of 6; docs/speed.md, "A tenth"): a coarse pass counts this much in the passes column.
COARSE_COST = {96: 0.23, 112: 0.30, 128: 0.28, 160: 0.41}
for _name, _options in PRESETS.items():
    CONFIGS.setdefault(f"preset-{_name}", _options.as_dict())


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
        return rows[:200]
    if name == "screen":
        return rows[:16]
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
    tune_cpu_allocator()  # as the CLI does, so that seconds per image match `opticam evaluate`
    loaded = load_model("efficientnet_lite0")
    rows = subset(args.set)[: args.limit]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    finished = done(out)
    for config in args.configs:
        if config not in CONFIGS:
            raise SystemExit(f"quality: unknown config {config!r}; known: {sorted(CONFIGS)}")
        cam = OptiCAM(loaded.model, loaded.target_layer, loaded.reshape_transform, **CONFIGS[config])
        order = rows[::-1] if args.reverse else rows
        print(f"{config}: {sum((config, f) not in finished for f, _ in rows)} of {len(rows)} images to do", flush=True)
        count = 0
        while True:
            if args.merge_eval is not None and config == "adam100":
                import_eval(argparse.Namespace(db=args.merge_eval, out=args.out), quiet=True)
            finished = done(out)
            chunk = [r for r in order if (config, r[0]) not in finished][: args.batch]
            if not chunk:
                break
            count += len(chunk)
            x = torch.stack([loaded.preprocess(load_image(SAMPLES / f)) for f, _ in chunk])
            classes = torch.tensor([c for _, c in chunk])
            scored = explain_and_score(cam, loaded.model, x, classes)
            result, p, o = scored.result, scored.p, scored.o
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
                        "coarse_passes": result.diagnostics.counts["coarse_passes"] / len(chunk),
                        "objective_initial": float(result.objective_initial[i]),
                        "objective_final": float(result.objective_final[i]),
                        "seconds": result.seconds / len(chunk),
                    }
                    f.write(json.dumps(record) + "\n")
            print(f"  {config}: {count} done ({result.seconds / len(chunk):.2f} s/img)", flush=True)


def import_eval(args: argparse.Namespace, quiet: bool = False) -> None:
    """Copy the ``opticam`` rows of an ``opticam evaluate`` SQLite store (paper defaults, ground-truth
    class, this model) in as ``adam100`` records of the ``confirm`` set, tagged with their source."""
    import sqlite3

    db = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True)
    wanted = dict(subset("confirm"))
    out = Path(args.out)
    have = {(r["file"], r.get("source", "")) for r in _records(out) if r["config"] == "adam100"}
    added = 0
    for run_id, config in db.execute("SELECT run_id, config FROM runs"):
        config = json.loads(config)
        options = config.get("method_options", {}).get("opticam", {})
        paper = {"iterations": 100, "lr": 0.1, "normalization": "range", "objective": "mask"}
        if config.get("model") != "efficientnet_lite0" or config.get("target") != "gt" or options != paper:
            if not quiet:
                print(f"skipping run {run_id}: not the paper's defaults on efficientnet_lite0 with gt targets")
            continue
        source = f"evaluate:{run_id}"
        query = (
            "SELECT image, class_index, p, o, iterations, seconds, extra FROM results "
            "WHERE run_id=? AND method='opticam'"
        )
        with out.open("a") as f:
            for image, c, p, o, steps, seconds, extra in db.execute(query, (run_id,)):
                if image not in wanted or wanted[image] != c or (image, source) in have:
                    continue
                extra = json.loads(extra or "{}")
                record = {
                    "config": "adam100",
                    "set": "confirm",
                    "file": image,
                    "class_index": c,
                    "p": p,
                    "o": o,
                    "iterations": steps,
                    "passes": steps + 2 if steps == 100 else steps + 1,
                    "objective_initial": extra.get("objective_initial"),
                    "objective_final": extra.get("objective_final"),
                    "seconds": seconds,
                    "source": source,
                }
                f.write(json.dumps(record) + "\n")
                added += 1
    if not quiet or added:
        print(f"imported {added} rows from {args.db} into {out}", flush=True)


def _records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarize(path: Path, subset_name: str | None = None) -> list[dict]:
    """One row per (subset, config) with N, AD, AG, AI, mean model passes per image, and the same scores of
    the 100-iteration baseline on exactly the same images (``ref_*``, where all of them have one).

    A record counts for every subset that holds its image (``screen`` is the start of ``confirm``); an
    image computed twice (here and imported from an evaluation run) counts once, our own record first.
    """
    AGREEMENT.clear()
    per_image: dict[tuple[str, str], dict[str, dict]] = {}
    for r in _records(path):
        per_image.setdefault((r["config"], r["file"]), {})[r.get("source", "own")] = r
    best: dict[tuple[str, str], dict] = {}
    for key, sources in per_image.items():
        best[key] = sources.get("own") or next(iter(sources.values()))
        if len(sources) > 1:
            own, other = sources["own"], next(v for k, v in sources.items() if k != "own")
            AGREEMENT.append(max(abs(own["p"] - other["p"]), abs(own["o"] - other["o"])))
    table = []
    for set_name in [subset_name] if subset_name else ["explore", "screen", "confirm"]:
        files = {f for f, _ in subset(set_name)}
        groups: dict[str, list[dict]] = {}
        for (config, file), record in best.items():
            if file in files:
                groups.setdefault(config, []).append(record)
        for config, records in sorted(groups.items()):
            scores = _scores(records)
            row = {"set": set_name, "config": config, "n": len(records), **scores}
            coarse = COARSE_COST.get(CONFIGS.get(config, {}).get("coarse_size", 0), 1.0)
            row["passes"] = sum(r["passes"] + coarse * r.get("coarse_passes", 0) for r in records) / len(records)
            ref = [best.get(("adam100", r["file"])) for r in records]
            if all(ref):
                row.update({f"ref_{k}": v for k, v in _scores(ref).items()})
            table.append(row)
    return table


def _scores(records: list[dict]) -> dict[str, float]:
    p = torch.tensor([r["p"] for r in records])
    o = torch.tensor([r["o"] for r in records])
    return average_drop_gain_increase(p, o)


AGREEMENT: list[float] = []
"""Largest |difference| of p or o per image computed both here and by an imported evaluation run."""


def summary(args: argparse.Namespace) -> None:
    table = summarize(Path(args.out), args.set)
    if AGREEMENT:
        print(
            f"{len(AGREEMENT)} images computed twice (here and imported): max |p or o difference| {max(AGREEMENT):.2e}"
        )
    print("| set | config | N | AD | AG | AI | passes / image | Adam-100 on the same images: AD / AG / AI |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for t in sorted(table, key=lambda t: (t["set"], t["passes"], t["config"])):
        scores = f"{t['AD']:.2f} | {t['AG']:.2f} | {t['AI']:.1f}"
        ref = f"{t['ref_AD']:.2f} / {t['ref_AG']:.2f} / {t['ref_AI']:.1f}" if "ref_AG" in t else ""
        print(f"| {t['set']} | {t['config']} | {t['n']} | {scores} | {t['passes']:.1f} | {ref} |")
    if args.plot:
        plot(table, Path(args.plot))


def plot(table: list[dict], path: Path) -> None:
    """AG and AD of each configuration minus the 100-iteration baseline's on the same images, against model
    passes per image; one marker per (subset, configuration) that has the baseline on all its images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        t
        for t in table
        if "ref_AG" in t
        and t["config"] != "adam100"
        and ((t["set"] == "screen" and t["n"] >= 8) or (t["set"] == "confirm" and t["n"] >= 100))
    ]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    styles = {"screen": ("o", "tab:blue"), "confirm": ("*", "tab:red")}
    for ax, metric, better in zip(axes, ("AG", "AD"), ("higher", "lower"), strict=True):
        ax.axhline(0, color="gray", lw=1)
        ax.axvline(102, color="gray", lw=1, ls=":")
        ax.axvline(34, color="tab:green", lw=1, ls="--", label="a third of Adam-100's passes")
        ax.axvline(10.2, color="tab:purple", lw=1, ls="--", label="a tenth")
        if metric == "AG":
            ax.axhspan(-1, 1, color="tab:green", alpha=0.08, label="within 1 point")
        else:
            ax.axhspan(-0.5, 0.5, color="tab:green", alpha=0.08, label="within 0.5")
        for set_name, (marker, color) in styles.items():
            for t in (t for t in rows if t["set"] == set_name):
                ax.scatter(
                    t["passes"],
                    t[metric] - t[f"ref_{metric}"],
                    marker=marker,
                    color=color,
                    s=60 if marker == "*" else 25,
                )
                ax.annotate(
                    f"{t['config']} (n={t['n']})", (t["passes"], t[metric] - t[f"ref_{metric}"]), fontsize=6, alpha=0.85
                )
        ax.set_xlabel("model passes per image, a coarse pass at its measured cost (Adam-100: 102)")
        ax.set_ylabel(f"{metric} minus Adam-100's {metric}, same images ({better} is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Opti-CAM on EfficientNet-Lite0, ground-truth class: o = screen (first 16), * = confirm (200)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--set", default="explore", choices=["explore", "screen", "confirm"])
    r.add_argument("--configs", nargs="+", required=True)
    r.add_argument("--batch", type=int, default=8)
    r.add_argument("--limit", type=int, help="only the first LIMIT images of the subset")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--out", default=str(RESULTS))
    r.add_argument("--reverse", action="store_true", help="work from the end of the subset backwards")
    r.add_argument("--merge-eval", type=Path, help="before each batch, import adam100 rows from this evaluate store")
    r.set_defaults(func=run)
    e = sub.add_parser("import-eval", help="copy an evaluation run's paper-default Opti-CAM rows in as adam100")
    e.add_argument("db", type=Path)
    e.add_argument("--out", default=str(RESULTS))
    e.set_defaults(func=import_eval)
    s = sub.add_parser("summary")
    s.add_argument("--set", choices=["explore", "screen", "confirm"])
    s.add_argument("--out", default=str(RESULTS))
    s.add_argument("--plot")
    s.set_defaults(func=summary)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
