"""The CAM baselines of the paper's tables as :class:`~opticam.methods.base.SaliencyMethod` subclasses.

Grad-CAM, Grad-CAM++, Score-CAM, Ablation-CAM, XGrad-CAM, Layer-CAM and HiRes-CAM (the paper's tables), and
Eigen-CAM, Eigen-Grad-CAM, Grad-CAM element-wise, FullGrad, KPCA-CAM, ShapleyCAM and Finer-CAM are **thin
adapters over pytorch-grad-cam** (package ``grad-cam``), not re-implementations: each subclass names its
pytorch-grad-cam class, and each call builds that object, runs it, and releases its hooks in ``finally``
so that no hook outlives the call (pytorch-grad-cam keeps its hooks registered for the object's lifetime
otherwise, which would slow down and interfere with every other method sharing the model).

Every method returns a :class:`~opticam.methods.base.SaliencyResult`: maps ``[B, 1, H, W]`` in [0, 1] at the
input's resolution (pytorch-grad-cam min-max scales each map), the explained classes, the original
logits, and the wall time.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..errors import MethodNotApplicableError
from ..models.layers import ReshapeTransform
from ..options import Option
from .base import Maps, SaliencyMethod, TargetsLike
from .registry import register_method

BATCH_SIZE = Option(
    "batch_size",
    "int",
    64,
    "masked images per forward pass (speed only: the same maps at any size)",
    low=1,
    speed_only=True,
    flag="cam_batch_size",
)
"""Score-CAM's and Ablation-CAM's batch of masked images; ``--cam-batch-size`` fills it."""


def release_hooks(store: Any) -> None:
    """Remove the hooks of a pytorch-grad-cam ``ActivationsAndGradients`` and drop what it stored.

    Its own ``release()`` detaches the stored tensors in place before removing the hooks, and raises
    ("Can't detach views in-place") when a stored gradient is a view, as ShapleyCAM's are (it keeps the
    graph for second derivatives): the hooks would stay on the model. Here the hooks go first; tensors that
    cannot be detached in place are simply dropped.
    """
    for handle in store.handles:
        handle.remove()
    store.handles.clear()
    for tensor in [*store.activations, *store.gradients]:
        if isinstance(tensor, torch.Tensor):
            with contextlib.suppress(RuntimeError):
                tensor.detach_()
    store.activations.clear()
    store.gradients.clear()


class GradCamAdapter(SaliencyMethod):
    """A pytorch-grad-cam method as an opticam :class:`~opticam.methods.base.SaliencyMethod`.

    Subclasses set :attr:`cam_class` (the pytorch-grad-cam class name), :attr:`name` and the options they
    take (:attr:`~opticam.methods.base.SaliencyMethod.options`, declared once; each chosen value becomes an
    attribute of the same name). ``batch_size``, where declared, goes to the pytorch-grad-cam constructor
    (Ablation-CAM) and is set as an attribute of the cam object (how Score-CAM reads it).
    """

    cam_class: ClassVar[str] = ""
    constructor_options: ClassVar[tuple[str, ...]] = ()
    per_image: ClassVar[bool] = False
    """Call pytorch-grad-cam one image at a time (the maps are the same; only the peak memory differs)."""
    supports_reshape_transform: ClassVar[bool] = True
    """False where pytorch-grad-cam's class cannot use a reshape transform (token or channels-last outputs):
    :meth:`_check_model` then refuses such models with a :class:`~opticam.errors.MethodNotApplicableError`."""

    def __init__(
        self,
        model: nn.Module,
        target_layers: nn.Module | str | Sequence[nn.Module | str] | None = None,
        reshape_transform: ReshapeTransform | None = None,
        *,
        quiet: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform)
        chosen = self.check_options(**options)  # the declared options (ConfigValueError on a bad one)
        self.batch_size: int | None = chosen.pop("batch_size", None)
        for name, value in chosen.items():
            setattr(self, name, value)
        self.quiet = quiet
        self._check_model()

    # -- hooks for subclasses (each has a default that suits the plain pytorch-grad-cam classes) ------------
    def _check_model(self) -> None:
        """Called at the end of ``__init__``: raise :class:`MethodNotApplicableError` for a model the method
        cannot explain, before any image is seen. Default: refuse a reshape transform where the class has
        :attr:`supports_reshape_transform` False."""
        if not self.supports_reshape_transform and self.reshape_transform is not None:
            raise MethodNotApplicableError(
                f"{self.name} cannot explain this model: its layers output tokens or channels-last maps (reshape "
                f"transform {self.reshape_transform!r}), and pytorch-grad-cam's {self.cam_class} works only on "
                "convolutional feature maps [B, K, h, w]; use gradcam, eigencam, finercam or opticam instead"
            )

    def _cam_class(self) -> type:
        """The class :meth:`_build` instantiates; default ``pytorch_grad_cam.<cam_class>``."""
        import pytorch_grad_cam

        return getattr(pytorch_grad_cam, self.cam_class)

    def _constructor_kwargs(self, layer: nn.Module) -> dict[str, Any]:
        """The constructor's keyword arguments besides ``model``: ``target_layers=[layer]``,
        ``reshape_transform`` and, where :attr:`constructor_options` names it, ``batch_size``. Subclasses
        add their options (``kwargs = super()._constructor_kwargs(layer); kwargs[...] = ...``)."""
        kwargs: dict[str, Any] = {"target_layers": [layer], "reshape_transform": self.reshape_transform}
        if self.batch_size is not None and "batch_size" in self.constructor_options:
            kwargs["batch_size"] = self.batch_size
        return kwargs

    def _grad_targets(self, classes: torch.Tensor, logits: torch.Tensor) -> list[Any]:
        """pytorch-grad-cam's ``targets`` for the classes ``[B]`` to explain, given the logits ``[B, C]`` of the
        unmasked images; default one ``ClassifierOutputTarget`` per image."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        return [ClassifierOutputTarget(int(c)) for c in classes.tolist()]

    def _release(self, cam: Any) -> None:
        """Remove ``cam``'s hooks and drop what it stored; called in ``finally``, so also after an exception."""
        release_hooks(cam.activations_and_grads)

    def _build(self, layer: nn.Module) -> Any:
        cam = self._cam_class()(model=self.model, **self._constructor_kwargs(layer))
        if self.batch_size is not None:
            cam.batch_size = self.batch_size
        # The model's parameters are frozen, so gradients reach the layer only if the input asks for them.
        cam.compute_input_gradient = cam.uses_gradients
        return cam

    def compute(self, x: torch.Tensor, targets: TargetsLike) -> Maps:
        logits, classes = self.classify(x, targets)
        cam = self._build(self.target_layer(x))
        try:
            grad_targets = self._grad_targets(classes, logits)
            # Score-CAM prints a tqdm bar per image; keep the caller's terminal for its own progress.
            quiet = contextlib.redirect_stderr(io.StringIO()) if self.quiet else contextlib.nullcontext()
            with quiet:
                if self.per_image:
                    parts = [cam(input_tensor=x[i : i + 1], targets=[t]) for i, t in enumerate(grad_targets)]
                    grayscale = np.concatenate(parts)
                else:
                    grayscale = cam(input_tensor=x, targets=grad_targets)
        finally:
            self._release(cam)
        maps = torch.from_numpy(grayscale).float().to(x.device).unsqueeze(1)
        return Maps(maps, classes, logits)


