"""Finding the target layer and turning its output into feature maps ``[B, K, h, w]``.

A target layer can be given as a module, as a dotted name (``"layer4"``, ``"blocks.11.norm1"``,
``"features.42"``), or left out: then it is the last module, in execution order, whose output has
spatial feature maps. Transformer layers output token sequences ``[B, N, D]``; a reshape transform drops
the class/distillation tokens and lays the patch tokens out on their grid. timm's Swin outputs channels-last
maps ``[B, H, W, C]``; :class:`ChannelsLastToMaps` permutes them.

Default layers (:func:`default_layer`) come from the model's family (:mod:`opticam.models.families`):
timm's per architecture in :mod:`opticam.models.libraries`, Hugging Face's in :mod:`opticam.models.huggingface`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import LayerNotFoundError
from . import huggingface
from .outputs import LogitsModel
from .pixel_space import PixelSpaceModel
from .reshapes import ChannelsLastToMaps, ReshapeTransform, TokensToMaps


def inner_model(model: nn.Module) -> nn.Module:
    """The classifier inside :class:`~opticam.models.PixelSpaceModel` / :class:`LogitsModel` wrappers, or
    ``model`` itself."""
    while isinstance(model, PixelSpaceModel | LogitsModel):
        model = model.model
    return model


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The module called ``name`` (dotted; list indices as numbers; ``-1`` allowed) inside ``model``.

    Names are looked up in the wrapped classifier first, then in ``model`` itself.

    Raises:
        LayerNotFoundError: with the closest valid names and the model's last layers as candidates.
    """
    for root in dict.fromkeys([inner_model(model), model]):
        module = _walk(root, name)
        if module is not None:
            return module
    names = [n for n, _ in inner_model(model).named_modules() if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    parts = [f"no layer named {name!r} in {type(inner_model(model)).__name__}."]
    if close:
        parts.append(f"Did you mean one of {close}?")
    parts.append(f"Its last layers are {spatial_layer_names_hint(inner_model(model))}.")
    raise LayerNotFoundError(" ".join(parts))


def _walk(root: nn.Module, name: str) -> nn.Module | None:
    module = root
    for part in name.split("."):
        if part.lstrip("-").isdigit() and isinstance(module, nn.Sequential | nn.ModuleList):
            index = int(part)
            if not -len(module) <= index < len(module):
                return None
            module = module[index]
        else:
            children = dict(module.named_children())
            if part not in children:
                return None
            module = children[part]
    return module


def spatial_layer_names_hint(model: nn.Module, count: int = 8) -> list[str]:
    """The last ``count`` named top-level-ish modules, a readable hint of what can be explained."""
    names = [n for n, m in model.named_modules() if n and n.count(".") <= 1]
    return names[-count:]


def layer_name(model: nn.Module, layer: nn.Module) -> str:
    """The dotted name of ``layer`` inside the classifier (``"?"`` if it is not part of it)."""
    for root in (inner_model(model), model):
        for name, module in root.named_modules():
            if module is layer:
                return name or "<model>"
    return "?"


@dataclass(frozen=True)
class LayerProbe:
    """One module's output during a probe pass: its dotted name, the module, the output's shape (``None``
    when the output is not a tensor) and whether it holds spatial feature maps (:func:`auto_layer`'s test)."""

    name: str
    module: nn.Module
    shape: tuple[int, ...] | None
    spatial: bool


def probe_layers(model: nn.Module, example: torch.Tensor, reshape: ReshapeTransform | None = None) -> list[LayerProbe]:
    """Every named module of the classifier that ran on ``example``, in execution order (first run only).

    One forward pass without gradients, with temporary hooks on every module (removed even if the pass
    fails). A 4-d output ``[B, K, h, w]`` with ``h * w > 1`` is spatial; so is a 3-d token output when
    ``reshape`` is given and accepts it. The command line uses it to refuse a ``--layer`` without feature
    maps before any work, naming the layers that have them.
    """
    seen: dict[nn.Module, LayerProbe] = {}
    for name, module, output in module_outputs(model, example):
        if module not in seen:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
            spatial = isinstance(output, torch.Tensor) and _is_spatial(output, reshape)
            seen[module] = LayerProbe(name, module, shape, spatial)
    return list(seen.values())


def module_outputs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module, object]]:
    """``(name, module, output)`` of every named module of the classifier, each time it runs, in execution
    order, from one forward pass of ``example`` without gradients. The temporary hooks are removed even if
    the pass fails. The one pass that :func:`probe_layers`, :func:`auto_layer` and
    :func:`probe_token_reshape` read."""
    root = inner_model(model)
    names = {m: n for n, m in root.named_modules() if n}
    outputs: list[tuple[str, nn.Module, object]] = []
    handles = [m.register_forward_hook(lambda m, _i, o: outputs.append((names[m], m, o))) for m in names]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return outputs


