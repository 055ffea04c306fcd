"""Target layers: by module, by name, automatically; wrong names; transformer token reshaping."""

from __future__ import annotations

import pytest
import torch

from opticam import LayerNotFoundError, OptiCAM, TokensToMaps, find_layer, load_model
from opticam.models.layers import auto_layer
from tests.tinymodels import tiny_images, tiny_pixel_model


def test_find_layer_by_dotted_name_and_index():
    loaded = load_model("resnet18", pretrained=False)
    assert find_layer(loaded.model, "layer4") is loaded.model.model.layer4
    assert find_layer(loaded.model, "layer4.-1") is loaded.model.model.layer4[-1]
    assert find_layer(loaded.model, "model.layer4.1.conv2") is loaded.model.model.layer4[1].conv2


def test_wrong_layer_name_lists_candidates():
    loaded = load_model("resnet18", pretrained=False)
    with pytest.raises(LayerNotFoundError) as info:
        OptiCAM(loaded.model, "layer44")
    message = str(info.value)
    assert "no layer named 'layer44'" in message and "layer4" in message and "Its last layers are" in message
    with pytest.raises(LayerNotFoundError):
        find_layer(loaded.model, "layer4.7")


def test_auto_layer_is_the_last_spatial_layer():
    loaded = load_model("resnet18", pretrained=False)
    assert auto_layer(loaded.model, torch.rand(1, 3, 64, 64)) is loaded.model.model.layer4
    model = tiny_pixel_model()
    assert auto_layer(model, tiny_images(1)) is model.model.features
    cam = OptiCAM(model, iterations=1)
    cam.explain(tiny_images(1))
    assert cam.target_layer_name == "features"


def test_tokens_to_maps_drops_prefix_tokens():
    tokens = torch.arange(2 * 6 * 3, dtype=torch.float32).view(2, 6, 3)  # 2 prefix + 2x2 patches, D=3
    maps = TokensToMaps(prefix_tokens=2, grid=(2, 2))(tokens)
    assert maps.shape == (2, 3, 2, 2)
    assert torch.equal(maps[0, :, 0, 1], tokens[0, 3])  # patch 1 = token 3 (row 0, column 1)
    assert torch.equal(maps[1, :, 1, 0], tokens[1, 4])
    with pytest.raises(ValueError, match="do not fill"):
        TokensToMaps(prefix_tokens=1)(torch.zeros(1, 6, 3))


@pytest.mark.parametrize("name,prefix", [("vit_tiny_patch16_224", 1), ("deit_tiny_distilled_patch16_224", 2)])
def test_transformers_end_to_end(name, prefix):
    loaded = load_model(name, pretrained=False)
    assert loaded.target_layer == "blocks.11.norm1"
    assert loaded.reshape_transform.prefix_tokens == prefix and loaded.reshape_transform.grid == (14, 14)
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    r = OptiCAM(loaded.model, loaded.target_layer, loaded.reshape_transform, iterations=2).explain(x, [1, 2])
    assert r.maps.shape == (2, 1, 224, 224) and torch.isfinite(r.maps).all()
    assert r.weights.shape == (2, loaded.model.model.embed_dim)


def test_token_layer_without_reshape_is_a_clear_error():
    loaded = load_model("vit_tiny_patch16_224", pretrained=False)
    cam = OptiCAM(loaded.model, "blocks.11.norm1", iterations=1)
    cam.reshape_transform = None
    with pytest.raises(ValueError, match="reshape_transform"):
        cam.explain(torch.rand(1, 3, 224, 224))
