"""Named Opti-CAM configurations: ``OptiCAM.from_preset(name, model, layer)`` and ``--preset`` on the CLI.

* ``paper``: the paper's algorithm (Adam, lr 0.1, 100 iterations, uniform start, constant rate).
* ``fast``: about a third of the paper's model passes for the same quality on EfficientNet-Lite0
  (measured on 200 ImageNet samples, ground-truth class; ``docs/speed.md`` has the table): a warm start
  from Grad-CAM's channel weights and a cosine-decayed, larger learning rate.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"iterations": 100, "lr": 0.1, "init": "uniform", "schedule": "constant"},
    "fast": {"iterations": 32, "lr": 0.3, "init": "gradcam", "init_mix": 0.1, "schedule": "cosine"},
}


def preset_options(name: str) -> dict[str, Any]:
    """A copy of the named preset's ``OptiCAM`` keyword arguments."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; use one of {sorted(PRESETS)}")
    return dict(PRESETS[name])
