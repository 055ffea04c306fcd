"""The paper's faithfulness metrics: Average Drop, Average Gain, Average Increase (method doc, section 3).

For N images, ``p_i`` is the softmax probability of the target class on the original image and ``o_i``
the same on the masked image ``x_i * M_i`` (pixel space, the same model):

    AD = 100/N sum_i max(p_i - o_i, 0) / p_i          lower is better
    AG = 100/N sum_i max(o_i - p_i, 0) / (1 - p_i)    higher is better (new in the paper)
    AI = 100/N sum_i [p_i < o_i]                      higher is better

Tensors in and out; the per-image terms are kept so that a result store can add them up later.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InputError, InputTypeError
from .declaration import Column, Metric, MetricInput, TableColumn, mean


@dataclass
class DropGainTerms:
    """Per-image ``p``, ``o`` and the AD / AG / AI terms (each in [0, 1], not yet times 100)."""

    p: torch.Tensor
    o: torch.Tensor
    drop: torch.Tensor
    gain: torch.Tensor
    increase: torch.Tensor


def _share(change: torch.Tensor, room: torch.Tensor) -> torch.Tensor:
    """``max(change, 0) / room``, and 0 where ``room`` is 0 (nothing can drop from 0 or be gained above 1)."""
    safe = torch.where(room > 0, room, torch.ones_like(room))
    return torch.where(room > 0, change.clamp(min=0) / safe, torch.zeros_like(room))


def drop_gain_terms(p: torch.Tensor, o: torch.Tensor) -> DropGainTerms:
    """The per-image terms of AD, AG and AI from probabilities ``p`` (original) and ``o`` (masked).

    A ``p`` of exactly 0 (drop) or 1 (gain) would divide by zero; the term is then 0, which is also its
    limit (nothing can drop from 0, nothing can be gained above 1).

    Raises:
        InputTypeError: not tensors. InputError: shapes that differ, or values that are not probabilities
            (outside [0, 1], NaN).
    """
    for name, value in (("p", p), ("o", o)):
        if not isinstance(value, torch.Tensor):
            raise InputTypeError(f"{name} must be a tensor of probabilities, got {type(value).__name__}")
    if p.shape != o.shape:
        raise InputError(f"p {tuple(p.shape)} and o {tuple(o.shape)} must have the same shape (one value per image)")
    p = p.float()
    o = o.float()
    for name, value in (("p", p), ("o", o)):
        if value.numel() and not bool(((value >= 0) & (value <= 1)).all()):
            raise InputError(f"{name} must hold probabilities in [0, 1] (NaN is not one)")
    # In float64: a float32 p below float32's smallest normal (1e-40) is an ordinary number there, so the
    # ratio is the formula's (p = 1e-40, o = 0 drops by 1), not a division by a clamped denominator.
    wide_p, wide_o = p.double(), o.double()
    drop = _share(wide_p - wide_o, wide_p).float()
    gain = _share(wide_o - wide_p, 1 - wide_p).float()
    increase = (p < o).float()
    return DropGainTerms(p=p, o=o, drop=drop, gain=gain, increase=increase)


def average_drop_gain_increase(p: torch.Tensor, o: torch.Tensor) -> dict[str, float]:
    """``{"AD": ..., "AG": ..., "AI": ...}`` in percent over the images."""
    terms = drop_gain_terms(p, o)
    return {
        "AD": 100 * float(terms.drop.mean()),
        "AG": 100 * float(terms.gain.mean()),
        "AI": 100 * float(terms.increase.mean()),
    }


@torch.no_grad()
def class_probabilities(
    model: nn.Module, images: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(p, o)``: target-class softmax probabilities on ``images`` and on ``images * maps``.

    ``maps`` is ``[B, 1, H, W]`` in [0, 1] at the images' resolution. Both batches go through the model
    in one forward pass.
    """
    batch = images.shape[0]
    probs = torch.softmax(model(torch.cat([images, images * maps.to(images.dtype)])).float(), dim=1)
    rows = torch.arange(batch, device=images.device)
    return probs[:batch][rows, classes], probs[batch:][rows, classes]


def _score(batch: MetricInput) -> list[dict[str, Any]]:
    p, o = class_probabilities(batch.model, batch.x, batch.maps, batch.classes)
    terms = drop_gain_terms(p, o)
    return [
        {"p": float(p[i]), "o": float(o[i]), "ad_term": float(d), "ag_term": float(g), "ai_term": int(a)}
        for i, (d, g, a) in enumerate(zip(terms.drop, terms.gain, terms.increase, strict=True))
    ]


def _aggregate(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "AD": mean([r["ad_term"] for r in rows], 100),
        "AG": mean([r["ag_term"] for r in rows], 100),
        "AI": mean([r["ai_term"] for r in rows], 100),
    }


METRIC = Metric(
    name="drop-gain",
    description="the paper's Average Drop, Average Gain and Average Increase (percent) on the masked image",
    columns=(
        Column("p", "REAL", "softmax prob of class_index, original image"),
        Column("o", "REAL", "same, masked image x * M (pixel space)"),
        Column("ad_term", "REAL", "max(p - o, 0) / p"),
        Column("ag_term", "REAL", "max(o - p, 0) / (1 - p)"),
        Column("ai_term", "INTEGER", "1 if p < o else 0"),
    ),
    score=_score,
    aggregate=_aggregate,
    table=(TableColumn("AD", "AD", "lower"), TableColumn("AG", "AG", "higher"), TableColumn("AI", "AI", "higher")),
    note="AD, AG, AI in percent (method doc, section 3). Fake-CAM is the sanity row: good AD/AI with almost "
    "no AG exposes what AD and AI miss.",
)
"""AD / AG / AI: two forward passes per image (the original and the masked image)."""
