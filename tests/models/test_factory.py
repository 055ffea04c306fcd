"""``--model FILE.py:factory`` / ``package.module:factory``: what is found from the model or its module (input size,
channels, classes, layer, reshape), a factory's own ``LoadedModel``, checkpoints, and one-line errors for each way a
factory can be wrong. Every model is a small file written into ``tmp_path``; nothing is downloaded."""

from __future__ import annotations

import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from opticam.cli import main
from opticam.errors import ModelLoadError
from opticam.methods import create_method
from opticam.models import PixelSpaceModel, Preprocessing, TokensToMaps, load_model
from opticam.models.factory import (
    import_path_for,
    is_factory_name,
    module_name_for,
    parse_factory_name,
    recorded_model_name,
    resolve_recorded_name,
)
from opticam.viz import overlay, to_pil

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = '''
import torch
from torch import nn

INPUT_SIZE = 12
CLASS_NAMES = ("a", "b", "c")


class Gray(nn.Module):
    """conv(1 -> 4) -> ReLU -> mean -> linear(4 -> 3): a grayscale classifier taking [0, 1] pixels."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.relu(self.conv(x)).mean((2, 3)))


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mix = nn.Linear(dim, dim)

    def forward(self, x):
        return x + self.mix(self.norm1(x))


class TinyViT(nn.Module):
    """4 x 4 patches of a 12 x 12 grayscale image (a 3 x 3 grid), a class token, two blocks: no timm attributes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.patch_embed = nn.Conv2d(1, 8, 4, stride=4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, 8))
        self.blocks = nn.Sequential(Block(8), Block(8))
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        return self.head(self.norm(self.blocks(tokens))[:, 0])


class Flat(nn.Module):
    def forward(self, x):
        return x.mean(1)  # [B, H, W]: not logits


class Scores(nn.Module):
    def forward(self, x):
        return {"scores": x.mean((1, 2, 3))}


def gray():
    return Gray()


def vit():
    return TinyViT()


def broken():
    raise RuntimeError("no weights\\nfor this one")


def not_a_module():
    return 42


def flat():
    return Flat()


def scores():
    return Scores()


INSTANCE = Gray(seed=1)
NUMBER = 3
'''


