"""Named Opti-CAM configurations: ``OptiCAM.from_preset(name, model, layer)`` and ``--preset`` on the CLI.

* ``paper``: the paper's algorithm (Adam, lr 0.1, 100 iterations, uniform start, constant rate).
* ``fast``: a third of the paper's model passes (34 instead of 102 per image) for the same or better
  AD / AG / AI on EfficientNet-Lite0 (200 ImageNet samples, ground-truth class; ``docs/speed.md`` has the
  study): 32 iterations of Adam with a cosine-decayed learning rate starting at 1.0, from the paper's
  uniform start, with the class **log-probability** of the masked image as the objective instead of its
  logit. The last is a change of objective, not only of optimizer: the logit objective with the same
  optimizer settings falls several AG points short at this budget (see the docs).
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"iterations": 100, "lr": 0.1, "init": "uniform", "schedule": "constant"},
    "fast": {"iterations": 32, "lr": 1.0, "init": "uniform", "schedule": "cosine", "objective": "log-prob"},
}


def preset_options(name: str) -> dict[str, Any]:
    """A copy of the named preset's ``OptiCAM`` keyword arguments."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; use one of {sorted(PRESETS)}")
    return dict(PRESETS[name])
