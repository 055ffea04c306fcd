"""The learned explainer of amortized Opti-CAM: a small head that predicts Opti-CAM's channel weights in one pass.

Opti-CAM optimizes, per image, logits ``u`` over the ``K`` feature maps of a layer (``softmax(u)`` weighs them).
:class:`ExplainerHead` predicts ``u`` from what the capture pass already has: the feature maps ``A`` and
Grad-CAM's channel weights ``alpha`` for the target class (the mean gradient of the target score over each map,
read off the same pass). It sees each channel through a handful of per-image **descriptors**
(:func:`channel_descriptors`: the channel's mean and peak activation, its Grad-CAM weight, that weight times the
mean, how much the channel overlaps Grad-CAM's map, how concentrated it is, how much of it is zero; each
standardized over the channels of the image) plus a context vector (the descriptors averaged over the channels
that overlap Grad-CAM's map most), and a small MLP shared by all channels turns them into ``u_k``. So:

* the head depends on the class through ``alpha`` (the model's own gradient), never through a class
  embedding: it serves classes it never saw, and a model's class-sensitivity reaches the map;
* it has no per-channel parameters: the same head file works for any number of channels, and its size is
  a few thousand numbers (about 20 KB);
* it has no knowledge of the image beyond the layer's feature maps.

A head is saved with :func:`save_head` as a plain ``torch.save`` dict of tensors and text, loaded with
``weights_only=True`` (:func:`load_head`: no code runs from a head file), and carries :class:`HeadInfo`: the
model's name, the layer, a fingerprint of the model's weights (:func:`~opticam.models.fingerprint.weights_fingerprint`)
and the settings it was trained with. :func:`check_head` refuses a head used with another model or layer in
one line. Heads that ship with the package (``methods/heads/*.pt``), and those in the folders of
``$OPTICAM_HEADS``, are found by the model's fingerprint and layer (:func:`shipped_head`).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError, UsageError

FORMAT = "opticam-explainer-head/1"
"""The ``format`` entry of a head file; another value is refused."""

DESCRIPTORS = 7
"""How many numbers :func:`channel_descriptors` gives per channel."""

SHIPPED = Path(__file__).resolve().parent / "heads"
"""The folder of the heads that ship with the package (package data)."""

_EPS = 1e-8


def _standardize(v: torch.Tensor) -> torch.Tensor:
    """``(v - mean) / std`` over the channels (dim 1) of each image; a constant row becomes zeros."""
    centred = v - v.mean(dim=1, keepdim=True)
    return centred / (centred.pow(2).mean(dim=1, keepdim=True).sqrt() + _EPS)


def channel_descriptors(feats: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Per-channel descriptors ``[B, K, DESCRIPTORS]`` of feature maps ``[B, K, h, w]`` and Grad-CAM weights ``[B, K]``.

    In order: log(1 + mean of A_k), log(1 + max of A_k), alpha_k, alpha_k * mean(A_k), the cosine between
    A_k and Grad-CAM's map ``relu(sum_k alpha_k A_k)``, log(1 + max / mean) (how peaked), each standardized
    over the channels of the image; then the share of A_k's cells that are <= 0 (already in [0, 1]).
    """
    feats = feats.float()
    alpha = alpha.float().to(feats.device)
    flat = feats.flatten(2)
    mean, peak = flat.mean(dim=2), flat.amax(dim=2)
    gradcam = torch.relu(torch.einsum("bk,bkn->bn", alpha, flat))
    gradcam = gradcam / (gradcam.norm(dim=1, keepdim=True) + _EPS)
    unit = flat / (flat.norm(dim=2, keepdim=True) + _EPS)
    overlap = torch.einsum("bn,bkn->bk", gradcam, unit)
    peaked = torch.log1p(peak.clamp(min=0) / (mean.clamp(min=0) + 1e-6))
    zero = (flat <= 0).float().mean(dim=2)
    columns = [torch.log1p(mean.clamp(min=0)), torch.log1p(peak.clamp(min=0)), alpha, alpha * mean, overlap, peaked]
    return torch.stack([_standardize(c) for c in columns] + [zero], dim=-1)