@register_method
class GradCAM(GradCamAdapter):
    """Grad-CAM (Selvaraju et al., 2017) through pytorch-grad-cam."""

    name = "gradcam"
    cam_class = "GradCAM"


@register_method
class GradCAMPlusPlus(GradCamAdapter):
    """Grad-CAM++ (Chattopadhay et al., 2018) through pytorch-grad-cam."""

    name = "gradcampp"
    cam_class = "GradCAMPlusPlus"


@register_method
class ScoreCAM(GradCamAdapter):
    """Score-CAM (Wang et al., 2020) through pytorch-grad-cam: one forward pass per channel.

    Called one image at a time: pytorch-grad-cam builds every masked copy of every image of its batch
    before the first forward pass (``[B, K, 3, H, W]``: 6 GB for 8 images and K = 1280 at 224 x 224, which
    ran two Ray workers out of memory); per image it is 0.8 GB, for the same maps.
    """

    name = "scorecam"
    cam_class = "ScoreCAM"
    per_image = True
    options = (BATCH_SIZE,)


@register_method
class AblationCAM(GradCamAdapter):
    """Ablation-CAM (Desai and Ramaswamy, 2020) through pytorch-grad-cam: one forward pass per channel."""

    name = "ablationcam"
    cam_class = "AblationCAM"
    constructor_options = ("batch_size",)
    options = (BATCH_SIZE,)


@register_method
class XGradCAM(GradCamAdapter):
    """XGrad-CAM (Fu et al., 2020) through pytorch-grad-cam."""

    name = "xgradcam"
    cam_class = "XGradCAM"


@register_method
class LayerCAM(GradCamAdapter):
    """Layer-CAM (Jiang et al., 2021) through pytorch-grad-cam."""

    name = "layercam"
    cam_class = "LayerCAM"


