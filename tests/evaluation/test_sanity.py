"""The cascading randomization sanity check: the stages of EfficientNet-Lite0, the cascade itself, the
similarity measures by hand, ``opticam sanity`` end to end (Fake-CAM must fail: similarity 1 at every
stage), and the numbers against Quantus's MPRT."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import timm
import torch
from torch import nn

from opticam import PixelSpaceModel
from opticam.cli import main
from opticam.evaluation.sanity import (
    layer_stages,
    randomization_stages,
    randomized_models,
    sanity_check,
    sanity_markdown,
    spearman,
    ssim,
)
from opticam.methods import create_method
from opticam.models.loading import LoadedModel, Preprocessing
from tests.conftest import sample_rows

pytestmark = pytest.mark.usefixtures("one_thread")


def test_stages_of_efficientnet_lite0(lite0):
    stages = randomization_stages(lite0.model)
    assert [s.name for s in stages] == [
        "classifier",
        "conv_head+bn2",
        *(f"blocks.{i}" for i in range(6, -1, -1)),
        "conv_stem+bn1",
    ]
    assert stages[1].modules == ("model.conv_head", "model.bn2")
    # Every parameter of the classifier belongs to exactly one stage.
    covered = [p for s in stages for name in s.modules for p in lite0.model.get_submodule(name).parameters()]
    assert len(covered) == len(list(lite0.model.parameters())) == len({id(p) for p in covered})


def test_the_cascade_randomizes_from_the_top_and_leaves_the_original_alone():
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet").eval()
    wrapped = PixelSpaceModel(model, (0.5,) * 3, (0.25,) * 3).eval()
    with torch.no_grad():  # a fresh model's batch norms sit at their reset values: move them off
        for key, value in model.state_dict().items():
            if value.is_floating_point() and "bn" in key:
                value.add_(torch.rand_like(value))
    before = {k: v.clone() for k, v in wrapped.state_dict().items()}
    stages = randomization_stages(wrapped)
    seen = []
    for k, (name, randomized) in enumerate(randomized_models(wrapped, stages, seed=3)):
        seen.append(name)
        state = randomized.state_dict()
        for j, stage in enumerate(stages):
            for module in stage.modules:
                keys = [key for key in state if key.startswith(module + ".") and "num_batches" not in key]
                same = all(torch.equal(state[key], before[key]) for key in keys)
                assert same == (j >= k), f"after {name}, stage {stage.name} should be {'intact' if j >= k else 'reset'}"
    assert seen[0] == "intact" and len(seen) == len(stages) + 1
    assert all(torch.equal(v, before[k]) for k, v in wrapped.state_dict().items())
    # Batch norm's running statistics are reset with its affine parameters.
    *_, (_, last) = randomized_models(wrapped, stages, seed=3)
    assert torch.equal(last.model.bn1.running_var, torch.ones_like(last.model.bn1.running_var))
    assert torch.equal(last.model.bn1.weight, torch.ones_like(last.model.bn1.weight))


def test_similarities_by_hand():
    a = np.arange(64, dtype=float).reshape(8, 8) / 63
    assert spearman(a, a) == 1.0 and ssim(a, a) == 1.0
    assert spearman(a, 1 - a) == pytest.approx(-1.0)
    assert spearman(a, a**2) == pytest.approx(1.0)  # ranks only
    assert spearman(np.zeros((8, 8)), a) == 0.0
    assert ssim(a, 1 - a) < 0


# -- end to end ------------------------------------------------------------------------------------------
def test_opticam_sanity_command(tmp_path, samples_dir, capsys):
    torch.manual_seed(0)
    torch.save(timm.create_model("test_efficientnet").state_dict(), tmp_path / "tiny.pth")
    args = ["sanity", "--images", str(samples_dir), "--methods", "fakecam,gradcam,opticam", "--limit", "1",
            "--model", "test_efficientnet", "--checkpoint", str(tmp_path / "tiny.pth"), "--iterations", "3",
            "--device", "cpu", "--json", str(tmp_path / "s.json"), "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(args) == 0
    table = capsys.readouterr().out
    assert table.startswith("| stage | fakecam ρ | fakecam SSIM | gradcam ρ |")
    data = json.loads((tmp_path / "s.json").read_text())
    stages = data["stages"]
    assert stages[0] == "intact" and len(stages) > 3
    assert set(data["methods"]) == {"fakecam", "gradcam", "opticam(iterations=3)"}  # the key spells the option
    for name, values in data["methods"].items():
        for kind in ("spearman", "ssim"):
            assert len(values[kind]) == len(stages)
            assert values[kind][0] == 1.0, f"{name} is not 1 on the intact model"
    # Fake-CAM ignores the model: it fails the check, similarity 1 at every stage.
    assert data["methods"]["fakecam"] == {"spearman": [1.0] * len(stages), "ssim": [1.0] * len(stages)}
    # Grad-CAM depends on the weights: below 1 at every randomized stage.
    assert all(v < 1 for v in data["methods"]["gradcam"]["spearman"][1:])
    assert (tmp_path / "out" / "sanity-plot.png").stat().st_size > 1000
    assert (tmp_path / "out" / "sanity-grid.png").stat().st_size > 1000


# -- Quantus's MPRT --------------------------------------------------------------------------------------
class SmallNet(nn.Module):
    """conv-bn-relu, conv-relu, pool, linear: four layers Quantus randomizes one by one."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, stride=2)
        self.features = nn.ReLU()
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return self.fc(a.mean(dim=(2, 3)))