def auto_layer(model: nn.Module, example: torch.Tensor, reshape: ReshapeTransform | None = None) -> nn.Module:
    """The last module (in execution order) whose output is a feature map with spatial extent.

    Runs one forward pass of ``example`` (one image is enough) with temporary hooks on every module;
    the hooks are removed even if the forward pass fails. A 4-d output ``[B, K, h, w]`` with
    ``h * w > 1`` counts; so does a 3-d token output when ``reshape`` is given and accepts it.
    """
    fired = [
        m for _, m, out in module_outputs(model, example) if isinstance(out, torch.Tensor) and _is_spatial(out, reshape)
    ]
    root = inner_model(model)
    if not fired:
        raise LayerNotFoundError(
            f"{type(root).__name__} has no layer with spatial feature maps; name one with target_layer= "
            "(and give a reshape_transform for token outputs)"
        )
    return fired[-1]


def _is_spatial(output: torch.Tensor, reshape: ReshapeTransform | None) -> bool:
    if output.dim() not in (3, 4):
        return False
    if reshape is not None:
        try:
            output = reshape(output)
        except (RuntimeError, ValueError):
            return False
    return output.dim() == 4 and output.shape[-1] * output.shape[-2] > 1


def _is_timm(model: nn.Module) -> bool:
    return type(model).__module__.startswith("timm.")


def is_channels_last_model(model: nn.Module) -> bool:
    """True for timm models whose features are ``[B, H, W, C]`` (Swin: ``output_fmt == "NHWC"``)."""
    model = inner_model(model)
    return _is_timm(model) and getattr(model, "output_fmt", None) in ("NHWC", "NLC")


def is_token_model(model: nn.Module) -> bool:
    """True for timm vision transformers (ViT, DeiT, ...): they have a patch grid and prefix tokens."""
    model = inner_model(model)
    return hasattr(model, "num_prefix_tokens") and hasattr(getattr(model, "patch_embed", None), "grid_size")


def auto_reshape_transform(model: nn.Module) -> ReshapeTransform | None:
    """The reshape transform for timm's ViT/DeiT family (tokens), timm's Swin (channels-last maps) and
    Hugging Face transformers; ``None`` for models that output feature maps."""
    inner = inner_model(model)
    if huggingface.is_huggingface_model(inner):
        return huggingface.reshape_transform(inner)
    if is_channels_last_model(inner):
        return ChannelsLastToMaps()
    if not is_token_model(inner):
        return None
    return TokensToMaps(int(inner.num_prefix_tokens), tuple(inner.patch_embed.grid_size))


MAX_PREFIX_TOKENS = 8
"""Most non-patch tokens (class, distillation, registers) :func:`probe_token_reshape` accepts before the patches."""