def write_models(folder: Path, text: str = MODELS, name: str = "models.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def models_file(tmp_path) -> Path:
    return write_models(tmp_path / "zoo")


def test_file_form_finds_size_channels_classes_from_the_module(models_file):
    loaded = load_model(f"{models_file}:gray")
    assert loaded.name == f"{models_file}:gray"
    assert loaded.input_size == (12, 12) and loaded.channels == 1
    assert loaded.class_names == ["a", "b", "c"]
    assert loaded.target_layer is None and loaded.reshape_transform is None  # a CNN: the last spatial layer
    assert isinstance(loaded.model, PixelSpaceModel)
    assert loaded.model.mean.flatten().tolist() == [0.0] and loaded.model.std.flatten().tolist() == [1.0]
    assert not any(p.requires_grad for p in loaded.model.parameters()) and not loaded.model.training
    x = torch.rand(2, 1, 12, 12)
    assert torch.equal(loaded.model(x), loaded.model.model(x))  # the identity wrapper: it takes pixels already


def test_a_file_is_imported_once_under_a_name_from_its_path(models_file, tmp_path, monkeypatch):
    first = load_model(f"{models_file}:gray")
    name = module_name_for(models_file.resolve())
    assert name in sys.modules and name == module_name_for(models_file.resolve())
    monkeypatch.chdir(models_file.parent)
    again = load_model("models.py:gray")  # relative to the working folder: the same file, the same module
    assert type(inner(again)) is type(inner(first))
    assert parse_factory_name("models.py:gray").portable == f"{models_file.resolve()}:gray"


def inner(loaded):
    return loaded.model.model


def test_module_form_on_sys_path_and_in_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the loader may add the working folder; undo it
    write_models(tmp_path / "site" / "factorypkg_a", name="models.py")
    (tmp_path / "site" / "factorypkg_a" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    loaded = load_model("factorypkg_a.models:gray")
    assert loaded.channels == 1 and loaded.class_names == ["a", "b", "c"]
    assert import_path_for("factorypkg_a.models:gray") == str((tmp_path / "site").resolve())
    # not on sys.path: found in the working folder, as uvicorn does
    write_models(tmp_path / "cwd", name="factorymod_b.py")
    monkeypatch.chdir(tmp_path / "cwd")
    assert load_model("factorymod_b:vit").target_layer == "blocks.1.norm1"
    assert import_path_for("factorymod_b:vit") == str((tmp_path / "cwd").resolve())


def test_a_module_instance_is_taken_as_it_is(models_file):
    loaded = load_model(f"{models_file}:INSTANCE")
    module = sys.modules[module_name_for(models_file.resolve())]
    assert inner(loaded) is module.INSTANCE


def test_transformer_without_timm_gets_its_grid_and_layer_found_and_methods_run(models_file):
    loaded = load_model(f"{models_file}:vit")
    assert isinstance(loaded.reshape_transform, TokensToMaps)
    assert loaded.reshape_transform.grid == (3, 3) and loaded.reshape_transform.prefix_tokens is None
    assert loaded.target_layer == "blocks.1.norm1"  # the paper's ViT layer, by timm's block layout
    x = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no pixel-space warning: the factory's model takes pixels by contract
        for name in ("gradcam", "opticam(iterations=3)"):
            maps = create_method(name, loaded).explain(x).maps
            assert maps.shape == (2, 1, 12, 12) and torch.isfinite(maps).all()


def test_declared_attributes_win_over_what_is_found(tmp_path):
    path = write_models(
        tmp_path,
        MODELS
        + """
TARGET_LAYERS = {"gray": "conv"}


def declared():
    model = Gray()
    model.input_size = (3, 16, 20)  # (C, H, W): 3 channels read as RGB, fed to a 1-channel conv via a mean
    model.class_names = ["x", "y", "z"]
    inner = model.forward
    model.forward = lambda x: inner(x.mean(1, keepdim=True))
    return model
""",
    )
    assert load_model(f"{path}:gray").target_layer == "conv"  # TARGET_LAYERS[factory]
    loaded = load_model(f"{path}:declared")
    assert loaded.input_size == (16, 20) and loaded.channels == 3 and loaded.class_names == ["x", "y", "z"]
    assert loaded.preprocess(Image.new("L", (40, 30))).shape == (3, 16, 20)


def test_a_factory_may_return_its_own_loaded_model(tmp_path):
    path = write_models(
        tmp_path,
        MODELS
        + """
from opticam.models import LoadedModel, PixelSpaceModel, Preprocessing


def stated():
    return LoadedModel(
        name="mine",
        model=PixelSpaceModel(Gray(), (0.5,), (0.25,)),
        preprocess=Preprocessing((12, 12), channels=1, crop=False),
        class_names=["p", "q", "r"],
        target_layer="conv",
    )
""",
    )
    loaded = load_model(f"{path}:stated")
    assert loaded.name == f"{path}:stated"  # runs record the --model text
    assert loaded.model.mean.flatten().tolist() == [0.5] and loaded.target_layer == "conv"
    assert loaded.class_names == ["p", "q", "r"]


def test_checkpoint_loads_into_the_factory_model(models_file, tmp_path):
    module_model = load_model(f"{models_file}:gray")
    state = {k: v + 1 for k, v in inner(module_model).state_dict().items()}
    torch.save(state, tmp_path / "w.pt")
    loaded = load_model(f"{models_file}:gray", checkpoint=tmp_path / "w.pt")
    assert torch.equal(inner(loaded).conv.weight, state["conv.weight"])
    torch.save({"other": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ModelLoadError, match="does not fit") as err:
        load_model(f"{models_file}:gray", checkpoint=tmp_path / "bad.pt")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        ("missing.py:gray", r"missing\.py does not exist"),
        ("models.py:grey", r"has no attribute 'grey'; did you mean gray"),
        ("models.py:broken", r"the factory raised RuntimeError: no weights for this one"),
        ("models.py:not_a_module", r"returned a int, not a torch\.nn\.Module or an opticam LoadedModel"),
        ("models.py:NUMBER", r"NUMBER is a int, not a function"),
        ("models.py:flat", r"output for a \[2, 3, 12, 12\] batch has shape \(2, 12, 12\), not \[B, classes\] logits"),
        ("models.py:scores", r"output for a \[2, 3, 12, 12\] batch is a dict, not \[B, classes\] logits"),
        ("models.py:gray.x", r"has no attribute 'x'"),
        ("models.py:1bad", r"is not a Python name"),
    ],
)
def test_each_mistake_is_one_line(models_file, suffix, message):
    with pytest.raises(ModelLoadError, match=message) as err:
        load_model(f"{models_file.parent}/{suffix}")
    assert "\n" not in str(err.value)


def test_more_mistakes_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    cases = {
        "no_such_module_xyz:gray": r"no module named 'no_such_module_xyz'",
        "bad-name:gray": r"neither a \.py file nor a module name",
    }
    nosize = write_models(tmp_path, MODELS.replace("INPUT_SIZE = 12", ""), "nosize.py")
    cases[f"{nosize}:gray"] = r"cannot tell the input size; give the model an input_size attribute"
    names = write_models(tmp_path, MODELS.replace('("a", "b", "c")', '("a", "b")'), "names.py")
    cases[f"{names}:gray"] = r"2 class names for 3 outputs"
    chans = write_models(tmp_path, MODELS + "\nIN_CHANNELS = 3\n", "chans.py")
    cases[f"{chans}:gray"] = r"the model fails on a \[2, 3, 12, 12\] batch of zeros: RuntimeError"
    syntax = write_models(tmp_path, "def gray(:\n", "syntax.py")
    cases[f"{syntax}:gray"] = r"importing .*syntax\.py failed: SyntaxError"
    layer = write_models(tmp_path, MODELS + '\nTARGET_LAYER = "layer9"\n', "layer.py")
    cases[f"{layer}:gray"] = r"its declared layer: no layer named 'layer9'"
    for name, message in cases.items():
        with pytest.raises(ModelLoadError, match=message) as err:
            load_model(name)
        assert "\n" not in str(err.value), name


def test_cli_reports_a_bad_factory_in_one_line(models_file, tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.new("L", (12, 12), 128).save(image)
    code = main(["explain", str(image), "--model", f"{models_file.parent}/models.py:broken", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().count("\n") == 0 and "the factory raised RuntimeError" in err


def test_explain_and_compare_with_a_factory_model(models_file, tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.new("RGB", (30, 24), (200, 10, 60)).save(image)
    model = ["--model", f"{models_file}:vit", "--device", "cpu"]
    assert main(["explain", str(image), *model, "--iterations", "2", "--out", str(tmp_path / "e")]) == 0
    assert (tmp_path / "e" / "x.png").is_file()
    out = str(tmp_path / "grid.png")
    assert main(["compare", str(image), *model, "--methods", "fakecam,gradcam", "--out", out]) == 0
    assert Path(out).is_file()


def test_layer_flag_is_checked_at_the_model_s_own_channel_count(models_file, tmp_path, capsys):
    """``--layer`` is probed with one blank image of the model's input: 1 channel for a grayscale model."""
    image = tmp_path / "x.png"
    Image.new("L", (12, 12), 90).save(image)
    model = ["--model", f"{models_file}:gray", "--device", "cpu", "--iterations", "2", "--out", str(tmp_path / "e")]
    assert main(["explain", str(image), *model, "--layer", "relu"]) == 0
    capsys.readouterr()
    assert main(["explain", str(image), *model, "--layer", "head"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "--layer head: outputs [1, 3], not feature maps" in err


def test_names_are_told_apart_and_recorded_relative_to_the_store(tmp_path):
    assert is_factory_name("models.py:cnn") and is_factory_name("pkg.mod:make")
    assert not any(map(is_factory_name, ("hf:google/vit-base-patch16-224", "torchvision:vgg16", "resnet50")))
    file = tmp_path / "a" / "models.py"
    recorded = recorded_model_name(f"{file}:cnn", tmp_path / "store")
    assert recorded == "../a/models.py:cnn"
    assert resolve_recorded_name(recorded, tmp_path / "store") == f"{file}:cnn"
    assert (
        recorded_model_name("pkg.mod:make", tmp_path)
        == "pkg.mod:make"
        == resolve_recorded_name("pkg.mod:make", tmp_path)
    )


def test_preprocessing_for_grayscale_and_without_crop():
    pixels = torch.arange(28 * 28, dtype=torch.uint8).reshape(28, 28) % 251
    image = Image.fromarray(pixels.numpy(), mode="L")
    pre = Preprocessing((28, 28), channels=1, crop=False, interpolation="bilinear")
    assert torch.equal(pre(image), pixels[None].float() / 255)  # same size: the stored pixels, unchanged
    assert pre(image.convert("RGB")).shape == (1, 28, 28)
    assert Preprocessing((28, 28), channels=3, crop=False)(image).shape == (3, 28, 28)
    wide = Image.new("RGB", (80, 40))
    assert Preprocessing((20, 30), channels=1, crop=False)(wide).shape == (1, 20, 30)  # squeezed, nothing cut
    boxes = Preprocessing((20, 30), channels=1, crop=False).transform_boxes([(0, 0, 40, 20)], (80, 40))
    assert boxes == [(0.0, 0.0, 15.0, 10.0)]
    with pytest.raises(ValueError, match="channels"):
        Preprocessing((8, 8), channels=2)


def test_grayscale_images_draw():
    image = torch.rand(1, 6, 6)
    assert overlay(image, torch.rand(6, 6)).size == (6, 6) and to_pil(image).mode == "RGB"