class ExplainerHead(nn.Module):
    """Channel descriptors -> Opti-CAM's weight logits ``u`` ``[B, K]``: one MLP shared by every channel.

    Args:
        hidden: width of the MLP's two hidden layers.
        sharpness: how sharply the context attends to the channels that overlap Grad-CAM's map.
    """

    def __init__(self, hidden: int = 64, sharpness: float = 3.0) -> None:
        super().__init__()
        self.hidden = hidden
        self.sharpness = sharpness
        self.mlp = nn.Sequential(
            nn.Linear(2 * DESCRIPTORS, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, feats: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        d = channel_descriptors(feats, alpha)
        attention = torch.softmax(d[..., 4:5] * self.sharpness, dim=1)
        context = (attention * d).sum(dim=1, keepdim=True).expand_as(d)
        return self.mlp(torch.cat([d, context], dim=-1)).squeeze(-1)


@dataclass(frozen=True)
class HeadInfo:
    """What a head file says about itself.

    Attributes:
        model: the model's name as loaded (``efficientnet_lite0``, ``my.py:factory``).
        layer: the layer whose feature maps it reads (a dotted name).
        weights_fingerprint: the model's :func:`~opticam.models.fingerprint.weights_fingerprint`.
        channels: the layer's number of feature maps.
        hidden: the head's width (:class:`ExplainerHead`).
        training: the training settings and results (epochs, seed, images, seconds, ...), as JSON-ready values.
    """

    model: str
    layer: str
    weights_fingerprint: str
    channels: int
    hidden: int = 64
    training: dict[str, Any] = field(default_factory=dict)


def save_head(path: str | Path, head: ExplainerHead, info: HeadInfo) -> Path:
    """Write ``head`` and ``info`` to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "format": FORMAT,
        "info": json.dumps(asdict(info), sort_keys=True),
        "state_dict": {k: v.detach().cpu().clone() for k, v in head.state_dict().items()},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(record, tmp)
    tmp.replace(path)
    return path


def load_head(path: str | Path) -> tuple[ExplainerHead, HeadInfo]:
    """The head and its info from ``path`` (``weights_only=True``: a file that would run code is refused).

    Raises:
        UsageError: no such file. InputError: not a head file (corrupt, truncated, another format).
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"head {path}: no such file (train one with `opticam train-explainer`)")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise InputError(f"head {path}: not a readable explainer head ({_first_line(exc)})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise InputError(f"head {path}: not an explainer head of format {FORMAT}")
    try:
        info = HeadInfo(**json.loads(record["info"]))
        head = ExplainerHead(hidden=info.hidden)
        head.load_state_dict(record["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"head {path}: damaged explainer head ({_first_line(exc)})") from None
    return head.eval(), info


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def check_head(info: HeadInfo, source: str, fingerprint: str, layer: str) -> None:
    """Refuse, in one line, a head trained for other weights or another layer than ``fingerprint`` / ``layer``."""
    if info.weights_fingerprint != fingerprint:
        raise UsageError(
            f"head {source} was trained for model {info.model} (weights {info.weights_fingerprint}), not this "
            f"model (weights {fingerprint}); train a head for it with `opticam train-explainer`"
        )
    if info.layer != layer:
        raise UsageError(
            f"head {source} was trained at layer {info.layer}, not {layer}; use that layer or train a head for "
            f"{layer} with `opticam train-explainer --layer {layer}`"
        )


def file_digest(path: str | Path) -> str:
    """16 hex digits of the sha256 of a file's bytes (what a run records of the head it used)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


HEADS_ENV = "OPTICAM_HEADS"
"""Environment variable: more folders of heads (``os.pathsep``-separated), searched like the shipped ones, so that
``opticam-amortized`` finds your own heads by the model's fingerprint without ``head=``."""


def shipped_heads() -> list[Path]:
    """The head files found without ``head=``: those that ship with the package, then those in the folders
    of ``$OPTICAM_HEADS``; each folder's sorted by name."""
    folders = [SHIPPED] + [Path(p) for p in os.environ.get(HEADS_ENV, "").split(os.pathsep) if p]
    return [path for folder in folders for path in sorted(folder.glob("*.pt"))]


def shipped_head(fingerprint: str, layer: str) -> Path | None:
    """The shipped head trained for these weights at this layer, or ``None``."""
    for path in shipped_heads():
        _, info = load_head(path)
        if info.weights_fingerprint == fingerprint and info.layer == layer:
            return path
    return None


def shipped_digest() -> str:
    """16 hex digits over every shipped head's bytes: what a run records for ``head`` left at its default."""
    digest = hashlib.sha256()
    for path in shipped_heads():
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
