"""Model families (issue 27, part 5): one declaration per family, looked up by name and by model; one
checkpoint loader with one set of messages; the layer found automatically, by name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from opticam.errors import ModelLoadError
from opticam.models import (
    ModelFamily,
    ModelSpec,
    default_layer,
    family_for,
    load_checkpoint,
    load_model,
    register_family,
    spec_for,
)
from opticam.models import families as families_module
from opticam.models.factory import is_factory_name
from opticam.models.families import family_of_model


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("efficientnet_lite0", "timm"),
        ("tf_efficientnet_lite0", "timm"),
        ("resnet18", "timm"),
        ("torchvision:vgg16", "torchvision"),
        ("torchvision:mobilenet_v2", "torchvision"),
        ("hf:google/vit-base-patch16-224", "huggingface"),
        ("models.py:cnn", "factory"),
        ("pkg.mod:make", "factory"),
    ],
)
def test_each_name_has_one_family(name, family):
    assert family_for(name).name == family
    assert is_factory_name(name) == (family == "factory")


def test_specs_come_from_their_family():
    assert spec_for("efficientnet_lite0").default_layer == "bn2"
    assert spec_for("torchvision:vgg16_bn").default_layer == "features.42"
    assert spec_for("torchvision:mobilenet_v2").packaged is not None
    assert spec_for("torchvision:alexnet").input_size == (224, 224)  # the family's spec for any name
    assert spec_for("hf:some/repo").arch == "some/repo"


def test_default_layer_asks_the_models_family():
    import timm

    assert family_of_model(timm.create_model("mobilenetv3_small_050", pretrained=False)).name == "timm"
    assert default_layer(timm.create_model("mobilenetv3_small_050", pretrained=False)) == "blocks.5"
    assert default_layer(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())) is None  # nobody's family


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 5)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


@pytest.fixture
def toy_family():
    """A family of one's own, declared once: load_model, its spec, its default layer and its checkpoint rule
    follow from the declaration."""
    before = list(families_module._FAMILIES)
    family = register_family(
        ModelFamily(
            name="toy",
            prefix="toy:",
            make_spec=lambda name: ModelSpec(name, "timm", name[4:], input_size=(8, 8)),
            create=lambda spec, pretrained: Toy(),
            owns_model=lambda model: isinstance(model, Toy),
            default_layer=lambda model: "conv",
            checkpoint_prefixes=("net.",),
        )
    )
    yield family
    families_module._FAMILIES[:] = before


def test_a_registered_family_loads_by_its_prefix(toy_family, tmp_path):
    loaded = load_model("toy:small")
    assert loaded.target_layer == "conv" and len(loaded.class_names) == 5 and loaded.input_size == (8, 8)
    assert not is_factory_name("toy:small")
    state = {f"net.{k}": v + 1 for k, v in loaded.model.model.state_dict().items()}
    torch.save(state, tmp_path / "toy.pt")
    again = load_model("toy:small", checkpoint=tmp_path / "toy.pt")
    assert torch.equal(again.model.model.conv.weight, state["net.conv.weight"])


def test_load_checkpoint_messages(tmp_path):
    model = Toy()
    with pytest.raises(ModelLoadError, match=r"checkpoint .*missing\.pt does not exist"):
        load_checkpoint(model, tmp_path / "missing.pt", "toy")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ModelLoadError, match="cannot read checkpoint .* not a file written by torch.save"):
        load_checkpoint(model, tmp_path / "junk.pt", "toy")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ModelLoadError, match="is not a state dict of tensors"):
        load_checkpoint(model, tmp_path / "list.pt", "toy")
    state = dict(model.state_dict())
    del state["head.bias"]
    state.update({f"extra.{i}": torch.zeros(1) for i in range(6)})
    torch.save(state, tmp_path / "keys.pt")
    with pytest.raises(ModelLoadError) as err:
        load_checkpoint(model, tmp_path / "keys.pt", "toy")
    message = str(err.value)
    assert (
        "does not fit toy: 1 keys missing (head.bias); 6 unexpected (extra.0, extra.1, extra.2, extra.3, ..." in message
    )
    assert "(2 more)" in message and "\n" not in message
    wrong = {k: (torch.zeros(7, 4) if k == "head.weight" else v) for k, v in model.state_dict().items()}
    with pytest.raises(ModelLoadError, match=r"head\.weight has shape \(7, 4\) in the checkpoint but \(5, 4\)"):
        load_checkpoint(model, wrong, "toy", source="toy weights")


def test_a_found_layer_is_named(toy_family):
    loaded = load_model("toy:small")
    loaded.target_layer = None
    assert loaded.resolved_layer() == "conv"  # the last layer with spatial maps, by name
