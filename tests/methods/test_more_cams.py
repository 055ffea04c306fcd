"""Eigen-CAM, Eigen-Grad-CAM, Grad-CAM element-wise, FullGrad, KPCA-CAM, ShapleyCAM and Finer-CAM: each
against a direct pytorch-grad-cam call on the same inputs, opticam's conventions (maps, hooks, frozen
model), what FullGrad / ShapleyCAM / Finer-CAM do differently or cannot do, and one real image."""

from __future__ import annotations

import contextlib
import copy
import io
import time

import numpy as np
import pytest
import pytorch_grad_cam
import timm
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from opticam import PixelSpaceModel
from opticam.errors import MethodNotApplicableError
from opticam.methods import GRAD_CAM_METHODS, create_method
from opticam.methods.gradcam import FinerCAM, FullGrad, GradCAM, ShapleyCAM, fullgrad_bias_layers
from opticam.models import LoadedModel, Preprocessing
from opticam.models.layers import auto_reshape_transform
from tests.tinymodels import TinyNet

pytestmark = pytest.mark.usefixtures("one_thread")

NEW = ["eigencam", "eigengradcam", "gradcamelementwise", "fullgrad", "kpcacam", "shapleycam", "finercam"]

CASES = [
    ("eigencam", {}),
    ("eigengradcam", {}),
    ("gradcamelementwise", {}),
    ("fullgrad", {}),
    ("kpcacam", {}),
    ("kpcacam", {"kernel": "rbf", "gamma": 0.5}),
    ("shapleycam", {}),
    ("finercam", {}),
    ("finercam", {"alpha": 0.5, "comparison_categories": (1, 2), "base_method": "layercam"}),
]


class SmoothNet(nn.Module):
    """conv(3->6, stride 2) -> BatchNorm2d -> SiLU -> conv(6->5) ("last") -> SiLU ("act") -> flatten, mean ->
    linear(5->4).

    The SiLU after the target layer gives ShapleyCAM a non-zero Hessian; the batch norm (running statistics
    away from their defaults) gives FullGrad a batch-norm bias next to the two convolution biases.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.last = nn.Conv2d(6, 5, 3, padding=1)
        self.act = nn.SiLU()
        self.head = nn.Linear(5, 4)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act(self.last(torch.nn.functional.silu(self.bn(self.conv1(x)))))
        return self.head(a.flatten(2).mean(2))  # flatten: the gradient at act's output is a view


def smooth_model(trainable: bool = False) -> PixelSpaceModel:
    model = PixelSpaceModel(SmoothNet(), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).eval()
    for p in model.parameters():
        p.requires_grad_(trainable)
    return model


def loaded_of(model: nn.Module, layer: str = "last", reshape=None) -> LoadedModel:
    return LoadedModel(
        name="small",
        model=model,
        preprocess=Preprocessing((16, 16)),
        class_names=[str(i) for i in range(4)],
        target_layer=layer,
        reshape_transform=reshape,
    )


def images(batch: int = 3, size: int = 16) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(3))


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def direct(name: str, options: dict, model: nn.Module, layer: nn.Module, x: torch.Tensor, targets: list[int]):
    """The maps pytorch-grad-cam gives when called directly (its documented call, parameters trainable)."""
    if name == "finercam":
        base = getattr(pytorch_grad_cam, GRAD_CAM_METHODS[options.get("base_method", "gradcam")].cam_class)
        kwargs = {k: list(v) if k == "comparison_categories" else v for k, v in options.items() if k != "base_method"}
        parts = []
        with pytorch_grad_cam.FinerCAM(model, [layer], base_method=base) as cam:
            # pytorch-grad-cam's own choice of comparison classes: targets=None, target_idx=c, one image per call.
            for i, c in enumerate(targets):
                parts.append(cam(input_tensor=x[i : i + 1].clone(), targets=None, target_idx=c, **kwargs))
        return np.concatenate(parts)
    cls = getattr(pytorch_grad_cam, GRAD_CAM_METHODS[name].cam_class)
    with contextlib.redirect_stdout(io.StringIO()):  # FullGrad prints that it ignores target_layers
        cam = cls(model=model, target_layers=[layer], **options)
    with cam:
        return cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(c) for c in targets])


@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_equals_pytorch_grad_cam(name, options):
    """Same maps as pytorch-grad-cam called directly; maps [B, 1, H, W] in [0, 1]; no hook left; the model's
    parameters get no gradient, its train/eval state and its buffers come back as they were."""
    model = smooth_model()
    model.train()  # the method explains in eval mode and gives the mode back
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = images()
    targets = [0, 3, 1]
    method = create_method(name, loaded_of(model), **options)
    result = method.explain(x, targets)

    assert result.maps.shape == (3, 1, 16, 16) and result.maps.dtype == torch.float32
    assert result.class_indices.tolist() == targets
    assert torch.isfinite(result.maps).all() and result.maps.min() >= 0 and result.maps.max() <= 1
    assert hook_count(model) == 0
    assert all(m.training for m in model.modules())
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    reference = smooth_model(trainable=True)
    expected = direct(name, options, reference, reference.model.last, x, targets)
    np.testing.assert_allclose(result.maps[:, 0].numpy(), expected, atol=1e-5, rtol=0)


def test_registry_and_classes():
    assert set(NEW) <= set(GRAD_CAM_METHODS)
    for name in NEW:
        assert GRAD_CAM_METHODS[name].name == name
    assert GRAD_CAM_METHODS["gradcamelementwise"].cam_class == "GradCAMElementWise"
    assert GRAD_CAM_METHODS["kpcacam"].cam_class == "KPCA_CAM"
    # The defaults are pytorch-grad-cam's.
    method = create_method("kpcacam", loaded_of(smooth_model()))
    assert (method.kernel, method.gamma) == ("sigmoid", None)
    finer = create_method("finercam", loaded_of(smooth_model()))
    assert (finer.alpha, finer.comparison_categories, finer.base_method) == (1.0, (1, 2, 3), "gradcam")


def test_option_errors():
    loaded = loaded_of(smooth_model())
    with pytest.raises(ValueError, match="kernel"):
        create_method("kpcacam", loaded, kernel="laplacian")
    with pytest.raises(ValueError, match="gamma"):
        create_method("kpcacam", loaded, gamma=float("nan"))
    with pytest.raises(ValueError, match="base_method"):
        create_method("finercam", loaded, base_method="scorecam")
    with pytest.raises(ValueError, match="comparison_categories"):
        create_method("finercam", loaded, comparison_categories=[0, 1])
    with pytest.raises(ValueError, match="alpha"):
        create_method("finercam", loaded, alpha=float("inf"))
    with pytest.raises(ValueError, match="unknown option 'kernel'; it takes layer"):
        create_method("eigencam", loaded, kernel="rbf")


def test_eigencam_and_kpcacam_ignore_the_class():
    """Both explain the activations' principal component: the class asked for changes nothing."""
    model, x = smooth_model(), images()
    for name in ("eigencam", "kpcacam"):
        a = create_method(name, loaded_of(model)).explain(x, [0, 1, 2]).maps
        b = create_method(name, loaded_of(model)).explain(x, [3, 3, 0]).maps
        assert torch.equal(a, b), name
    a = create_method("eigengradcam", loaded_of(model)).explain(x, [0, 1, 2]).maps
    b = create_method("eigengradcam", loaded_of(model)).explain(x, [3, 3, 0]).maps
    assert (a - b).abs().max() > 1e-3


