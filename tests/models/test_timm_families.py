"""timm families beyond ViT/DeiT: default layers and reshapes chosen automatically (random weights)."""

from __future__ import annotations

import pytest
import timm
import torch

from opticam import OptiCAM, PixelSpaceModel
from opticam.models import IMAGENET_MEAN, IMAGENET_STD, auto_reshape_transform, default_layer
from opticam.models.layers import ChannelsLastToMaps, TokensToMaps

# name, small overrides (to keep the test fast), expected default layer, expected reshape type, input size
# (the transformers need their 224; the CNNs run at 96 to spare the shared CPU)
FAMILIES = [
    (
        "swin_tiny_patch4_window7_224",
        {"embed_dim": 24, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)},
        "norm",
        ChannelsLastToMaps,
        224,
    ),
    ("convnext_atto", {"dims": (8, 16, 24, 32), "depths": (1, 1, 1, 1)}, "stages.3", type(None), 224),
    ("efficientnet_b0", {}, "bn2", type(None), 96),
    ("mobilenetv3_small_050", {}, "blocks.5", type(None), 96),
    ("regnetx_002", {}, "final_conv", type(None), 96),
    ("deit_tiny_distilled_patch16_224", {"depth": 2}, "blocks.1.norm1", TokensToMaps, 224),
]


@pytest.mark.parametrize("name,overrides,layer,reshape,size", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_family_default_layer_and_reshape(name, overrides, layer, reshape, size):
    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False, num_classes=10, **overrides).eval()
    assert default_layer(net) == layer
    assert isinstance(auto_reshape_transform(net), reshape)
    model = PixelSpaceModel(net, IMAGENET_MEAN, IMAGENET_STD)
    cam = OptiCAM(model, iterations=4, lr=0.5)  # no layer, no reshape given: both chosen automatically
    assert cam.target_layer_name == layer
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    result = cam.explain(x, [3])
    assert result.maps.shape == (1, 1, size, size) and torch.isfinite(result.maps).all()
    assert (result.objective_final > result.objective_initial).all()


def test_channels_last_to_maps():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)  # [B, H, W, C]
    maps = ChannelsLastToMaps()(x)
    assert maps.shape == (2, 5, 3, 4) and torch.equal(maps[1, :, 2, 3], x[1, 2, 3])
