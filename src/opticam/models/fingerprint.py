"""A fingerprint of a model's weights: what a trained explainer head records, so that it refuses another model.

Two models with the same architecture and the same parameter values have the same fingerprint, whatever
device or floating dtype they sit on (floating tensors are hashed as float32 on the CPU), and whatever their
Python class is called; changing one weight changes it.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def weights_fingerprint(model: nn.Module) -> str:
    """16 hex digits of the sha256 over the state dict: each entry's name, shape and values, in order."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        value = tensor.detach().to("cpu")
        if value.is_floating_point():
            value = value.to(torch.float32)
        digest.update(name.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
