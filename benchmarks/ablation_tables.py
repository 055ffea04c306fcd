"""The paper's three Opti-CAM ablations, as Markdown tables, from one ``opticam evaluate --json`` summary.

The run (docs/results.md, "Ablations") explains each image with Opti-CAM under several per-method options in
one command, e.g. ``opticam(objective=diff,normalization=max)``, ``opticam(layer=blocks.4)``,
``gradcam(layer=blocks.4)``, ``opticam(iterations=25)``. This script groups its rows by what differs from the
paper's settings (read from the summary's ``method_settings``, not from the keys' spelling):

- objective x normalization (the paper's Table 6, VGG16, beside);
- depth: Opti-CAM and Grad-CAM at each layer, the paper's Table A.13 (VGG16's layers) in a table of its own;
- iterations: AG against the number of optimizer steps (Fig. A5's analogue), with the steps actually taken and
  the time relative to 100 iterations **in the same run** (absolute times on a shared machine are noise).

Usage: ``python benchmarks/ablation_tables.py results/lite0-ablation-100.json [--model efficientnet_lite0]``
(``--model`` is only used to print each layer's feature-map shape, one forward pass on a blank image).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PAPER = {"iterations": 100, "objective": "mask", "normalization": "range"}
"""Opti-CAM as the paper runs it (Adam lr 0.1, 100 iterations, mask objective, range normalization)."""

TABLE6_VGG16 = {  # (objective, normalization): (AD, AG, AI), the paper's Table 6, VGG16, 1000 images
    ("mask", "range"): (1.4, 66.3, 92.5),
    ("diff", "range"): (7.1, 18.5, 54.9),
    ("mask", "max"): (1.6, 66.2, 90.3),
    ("diff", "max"): (6.8, 17.8, 54.5),
    ("mask", "sigmoid"): (5.0, 18.3, 57.5),
    ("diff", "sigmoid"): (6.5, 10.0, 45.3),
}
TABLE_A13_VGG16 = [  # layer index, deepest first: (AD, AG, AI), the paper's Table A.13
    (42, (1.4, 66.0, 92.5)),
    (36, (1.7, 66.1, 90.3)),
    (29, (1.6, 78.0, 93.9)),
    (26, (1.7, 80.1, 93.7)),
    (16, (2.3, 72.4, 89.1)),
    (6, (13.5, 23.5, 50.2)),
]


def _three(values: Mapping[str, Any]) -> str:
    return " / ".join(f"{values[k]:.1f}" for k in ("AD", "AG", "AI"))


def _differs(settings: Mapping[str, Any], default_layer: str) -> dict[str, Any]:
    """What an Opti-CAM row's settings change from the paper's (layer counted against the run's layer)."""
    out = {k: settings[k] for k in PAPER if settings.get(k) != PAPER[k]}
    if settings.get("layer") not in (None, default_layer):
        out["layer"] = settings["layer"]
    return out


def feature_shapes(model_name: str, layers: list[str]) -> dict[str, str]:
    """``C x h x w`` of each named layer's output for one blank image at the model's input size."""
    import torch

    from opticam.models import find_layer, load_model

    loaded = load_model(model_name)
    shapes: dict[str, str] = {}

    def record(name: str):
        def hook(_module, _inputs, output) -> None:  # returns None: the output passes on unchanged
            shapes.setdefault(name, " x ".join(map(str, output.shape[1:])))

        return hook

    handles = [find_layer(loaded.model, name).register_forward_hook(record(name)) for name in layers]
    try:
        with torch.no_grad():
            loaded.model(torch.zeros(1, loaded.preprocess.channels, *loaded.preprocess.input_size))
    finally:
        for h in handles:
            h.remove()
    return shapes


def tables(summary: Mapping[str, Any], model_name: str | None = None) -> str:
    """The three Markdown tables (a table is left out when the run has no row for it)."""
    methods, settings = summary["methods"], summary["method_settings"]
    default_layer = summary["config"]["layer"]
    opticam = {k: _differs(settings[k], default_layer) for k in methods if settings[k]["method"] == "opticam"}
    paper = [k for k, d in opticam.items() if not d]
    if len(paper) != 1:
        raise SystemExit(f"expected one Opti-CAM row with the paper's settings, found {paper}")
    base = paper[0]
    out: list[str] = []

    grid = {k: d for k, d in opticam.items() if set(d) <= {"objective", "normalization"}}
    if len(grid) > 1:
        out += ["| objective | normalization | n | AD / AG / AI (ours) | AD / AG / AI (paper, VGG16) |",
                "| --- | --- | ---: | --- | --- |"]  # fmt: skip
        for (objective, normalization), reference in TABLE6_VGG16.items():
            key = next((k for k in grid if settings[k]["objective"] == objective
                        and settings[k]["normalization"] == normalization), None)  # fmt: skip
            if key is not None:
                row = methods[key]
                out.append(f"| {objective} | {normalization} | {row['n']} | {_three(row)} | "
                           f"{' / '.join(map(str, reference))} |")  # fmt: skip
        out.append("")

    depth = {k: d["layer"] for k, d in opticam.items() if set(d) == {"layer"}}
    if depth:
        layers = [default_layer, *depth.values()]
        gradcam = {settings[k].get("layer"): k for k in methods if settings[k]["method"] == "gradcam"}
        shapes = feature_shapes(model_name, layers) if model_name else {}
        out += ["| layer | feature maps | Opti-CAM AD / AG / AI | Grad-CAM AD / AG / AI |",
                "| --- | --- | --- | --- |"]  # fmt: skip
        for layer, key in zip(layers, [base, *depth], strict=True):
            cam = gradcam.get(layer)
            out.append(f"| `{layer}` | {shapes.get(layer, '')} | {_three(methods[key])} | "
                       f"{_three(methods[cam]) if cam else '-'} |")  # fmt: skip
        # The paper's layers are VGG16's, not these: its rows stand apart, never paired with ours by position.
        out += ["", "| paper, VGG16 layer index (deepest first) | AD / AG / AI |", "| ---: | --- |"]
        out += [f"| {index} | {' / '.join(map(str, values))} |" for index, values in TABLE_A13_VGG16]
        out.append("")

    steps = {k: d["iterations"] for k, d in opticam.items() if set(d) == {"iterations"}}
    if steps:
        t100 = methods[base]["seconds_per_image"]
        rows = sorted([(100, base), *((n, k) for k, n in steps.items())])
        out += ["| iterations | n | AD / AG / AI | AG / AG(100) | steps taken (mean) | time / time(100) |",
                "| ---: | ---: | --- | ---: | ---: | ---: |"]  # fmt: skip
        for n, key in rows:
            row = methods[key]
            out.append(f"| {n} | {row['n']} | {_three(row)} | {row['AG'] / methods[base]['AG']:.2f} | "
                       f"{row.get('iterations') or 0:.1f} | {row['seconds_per_image'] / t100:.2f} |")  # fmt: skip
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summary", type=Path, help="the run's JSON summary (opticam evaluate --json)")
    parser.add_argument("--model", help="print each layer's feature-map shape for this model (one forward pass)")
    args = parser.parse_args(argv)
    print(tables(json.loads(args.summary.read_text()), args.model))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
