"""Hugging Face transformers classifiers, built from tiny configs with random weights (no download)."""

from __future__ import annotations

import pytest
import torch

from opticam import LayerNotFoundError, OptiCAM, load_model
from opticam.models.huggingface import settings_from_processor
from opticam.models.layers import TokensToMaps

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install '.[test]')")

SIZE = 224


# ViT and DeiT share one tiny shape: 2 layers of width 32, 32-pixel patches (7 x 7 of them at SIZE 224).
VIT_LIKE = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    image_size=SIZE,
    patch_size=32,
    num_labels=5,
)


def tiny(kind: str):
    """A small randomly initialized transformers classifier of architecture ``kind`` (5 classes)."""
    torch.manual_seed(0)
    if kind == "vit":
        config = transformers.ViTConfig(**VIT_LIKE)
        return transformers.ViTForImageClassification(config).eval()
    if kind == "deit":
        config = transformers.DeiTConfig(**VIT_LIKE)
        return transformers.DeiTForImageClassificationWithTeacher(config).eval()
    if kind == "swin":
        config = transformers.SwinConfig(
            image_size=SIZE,
            patch_size=4,
            embed_dim=16,
            depths=[1, 1],
            num_heads=[1, 2],
            window_size=7,
            num_labels=5,
        )
        return transformers.SwinForImageClassification(config).eval()
    if kind == "convnext":
        config = transformers.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=5)
        return transformers.ConvNextForImageClassification(config).eval()
    raise ValueError(kind)


EXPECTED_LAYER = {
    "vit": ("layernorm_before", 32),
    "deit": ("layernorm_before", 32),
    "swin": ("swin.layernorm", 32),
    "convnext": ("encoder.stages.1", 16),
}


@pytest.mark.parametrize("kind", ["vit", "deit", "swin", "convnext"])
def test_opticam_on_a_bare_transformers_model(kind):
    model = tiny(kind)
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    cam = OptiCAM(model, iterations=5, lr=0.5, warn_pixel_space=False)
    suffix, channels = EXPECTED_LAYER[kind]
    assert cam.target_layer_name.endswith(suffix)
    result = cam.explain(x, [1, 3])
    assert result.maps.shape == (2, 1, SIZE, SIZE) and torch.isfinite(result.maps).all()
    assert result.weights.shape == (2, channels)
    assert (result.objective_final > result.objective_initial).all()
    assert cam.outputs.shape == (2, 5)  # the logits, unwrapped from the output object


def test_vit_reshape_drops_the_class_and_distillation_tokens():
    cam_vit = OptiCAM(tiny("vit"), warn_pixel_space=False)
    cam_deit = OptiCAM(tiny("deit"), warn_pixel_space=False)
    assert isinstance(cam_vit.reshape_transform, TokensToMaps) and cam_vit.reshape_transform.grid == (7, 7)
    tokens = torch.arange(51 * 2, dtype=torch.float32).view(1, 51, 2)  # 2 prefix + 7 x 7 patches
    maps = cam_deit.reshape_transform(tokens)
    assert maps.shape == (1, 2, 7, 7) and torch.equal(maps[0, :, 0, 0], tokens[0, 2])
    assert cam_vit.target_layer_name.endswith("1.layernorm_before")  # the last of 2 blocks


def test_wrong_layer_name_on_a_transformers_model_is_a_clear_error():
    with pytest.raises(LayerNotFoundError, match="no layer named 'vit.layer.9'"):
        OptiCAM(tiny("vit"), "vit.layer.9", warn_pixel_space=False)


def test_load_model_hf_reads_the_processor_and_labels(tmp_path):
    model = tiny("deit")
    model.config.id2label = {i: f"thing {i}" for i in range(5)}
    model.save_pretrained(tmp_path)
    transformers.DeiTImageProcessor(
        size={"height": 256, "width": 256},
        crop_size={"height": SIZE, "width": SIZE},
        image_mean=[0.4, 0.5, 0.6],
        image_std=[0.2, 0.25, 0.3],
    ).save_pretrained(tmp_path)
    loaded = load_model(f"hf:{tmp_path}")
    assert loaded.mean == pytest.approx((0.4, 0.5, 0.6)) and loaded.std == pytest.approx((0.2, 0.25, 0.3))
    assert loaded.input_size == (SIZE, SIZE) and loaded.preprocess.crop_pct == pytest.approx(SIZE / 256)
    assert loaded.class_names == [f"thing {i}" for i in range(5)]
    assert loaded.target_layer.endswith("layernorm_before")
    x = torch.rand(1, 3, SIZE, SIZE)
    assert loaded.model(x).shape == (1, 5)  # the pixel-space wrapper returns the logits tensor
    result = OptiCAM(loaded.model, loaded.target_layer, loaded.reshape_transform, iterations=2).explain(x)
    assert result.maps.shape == (1, 1, SIZE, SIZE)


def test_processor_layouts():
    vit = settings_from_processor({"size": {"height": 224, "width": 224}, "resample": 2, "image_mean": [0.5] * 3})
    assert vit.input_size == (224, 224) and vit.crop_pct == 1.0 and vit.interpolation == "bilinear"
    convnext = settings_from_processor({"size": {"shortest_edge": 224}, "crop_pct": 0.875, "resample": 3})
    assert convnext.input_size == (224, 224) and convnext.crop_pct == 0.875 and convnext.interpolation == "bicubic"


def test_missing_hf_model_is_a_model_load_error(tmp_path):
    from opticam import ModelLoadError

    with pytest.raises(ModelLoadError, match="Hugging Face"):
        load_model(f"hf:{tmp_path}")  # a local folder without config.json: no network is tried