def test_shapleycam_second_order_term_and_frozen_weights():
    """With a SiLU after the layer the Hessian-vector product is not 0 and ShapleyCAM differs from Grad-CAM.
    Where only pooling and a linear layer follow the layer, the layer's gradient is a constant: pytorch-grad-cam
    fails on it once the weights are frozen; opticam's ShapleyCAM gives its maps (hvp 0: Grad-CAM's)."""
    model, x = smooth_model(), images()
    shapley = ShapleyCAM(model, "last").explain(x, [0, 3, 1]).maps
    grad = GradCAM(model, "last").explain(x, [0, 3, 1]).maps
    assert (shapley - grad).abs().max() > 1e-3

    tiny = PixelSpaceModel(TinyNet(channels=4, classes=3), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).eval()
    for p in tiny.parameters():
        p.requires_grad_(False)
    x = images(2, 8)
    with pytest.raises(RuntimeError, match="does not require grad"):
        cam = pytorch_grad_cam.ShapleyCAM(model=tiny, target_layers=[tiny.model.features])
        with cam:
            cam(input_tensor=x, targets=[ClassifierOutputTarget(0), ClassifierOutputTarget(2)])
    got = ShapleyCAM(tiny, "features").explain(x, [0, 2]).maps
    assert hook_count(tiny) == 0
    torch.testing.assert_close(got, GradCAM(tiny, "features").explain(x, [0, 2]).maps, atol=1e-6, rtol=0)


def test_no_hook_left_when_pytorch_grad_cam_cannot_release():
    """ShapleyCAM keeps the graph; when a stored gradient is a view (here the layer's output is flattened),
    pytorch-grad-cam's own release() raises before it removes its hooks. opticam removes them first."""
    reference = smooth_model(trainable=True)
    cam = pytorch_grad_cam.ShapleyCAM(model=reference, target_layers=[reference.model.act])
    cam(input_tensor=images(), targets=[ClassifierOutputTarget(0)] * 3)
    with pytest.raises(RuntimeError, match="view"):
        cam.activations_and_grads.release()
    assert hook_count(reference) > 0
    for handle in cam.activations_and_grads.handles:
        handle.remove()
    cam.activations_and_grads.gradients = []

    model = smooth_model()
    result = ShapleyCAM(model, "act").explain(images(), [0, 0, 0])
    assert hook_count(model) == 0 and torch.isfinite(result.maps).all()


