"""Named Opti-CAM configurations: ``OptiCAM.from_preset(name, model, layer)`` and ``--preset`` on the CLI.

* ``paper``: the paper's algorithm (Adam, lr 0.1, 100 iterations, uniform start, constant rate).
* ``fast``: a third of the paper's model passes for the same or better AD / AG / AI on EfficientNet-Lite0
  (``docs/speed.md`` has the study): 32 iterations of Adam with a cosine-decayed learning rate starting at
  1.0, from the paper's uniform start, with the class **log-probability** of the masked image as the
  objective instead of its logit. The last is a change of objective, not only of optimizer.
* ``tenth``: a tenth of the paper's time per image (9 steps: about 0.096 x Adam-100's passes, counting a
  backward pass as two forward ones): Adam at a cosine-decayed rate starting at 2.0 on the log-probability
  objective. It does **not** reach the paper's AG (``docs/speed.md``, "A tenth": about 58 against 67 on
  the sample images used to choose it); it is the best of the ideas measured at that budget.
"""

from __future__ import annotations

from .opticam_config import OptiCAMConfig

PRESETS: dict[str, OptiCAMConfig] = {
    "paper": OptiCAMConfig(),
    "fast": OptiCAMConfig(iterations=32, lr=1.0, schedule="cosine", objective="log-prob"),
    "tenth": OptiCAMConfig(iterations=9, lr=2.0, schedule="cosine", objective="log-prob"),
}


def preset_config(name: str) -> OptiCAMConfig:
    """The named preset's configuration."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; use one of {sorted(PRESETS)}")
    return PRESETS[name]
