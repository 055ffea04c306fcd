"""A classifier of your own: ``path/to/file.py:factory`` or ``package.module:factory`` (uvicorn's form).

The part before the last ``:`` is a Python file (it ends in ``.py`` or contains a ``/``) or an importable
module (looked up on ``sys.path``, then in the current folder, as uvicorn does); the part after it names an
attribute of that module (dotted names reach inside: ``models:Zoo.small``). A file is imported under a name
derived from its absolute path (:func:`module_name_for`), once per process, so that Ray workers import the
same file under the same name.

The attribute is called with no arguments (or taken as it is when it already is an ``nn.Module``) and must
give one of:

* a :class:`~opticam.models.LoadedModel`, when the factory wants to state its preprocessing, class names,
  default layer and reshape itself; used as it is (a bare classifier in it is wrapped as below);
* an ``nn.Module`` that takes ``[B, C, H, W]`` pixels in **[0, 1]** (its normalization inside, as
  :class:`~opticam.models.PixelSpaceModel` does) and returns ``[B, K]`` logits. opticam wraps it in a
  ``PixelSpaceModel`` with mean 0 and std 1 (the identity: by contract it already takes pixels, so Opti-CAM's
  mask blacks out pixels and no pixel-space warning is due) and finds the rest, each from the first place
  that has it:

  ============== ===================================================================================
  input size     the model's ``input_size`` attribute (``28``, ``(H, W)`` or ``(C, H, W)``), the factory
                 module's ``INPUT_SIZE`` or ``IMAGE_SIZE``, timm's ``pretrained_cfg["input_size"]``;
                 otherwise an error that says where to declare it (sizes are never guessed)
  channels       a ``(C, H, W)`` input size, the model's ``in_chans`` / ``in_channels``, the module's
                 ``IN_CHANNELS``, the first ``Conv2d``'s ``in_channels``; otherwise 3, then 1, tried on zeros
  classes        the number: one forward pass of zeros; the names: the model's ``class_names``, the
                 module's ``CLASS_NAMES``, else ``class 0``, ``class 1``, ... (ImageNet's for 1000)
  layer          the model's ``target_layer``, the module's ``TARGET_LAYER`` or ``TARGET_LAYERS[factory]``,
                 the known families' (timm), ``blocks.{L-1}.norm1`` for a transformer with timm's block
                 layout; else the last layer with spatial feature maps, found at the first call
  reshape        the model's ``reshape_transform``, the module's ``RESHAPE_TRANSFORM``, timm's / Hugging
                 Face's, else probed: a model that outputs tokens ``[B, N, D]`` after a patch grid
                 ``[B, D, h, w]`` gets the class token(s) dropped and the patches laid on that grid
  preprocessing  resize to the input size (no crop, bilinear), grayscale for 1 channel, RGB for 3
  ============== ===================================================================================

Every failure is a one-line :class:`~opticam.errors.ModelLoadError`: a missing file or module, no such
attribute, a factory that raises, something that is not a module, outputs that are not ``[B, K]`` logits.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ..errors import ModelLoadError, OpticamError
from .families import ModelFamily, family_for, register_family
from .inputs import expected_channels
from .layers import (
    auto_reshape_transform,
    default_layer,
    find_layer,
    inner_model,
    probe_token_reshape,
    transformer_default_layer,
)
from .loading import LoadedModel, Preprocessing, class_names_for, load_checkpoint
from .outputs import logits_of
from .pixel_space import PixelSpaceModel

IDENTIFIER_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
MODULE_PREFIX = "opticam_factory_"
"""Files are imported as ``opticam_factory_<stem>_<8 hex digits of the absolute path>``."""


@dataclass(frozen=True)
class FactoryName:
    """A parsed ``--model`` factory name: ``file`` (absolute) or ``module``, and the ``attribute`` to call."""

    text: str
    attribute: str
    file: Path | None = None
    module: str | None = None

    @property
    def portable(self) -> str:
        """The name with the file made absolute: the same model from any working folder (a Ray worker's)."""
        return f"{self.file}:{self.attribute}" if self.file is not None else self.text

    def relative_to(self, folder: Path) -> str:
        """The name with the file relative to ``folder`` (how a result file records it, like its data set)."""
        if self.file is None:
            return self.text
        return f"{os.path.relpath(self.file, folder)}:{self.attribute}"


def recorded_model_name(name: str, folder: Path) -> str:
    """``name`` as a run records it: a factory file relative to the result file's ``folder``; other names as
    they are. :func:`resolve_recorded_name` undoes it."""
    return parse_factory_name(name).relative_to(folder) if is_factory_name(name) else name


def resolve_recorded_name(name: str, folder: Path) -> str:
    """A recorded model name made loadable from any working folder: a relative factory file is taken
    relative to ``folder`` (the result file's)."""
    if not is_factory_name(name):
        return name
    where, _, attribute = name.rpartition(":")
    if _names_file(where):
        path = Path(where).expanduser()
        return f"{path if path.is_absolute() else (folder / path).resolve()}:{attribute}"
    return name


def _names_file(where: str) -> bool:
    """Whether the part before the ``:`` names a Python file (it ends in ``.py`` or has a path separator)
    rather than a module."""
    return where.endswith(".py") or "/" in where or os.sep in where


def is_factory_name(name: Any) -> bool:
    """True for ``X:attribute`` names that no family with a prefix (``hf:``, ``torchvision:``) takes."""
    return isinstance(name, str) and family_for(name) is FACTORY


def parse_factory_name(name: str) -> FactoryName:
    """Split ``file.py:attr`` / ``package.module:attr`` (relative files resolved against the working folder).

    Raises:
        ModelLoadError: an empty side, or a module or attribute that is not a dotted Python name.
    """
    where, _, attribute = name.rpartition(":")
    if not where or not attribute:
        raise ModelLoadError(f"--model {name}: expected FILE.py:FACTORY or package.module:FACTORY")
    if not IDENTIFIER_PATH.match(attribute):
        raise ModelLoadError(f"--model {name}: {attribute!r} is not a Python name (expected FILE.py:FACTORY)")
    if _names_file(where):
        return FactoryName(name, attribute, file=Path(where).expanduser().resolve())
    if not IDENTIFIER_PATH.match(where):
        raise ModelLoadError(
            f"--model {name}: {where!r} is neither a .py file nor a module name (package.module:FACTORY)"
        )
    return FactoryName(name, attribute, module=where)


def module_name_for(file: Path) -> str:
    """The name a factory file is imported under: stable for a path, so every process uses the same one."""
    digest = hashlib.sha256(str(file).encode()).hexdigest()[:8]
    stem = re.sub(r"\W", "_", file.stem)
    return f"{MODULE_PREFIX}{stem}_{digest}"


def import_factory_module(parsed: FactoryName) -> ModuleType:
    """The module holding the factory: the file imported once per process, or the module imported.

    A file's own folder goes on ``sys.path`` (at the end) so that it can import the files beside it.
    """
    if parsed.file is not None:
        return _import_file(parsed)
    return _import_module(parsed)


def _import_file(parsed: FactoryName) -> ModuleType:
    file = parsed.file
    assert file is not None
    if not file.is_file():
        what = "is a folder" if file.is_dir() else "does not exist"
        raise ModelLoadError(f"--model {parsed.text}: {file} {what} (expected a Python file)")
    name = module_name_for(file)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"--model {parsed.text}: {file} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    folder = str(file.parent)
    if folder not in sys.path:
        sys.path.append(folder)
    sys.modules[name] = module  # dataclasses and pickling look a module up here
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[name]
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise ModelLoadError(f"--model {parsed.text}: importing {file} failed: {_one_line(exc)}") from None
    return module


def _import_module(parsed: FactoryName) -> ModuleType:
    module = parsed.module
    assert module is not None
    for attempt in range(2):
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as exc:
            missing_ours = exc.name is not None and (module == exc.name or module.startswith(exc.name + "."))
            if not missing_ours:
                raise ModelLoadError(f"--model {parsed.text}: importing {module} failed: {_one_line(exc)}") from None
            cwd = os.getcwd()
            if attempt or cwd in sys.path:
                raise ModelLoadError(
                    f"--model {parsed.text}: no module named {exc.name!r} (looked on sys.path and in {cwd}); "
                    "for a file, write path/to/file.py:FACTORY"
                ) from None
            sys.path.insert(0, cwd)  # uvicorn's --app-dir default: the current folder
        except Exception as exc:
            raise ModelLoadError(f"--model {parsed.text}: importing {module} failed: {_one_line(exc)}") from None
    raise AssertionError("unreachable")


def import_path_for(name: str) -> str | None:
    """For ``package.module:factory``: the ``sys.path`` folder its top-level package was imported from, so that
    a Ray worker, started elsewhere, can put it on its own path; ``None`` for files and other names."""
    if not is_factory_name(name):
        return None
    parsed = parse_factory_name(name)
    if parsed.module is None:
        return None
    top = parsed.module.split(".")[0]
    imported = sys.modules.get(top)
    where = getattr(imported, "__file__", None)
    if where is None:
        spec = importlib.util.find_spec(top)
        where = spec.origin if spec is not None else None
    if where is None:
        return None
    path = Path(where).resolve()
    return str(path.parent.parent if path.name == "__init__.py" else path.parent)


def resolve_factory(parsed: FactoryName) -> tuple[Any, ModuleType]:
    """``(what the factory gave, its module)``: the attribute called, or taken as it is if it is a module."""
    module = import_factory_module(parsed)
    target: Any = module
    walked = []
    for part in parsed.attribute.split("."):
        if not hasattr(target, part):
            owner = f"{parsed.file or parsed.module}" + (f":{'.'.join(walked)}" if walked else "")
            names = [n for n in dir(target) if not n.startswith("_") and callable(getattr(target, n, None))]
            close = difflib.get_close_matches(part, names, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; it has {', '.join(names[:12]) or 'none'}"
            raise ModelLoadError(f"--model {parsed.text}: {owner} has no attribute {part!r}{hint}")
        target = getattr(target, part)
        walked.append(part)
    if isinstance(target, nn.Module | LoadedModel):
        return target, module
    if not callable(target):
        raise ModelLoadError(
            f"--model {parsed.text}: {parsed.attribute} is a {type(target).__name__}, not a function returning a model"
        )
    try:
        made = target()
    except Exception as exc:
        raise ModelLoadError(f"--model {parsed.text}: the factory raised {_one_line(exc)}") from None
    return made, module


def load_factory_model(
    name: str, *, checkpoint: str | Path | None = None, device: str | torch.device = "cpu"
) -> LoadedModel:
    """The :class:`LoadedModel` behind ``name`` (``file.py:factory`` or ``package.module:factory``).

    ``checkpoint``: a state dict loaded into the factory's classifier (strictly). The result's ``name`` is
    ``name`` as given.

    Raises:
        ModelLoadError: one line saying what is wrong (see the module's docstring).
    """
    parsed = parse_factory_name(name)
    made, module = resolve_factory(parsed)
    if isinstance(made, LoadedModel):
        loaded = made if isinstance(made.model, PixelSpaceModel) else replace(made, model=_identity(made.model, made))
        loaded = replace(loaded, name=name)
        classifier = inner_model(loaded.model)
    elif isinstance(made, nn.Module):
        classifier, loaded = made, None
    else:
        raise ModelLoadError(
            f"--model {name}: the factory returned a {type(made).__name__}, not a torch.nn.Module or an "
            "opticam LoadedModel"
        )
    if checkpoint is not None:
        load_checkpoint(classifier, checkpoint, name)
    classifier.eval()
    if loaded is None:
        loaded = _describe(name, parsed, classifier, module)
    _check_logits(name, loaded.model, loaded.channels, loaded.input_size, len(loaded.class_names))
    loaded.model.eval().to(device)
    for p in loaded.model.parameters():
        p.requires_grad_(False)
    return loaded


def _identity(model: nn.Module, loaded: LoadedModel | None = None, channels: int | None = None) -> PixelSpaceModel:
    """``model`` in a :class:`PixelSpaceModel` that changes nothing (mean 0, std 1): it takes pixels already."""
    c = channels if channels is not None else loaded.channels if loaded is not None else 3
    return PixelSpaceModel(model, (0.0,) * c, (1.0,) * c)


def _declared(model: nn.Module, module: ModuleType, attributes: tuple[str, ...], constants: tuple[str, ...]) -> Any:
    """The first of the model's ``attributes``, then the factory module's ``constants``, that is set."""
    for attr in attributes:
        value = getattr(model, attr, None)
        if value is not None and not isinstance(value, nn.Module | torch.Tensor):
            return value
    for const in constants:
        value = getattr(module, const, None)
        if value is not None:
            return value
    return None


def _input_size(name: str, parsed: FactoryName, model: nn.Module, module: ModuleType) -> tuple[int | None, int, int]:
    """``(channels or None, H, W)`` as the model or its module declares it."""
    size = _declared(model, module, ("input_size",), ("INPUT_SIZE", "IMAGE_SIZE"))
    if size is None:
        cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
        size = cfg.get("input_size") if isinstance(cfg, dict) else None
    if size is None:
        where = parsed.file or parsed.module
        raise ModelLoadError(
            f"--model {name}: cannot tell the input size; give the model an input_size attribute (e.g. 28 or "
            f"(224, 224)), define INPUT_SIZE in {where}, or return an opticam LoadedModel"
        )
    try:
        values = [int(size)] * 2 if isinstance(size, int | float) else [int(v) for v in size]
    except (TypeError, ValueError):
        values = []
    if len(values) == 2:
        values = [None, *values]
    if len(values) != 3 or any(v is not None and v < 1 for v in values):
        raise ModelLoadError(f"--model {name}: input size {size!r} is not H, (H, W) or (C, H, W)")
    return values[0], values[1], values[2]


def _channels(name: str, model: nn.Module, module: ModuleType, declared: int | None, size: tuple[int, int]) -> int:
    value = declared or _declared(model, module, ("in_chans", "in_channels"), ("IN_CHANNELS", "INPUT_CHANNELS"))
    if value is None:
        value = expected_channels(model)  # the first Conv2d's in_channels
    if value is None:
        for tried in (3, 1):
            try:
                with torch.no_grad():
                    model(torch.zeros(1, tried, *size))
                value = tried
                break
            except Exception:
                continue
    if value not in (1, 3):
        raise ModelLoadError(
            f"--model {name}: input channels {value!r}; opticam reads images as grayscale (1) or RGB (3)"
            + (" (declare IN_CHANNELS in the factory's module)" if value is None else "")
        )
    return int(value)


def _describe(name: str, parsed: FactoryName, model: nn.Module, module: ModuleType) -> LoadedModel:
    """A bare classifier from a factory as a :class:`LoadedModel` (the table in the module's docstring)."""
    declared_channels, height, width = _input_size(name, parsed, model, module)
    channels = _channels(name, model, module, declared_channels, (height, width))
    wrapped = _identity(model, channels=channels).eval()
    logits = _check_logits(name, wrapped, channels, (height, width), None)
    num_classes = int(logits.shape[1])
    names = _declared(model, module, ("class_names",), ("CLASS_NAMES",))
    if names is None:
        class_names = class_names_for(num_classes)
    else:
        class_names = [str(n) for n in names]
        if len(class_names) != num_classes:
            raise ModelLoadError(
                f"--model {name}: {len(class_names)} class names for {num_classes} outputs (CLASS_NAMES / class_names)"
            )
    example = torch.zeros(1, channels, height, width)
    reshape = _declared(model, module, ("reshape_transform",), ("RESHAPE_TRANSFORM",))
    if reshape is not None and not callable(reshape):
        raise ModelLoadError(f"--model {name}: its reshape_transform is a {type(reshape).__name__}, not a function")
    reshape = reshape or auto_reshape_transform(model) or probe_token_reshape(wrapped, example)
    layer = _declared(model, module, ("target_layer",), ("TARGET_LAYER",))
    if layer is None:
        table = getattr(module, "TARGET_LAYERS", None)
        layer = table.get(parsed.attribute) if isinstance(table, dict) else None
    if layer is None:
        layer = default_layer(model) or (transformer_default_layer(model) if reshape is not None else None)
    if layer is not None:
        try:
            find_layer(wrapped, str(layer))
        except OpticamError as exc:
            raise ModelLoadError(f"--model {name}: its declared layer: {exc}") from None
    return LoadedModel(
        name=name,
        model=wrapped,
        preprocess=Preprocessing((height, width), interpolation="bilinear", channels=channels, crop=False),
        class_names=class_names,
        target_layer=None if layer is None else str(layer),
        reshape_transform=reshape,
        mean=(0.0,) * channels,
        std=(1.0,) * channels,
    )


def _check_logits(
    name: str, model: PixelSpaceModel, channels: int, size: tuple[int, int], classes: int | None
) -> torch.Tensor:
    """The model's logits for two images of zeros; an error unless they are ``[2, K]`` (``K = classes``)."""
    shape = f"[2, {channels}, {size[0]}, {size[1]}]"
    x = torch.zeros(2, channels, *size, device=_device_of(model))
    try:
        with torch.no_grad():  # the wrapper's own steps, apart, to tell a failing model from a wrong output
            raw = model.model((x - model.mean) / model.std)
    except Exception as exc:
        raise ModelLoadError(
            f"--model {name}: the model fails on a {shape} batch of zeros: {_one_line(exc)} "
            "(are its input size and channels declared right? INPUT_SIZE, IN_CHANNELS)"
        ) from None
    try:
        logits = logits_of(raw)
    except TypeError:
        raise ModelLoadError(
            f"--model {name}: its output for a {shape} batch is a {type(raw).__name__}, not [B, classes] logits"
        ) from None
    if logits.dim() != 2 or logits.shape[0] != 2:
        raise ModelLoadError(
            f"--model {name}: its output for a {shape} batch has shape {tuple(logits.shape)}, not [B, classes] logits"
        )
    if classes is not None and logits.shape[1] != classes:
        raise ModelLoadError(f"--model {name}: {logits.shape[1]} outputs but {classes} class names")
    return logits


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (a multi-line message joined), for the command line's one-line errors."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


Factory = Callable[[], nn.Module | LoadedModel]

FACTORY = register_family(
    ModelFamily(
        name="factory",
        matches=lambda name: ":" in name,  # after the prefixes: hf:..., torchvision:... are not factories
        load=load_factory_model,
    )
)

__all__ = [
    "FACTORY",
    "Factory",
    "FactoryName",
    "import_factory_module",
    "import_path_for",
    "is_factory_name",
    "load_factory_model",
    "module_name_for",
    "parse_factory_name",
    "recorded_model_name",
    "resolve_recorded_name",
]
