"""Rebuild a float ``torchvision.models.mobilenet_v2`` state dict from the int8 TorchScript MobileNetV2.

The source, ``shared/models/mobilenet-v2-int8/mobilenet_quantized.pt``, is torchvision's quantized
MobileNetV2 (QNNPACK, per-tensor int8) saved as TorchScript by the PyTorch iOS demo app. An int8 module has
no gradients, so Opti-CAM needs the float architecture with the same weights. This script writes that
float state dict; it loads with ``strict=True`` into ``torchvision.models.mobilenet_v2()`` (1000 classes),
and therefore into opticam with ``--model torchvision:mobilenet_v2 --checkpoint FILE``.

Where the weights are
    The TorchScript module's ``state_dict()`` is empty. TorchScript's freezing pass hoisted the 52 packed
    convolutions into attributes of the top module named
    ``_jit_pass_hoist_conv_packed_params.<module path>._packed_params.<n>``; ``module.code`` reads them with
    ``getattr(self, "...")`` in execution order, ``n`` = 1..52. ``torch.ops.quantized.conv2d_unpack`` gives
    ``(int8 weight, float bias)``; the weight is dequantized to float. The classifier stays a module:
    ``getattr(module.classifier, "1")._packed_params._packed_params``, unpacked with
    ``torch.ops.quantized.linear_unpack`` (weight ``[1000, 1280]``, bias ``[1000]``).

The mapping, checked rather than assumed
    The ``<module path>`` inside each hoisted name is the quantizable model's name of the fused
    conv(+BN)(+ReLU) module, which is exactly the torchvision name of the ``Conv2d`` (``features.0.0``,
    ``features.1.conv.0.0``, ``features.1.conv.1``, ..., ``features.18.0``). :func:`convert` pairs the hoisted
    attributes, in code order, with torchvision's ``Conv2d`` modules, in module order, and requires for every
    pair: the same name, the numbers ``n`` consecutive, the weight shape, a bias of ``out_channels``, and the
    same stride, padding, dilation and groups. Any disagreement raises :class:`ConversionError` naming the
    pair; nothing is matched by luck.

Why BatchNorm becomes identity + bias
    When the model was quantized, each BatchNorm was folded into the convolution before it:
    ``W' = W * gamma / sqrt(var + eps)`` and ``b' = beta - mean * gamma / sqrt(var + eps)``. The int8 weights
    are ``W'`` and the float bias is ``b'``. torchvision's convolutions have ``bias=False``, so the folded
    bias has to live in the BatchNorm that follows each convolution (the next module in the same
    ``Sequential``): weight 1, bias ``b'``, running mean 0, running var ``1 - eps``. In eval mode the BN then
    computes ``(x - 0) / sqrt((1 - eps) + eps) * 1 + b' = x + b'``: the convolution with its folded bias,
    exactly as the quantized model computes it (up to int8 rounding of the activations). The model must
    stay in eval mode (training-mode BN would use batch statistics).

Activations
    The quantized model uses ``conv2d_relu`` (torchvision's quantizable MobileNetV2 replaces ReLU6 by ReLU;
    each int8 output is clamped at ``255 * scale`` instead), while ``torchvision.models.mobilenet_v2`` has
    ReLU6. The state dict is the same either way; ``agreement.py`` measures both.

Usage::

    python examples/mobilenet_v2/convert.py --out mnv2.pth [--source mobilenet_quantized.pt]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn

DEFAULT_SOURCE = Path(__file__).resolve().parents[3] / "shared/models/mobilenet-v2-int8/mobilenet_quantized.pt"
HOIST_PREFIX = "_jit_pass_hoist_conv_packed_params."
_HOISTED_GETATTR = re.compile(r'getattr\(self, "(' + re.escape(HOIST_PREFIX) + r'(.+?)\._packed_params\.(\d+))"\)')
NUM_CLASSES = 1000


class ConversionError(RuntimeError):
    """The quantized module does not match torchvision's MobileNetV2 where it should."""


def load_quantized(source: str | Path = DEFAULT_SOURCE) -> torch.jit.ScriptModule:
    """The int8 TorchScript module, in eval mode (to run it: QNNPACK engine, one image at a time)."""
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"quantized MobileNetV2 not found at {source}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14: "torch.jit.load is deprecated"
        module = torch.jit.load(str(source), map_location="cpu")
    return module.eval()


def hoisted_convolutions(module: torch.jit.ScriptModule) -> list[tuple[str, str]]:
    """``(attribute, torchvision module path)`` of the hoisted packed convolutions, in the order of ``module.code``.

    Raises:
        ConversionError: no hoisted attribute, or their numbers are not 1, 2, ... in code order.
    """
    found = _HOISTED_GETATTR.findall(module.code)
    if not found:
        raise ConversionError(f'no getattr(self, "{HOIST_PREFIX}...") in the module\'s code')
    numbers = [int(n) for _, _, n in found]
    if numbers != list(range(1, len(found) + 1)):
        raise ConversionError(f"hoisted convolutions are not numbered 1..{len(found)} in code order: {numbers}")
    return [(attribute, path) for attribute, path, _ in found]


def _following_batch_norm(model: nn.Module, conv_path: str) -> str:
    """The name of the BatchNorm right after the convolution ``conv_path`` in its parent ``Sequential``."""
    parent_path, _, index = conv_path.rpartition(".")
    parent = model.get_submodule(parent_path)
    bn_path = f"{parent_path}.{int(index) + 1}"
    if not isinstance(parent, nn.Sequential) or len(parent) <= int(index) + 1:
        raise ConversionError(f"{conv_path} is not followed by another module in a Sequential")
    if not isinstance(model.get_submodule(bn_path), nn.BatchNorm2d):
        raise ConversionError(
            f"{conv_path} is followed by {type(model.get_submodule(bn_path)).__name__}, not BatchNorm2d"
        )
    return bn_path


