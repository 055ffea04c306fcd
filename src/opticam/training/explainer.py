"""Training an explainer head for amortized Opti-CAM (``opticam train-explainer``), seeded and resumable.

The head (:class:`~opticam.methods.explainer_head.ExplainerHead`) is trained with the classifier frozen, in
up to two stages:

1. **distillation** (optional, ``distill_epochs`` over a targets file): regress the head's ``softmax(u)`` onto
   paper Opti-CAM's optimized channel weights for the same images (cross-entropy), on the images as they are.
   The targets are computed once (``benchmarks/distill_targets.py``); the features are captured once.
2. **the Opti-CAM objective** (``epochs``): maximize the objective of the image masked by the head's map,
   :func:`head_objective`, which is Opti-CAM's own (:func:`opticam.methods.opticam_maths.objective` on
   :func:`~opticam.methods.opticam_maths.saliency_mask`), on randomly cropped and flipped images
   (:func:`opticam.training.data.augment`). The target is each image's predicted class, or its label.

Every draw (the head's initialization, the order of the images, the augmentation) comes from generators
seeded by ``seed`` and the epoch, so the same settings give the same head, and a run interrupted after epoch
``e`` continues from its checkpoint (``OUT.partial``, written after every epoch) to the same result as one
that was never interrupted.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ..errors import UsageError
from ..methods.base import frozen
from ..methods.explainer_head import ExplainerHead, HeadInfo, load_head, save_head
from ..methods.opticam import OptiCAM
from ..methods.opticam_config import Normalization, Objective
from ..methods.opticam_maths import objective, saliency_mask
from ..models.fingerprint import weights_fingerprint
from ..models.loading import LoadedModel
from .data import TrainingImages, augment

PARTIAL_FORMAT = "opticam-explainer-training/1"


@dataclass(frozen=True)
class TrainSettings:
    """How a head is trained (recorded in the head file; a checkpoint resumes only with the same settings).

    Attributes:
        epochs: passes over the images on the Opti-CAM objective.
        batch_size: images per step.
        lr: Adam's learning rate for the head.
        seed: seeds every draw.
        objective: the Opti-CAM objective maximized (``log-prob``: the fast preset's; ``mask``: the paper's).
        normalization: how the map is scaled to [0, 1] (as Opti-CAM's option).
        augment: random resized crops and flips in the objective stage.
        target: ``pred`` (each image's predicted class) or ``labels`` (the source's labels).
        hidden: the head's width.
        distill_epochs: epochs of distillation onto a targets file before the objective stage.
    """

    epochs: int = 5
    batch_size: int = 16
    lr: float = 1e-3
    seed: int = 0
    objective: Objective = "log-prob"
    normalization: Normalization = "range"
    augment: bool = True
    target: Literal["pred", "labels"] = "pred"
    hidden: int = 64
    distill_epochs: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "distill_epochs"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 0, got {getattr(self, name)}")
        if self.epochs + self.distill_epochs < 1:
            raise UsageError("nothing to train: give --epochs or --distill-epochs of at least 1")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not self.lr > 0 or self.lr != self.lr or self.lr == float("inf"):
            raise UsageError(f"--lr must be a finite number > 0, got {self.lr}")
        if self.hidden < 1:
            raise UsageError(f"--hidden must be at least 1, got {self.hidden}")


@dataclass(frozen=True)
class DistillTargets:
    """Paper Opti-CAM's weights for some training images: ``keys`` (matched to the images' keys), the class
    explained and the weights ``[N, K]``."""

    keys: list[str]
    classes: torch.Tensor
    weights: torch.Tensor
    fingerprint: str
    layer: str

    @classmethod
    def load(cls, path: str | Path) -> DistillTargets:
        """A merged targets file of ``benchmarks/distill_targets.py`` (``files``, ``classes``, ``weights``)."""
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"--distill {path}: no such file")
        try:
            record = torch.load(path, map_location="cpu", weights_only=True)
            return cls(
                list(record["files"]),
                record["classes"].long(),
                record["weights"].float(),
                record["weights_fingerprint"],
                record["layer"],
            )
        except Exception as exc:  # any damage to the file is one line
            raise UsageError(f"--distill {path}: not a distillation targets file ({exc})") from None


@dataclass
class TrainingOutcome:
    """What a training run gave: the head file, its info, and whether it resumed or found the head done."""

    path: Path
    info: HeadInfo
    resumed_from: int
    already_done: bool = False


def head_objective(
    model: torch.nn.Module,
    x: torch.Tensor,
    feats: torch.Tensor,
    u: torch.Tensor,
    classes: torch.Tensor,
    kind: Objective,
    normalization: Normalization,
    original: torch.Tensor | None = None,
) -> torch.Tensor:
    """Opti-CAM's objective ``[B]`` at weights ``u``: the same functions :class:`~opticam.OptiCAM` evaluates."""
    masks = saliency_mask(feats, u, tuple(x.shape[-2:]), normalization)
    return objective(model, x, masks, classes, kind, original)


