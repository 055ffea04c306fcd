"""Sanity check by cascading model-parameter randomization (Adebayo et al., "Sanity checks for saliency
maps", NeurIPS 2018).

A saliency method that explains the *model* must change its maps when the model's learned weights are
destroyed. The check re-initializes the classifier from the output end backwards, one stage at a time and
cumulatively (stage ``k`` = the first ``k`` groups re-initialized), recomputes every method's map of the
same class at each stage, and measures how similar it still is to the intact model's map: Spearman rank
correlation (``scipy.stats.spearmanr``) and SSIM (``skimage.metrics.structural_similarity``, data range 1,
the maps being in [0, 1]). A method whose maps stay similar (close to 1) down to the input fails the check:
Fake-CAM, which ignores the model, must stay at exactly 1.

Stages (:func:`randomization_stages`): the classifier's top-level children with parameters, last first;
a child that is a container (``nn.Sequential`` / ``nn.ModuleList``, e.g. timm EfficientNet's ``blocks``
or ResNet's ``layer4``) contributes each of its own children as a stage; consecutive plain children are
grouped into one stage, except the last one (the classifier layer), which is always a stage of its own.
For EfficientNet-Lite0 that is ``classifier``, ``conv_head+bn2``, ``blocks.6`` ... ``blocks.0``,
``conv_stem+bn1``.

Re-initialization: a deep copy of the model; every module inside a stage that has ``reset_parameters()``
calls it (PyTorch's default init of that layer type, as Quantus's MPRT does). For batch norm that means
weight 1, bias 0 *and* running mean 0 / variance 1 (``BatchNorm.reset_parameters`` resets the running
statistics too): a randomized stage keeps nothing learned, statistics included. The global RNG is seeded
once with ``seed`` before the first stage, so a run is reproducible and every layer gets its own draw.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..errors import OpticamError
from ..methods.base import SaliencyMethod
from ..models.loading import LoadedModel

MethodFactory = Callable[[LoadedModel], SaliencyMethod]
"""Builds a method on a (possibly randomized) model; called anew at every stage."""


@dataclass(frozen=True)
class Stage:
    """One randomization step: ``modules`` are dotted names inside the model given to :func:`randomized_models`."""

    name: str
    modules: tuple[str, ...]


def _classifier(model: nn.Module) -> tuple[nn.Module, str]:
    """The bare classifier inside a :class:`PixelSpaceModel` (and the prefix of its names), or ``model``."""
    inner = getattr(model, "model", None)
    return (inner, "model.") if isinstance(inner, nn.Module) else (model, "")


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def randomization_stages(model: nn.Module) -> list[Stage]:
    """Top-down stages of ``model`` (a classifier or a :class:`PixelSpaceModel`): see the module doc."""
    classifier, prefix = _classifier(model)
    children = [(n, c) for n, c in classifier.named_children() if _has_parameters(c)]
    if not children:
        raise OpticamError("the model has no parameters to randomize")
    stages: list[Stage] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            names = tuple(reversed(pending))
            stages.append(Stage("+".join(names), tuple(prefix + n for n in names)))
            pending.clear()

    for index, (name, child) in enumerate(reversed(children)):
        if isinstance(child, nn.Sequential | nn.ModuleList) and len(child) > 1:
            flush()
            for sub, grandchild in reversed(list(child.named_children())):
                if _has_parameters(grandchild):
                    stages.append(Stage(f"{name}.{sub}", (f"{prefix}{name}.{sub}",)))
        else:
            pending.append(name)
            if index == 0:  # the output layer is a stage of its own
                flush()
    flush()
    return stages


def layer_stages(model: nn.Module) -> list[Stage]:
    """One stage per module with ``reset_parameters()``, last first (Quantus MPRT's granularity)."""
    named = [(n, m) for n, m in model.named_modules() if n and hasattr(m, "reset_parameters")]
    return [Stage(n, (n,)) for n, _ in reversed(named)]


def randomized_models(
    model: nn.Module, stages: Sequence[Stage], *, seed: int = 0, reseed_each_module: int | None = None
) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(stage name, model)``: first ``("intact", model)``, then one deep copy randomized cumulatively,
    stage after stage (the same copy, one more stage re-initialized each time; use it before the next).

    ``reseed_each_module``: seed the RNG with this value before *every* module instead of once with
    ``seed`` (Quantus's MPRT does this with its ``seed + 1``; only for comparing with it).
    """
    yield "intact", model
    copy_ = copy.deepcopy(model)
    modules = dict(copy_.named_modules())
    torch.manual_seed(seed)
    for stage in stages:
        for name in stage.modules:
            if name not in modules:
                raise OpticamError(f"stage {stage.name!r}: the model has no module {name!r}")
            for module in modules[name].modules():
                if hasattr(module, "reset_parameters"):
                    if reseed_each_module is not None:
                        torch.manual_seed(reseed_each_module)
                    with torch.no_grad():
                        module.reset_parameters()
        yield stage.name, copy_


# -- similarity ---------------------------------------------------------------------------------------
def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (flattened). Equal maps give exactly 1; a constant map has no
    ranking, so against a different map it gives 0 (scipy would give NaN)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if np.array_equal(a, b):
        return 1.0
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    from scipy.stats import spearmanr

    return float(spearmanr(a, b)[0])


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two ``[H, W]`` maps in [0, 1] (scikit-image, data range 1, its default 7 x 7 window)."""
    from skimage.metrics import structural_similarity

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if np.array_equal(a, b):
        return 1.0
    return float(structural_similarity(a, b, data_range=1.0))


# -- the check ------------------------------------------------------------------------------------------
@dataclass
class SanityResult:
    """Similarities to the intact model's maps, per method, stage and image.

    Attributes:
        stages: stage names; ``stages[0] == "intact"``.
        spearman, ssim: method -> ``[stages, images]`` arrays (NaN where a method failed at a stage).
        maps: method -> ``[stages, images, H, W]`` maps in [0, 1] (for the picture grid).
        errors: ``(method, stage, message)`` for each map that could not be computed.
    """

    stages: list[str]
    spearman: dict[str, np.ndarray]
    ssim: dict[str, np.ndarray]
    maps: dict[str, np.ndarray]
    errors: list[tuple[str, str, str]] = field(default_factory=list)

    def means(self) -> dict[str, dict[str, list[float | None]]]:
        """``{method: {"spearman": [mean per stage], "ssim": [...]}}`` (``None`` where no image had a value)."""

        def mean(values: np.ndarray) -> list[float | None]:
            out: list[float | None] = []
            for row in values:
                finite = row[np.isfinite(row)]
                out.append(float(finite.mean()) if finite.size else None)
            return out

        return {m: {"spearman": mean(self.spearman[m]), "ssim": mean(self.ssim[m])} for m in self.spearman}


def sanity_check(
    loaded: LoadedModel,
    x: torch.Tensor,
    targets: torch.Tensor,
    methods: dict[str, MethodFactory],
    *,
    stages: Sequence[Stage] | None = None,
    seed: int = 0,
    reseed_each_module: int | None = None,
    progress: Callable[[str, str], None] | None = None,
) -> SanityResult:
    """Run the cascading randomization on images ``x`` (``[B, 3, H, W]`` in [0, 1]) for classes ``targets``.

    Every method is rebuilt on each stage's model with its factory and explains the same ``targets``. The
    intact model's maps are the reference, so the first stage scores 1 by definition.
    ``progress(stage, method)`` is called before each map computation.
    """
    stages = list(stages) if stages is not None else randomization_stages(loaded.model)
    names = ["intact", *(s.name for s in stages)]
    count, batch = len(names), x.shape[0]
    rho = {m: np.full((count, batch), np.nan) for m in methods}
    sim = {m: np.full((count, batch), np.nan) for m in methods}
    maps = {m: np.full((count, batch, *x.shape[-2:]), np.nan, dtype=np.float32) for m in methods}
    errors: list[tuple[str, str, str]] = []
    reference: dict[str, np.ndarray] = {}
    generator = randomized_models(loaded.model, stages, seed=seed, reseed_each_module=reseed_each_module)
    for k, (stage, model) in enumerate(generator):
        stage_loaded = dataclasses.replace(loaded, model=model)
        for method_name, factory in methods.items():
            if progress is not None:
                progress(stage, method_name)
            try:
                with torch.inference_mode(False):
                    result = factory(stage_loaded).explain(x, targets)
            except OpticamError as exc:
                if k == 0:
                    raise
                errors.append((method_name, stage, str(exc)))
                continue
            current = result.maps.detach().float().cpu()[:, 0].numpy()
            maps[method_name][k] = current
            if k == 0:
                reference[method_name] = current
            for i in range(batch):
                rho[method_name][k, i] = spearman(reference[method_name][i], current[i])
                sim[method_name][k, i] = ssim(reference[method_name][i], current[i])
    return SanityResult(names, rho, sim, maps, errors)


def sanity_markdown(result: SanityResult) -> str:
    """The table: one row per stage, a Spearman and an SSIM column per method (means over the images)."""
    means = result.means()
    head = ["stage"] + [f"{m} {kind}" for m in means for kind in ("ρ", "SSIM")]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([" --- "] * len(head)) + "|"]
    for k, stage in enumerate(result.stages):
        cells = [stage]
        for m in means:
            for kind in ("spearman", "ssim"):
                value = means[m][kind][k]
                cells.append("-" if value is None else f"{value:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = [
    "SanityResult",
    "Stage",
    "layer_stages",
    "randomization_stages",
    "randomized_models",
    "sanity_check",
    "sanity_markdown",
    "spearman",
    "ssim",
]
