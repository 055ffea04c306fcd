"""Test doubles: tiny classifiers whose every step can be recomputed by hand, fixed maps for torchcam."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from opticam import PixelSpaceModel
from opticam.models.loading import LoadedModel, Preprocessing
from opticam.models.specs import DEFAULT_MODEL, IMAGENET_MEAN, IMAGENET_STD


class TinyNet(nn.Module):
    """conv(3->K, 3x3, stride ``stride``) -> ReLU ("features") -> global average pool -> linear(K -> C)."""

    def __init__(self, channels: int = 4, classes: int = 3, stride: int = 1, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, channels, 3, stride=stride, padding=1)
        self.features = nn.ReLU()
        self.head = nn.Linear(channels, classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(self.conv(x))
        return self.head(a.mean(dim=(2, 3)))


def tiny_pixel_model(**kwargs) -> PixelSpaceModel:
    """TinyNet behind a mean/std normalization, in eval mode."""
    return PixelSpaceModel(TinyNet(**kwargs), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)).eval()


def tiny_images(batch: int = 2, size: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


class FixedMaps:
    """torchcam's CAM-extractor interface over precomputed maps."""

    def __init__(self, model: nn.Module, maps: torch.Tensor) -> None:
        self.model = model
        self.maps = maps

    def __call__(self, class_idx=None, scores=None, normalized=True, **_):
        return [self.maps[:, 0]]

    def fuse_cams(self, cams):
        return cams[0]

    def _hooks_off(self):
        return nullcontext()


class MiniNet(nn.Module):
    """EfficientNet's layer names in miniature: conv_stem -> bn2 -> global_pool -> classifier (1000 classes)."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.conv_stem = nn.Conv2d(3, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(4, 1000)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.global_pool(self.bn2(self.conv_stem(x))))


def mini_model(device: str = "cpu") -> LoadedModel:
    """A :class:`LoadedModel` under the default model's name around :class:`MiniNet` (16 x 16 input, layer bn2):
    the command line's tests replace ``load_model`` with it, so that they run in milliseconds."""
    model = PixelSpaceModel(MiniNet(), IMAGENET_MEAN, IMAGENET_STD).eval().to(device)
    return LoadedModel(DEFAULT_MODEL, model, Preprocessing((16, 16)), [f"class {i}" for i in range(1000)], "bn2")