@register_method
class HiResCAM(GradCamAdapter):
    """HiRes-CAM (Draelos and Carin, 2020) through pytorch-grad-cam."""

    name = "hirescam"
    cam_class = "HiResCAM"


@register_method
class EigenCAM(GradCamAdapter):
    """Eigen-CAM (Muhammad and Yeasin, 2020) through pytorch-grad-cam: the first principal component of the
    layer's activations (centred over positions, projected on the first right singular vector), then ReLU.

    Class-agnostic: the map is the same whatever the target (``class_indices`` still says which class was
    asked for). The component's sign is whatever the SVD returns (pytorch-grad-cam does not fix it), so on
    some images the map highlights the complement of the object.
    """

    name = "eigencam"
    cam_class = "EigenCAM"


@register_method
class EigenGradCAM(GradCamAdapter):
    """Eigen-Grad-CAM (pytorch-grad-cam's variant of Eigen-CAM): the first principal component of
    activations x gradients, so it depends on the class. The component's sign is not fixed (as Eigen-CAM)."""

    name = "eigengradcam"
    cam_class = "EigenGradCAM"


@register_method
class GradCAMElementWise(GradCamAdapter):
    """Grad-CAM element-wise (pytorch-grad-cam's variant of Grad-CAM): ``sum_k relu(dy_c/dA_k * A_k)``, the
    gradient multiplied position by position before the ReLU, instead of a spatial mean of the gradient."""

    name = "gradcamelementwise"
    cam_class = "GradCAMElementWise"