def _conv_geometry(packed: torch.ScriptObject) -> dict[str, tuple[int, ...]]:
    """Stride, padding, dilation and groups of a packed convolution."""
    return {
        "stride": tuple(packed.stride()),
        "padding": tuple(packed.padding()),
        "dilation": tuple(packed.dilation()),
        "groups": (int(packed.groups()),),
    }


def convert(source: str | Path | torch.jit.ScriptModule = DEFAULT_SOURCE) -> dict[str, torch.Tensor]:
    """The float state dict for ``torchvision.models.mobilenet_v2()`` rebuilt from the int8 TorchScript module.

    Args:
        source: the ``.pt`` file, or the module already loaded with :func:`load_quantized` (anything with its
            ``code``, hoisted attributes and ``classifier``).

    Returns:
        A plain ``{name: tensor}`` dict (float32 weights, ``num_batches_tracked`` int64) with exactly the keys
        and shapes of ``torchvision.models.mobilenet_v2().state_dict()``; it is checked by loading it with
        ``strict=True`` before it is returned.

    Raises:
        ConversionError: any disagreement between the quantized module and torchvision's architecture.
    """
    module = load_quantized(source) if isinstance(source, str | Path) else source
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=NUM_CLASSES).eval()
    expected = model.state_dict()
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    hoisted = hoisted_convolutions(module)
    if len(hoisted) != len(convs):
        raise ConversionError(f"{len(hoisted)} hoisted convolutions but torchvision's MobileNetV2 has {len(convs)}")

    state: dict[str, torch.Tensor] = {}
    for i, ((attribute, path), (conv_name, conv)) in enumerate(zip(hoisted, convs, strict=True), start=1):
        where = f"convolution {i} ({attribute})"
        if path != conv_name:
            raise ConversionError(f"{where} is {path!r} but torchvision's convolution {i} is {conv_name!r}")
        packed = getattr(module, attribute)
        qweight, bias = torch.ops.quantized.conv2d_unpack(packed)
        weight = qweight.dequantize().float() if qweight.is_quantized else qweight.float()
        if tuple(weight.shape) != tuple(conv.weight.shape):
            raise ConversionError(
                f"{where}: weight {tuple(weight.shape)} but {conv_name}.weight is {tuple(conv.weight.shape)}"
            )
        if bias is None or tuple(bias.shape) != (conv.out_channels,):
            shape = None if bias is None else tuple(bias.shape)
            raise ConversionError(f"{where}: folded bias {shape}, expected ({conv.out_channels},)")
        geometry = _conv_geometry(packed)
        wanted = {
            "stride": tuple(conv.stride),
            "padding": tuple(conv.padding),
            "dilation": tuple(conv.dilation),
            "groups": (conv.groups,),
        }
        if geometry != wanted:
            raise ConversionError(f"{where}: {geometry} but {conv_name} has {wanted}")
        bn_name = _following_batch_norm(model, conv_name)
        bn = model.get_submodule(bn_name)
        if bn.num_features != conv.out_channels:
            raise ConversionError(f"{bn_name} has {bn.num_features} features, {conv_name} {conv.out_channels} outputs")
        state[f"{conv_name}.weight"] = weight.contiguous()
        # BN = identity + folded bias: (x - 0) / sqrt((1 - eps) + eps) * 1 + b.
        state[f"{bn_name}.weight"] = torch.ones(bn.num_features)
        state[f"{bn_name}.bias"] = bias.detach().float().clone()
        state[f"{bn_name}.running_mean"] = torch.zeros(bn.num_features)
        state[f"{bn_name}.running_var"] = torch.full((bn.num_features,), 1.0 - bn.eps)
        state[f"{bn_name}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)

    linear = model.get_submodule("classifier.1")
    try:
        packed_linear = getattr(module.classifier, "1")._packed_params._packed_params
    except AttributeError as exc:
        raise ConversionError(f"no classifier.1._packed_params._packed_params in the quantized module: {exc}") from exc
    qweight, bias = torch.ops.quantized.linear_unpack(packed_linear)
    weight = qweight.dequantize().float() if qweight.is_quantized else qweight.float()
    if tuple(weight.shape) != tuple(linear.weight.shape) or bias is None or tuple(bias.shape) != (linear.out_features,):
        raise ConversionError(
            f"classifier: weight {tuple(weight.shape)}, bias {None if bias is None else tuple(bias.shape)}; "
            f"classifier.1 expects {tuple(linear.weight.shape)} and ({linear.out_features},)"
        )
    state["classifier.1.weight"] = weight.contiguous()
    state["classifier.1.bias"] = bias.detach().float().clone()

    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ConversionError(f"state dict keys differ from torchvision's: missing {missing}, unexpected {extra}")
    for key, value in expected.items():
        if state[key].shape != value.shape or state[key].dtype != value.dtype:
            raise ConversionError(
                f"{key}: {tuple(state[key].shape)} {state[key].dtype}, expected {tuple(value.shape)} {value.dtype}"
            )
    model.load_state_dict(state, strict=True)
    return {key: state[key] for key in expected}


def main(argv: list[str] | None = None) -> int:
    """Command line: convert ``--source`` and ``torch.save`` the state dict to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the float state dict (.pth)")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help=f"int8 TorchScript file ({DEFAULT_SOURCE})")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        state = convert(args.source)
    except (ConversionError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.out)
    params = sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked"))
    print(
        f"wrote {args.out}: {len(state)} tensors, {params:,} values, "
        f"loads strictly into torchvision.models.mobilenet_v2() ({time.perf_counter() - start:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
