"""Tests of the scripts under ``examples/``, which are not part of the package: they are imported by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def import_example(example: str, name: str) -> ModuleType:
    """``examples/<example>/<name>.py`` as a module named ``<example>_<name>``, registered in ``sys.modules``
    (dataclasses look their module up there)."""
    path = EXAMPLES / example / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{example}_{name}", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