def _capture(cam: OptiCAM, x: torch.Tensor, targets: torch.Tensor | None):
    """``(logits, classes, feats, alpha)``: the head's inputs, from Opti-CAM's capture pass with gradients."""
    logits, classes, feats, alpha = cam.features_and_gradcam(x, targets)
    return logits.detach(), classes, feats.detach(), alpha.detach()


def train_explainer(
    loaded: LoadedModel,
    layer: str | None,
    data: TrainingImages,
    out: str | Path,
    settings: TrainSettings,
    *,
    distill: DistillTargets | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> TrainingOutcome:
    """Train a head for ``loaded`` at ``layer`` (``None``: the model's usual layer) on ``data`` into ``out``.

    Resumes from ``out``'s checkpoint (``<out>.partial``) when one with the same model, layer, data and
    settings is there; a finished head with the same ones is returned as it is.

    Raises:
        UsageError: labels asked for and the data has none, distillation without targets, a targets file for
            other weights or layer, or a checkpoint or head file made with other settings.
    """
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    model = loaded.model.to(device).eval()
    cam = OptiCAM(model, layer or loaded.target_layer, loaded.reshape_transform, warn_pixel_space=False)
    cam.target_layer(data.images[:1].float().to(device))
    layer_name = cam.target_layer_name
    fingerprint = weights_fingerprint(model)
    if settings.target == "labels" and data.labels is None:
        raise UsageError("--target labels: these images have no labels (give a labels.csv, synset folders or an .npz)")
    if settings.distill_epochs and distill is None:
        raise UsageError("--distill-epochs needs --distill FILE (paper Opti-CAM's weights for the images)")
    if distill is not None and (distill.fingerprint, distill.layer) != (fingerprint, layer_name):
        raise UsageError(
            f"--distill: the targets were computed for weights {distill.fingerprint} at layer {distill.layer}, "
            f"not weights {fingerprint} at {layer_name}"
        )
    identity = {
        "model": loaded.name,
        "layer": layer_name,
        "weights_fingerprint": fingerprint,
        "settings": asdict(settings),
        "images": len(data),
        "data": _data_digest(data),
    }
    if out.exists():
        head, info = load_head(out)
        if info.training.get("identity") != identity:
            raise UsageError(f"{out} holds a head trained otherwise; choose another --out or delete it")
        log(f"{out}: already trained with these settings")
        return TrainingOutcome(out, info, settings.epochs + settings.distill_epochs, already_done=True)

    torch.manual_seed(settings.seed)
    head = ExplainerHead(hidden=settings.hidden).to(device)
    optimizer = torch.optim.Adam(head.parameters(), lr=settings.lr)
    start, history, seconds = 0, [], 0.0
    if partial.exists():
        start, history, seconds = _resume(partial, identity, head, optimizer)
        log(f"resuming from {partial} after epoch {start}")
    cached = None
    if start < settings.distill_epochs:
        cached = _distill_inputs(cam, data, distill, device)
    with frozen(model):
        _train_epochs(cam, head, optimizer, data, settings, cached, partial, identity, history, start, seconds,
                      device, progress, log)  # fmt: skip
        channels = int(_capture(cam, data.images[:1].float().to(device), None)[2].shape[1])
    seconds = sum(h["seconds"] for h in history)
    info = HeadInfo(
        model=loaded.name,
        layer=layer_name,
        weights_fingerprint=fingerprint,
        channels=channels,
        hidden=settings.hidden,
        training={"identity": identity, "history": history, "seconds": round(seconds, 1)},
    )
    save_head(out, head.cpu(), info)
    partial.unlink(missing_ok=True)
    return TrainingOutcome(out, info, start)


def _train_epochs(cam, head, optimizer, data, settings, cached, partial, identity, history, start, seconds, device,
                  progress, log) -> None:  # fmt: skip
    """Epochs ``start`` to the end, a checkpoint after each (``history`` grows by one entry per epoch)."""
    total = settings.distill_epochs + settings.epochs
    for epoch in range(start, total):
        began = time.perf_counter()
        generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + epoch)
        if epoch < settings.distill_epochs:
            value = _distill_epoch(head, optimizer, cached, settings, generator)
            stage = "distill"
        else:
            value = _objective_epoch(cam, head, optimizer, data, settings, generator, device, progress, epoch, total)
            stage = f"objective-{settings.objective}"
        spent = time.perf_counter() - began
        history.append({"epoch": epoch + 1, "stage": stage, "value": round(value, 6), "seconds": round(spent, 2)})
        _checkpoint(partial, identity, head, optimizer, epoch + 1, history, seconds + spent)
        log(f"epoch {epoch + 1}/{total}: {stage} {value:.4f} ({spent:.0f} s)")


