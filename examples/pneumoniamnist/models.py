"""Two small PneumoniaMNIST classifiers for saliency experiments: a ResNet-style CNN and a Vision Transformer.

Both take ``[B, 1, 28, 28]`` grayscale chest X-rays with pixels in ``[0, 1]`` (normalization happens inside the
module, so a saliency method can mask or perturb the raw image) and return ``[B, 2]`` logits for
:data:`CLASS_NAMES` (``0 = normal``, ``1 = pneumonia``, the MedMNIST label order).

The file imports only ``torch`` so that anyone can load the trained weights beside it without installing
opticam::

    import torch, models
    model = models.cnn()
    model.load_state_dict(torch.load("cnn.pt", map_location="cpu", weights_only=True))

Layers to name for CAM methods:

* :func:`cnn`: ``layer3`` (the last residual stage, feature maps ``[B, 64, 7, 7]``).
* :func:`vit`: ``blocks.3.norm1`` (the last block's first LayerNorm, tokens ``[B, 1 + 49, 64]``; drop the
  class token and reshape the 49 patch tokens to the 7 x 7 patch grid).
"""

from __future__ import annotations

import torch
from torch import nn

CLASS_NAMES: tuple[str, str] = ("normal", "pneumonia")
"""Class names in logit order (MedMNIST PneumoniaMNIST labels: 0 normal, 1 pneumonia)."""

NUM_CLASSES: int = len(CLASS_NAMES)
IMAGE_SIZE: int = 28
"""Input height and width in pixels; inputs are ``[B, 1, 28, 28]`` floats in ``[0, 1]``."""

# Pixel statistics of the PneumoniaMNIST train split (uint8 / 255): the models normalize internally with these.
PIXEL_MEAN: float = 0.5766
PIXEL_STD: float = 0.1646

TARGET_LAYERS: dict[str, str] = {"cnn": "layer3", "vit": "blocks.3.norm1"}
"""The layer a CAM method should read for each factory (a dotted attribute path of the module)."""


class Normalize(nn.Module):
    """``(x - mean) / std`` with the train-split pixel statistics, so models accept raw ``[0, 1]`` images."""

    def __init__(self, mean: float = PIXEL_MEAN, std: float = PIXEL_STD) -> None:
        super().__init__()
        self.mean = mean
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


# --------------------------------------------------------------------------------------------------- CNN


class BasicBlock(nn.Module):
    """The ResNet basic block: two 3 x 3 conv-BN layers plus a (projected when the shape changes) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A CIFAR-style ResNet for 28 x 28 inputs: stem, three stages of basic blocks, global pooling, linear head.

    Spatial sizes are 28 (``layer1``), 14 (``layer2``) and 7 (``layer3``); ``layer3`` ends in a ReLU, so its
    output is the non-negative ``[B, C, 7, 7]`` feature map that the CAM family weights and sums. The head is a
    single linear layer after global average pooling, exactly the structure of the original CAM.
    """

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), blocks: int = 2, num_classes: int = 2) -> None:
        super().__init__()
        self.normalize = Normalize()
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        self.layer1 = self._stage(widths[0], widths[0], blocks, stride=1)
        self.layer2 = self._stage(widths[0], widths[1], blocks, stride=2)
        self.layer3 = self._stage(widths[1], widths[2], blocks, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # zero-init the last BN of each block: every block starts as the identity
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    @staticmethod
    def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_channels, out_channels, stride)]
        layers += [BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.normalize(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


# --------------------------------------------------------------------------------------------------- ViT


class Attention(nn.Module):
    """Multi-head self-attention (a fused qkv projection, like timm), written out so it needs no fused kernel."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """A pre-norm transformer block, ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))`` (timm's layout and names).

    ``norm1``'s output is the token tensor ``[B, 1 + 49, D]`` that CAM methods for ViTs read.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SmallViT(nn.Module):
    """A Vision Transformer for 28 x 28 inputs: 4 x 4 patches (a 7 x 7 grid of 49 tokens), a class token,
    learned position embeddings, ``depth`` pre-norm blocks, a final LayerNorm and a linear head on the class token.
    """

    def __init__(
        self,
        patch: int = 4,
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.1,
        num_classes: int = 2,
    ) -> None:
        super().__init__()
        self.grid = IMAGE_SIZE // patch
        self.normalize = Normalize()
        self.patch_embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid * self.grid, dim))
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(self.normalize(x)).flatten(2).transpose(1, 2)  # [B, 49, D]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(self.pos_drop(x)))
        return self.head(x[:, 0])


# --------------------------------------------------------------------------------------------------- factories


def cnn() -> SmallResNet:
    """The ResNet-style CNN (widths 16/32/64, two basic blocks per stage, ~0.17 M parameters); CAM layer
    ``layer3`` gives ``[B, 64, 7, 7]``. Untrained: load ``cnn.pt`` for the trained weights."""
    return SmallResNet()


def vit() -> SmallViT:
    """The Vision Transformer (patch 4, dim 64, 4 blocks of 4 heads, ~0.14 M parameters); CAM layer
    ``blocks.3.norm1`` gives tokens ``[B, 50, 64]``. Untrained: load ``vit.pt`` for the trained weights."""
    return SmallViT()
