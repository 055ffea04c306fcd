"""Baselines: Fake-CAM by definition, the pytorch-grad-cam adapters against pytorch-grad-cam itself and
against Grad-CAM computed by hand, the method registry, and a real-model check."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_grad_cam
import torch
import torch.nn.functional as F
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from opticam import OptiCAM, PixelSpaceModel, SaliencyMethod
from opticam.errors import TargetError
from opticam.methods import GRAD_CAM_METHODS, METHODS, FakeCAM, MethodEntry, create_method
from opticam.methods.gradcam import GradCAM
from opticam.models import LoadedModel, Preprocessing

pytestmark = pytest.mark.usefixtures("one_thread")


NAMES = ["opticam", "fakecam", "gradcam", "gradcampp", "scorecam", "ablationcam", "xgradcam", "layercam", "hirescam"]


class SmallCNN(nn.Module):
    """conv(3->6, stride 2) -> ReLU -> conv(6->5) ("last") -> ReLU -> pool -> linear(5 -> 4)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.last = nn.Conv2d(6, 5, 3, padding=1)
        self.head = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.last(torch.relu(self.conv1(x))))
        return self.head(a.mean(dim=(2, 3)))


def small_model() -> PixelSpaceModel:
    model = PixelSpaceModel(SmallCNN(), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def small_images(batch: int = 3, size: int = 16) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(3))


def test_fakecam_is_ones_but_the_top_left_pixel():
    model = small_model()
    x = small_images()
    result = FakeCAM(model).explain(x, [1, 2, 3])
    expected = torch.ones(3, 1, 16, 16)
    expected[:, :, 0, 0] = 0
    assert torch.equal(result.maps, expected)
    assert result.class_indices.tolist() == [1, 2, 3]
    assert torch.allclose(result.logits, model(x))
    # No target: the predicted class.
    assert torch.equal(FakeCAM(model).explain(x).class_indices, model(x).argmax(1))


# Finer-CAM is called with target_idx, not ClassifierOutputTargets: tests/methods/test_more_cams.py.
@pytest.mark.parametrize("name", sorted(set(GRAD_CAM_METHODS) - {"finercam"}))
def test_adapter_equals_pytorch_grad_cam(name):
    """Same maps as calling pytorch-grad-cam directly (parameters left trainable there), no hook left over."""
    model = small_model()
    x = small_images()
    targets = [0, 3, 1]
    method = GRAD_CAM_METHODS[name](model, "last")
    result = method.explain(x, targets)
    assert result.maps.shape == (3, 1, 16, 16)
    assert result.class_indices.tolist() == targets
    assert float(result.maps.min()) >= 0 and float(result.maps.max()) <= 1
    layer = model.model.last
    assert not layer._forward_hooks and not layer._backward_hooks and not layer._forward_pre_hooks

    reference_model = small_model()
    for p in reference_model.parameters():
        p.requires_grad_(True)
    cls = getattr(pytorch_grad_cam, method.cam_class)
    with cls(model=reference_model, target_layers=[reference_model.model.last]) as cam:
        expected = cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(t) for t in targets])
    np.testing.assert_allclose(result.maps[:, 0].numpy(), expected, atol=1e-5)


