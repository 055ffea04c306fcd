"""The CAM baselines of the paper's tables as :class:`~opticam.methods.base.SaliencyMethod` subclasses.

Grad-CAM, Grad-CAM++, Score-CAM, Ablation-CAM, XGrad-CAM, Layer-CAM and HiRes-CAM are **thin adapters
over pytorch-grad-cam** (package ``grad-cam``), not re-implementations: each subclass names its
pytorch-grad-cam class, and each call builds that object, runs it, and releases its hooks in ``finally``
so that no hook outlives the call (pytorch-grad-cam keeps its hooks registered for the object's lifetime
otherwise, which would slow down and interfere with every other method sharing the model).

Every method returns a :class:`~opticam.methods.base.SaliencyResult`: maps ``[B, 1, H, W]`` in [0, 1] at the
input's resolution (pytorch-grad-cam min-max scales each map), the explained classes, the original
logits, and the wall time.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..errors import MethodNotApplicableError, NumericalError
from ..models.layers import ReshapeTransform
from .base import SaliencyMethod, SaliencyResult, TargetsLike, check_images, frozen


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

    Subclasses set :attr:`cam_class` (the pytorch-grad-cam class name) and :attr:`name`. ``options`` go to
    the pytorch-grad-cam constructor (e.g. ``batch_size`` for Ablation-CAM); ``batch_size`` is also set as
    an attribute, which is how pytorch-grad-cam's Score-CAM reads it.
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
        batch_size: int | None = None,
        quiet: bool = True,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
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

    def _explain(self, x: torch.Tensor, targets: TargetsLike = None) -> SaliencyResult:
        check_images(x)
        start = time.perf_counter()
        x = x.detach()
        with frozen(self.model):
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
        maps = torch.from_numpy(grayscale).float().to(x.device).unsqueeze(1).clamp(0, 1)
        if not torch.isfinite(maps).all():
            raise NumericalError(f"{self.name} produced NaN maps")
        return SaliencyResult(maps=maps, class_indices=classes, logits=logits, seconds=time.perf_counter() - start)


class GradCAM(GradCamAdapter):
    """Grad-CAM (Selvaraju et al., 2017) through pytorch-grad-cam."""

    name = "gradcam"
    cam_class = "GradCAM"


class GradCAMPlusPlus(GradCamAdapter):
    """Grad-CAM++ (Chattopadhay et al., 2018) through pytorch-grad-cam."""

    name = "gradcampp"
    cam_class = "GradCAMPlusPlus"


class ScoreCAM(GradCamAdapter):
    """Score-CAM (Wang et al., 2020) through pytorch-grad-cam: one forward pass per channel.

    Called one image at a time: pytorch-grad-cam builds every masked copy of every image of its batch
    before the first forward pass (``[B, K, 3, H, W]``: 6 GB for 8 images and K = 1280 at 224 x 224, which
    ran two Ray workers out of memory); per image it is 0.8 GB, for the same maps.
    """

    name = "scorecam"
    cam_class = "ScoreCAM"
    per_image = True


class AblationCAM(GradCamAdapter):
    """Ablation-CAM (Desai and Ramaswamy, 2020) through pytorch-grad-cam: one forward pass per channel."""

    name = "ablationcam"
    cam_class = "AblationCAM"
    constructor_options = ("batch_size",)


class XGradCAM(GradCamAdapter):
    """XGrad-CAM (Fu et al., 2020) through pytorch-grad-cam."""

    name = "xgradcam"
    cam_class = "XGradCAM"


class LayerCAM(GradCamAdapter):
    """Layer-CAM (Jiang et al., 2021) through pytorch-grad-cam."""

    name = "layercam"
    cam_class = "LayerCAM"


class HiResCAM(GradCamAdapter):
    """HiRes-CAM (Draelos and Carin, 2020) through pytorch-grad-cam."""

    name = "hirescam"
    cam_class = "HiResCAM"


GRAD_CAM_METHODS: dict[str, type[GradCamAdapter]] = {
    cls.name: cls for cls in (GradCAM, GradCAMPlusPlus, ScoreCAM, AblationCAM, XGradCAM, LayerCAM, HiResCAM)
}
"""The pytorch-grad-cam adapters by their command-line name."""