def probe_token_reshape(model: nn.Module, example: torch.Tensor) -> TokensToMaps | None:
    """A reshape for a vision transformer that is not timm's, found from one forward pass of ``example``.

    The first module output that is a token sequence ``[B, N, D]`` marks a transformer; the patch grid is
    that of the last feature map ``[B, D', h, w]`` computed before it (the patch embedding's convolution)
    with ``h * w <= N`` and at most :data:`MAX_PREFIX_TOKENS` tokens left over (class token and the like,
    dropped). ``None`` when the model outputs no tokens (a CNN) or no such grid precedes them; name a
    ``reshape_transform`` then. Hooks are removed even if the pass fails.
    """
    outputs = [out for _, _, out in module_outputs(model, example)]
    shapes = [tuple(o.shape) for o in outputs if isinstance(o, torch.Tensor) and o.dim() in (3, 4)]
    first_tokens = next((i for i, shape in enumerate(shapes) if len(shape) == 3), None)
    if first_tokens is None:
        return None
    tokens = shapes[first_tokens][1]
    for shape in reversed(shapes[:first_tokens]):
        if len(shape) == 4 and 0 <= tokens - shape[2] * shape[3] <= MAX_PREFIX_TOKENS:
            return TokensToMaps(prefix_tokens=None, grid=(shape[2], shape[3]))
    return None


def transformer_default_layer(model: nn.Module) -> str | None:
    """``blocks.{L-1}.norm1`` (the paper's layer for ViTs: the first LayerNorm of the last block) when the
    model has timm's block layout, else ``None``."""
    blocks = getattr(inner_model(model), "blocks", None)
    if isinstance(blocks, nn.Sequential | nn.ModuleList) and len(blocks) and hasattr(blocks[-1], "norm1"):
        return f"blocks.{len(blocks) - 1}.norm1"
    return None


def default_layer(model: nn.Module) -> str | None:
    """A layer for architectures outside the declared specs (names inside the classifier).

    The default layer of the classifier's family (:func:`opticam.models.families.family_of_model`: timm's by
    architecture, :mod:`opticam.models.libraries`; Hugging Face's, :func:`opticam.models.huggingface.default_layer`);
    for a model of no family with timm's ViT layout, the paper's choice, the first LayerNorm of the last block
    (``blocks.{L-1}.norm1``). ``None`` for the rest: found at the first call, the last layer with spatial
    feature maps.
    """
    from .families import family_of_model

    inner = inner_model(model)
    family = family_of_model(inner)
    if family is not None:
        return family.default_layer(inner) if family.default_layer is not None else None
    if is_token_model(inner) and hasattr(inner, "blocks"):
        return f"blocks.{len(inner.blocks) - 1}.norm1"
    return None


def check_feature_layer(loaded: object, layer: str | None, flag: str = "--layer") -> None:
    """Refuse a layer of ``loaded`` (a :class:`~opticam.models.LoadedModel`) without spatial feature maps
    (``classifier``, ``global_pool``) before any work, naming layers that would work: one capture pass of a
    black image at the model's input size. The one check of a layer a user names, whether by ``--layer`` or
    as a method's option (``gradcam(layer=...)``); ``flag`` says which in the message.

    Raises:
        LayerNotFoundError: an unknown name (:func:`find_layer`: the closest names).
        UsageError: a layer that does not run in the forward pass or outputs no feature maps.
    """
    from ..errors import UsageError

    if layer is None:
        return
    model = loaded.model  # type: ignore[attr-defined]
    module = find_layer(model, layer)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    example = torch.zeros(1, loaded.channels, *loaded.input_size, device=device)  # type: ignore[attr-defined]
    probes = probe_layers(model, example, loaded.reshape_transform)  # type: ignore[attr-defined]
    found = next((p for p in probes if p.module is module), None)
    if found is not None and found.spatial:
        return
    spatial = {p.name for p in probes if p.spatial}
    # name the outer layers only (bn2, not bn2.act inside it): the hint stays short and readable
    good = [p.name for p in probes if p.spatial and p.name.rpartition(".")[0] not in spatial]
    what = "does not run in the forward pass" if found is None else f"outputs {list(found.shape or ())}"
    hint = f"; layers with feature maps: {', '.join(good[-5:])} (the last ones)" if good else ""
    raise UsageError(f"{flag} {layer}: {what}, not feature maps [B, K, h, w] a saliency map can be made of{hint}")