def test_gradcam_by_hand():
    """Grad-CAM's definition: relu(sum_k mean(dy_c/dA_k) A_k), upsampled bilinearly, min-max scaled."""
    model = small_model()
    x = small_images()
    classes = torch.tensor([2, 0, 1])
    store = {}
    handle = model.model.last.register_forward_hook(lambda m, i, o: store.setdefault("a", o))
    xg = x.clone().requires_grad_(True)
    logits = model(xg)
    handle.remove()
    acts = store["a"]
    grads = torch.autograd.grad(logits[torch.arange(3), classes].sum(), acts)[0]
    cam = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * acts).sum(1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=(16, 16), mode="bilinear", align_corners=False)
    lo = cam.amin(dim=(2, 3), keepdim=True)
    hi = cam.amax(dim=(2, 3), keepdim=True)
    expected = (cam - lo) / (hi - lo + 1e-7)
    got = GradCAM(model, "last").explain(x, classes).maps
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_adapter_does_not_touch_the_model():
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    GradCAM(model, "last").explain(small_images())
    assert all(not p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_adapter_errors():
    model = small_model()
    with pytest.raises(TargetError):
        GradCAM(model, "last").explain(small_images(), [0, 1, 9])
    with pytest.raises(ValueError, match="shape"):
        GradCAM(model, "last").explain(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="batch_size"):
        GradCAM(model, "last", batch_size=0)


def small_loaded() -> LoadedModel:
    return LoadedModel(
        name="small",
        model=small_model(),
        preprocess=Preprocessing((16, 16)),
        class_names=["a", "b", "c", "d"],
        target_layer="last",
    )


def test_registry_builds_every_method():
    assert set(NAMES) <= set(METHODS)
    loaded = small_loaded()
    x = small_images(2)
    for name in NAMES:
        options = {"iterations": 2} if name == "opticam" else {}
        method = create_method(name, loaded, **options)
        assert isinstance(method, SaliencyMethod)
        result = method.explain(x, [1, 2])
        assert result.maps.shape == (2, 1, 16, 16), name
        assert result.class_indices.tolist() == [1, 2]
        assert torch.isfinite(result.maps).all() and result.maps.min() >= 0 and result.maps.max() <= 1
    assert isinstance(create_method("opticam", loaded, iterations=3), OptiCAM)
    assert create_method("opticam", loaded, iterations=3).config.iterations == 3


def test_registry_errors_and_extension():
    loaded = small_loaded()
    with pytest.raises(ValueError, match="known methods"):
        create_method("nope", loaded)
    with pytest.raises(ValueError, match="fakecam takes no options"):
        create_method("fakecam", loaded, iterations=3)
    with pytest.raises(ValueError, match="unknown option 'iterations'; it takes layer"):
        create_method("gradcam", loaded, iterations=3)
    entry = METHODS["opticam"]
    METHODS["opticam-tiny"] = MethodEntry(
        "opticam-tiny", lambda loaded, layer, **o: OptiCAM(loaded.model, layer, **{**o, "iterations": 1}), entry.options
    )
    try:
        assert create_method("opticam-tiny", loaded).config.iterations == 1
    finally:
        del METHODS["opticam-tiny"]


def test_real_model_cams(lite0, sample_batch):
    """On EfficientNet-Lite0 and real images: every cheap CAM gives valid, non-constant maps for the asked class."""
    x, labels = sample_batch
    x, labels = x[:2], labels[:2]
    for name in ["gradcam", "gradcampp", "xgradcam", "layercam", "hirescam"]:
        result = create_method(name, lite0).explain(x, labels)
        assert result.maps.shape == (2, 1, 224, 224)
        assert result.class_indices.tolist() == labels.tolist()
        flat = result.maps.flatten(1)
        assert torch.allclose(flat.amax(1), torch.ones(2), atol=1e-5), name
        assert (flat.amin(1) < 0.05).all(), name
    # The map depends on the class asked for. (Grad-CAM and HiRes-CAM coincide here, as they do for
    # ResNet50 in the paper: after bn2 come a pointwise activation, global pooling and a linear layer, so
    # the gradient is nearly constant over space.)
    g = create_method("gradcam", lite0).explain(x, labels).maps
    other = create_method("gradcam", lite0).explain(x, (labels + 500) % 1000).maps
    assert (g - other).abs().amax() > 0.1


def test_scorecam_calls_pytorch_grad_cam_one_image_at_a_time(monkeypatch):
    """Score-CAM's peak memory is bounded by one image's masked copies: pytorch-grad-cam is called with one
    image per call (its maps are checked against a batched call in test_adapter_equals_pytorch_grad_cam)."""
    seen = []
    original = pytorch_grad_cam.ScoreCAM.__call__

    def spy(self, input_tensor, targets=None, **kwargs):
        seen.append((tuple(input_tensor.shape), [t.category for t in targets]))
        return original(self, input_tensor, targets, **kwargs)

    monkeypatch.setattr(pytorch_grad_cam.ScoreCAM, "__call__", spy)
    result = GRAD_CAM_METHODS["scorecam"](small_model(), "last").explain(small_images(), [0, 3, 1])
    assert seen == [((1, 3, 16, 16), [0]), ((1, 3, 16, 16), [3]), ((1, 3, 16, 16), [1])]
    assert result.maps.shape == (3, 1, 16, 16)
