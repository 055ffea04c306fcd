"""examples/mobilenet_v2: the float MobileNetV2 rebuilt from the shared int8 TorchScript module.

Skips when the shared ``mobilenet_quantized.pt`` is absent; the agreement test also needs the ImageNet samples.
"""

from __future__ import annotations

import io
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
import torchvision
from PIL import Image

from tests.conftest import sample_rows
from tests.examples import import_example

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT.parent / "shared/models/mobilenet-v2-int8/mobilenet_quantized.pt"

pytestmark = [
    pytest.mark.skipif(not SOURCE.is_file(), reason=f"shared int8 MobileNetV2 not found at {SOURCE}"),
    pytest.mark.usefixtures("one_thread"),
]


def _import(name: str) -> ModuleType:
    return import_example("mobilenet_v2", name)


@pytest.fixture(scope="module")
def convert() -> ModuleType:
    return _import("convert")


@pytest.fixture(scope="module")
def quantized(convert: ModuleType) -> Any:
    """The int8 module with the QNNPACK engine (restored afterwards); call it one image at a time."""
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = "qnnpack"
    yield convert.load_quantized(SOURCE)
    torch.backends.quantized.engine = before


@pytest.fixture(scope="module")
def state(convert: ModuleType) -> dict[str, torch.Tensor]:
    return convert.convert(SOURCE)


@pytest.fixture(scope="module")
def float_model(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(state, strict=True)
    return model.eval()


def test_state_dict_loads_strictly_as_opticam_reads_it(state: dict[str, torch.Tensor]) -> None:
    """Exactly torchvision's keys and shapes, and it survives torch.save / torch.load(weights_only=True)."""
    expected = torchvision.models.mobilenet_v2().state_dict()
    assert list(state) == list(expected)
    assert all(state[k].shape == v.shape and state[k].dtype == v.dtype for k, v in expected.items())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    reloaded = torch.load(buffer, map_location="cpu", weights_only=True)
    torchvision.models.mobilenet_v2().load_state_dict(reloaded, strict=True)
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert state["classifier.1.weight"].shape == (1000, 1280)


def test_batch_norm_is_identity_plus_folded_bias(float_model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    bn = float_model.features[0][1]
    x = torch.randn(2, 32, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(bn(x), x + state["features.0.1.bias"][None, :, None, None])


def test_wrong_pairing_fails_with_a_clear_message(convert: ModuleType, quantized: Any) -> None:
    """A hoisted convolution that does not fit its torchvision slot raises, naming both."""

    class Shifted:
        """The int8 module, except that convolution 3's attribute returns convolution 4's packed weights."""

        def __init__(self, module: Any) -> None:
            self.code = module.code
            self.classifier = module.classifier
            self._module = module
            attributes = [a for a, _ in convert.hoisted_convolutions(module)]
            self._alias = {attributes[2]: attributes[3]}

        def __getattr__(self, name: str) -> Any:
            return getattr(self._module, self._alias.get(name, name))

    with pytest.raises(convert.ConversionError, match=r"convolution 3 .*features\.1\.conv\.1\.weight"):
        convert.convert(Shifted(quantized))

    class Renumbered:
        code = quantized.code.replace('_packed_params.2"', '_packed_params.7"')

    with pytest.raises(convert.ConversionError, match="numbered"):
        convert.convert(Renumbered())


def test_float_logits_correlate_with_int8(float_model: torch.nn.Module, quantized: Any) -> None:
    """On matplotlib's Grace Hopper photo (always present): the same top-1 and near-identical logits."""
    import matplotlib.cbook

    transform = _import("agreement").imagenet_transform()
    x = transform(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))[None]
    with torch.no_grad():
        lf, lq = float_model(x)[0], quantized(x)[0]
    r = torch.corrcoef(torch.stack([lf, lq]))[0, 1]
    assert r > 0.97, f"Pearson r between float and int8 logits is {r:.4f}"
    assert lf.argmax() == lq.argmax()


def test_top1_agreement_on_sample_images(float_model: torch.nn.Module, quantized: Any) -> None:
    """Float and int8 agree on the top-1 class of 20 real images spread over the 1000 classes."""
    rows = sample_rows()[::50]
    transform = _import("agreement").imagenet_transform()
    x = torch.stack([transform(Image.open(path)) for path, _ in rows])
    with torch.no_grad():
        float_top1 = float_model(x).argmax(1)
        int8_top1 = torch.cat([quantized(x[i : i + 1]) for i in range(len(x))]).argmax(1)
    agreement = (float_top1 == int8_top1).float().mean().item()
    assert len(rows) == 20
    assert agreement >= 0.85, f"top-1 agreement {agreement:.2f} on {len(rows)} images"
