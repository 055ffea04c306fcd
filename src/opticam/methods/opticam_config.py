"""Opti-CAM's settings in one place: :class:`OptiCAMConfig`, whose defaults are the paper's algorithm.

Each field declares its option once, as an :class:`~opticam.options.Option` (kind, default, range or
choices, the paper's value, one line of help, whether it has a command-line flag, whether it only changes
the speed). Everything else reads :func:`opticam_options`: :class:`~opticam.OptiCAM` keeps a config, the
presets (:mod:`opticam.methods.presets`) are instances of it, the method registry declares ``opticam``'s
options from it (and so what a run records: every option but the speed-only ones), and the command line
builds its Opti-CAM flags from the options that have one (:func:`opticam.cli.opticam_args.add_opticam_arguments`).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from ..errors import ConfigValueError
from ..options import Option

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


def _opt(kind: Any, default: Any, help: str, *, flag: bool = False, **declared: Any) -> Any:
    """A field whose :class:`~opticam.options.Option` is its one declaration (named after the field by
    :func:`opticam_options`); ``flag``: the command line has ``--<name>`` for it."""
    return field(default=default, metadata={"option": Option("field", kind, default, help, **declared), "flag": flag})


@dataclass(frozen=True)
class OptiCAMConfig:
    """How Opti-CAM optimizes one map per image; the defaults are the paper's (appendix A).

    Each field declares its option once (:func:`opticam_options`): a bad value raises
    :class:`~opticam.errors.ConfigValueError` (a ``ValueError``) when the config is made, naming the option
    and what it accepts; its ``field`` names the option.
    """

    iterations: int = _opt("int", 100, "most optimizer steps per image", low=0, paper=100, flag=True)
    lr: float = _opt("float", 0.1, "Adam's learning rate", low=0, low_open=True, paper=0.1, flag=True)
    objective: Objective = _opt(
        "choice",
        "mask",
        "what the optimization maximizes: the masked image's class logit (mask, the paper's), "
        "-|logit change| (diff), masked minus inverse-masked logit (io-mask), or log-probability (log-prob)",
        choices=OBJECTIVES,
        paper="mask",
        flag=True,
    )
    normalization: Normalization = _opt(
        "choice", "range", "how the map is scaled to [0, 1]", choices=NORMALIZATIONS, paper="range", flag=True
    )
    tol: float = _opt(
        "float", 1e-10, "an image stops once its objective changes by less than this between two steps", low=0
    )
    early_stop: bool = _opt("bool", True, "stop each image at tol (false: always run every iteration)")
    relu: bool = _opt("bool", True, "ReLU on the captured activations, as the official code does")
    init: Init = _opt(
        "choice",
        "uniform",
        "start from uniform weights (the paper's u = 0) or from Grad-CAM's channel weights",
        choices=INITS,
        paper="uniform",
    )
    init_mix: float = _opt(
        "float", 0.5, "share of the uniform weights in the gradcam start", low=0, low_open=True, high=1
    )
    schedule: Schedule = _opt(
        "choice",
        "constant",
        "learning-rate schedule: constant (paper), cosine decay, or warmup-cosine",
        choices=SCHEDULES,
        paper="constant",
    )
    coarse_size: int = _opt(
        "int",
        0,
        "side in pixels of the images in the first coarse_iterations steps (0: every step at full size); "
        "a pass at 112 px costs about a third of one at 224 on a CPU",
        low=0,
        flag=True,
    )
    coarse_iterations: int = _opt(
        "int",
        0,
        "how many of the first steps run at coarse_size (the rest, and the final map, at full size)",
        low=0,
        flag=True,
    )
    precision: Precision = _opt(
        "choice",
        "float32",
        "autocast dtype of the model passes in the loop (u and the map stay float32)",
        choices=PRECISIONS,
    )
    batch_invariant: bool = _opt("bool", False, "optimize the images of a batch one at a time (bit for bit alone)")
    channels_last: bool = _opt("bool", False, "channels-last memory format for the loop's passes", speed_only=True)
    compile: bool = _opt("bool", False, "torch.compile the loop's model passes", speed_only=True)

    def __post_init__(self) -> None:
        for option in opticam_options():  # each value in its option's type and range (an int lr becomes 0.5)
            object.__setattr__(self, option.name, option.check(getattr(self, option.name)))
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

    def replace(self, **changes: Any) -> OptiCAMConfig:
        """A copy with ``changes`` (validated again); an unknown name raises ``TypeError``."""
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise TypeError(f"unknown Opti-CAM option(s) {unknown}; known: {names}")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@functools.cache
def opticam_options() -> tuple[Option, ...]:
    """Opti-CAM's options, one per :class:`OptiCAMConfig` field, in field order, defaults the paper's.

    Each option's ``flag`` is its own name: the command line's Opti-CAM flags (:func:`flag_options`) and
    ``--preset`` fill plain ``opticam``'s options under these names
    (:func:`opticam.methods.registry.specs_with_flags`).
    """
    return tuple(
        dataclasses.replace(f.metadata["option"], name=f.name, flag=f.name) for f in dataclasses.fields(OptiCAMConfig)
    )


def flag_options() -> list[Option]:
    """The options the command line offers as ``--name`` flags (``--iterations``, ``--lr``, ...), in field order."""
    cli = {f.name for f in dataclasses.fields(OptiCAMConfig) if f.metadata["flag"]}
    return [o for o in opticam_options() if o.name in cli]


def preset_options(config: OptiCAMConfig) -> tuple[Option, ...]:
    """The options of a preset method (``opticam-fast``): ``config``'s values as defaults, no command-line flags."""
    return tuple(dataclasses.replace(o, default=getattr(config, o.name), flag=None) for o in opticam_options())