def test_grad_cam_similarities_equal_quantus_mprt():
    try:
        import quantus
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available here"
        pytest.skip(f"Quantus cannot be imported here ({type(exc).__name__}: {exc}); pip install quantus")
    torch.manual_seed(0)
    net = SmallNet()
    with torch.no_grad():
        net.bn1.running_mean.uniform_(-0.2, 0.2)
        net.bn1.running_var.uniform_(0.5, 2)
    pre = Preprocessing((32, 32))
    model = PixelSpaceModel(net, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    loaded = LoadedModel("small", model, pre, [f"c{i}" for i in range(5)], target_layer="features")
    from opticam import load_image

    x = torch.stack([pre(load_image(path)) for path, _ in sample_rows(3)])
    y = torch.tensor([0, 3, 1])

    def explain(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_) -> np.ndarray:
        method = create_method("gradcam", dataclasses.replace(loaded, model=model))
        return method.explain(torch.as_tensor(inputs), torch.as_tensor(targets)).maps.numpy()

    metric = quantus.MPRT(seed=42, layer_order="top_down", abs=False, normalise=False, disable_warnings=True)
    theirs = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None, explain_func=explain,
                    batch_size=3, device="cpu")  # fmt: skip
    factory = {"gradcam": lambda stage_loaded: create_method("gradcam", stage_loaded)}
    ours = sanity_check(loaded, x, y, factory, stages=layer_stages(model), reseed_each_module=42 + 1)
    assert list(theirs) == ["original", *ours.stages[1:]]
    for k, stage in enumerate(theirs):
        np.testing.assert_allclose(ours.spearman["gradcam"][k], theirs[stage], atol=1e-6, err_msg=stage)
    assert ours.spearman["gradcam"][1:].max() < 1
    assert "| intact | 1.000 | 1.000 |" in sanity_markdown(ours)


@pytest.mark.parametrize(("extra", "message"), [(["--limit", "0"], "--limit"), (["--methods", "nope"], "nope")])
def test_sanity_usage_errors(tmp_path, capsys, extra, message):
    (tmp_path / "labels.csv").write_text("file,class_index\na.png,1\n")
    assert main(["sanity", "--images", str(tmp_path), "--device", "cpu", *extra]) == 2
    assert message in capsys.readouterr().err