def test_finercam_compares_with_the_nearest_classes():
    """The comparison classes are the ones whose logits are nearest the target's (for the predicted class, the
    runners-up); alpha = 0 leaves the target's own score, i.e. the base method's map."""
    model, x = smooth_model(), images()
    logits = model(x).detach()
    finer = FinerCAM(model, "last")
    predicted = logits.argmax(1)
    assert finer.comparison_classes(predicted, logits) == logits.argsort(1, descending=True)[:, 1:4].tolist()
    targets = torch.tensor([0, 3, 1])
    for row, c, chosen in zip(logits, targets.tolist(), finer.comparison_classes(targets, logits), strict=True):
        distance = (row - row[c]).abs()
        others = [k for k in distance.argsort().tolist() if k != c]
        assert chosen == others[:3]
    result = finer.explain(x)  # no target: the predicted class, compared with the runners-up
    assert result.class_indices.tolist() == predicted.tolist()
    plain = FinerCAM(model, "last", alpha=0).explain(x, targets).maps
    torch.testing.assert_close(plain, GradCAM(model, "last").explain(x, targets).maps, atol=1e-4, rtol=0)
    assert (FinerCAM(model, "last").explain(x, targets).maps - plain).abs().max() > 1e-3


def with_fused_batchnorm_split(model: nn.Module) -> nn.Module:
    """A copy of a timm model whose BatchNormAct2d are a plain BatchNorm2d followed by the activation."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if type(module).__name__ == "BatchNormAct2d":
            bn = nn.BatchNorm2d(module.num_features, eps=module.eps)
            bn.load_state_dict(module.state_dict(), strict=False)
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            setattr(parent, name.rpartition(".")[2], nn.Sequential(bn, module.drop, module.act))
    return model.eval()


def test_fullgrad_counts_timm_batch_norms():
    """pytorch-grad-cam's FullGrad matches exact types and misses timm's BatchNormAct2d; opticam's counts them,
    and equals pytorch-grad-cam's FullGrad on the same network with each BatchNormAct2d split into BatchNorm2d +
    activation (where pytorch-grad-cam sees them)."""
    torch.manual_seed(0)
    net = timm.create_model("test_efficientnet", num_classes=5).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    model = PixelSpaceModel(net, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    layers = fullgrad_bias_layers(model)
    norms = sum(isinstance(layer, nn.BatchNorm2d) for layer, _ in layers)
    assert norms == sum(type(m).__name__ == "BatchNormAct2d" for m in model.modules()) > 0
    assert len(layers) == norms + sum(type(m) is nn.Conv2d and m.bias is not None for m in model.modules())

    x = images(2, 64)
    got = FullGrad(model).explain(x, [1, 4]).maps
    assert hook_count(model) == 0
    split = with_fused_batchnorm_split(model)
    for p in split.parameters():
        p.requires_grad_(True)
    with torch.no_grad():
        assert torch.allclose(split(x), model(x), atol=1e-5)
    with contextlib.redirect_stdout(io.StringIO()):
        cam = pytorch_grad_cam.FullGrad(model=split, target_layers=[])
    with cam:
        assert len(cam.bias_data) == len(layers)
        expected = cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(1), ClassifierOutputTarget(4)])
    np.testing.assert_allclose(got[:, 0].numpy(), expected, atol=1e-5, rtol=0)


def test_transformers():
    """FullGrad and ShapleyCAM refuse a token model with an opticam error; the other five explain it."""
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=1, num_classes=4)
    model = PixelSpaceModel(vit, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    loaded = loaded_of(model, "blocks.0.norm1", auto_reshape_transform(model))
    for name in ("fullgrad", "shapleycam"):
        with pytest.raises(MethodNotApplicableError, match=f"{name} cannot explain this model"):
            create_method(name, loaded)
    x = images(2, 32)
    for name in sorted(set(NEW) - {"fullgrad", "shapleycam"}):
        result = create_method(name, loaded).explain(x, [1, 2])
        assert result.maps.shape == (2, 1, 32, 32), name
        assert torch.isfinite(result.maps).all() and result.maps.min() >= 0 and result.maps.max() <= 1
        assert hook_count(model) == 0, name


def test_fullgrad_needs_a_bias_layer():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    with pytest.raises(MethodNotApplicableError, match="no Conv2d or BatchNorm2d layer with a bias"):
        FullGrad(PixelSpaceModel(net, (0.5,) * 3, (0.25,) * 3), "0")


def test_real_model_new_cams(lite0, sample_batch):
    """EfficientNet-Lite0, one real image, its ground-truth class: each of the seven gives a finite,
    non-constant map in [0, 1], and leaves no hook. (Seconds per method are printed with ``-s``.)"""
    x, labels = sample_batch
    x, labels = x[:1], labels[:1]
    for name in NEW:
        start = time.perf_counter()
        result = create_method(name, lite0).explain(x, labels)
        print(f"{name}: {time.perf_counter() - start:.2f} s")
        assert result.maps.shape == (1, 1, 224, 224), name
        assert result.class_indices.tolist() == labels.tolist()
        assert torch.isfinite(result.maps).all() and result.maps.min() >= 0 and result.maps.max() <= 1, name
        assert result.maps.max() - result.maps.min() > 0.5 and result.maps.std() > 0.05, name
        assert hook_count(lite0.model) == 0, name
