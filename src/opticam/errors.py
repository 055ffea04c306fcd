"""Exceptions raised by opticam.

Every error a user can cause (a bad image, an unknown model or layer, an out-of-range class, a model that
returns NaN) is an :class:`OpticamError` with a message that says what was wrong and what to do instead.
The subclasses also derive from the matching built-in type, so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class OpticamError(Exception):
    """Base class of all errors opticam raises on purpose."""


class ImageLoadError(OpticamError, ValueError):
    """An image file is missing, corrupt, truncated, empty or not an image."""


class ModelLoadError(OpticamError, ValueError):
    """A model name is unknown, its weights cannot be had, or a checkpoint does not fit."""


class LayerNotFoundError(OpticamError, KeyError):
    """A target layer name does not name a module of the model."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


class TargetError(OpticamError, ValueError):
    """A target class index is out of range, or the number of targets does not match the batch."""


class NumericalError(OpticamError, FloatingPointError):
    """The model or the input produced NaN or infinite values."""