def _data_digest(data: TrainingImages) -> str:
    """16 hex digits over the images' keys and labels (which images, in which order, with which labels)."""
    import hashlib

    text = json.dumps([data.keys, data.labels.tolist() if data.labels is not None else None])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _checkpoint(path: Path, identity: dict[str, Any], head, optimizer, epoch: int, history, seconds: float) -> None:
    record = {
        "format": PARTIAL_FORMAT,
        "identity": json.dumps(identity, sort_keys=True),
        "epoch": epoch,
        "head": head.state_dict(),
        "optimizer": optimizer.state_dict(),
        "history": json.dumps(history),
        "seconds": seconds,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(record, tmp)
    tmp.replace(path)


def _resume(path: Path, identity: dict[str, Any], head, optimizer) -> tuple[int, list[dict[str, Any]], float]:
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
        ok = record.get("format") == PARTIAL_FORMAT
    except Exception:  # a damaged checkpoint is one line, and nothing is overwritten
        ok = False
    if not ok:
        raise UsageError(f"{path}: not a readable training checkpoint; delete it to start again")
    if json.loads(record["identity"]) != json.loads(json.dumps(identity, sort_keys=True)):
        raise UsageError(f"{path}: a training checkpoint with other settings or data; delete it or use the same ones")
    head.load_state_dict(record["head"])
    optimizer.load_state_dict(record["optimizer"])
    return int(record["epoch"]), json.loads(record["history"]), float(record["seconds"])


def _distill_inputs(cam: OptiCAM, data: TrainingImages, distill: DistillTargets | None, device):
    """``(feats, alpha, weights)`` of the images that have targets, captured once (for the target's class)."""
    assert distill is not None
    where = {key: i for i, key in enumerate(data.keys)}
    pairs = [(where[k], j) for j, k in enumerate(distill.keys) if k in where]
    if not pairs:
        raise UsageError("--distill: none of its images is among the training images (matched by file name)")
    feats, alphas = [], []
    for s in range(0, len(pairs), 16):
        chunk = pairs[s : s + 16]
        x = data.images[[i for i, _ in chunk]].float().to(device)
        _, _, f, a = _capture(cam, x, distill.classes[[j for _, j in chunk]].to(device))
        feats.append(f.half().cpu())
        alphas.append(a.cpu())
    return torch.cat(feats), torch.cat(alphas), distill.weights[[j for _, j in pairs]]


def _distill_epoch(head, optimizer, cached, settings: TrainSettings, generator: torch.Generator) -> float:
    feats, alphas, weights = cached
    order = torch.randperm(len(weights), generator=generator)
    device = next(head.parameters()).device
    total = 0.0
    for s in range(0, len(order), settings.batch_size):
        j = order[s : s + settings.batch_size]
        u = head(feats[j].float().to(device), alphas[j].to(device))
        loss = -(weights[j].to(device) * torch.log_softmax(u, dim=1)).sum(dim=1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(j)
    return total / len(order)


def _objective_epoch(
    cam: OptiCAM,
    head,
    optimizer,
    data: TrainingImages,
    settings: TrainSettings,
    generator,
    device,
    progress,
    epoch,
    total,
) -> float:
    order = torch.randperm(len(data), generator=generator)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(order), desc=f"epoch {epoch + 1}/{total}", unit="img", leave=False)
    value_sum = 0.0
    try:
        for s in range(0, len(order), settings.batch_size):
            j = order[s : s + settings.batch_size]
            x = data.images[j]
            x = (augment(x, generator) if settings.augment else x).float().to(device)
            labels = data.labels[j].to(device) if settings.target == "labels" and data.labels is not None else None
            logits, classes, feats, alpha = _capture(cam, x, labels)
            rows = torch.arange(len(j), device=x.device)
            u = head(feats, alpha)
            value = head_objective(
                cam.model, x, feats, u, classes, settings.objective, settings.normalization, logits[rows, classes]
            )
            optimizer.zero_grad(set_to_none=True)
            (-value.mean()).backward()
            optimizer.step()
            value_sum += float(value.detach().sum())
            if bar is not None:
                bar.update(len(j))
                bar.set_postfix(objective=f"{float(value.detach().mean()):.3f}")
    finally:
        if bar is not None:
            bar.close()
    return value_sum / len(order)
