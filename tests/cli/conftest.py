"""The command line's fixtures: ``mini``, the default model replaced by a classifier that runs in milliseconds."""

from __future__ import annotations

import pytest

import opticam.cli.common as common
import opticam.models.loading as loading
from opticam.models.specs import DEFAULT_MODEL
from tests.tinymodels import mini_model


@pytest.fixture
def mini(monkeypatch):
    """The default model is :func:`tests.tinymodels.mini_model` (other names and checkpoints go to the real
    loader): the commands' flags, checks and outputs are tested without the real model's seconds."""
    real = loading.load_model

    def load(name=DEFAULT_MODEL, pretrained=True, checkpoint=None, device="cpu", **kwargs):
        if name == DEFAULT_MODEL and checkpoint is None:
            return mini_model(device)
        return real(name, pretrained=pretrained, checkpoint=checkpoint, device=device, **kwargs)

    monkeypatch.setattr(loading, "load_model", load)
    monkeypatch.setattr(common, "load_model", load)
