"""Reshapes from a layer's output to feature maps ``[B, K, h, w]``: transformer tokens, channels-last maps.

Kept apart from layer finding (:mod:`.layers`) so that the model-family modules (:mod:`.huggingface`)
can build them without importing the layer logic that dispatches to those families.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

ReshapeTransform = Callable[[torch.Tensor], torch.Tensor]


class TokensToMaps:
    """Reshape transformer tokens ``[B, N, D]`` to maps ``[B, D, h, w]``.

    Drops the first ``prefix_tokens`` tokens (class token, distillation token, registers) and lays the
    remaining ``h * w`` patch tokens out row by row, as timm's and Hugging Face's ViT and DeiT order
    them. With ``grid=None`` the grid is taken as square. With ``prefix_tokens=None`` (a ``grid`` is then
    needed) the tokens the grid does not fill are the prefix: one for ViT, two for distilled DeiT, more
    with registers. Maps ``[B, K, h, w]`` (a convolutional layer of the same model) pass through as they
    are.
    """

    def __init__(self, prefix_tokens: int | None = 1, grid: tuple[int, int] | None = None) -> None:
        if prefix_tokens is None and grid is None:
            raise ValueError("TokensToMaps needs prefix_tokens or grid (or both)")
        self.prefix_tokens = prefix_tokens
        self.grid = grid

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() == 4:
            return tokens
        if tokens.dim() != 3:
            raise ValueError(f"expected tokens [B, N, D], got shape {tuple(tokens.shape)}")
        prefix = self.prefix_tokens
        if prefix is None:
            prefix = tokens.shape[1] - self.grid[0] * self.grid[1]
            if prefix < 0:
                raise ValueError(f"{tokens.shape[1]} tokens do not fill a {self.grid[0]} x {self.grid[1]} grid")
        patches = tokens[:, prefix:, :]
        n = patches.shape[1]
        if self.grid is not None:
            h, w = self.grid
        else:
            h = w = math.isqrt(n)
        if h * w != n:
            raise ValueError(f"{n} patch tokens (after dropping {prefix}) do not fill a {h} x {w} grid")
        return patches.reshape(patches.shape[0], h, w, patches.shape[2]).permute(0, 3, 1, 2)

    def __repr__(self) -> str:
        return f"TokensToMaps(prefix_tokens={self.prefix_tokens}, grid={self.grid})"


class ChannelsLastToMaps:
    """Reshape channels-last maps ``[B, H, W, C]`` (timm's Swin blocks and norm) to ``[B, C, H, W]``.

    Token sequences ``[B, N, C]`` are laid on a square grid first (older Swin layouts).
    """

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if output.dim() == 3:
            return TokensToMaps(prefix_tokens=0)(output)
        if output.dim() != 4:
            raise ValueError(f"expected channels-last maps [B, H, W, C], got shape {tuple(output.shape)}")
        return output.permute(0, 3, 1, 2)

    def __repr__(self) -> str:
        return "ChannelsLastToMaps()"
