"""Named Opti-CAM configurations: ``OptiCAM.from_preset(name, model, layer)`` and ``--preset`` on the CLI.

* ``paper``: the paper's algorithm (Adam, lr 0.1, 100 iterations, uniform start, constant rate).
* ``fast``: a third of the paper's model passes for the same or better AD / AG / AI on EfficientNet-Lite0
  (``docs/speed.md`` has the study): 32 iterations of Adam with a cosine-decayed learning rate starting at
  1.0, from the paper's uniform start, with the class **log-probability** of the masked image as the
  objective instead of its logit. The last is a change of objective, not only of optimizer.
"""

from __future__ import annotations

from .opticam_config import OptiCAMConfig

PRESETS: dict[str, OptiCAMConfig] = {
    "paper": OptiCAMConfig(),
    "fast": OptiCAMConfig(iterations=32, lr=1.0, schedule="cosine", objective="log-prob"),
}


def preset_config(name: str) -> OptiCAMConfig:
    """The named preset's configuration."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; use one of {sorted(PRESETS)}")
    return PRESETS[name]