def fullgrad_bias_layers(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """FullGrad's bias layers: ``(layer, hook point)`` for every ``Conv2d`` / ``BatchNorm2d`` with a bias, in
    module order (the root excluded, as pytorch-grad-cam does).

    pytorch-grad-cam matches the exact types, so it misses subclasses such as timm's ``BatchNormAct2d``
    (every batch norm of timm's EfficientNets, where it finds no bias layer at all); here subclasses count.
    The hook point is the module whose output is the biased pre-activation: the layer itself, except for a
    batch norm with a fused activation (timm's ``BatchNormAct2d``: ``act(drop(batch_norm(x)))``), whose
    ``drop`` module gives the output before the activation.

    Raises:
        MethodNotApplicableError: a batch norm with a fused activation but no ``drop`` module to hook.
    """
    found = []
    for module in list(model.modules())[1:]:
        if not isinstance(module, nn.Conv2d | nn.BatchNorm2d) or module.bias is None:
            continue
        hook = module
        act = getattr(module, "act", None)
        if isinstance(module, nn.BatchNorm2d) and isinstance(act, nn.Module) and not isinstance(act, nn.Identity):
            hook = getattr(module, "drop", None)
            if not isinstance(hook, nn.Module):
                raise MethodNotApplicableError(
                    f"fullgrad cannot explain this model: {type(module).__name__} applies its activation inside "
                    "the batch norm, and FullGrad needs the output before it"
                )
        found.append((module, hook))
    return found


@functools.cache
def _fullgrad_class() -> type:
    """pytorch-grad-cam's ``FullGrad`` with its bias layers from :func:`fullgrad_bias_layers`."""
    from pytorch_grad_cam import FullGrad as PgcFullGrad
    from pytorch_grad_cam.base_cam import BaseCAM

    class FullGradAllBiases(PgcFullGrad):
        """``FullGrad`` whose bias layers include subclasses of Conv2d / BatchNorm2d; the maps are
        pytorch-grad-cam's own computation (``compute_cam_per_layer``, ``aggregate_multi_layers``)."""

        def __init__(self, model: nn.Module, target_layers: Any = (), reshape_transform: Any = None) -> None:
            layers = fullgrad_bias_layers(model)
            BaseCAM.__init__(self, model, [hook for _, hook in layers], reshape_transform, compute_input_gradient=True)
            self.bias_data = [self.get_bias_data(layer).cpu().numpy() for layer, _ in layers]

    return FullGradAllBiases


@register_method
class FullGrad(GradCamAdapter):
    """FullGrad (Srinivas and Fleuret, 2019) through pytorch-grad-cam: ``|x * dy_c/dx|`` plus, for every
    Conv2d / BatchNorm2d with a bias, ``sum_k |b_k * dy_c/dz_k|`` at that layer's output ``z``, each term
    min-max scaled and resized to the input, summed, then scaled to [0, 1].

    The target layer is ignored (every bias layer is used). Two differences from calling pytorch-grad-cam's
    ``FullGrad`` directly, both only where it would see other layers: subclasses of Conv2d / BatchNorm2d count
    as bias layers (timm's ``BatchNormAct2d``, where pytorch-grad-cam finds none on EfficientNet and the map is
    just ``|x * dy_c/dx|``), see :func:`fullgrad_bias_layers`; and nothing is printed. The input term is in the
    model's input space, [0, 1] pixels for a :class:`~opticam.models.PixelSpaceModel` (the official code uses
    normalized inputs). Models that need a reshape transform (transformers) are refused, as are models with
    no bias layer.
    """

    name = "fullgrad"
    cam_class = "FullGrad"
    supports_reshape_transform = False
    per_image = True  # pytorch-grad-cam resizes all of a layer's [B, K] gradients at once: ~0.6 GB per image on Lite0

    def _check_model(self) -> None:
        super()._check_model()
        if not fullgrad_bias_layers(self.model):
            raise MethodNotApplicableError(
                "fullgrad cannot explain this model: it has no Conv2d or BatchNorm2d layer with a bias"
            )

    def _cam_class(self) -> type:
        return _fullgrad_class()

    def _constructor_kwargs(self, layer: nn.Module) -> dict[str, Any]:
        kwargs = super()._constructor_kwargs(layer)
        kwargs["target_layers"] = []  # FullGrad uses every bias layer (and would print a warning for one)
        return kwargs

    @property
    def target_layer_name(self) -> str:
        return "all bias layers"


KPCA_KERNELS = ("linear", "poly", "rbf", "sigmoid", "cosine")


@register_method
class KPCACAM(GradCamAdapter):
    """KPCA-CAM (Karmani et al., 2024) through pytorch-grad-cam's ``KPCA_CAM``: Eigen-CAM with kernel PCA
    (scikit-learn's ``KernelPCA``, one component) instead of PCA. Class-agnostic, like Eigen-CAM.

    Options (:attr:`options`, pytorch-grad-cam's defaults): ``kernel`` (``"sigmoid"``; also ``linear``,
    ``poly``, ``rbf``, ``cosine``) and ``gamma`` (``None``: scikit-learn's ``1 / channels``).
    """

    name = "kpcacam"
    cam_class = "KPCA_CAM"
    options = (
        Option("kernel", "choice", "sigmoid", "scikit-learn KernelPCA's kernel", choices=KPCA_KERNELS),
        Option("gamma", "float", None, "the kernel's coefficient (none: scikit-learn's 1 / channels)", optional=True),
    )

    def _constructor_kwargs(self, layer: nn.Module) -> dict[str, Any]:
        return {**super()._constructor_kwargs(layer), "kernel": self.kernel, "gamma": self.gamma}


@functools.cache
def _shapleycam_class() -> type:
    """pytorch-grad-cam's ``ShapleyCAM``, able to run on a model whose parameters are frozen."""
    from pytorch_grad_cam import ShapleyCAM as PgcShapleyCAM

    class FrozenShapleyCAM(PgcShapleyCAM):
        """``ShapleyCAM`` whose Hessian-vector product is 0 when the layer's gradient is a constant.

        When only linear operations follow the layer (pooling and the classifier after EfficientNet's ``bn2``),
        the gradient at the layer depends on nothing but the weights; with the weights frozen it has no
        ``grad_fn`` and pytorch-grad-cam's ``torch.autograd.grad(grads, activations)`` raises. Its derivative
        with respect to the activations is 0, which is what pytorch-grad-cam computes when the weights
        require gradients (``allow_unused`` gives ``None``, read as 0): the same maps as a direct call.
        """

        def get_cam_weights(
            self, input_tensor: Any, target_layer: Any, target_category: Any, activations: Any, grads: Any
        ) -> np.ndarray:
            if isinstance(grads, torch.Tensor) and not grads.requires_grad:
                grads = grads.detach().requires_grad_(True)  # a leaf outside the graph: hvp = None -> 0
            return super().get_cam_weights(input_tensor, target_layer, target_category, activations, grads)

    return FrozenShapleyCAM


@register_method
class ShapleyCAM(GradCamAdapter):
    """ShapleyCAM (Cai, 2025) through pytorch-grad-cam: channel weights ``mean over positions of
    (dy_c/dA - 1/2 H A)``, the gradient corrected by the Hessian-vector product (second-order gradients
    through the model, from the input, which asks for gradients since the parameters are frozen).

    Where only linear operations follow the layer (EfficientNet's ``bn2``: pooling, then the classifier), the
    Hessian-vector product is 0 and the maps are Grad-CAM's. Models that need a reshape transform
    (transformers) are refused: pytorch-grad-cam's ShapleyCAM applies it to the weights but not to the
    activations it weighs, and fails (and its second derivatives need attention kernels that have them).
    """

    name = "shapleycam"
    cam_class = "ShapleyCAM"
    supports_reshape_transform = False

    def _cam_class(self) -> type:
        return _shapleycam_class()


FINER_BASE_METHODS = ("gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "gradcamelementwise", "eigengradcam")


@register_method
class FinerCAM(GradCamAdapter):
    """Finer-CAM (Zhang et al., 2025) through pytorch-grad-cam: a gradient CAM (``base_method``, Grad-CAM by
    default) of the target class's score against its most similar classes, so that features shared with them
    fade and the ones that tell the target apart stay.

    The map for target class ``c`` is ``base_method``'s map for the score
    ``sum_j p_j (y_c - alpha y_kj) / sum_j p_j`` (pytorch-grad-cam's ``FinerWeightedTarget``), where ``y`` are
    the logits, ``p = softmax(y)`` (gradients flow through it too) and ``k_j`` are the classes whose logits are
    closest to ``y_c`` (sorted by ``|y_k - y_c|``; position 0 is ``c`` itself): the ones at the positions
    ``comparison_categories`` (default 1, 2, 3: the three nearest; for the predicted class, the runners-up;
    positions past the number of classes are dropped). ``alpha = 0`` gives the base map of ``y_c``. This is
    pytorch-grad-cam's ``FinerCAM(...)(x, targets=None, target_idx=c)``, with ``c`` per image: opticam's
    target (or the predicted class), not a ``ClassifierOutputTarget`` (which pytorch-grad-cam would use as a
    plain Grad-CAM target).

    Options (:attr:`options`, pytorch-grad-cam's defaults): ``alpha`` (1.0), ``comparison_categories``
    ((1, 2, 3)), ``base_method`` (``"gradcam"``; one of :data:`FINER_BASE_METHODS`, opticam's names).
    """

    name = "finercam"
    cam_class = "FinerCAM"
    options = (
        Option("alpha", "float", 1.0, "weight of the comparison classes' logits (0: the base map of y_c)"),
        Option(
            "comparison_categories",
            "ints",
            (1, 2, 3),
            "positions, in the classes sorted by logit distance to the target (0 is the target), compared against",
            low=1,
        ),
        Option("base_method", "choice", "gradcam", "the gradient CAM that maps the score", choices=FINER_BASE_METHODS),
    )

    def _constructor_kwargs(self, layer: nn.Module) -> dict[str, Any]:
        import pytorch_grad_cam

        base = getattr(pytorch_grad_cam, GRAD_CAM_METHODS[self.base_method].cam_class)
        return {**super()._constructor_kwargs(layer), "base_method": base}

    def comparison_classes(self, classes: torch.Tensor, logits: torch.Tensor) -> list[list[int]]:
        """For each image, the classes its target is compared with (pytorch-grad-cam's choice, see above)."""
        scores = logits.detach().cpu().numpy()
        positions = [k for k in self.comparison_categories if k < scores.shape[-1]]
        if not positions:
            raise MethodNotApplicableError(f"finercam needs a model with at least two classes, got {scores.shape[-1]}")
        chosen = []
        for row, c in zip(scores, classes.tolist(), strict=True):
            order = np.argsort(np.abs(row - row[c])).tolist()
            order = [c] + [k for k in order if k != c]  # c is first anyway unless another logit equals y_c
            chosen.append([order[k] for k in positions])
        return chosen

    def _grad_targets(self, classes: torch.Tensor, logits: torch.Tensor) -> list[Any]:
        from pytorch_grad_cam.utils.model_targets import FinerWeightedTarget

        return [
            FinerWeightedTarget(int(c), others, self.alpha)
            for c, others in zip(classes.tolist(), self.comparison_classes(classes, logits), strict=True)
        ]

    def _release(self, cam: Any) -> None:
        release_hooks(cam.base_cam.activations_and_grads)  # FinerCAM wraps a base CAM that holds the hooks


GRAD_CAM_METHODS: dict[str, type[GradCamAdapter]] = {
    cls.name: cls
    for cls in (
        GradCAM,
        GradCAMPlusPlus,
        ScoreCAM,
        AblationCAM,
        XGradCAM,
        LayerCAM,
        HiResCAM,
        EigenCAM,
        EigenGradCAM,
        GradCAMElementWise,
        FullGrad,
        KPCACAM,
        ShapleyCAM,
        FinerCAM,
    )
}
"""The pytorch-grad-cam adapters by their command-line name."""
