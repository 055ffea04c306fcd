"""Opti-CAM's settings in one place: :class:`OptiCAMConfig`, whose defaults are the paper's algorithm.

Everything that reads or writes Opti-CAM's options goes through this class: :class:`~opticam.OptiCAM`
keeps one, the presets (:mod:`opticam.methods.presets`) are instances of it, an evaluation run records
:meth:`OptiCAMConfig.recorded` in its configuration, and the command line builds its Opti-CAM flags from
the fields marked ``flag`` (:func:`opticam.cli.common.add_opticam_arguments`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from ..errors import ConfigValueError

Objective = Literal["mask", "diff", "io-mask", "log-prob"]
Normalization = Literal["range", "max", "sigmoid"]
Init = Literal["uniform", "gradcam"]
Schedule = Literal["constant", "cosine", "warmup-cosine"]
Precision = Literal["float32", "bfloat16", "float16"]

OBJECTIVES: tuple[str, ...] = get_args(Objective)
NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)
INITS: tuple[str, ...] = get_args(Init)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
PRECISIONS: tuple[str, ...] = get_args(Precision)


def _opt(default: Any, help: str, *, flag: bool = False, record: str = "if-changed", choices: tuple = ()) -> Any:
    """A field with what the CLI and the run record need to know about it.

    ``record``: ``always`` (part of every run's configuration), ``if-changed`` (recorded when off the
    paper's value), ``never`` (speed only: the same maps either way).
    """
    return field(default=default, metadata={"help": help, "flag": flag, "record": record, "choices": choices})


@dataclass(frozen=True)
class OptiCAMConfig:
    """How Opti-CAM optimizes one map per image; the defaults are the paper's (appendix A).

    Invalid values raise :class:`~opticam.errors.ConfigValueError` (a ``ValueError``) when the config is made,
    saying which value and why; its ``field`` names the option.
    """

    iterations: int = _opt(100, "most optimizer steps per image (paper: 100)", flag=True, record="always")
    lr: float = _opt(0.1, "Adam's learning rate (paper: 0.1)", flag=True, record="always")
    objective: Objective = _opt(
        "mask",
        "what the optimization maximizes: the masked image's class logit (mask, the paper's), "
        "-|logit change| (diff), masked minus inverse-masked logit (io-mask), or log-probability (log-prob)",
        flag=True,
        record="always",
        choices=OBJECTIVES,
    )
    normalization: Normalization = _opt(
        "range", "how the map is scaled to [0, 1]", flag=True, record="always", choices=NORMALIZATIONS
    )
    tol: float = _opt(1e-10, "an image stops once its objective changes by less than this between two steps")
    early_stop: bool = _opt(True, "stop each image at tol (False: always run every iteration)")
    relu: bool = _opt(True, "ReLU on the captured activations, as the official code does")
    init: Init = _opt(
        "uniform",
        "start from uniform weights (the paper's u = 0) or from Grad-CAM's channel weights",
        choices=INITS,
    )
    init_mix: float = _opt(0.5, "share of the uniform weights in the gradcam start, in (0, 1]")
    schedule: Schedule = _opt(
        "constant", "learning-rate schedule: constant (paper), cosine decay, or warmup-cosine", choices=SCHEDULES
    )
    coarse_size: int = _opt(
        0,
        "side in pixels of the images in the first coarse_iterations steps (0: every step at full size); "
        "a pass at 112 px costs about a third of one at 224 on a CPU",
        flag=True,
    )
    coarse_iterations: int = _opt(
        0, "how many of the first steps run at coarse_size (the rest, and the final map, at full size)", flag=True
    )
    precision: Precision = _opt(
        "float32", "autocast dtype of the model passes in the loop (u and the map stay float32)", choices=PRECISIONS
    )
    batch_invariant: bool = _opt(False, "optimize the images of a batch one at a time (bit for bit alone)")
    channels_last: bool = _opt(False, "channels-last memory format for the loop's passes", record="never")
    compile: bool = _opt(False, "torch.compile the loop's model passes", record="never")

    def __post_init__(self) -> None:
        for name, allowed in (
            ("objective", OBJECTIVES),
            ("normalization", NORMALIZATIONS),
            ("init", INITS),
            ("schedule", SCHEDULES),
            ("precision", PRECISIONS),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigValueError(f"unknown {name} {getattr(self, name)!r}; use one of {allowed}", name)
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 0:
            raise ConfigValueError(f"iterations must be a whole number >= 0, got {self.iterations!r}", "iterations")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigValueError(f"lr must be a positive number, got {self.lr}", "lr")
        if not (math.isfinite(self.tol) and self.tol >= 0):
            raise ConfigValueError(f"tol must be a number >= 0, got {self.tol}", "tol")
        for name in ("coarse_size", "coarse_iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigValueError(f"{name} must be a whole number >= 0, got {value!r}", name)
        if self.coarse_iterations > self.iterations:
            raise ConfigValueError(
                f"coarse_iterations ({self.coarse_iterations}) cannot exceed iterations ({self.iterations})",
                "coarse_iterations",
                ("iterations",),
            )
        if self.coarse_iterations and not self.coarse_size:
            raise ConfigValueError(
                "coarse_iterations needs coarse_size (the side of the coarse images in pixels)",
                "coarse_iterations",
                ("coarse_size",),
            )
        if not 0 < self.init_mix <= 1:
            raise ConfigValueError(f"init_mix must be in (0, 1], got {self.init_mix}", "init_mix")

    def replace(self, **changes: Any) -> OptiCAMConfig:
        """A copy with ``changes`` (validated again); an unknown name raises ``TypeError``."""
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise TypeError(f"unknown Opti-CAM option(s) {unknown}; known: {names}")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def recorded(self) -> dict[str, Any]:
        """What an evaluation run records: the options that change maps (``always`` ones, plus any other off
        the paper's value), so that a changed default can never mix into an earlier run's rows."""
        paper = OptiCAMConfig()
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            rule = f.metadata["record"]
            if f.name == "init_mix":
                if self.init != "uniform":  # only the gradcam start reads it
                    out[f.name] = value
            elif rule == "always" or (rule == "if-changed" and value != getattr(paper, f.name)):
                out[f.name] = value
        return out


def flag_fields() -> list[dataclasses.Field]:
    """The fields the command line offers as ``--name`` flags, in declaration order."""
    return [f for f in dataclasses.fields(OptiCAMConfig) if f.metadata["flag"]]
