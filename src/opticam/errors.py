"""Exceptions raised by opticam.

Every error a user can cause (a bad image, an unknown model or layer, an out-of-range class, a model that
returns NaN, a flag value that cannot work) is an :class:`OpticamError` with a message that says what was
wrong and what to do instead. The subclasses also derive from the matching built-in type, so
``except ValueError`` keeps working.
"""

from __future__ import annotations


class OpticamError(Exception):
    """Base class of all errors opticam raises on purpose."""


class UsageError(OpticamError, ValueError):
    """A value given on the command line or in the web form that cannot work (unknown method, bad number).

    The command line prints it as one line and exits with status 2; the web page answers with ``status``.
    """

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class ConfigValueError(UsageError):
    """An option value that cannot work (a declared option of a method or a metric, :mod:`opticam.options`;
    an :class:`~opticam.OptiCAMConfig` field: a negative iteration count, an unknown objective, more coarse
    steps than steps). A :class:`UsageError`: one line and exit status 2 on the command line, 400 on the web.

    ``field`` names the offending option (``"iterations"``); ``related`` the other options a check between
    two of them read (``coarse_iterations`` cannot exceed ``iterations``: field ``coarse_iterations``, related
    ``("iterations",)``). Callers say where the value came from by these names, never by reading the message:
    the command line prefixes the flag of the option the user gave (``--iterations: ...``).
    """

    def __init__(self, message: str, field: str, related: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.field = field
        self.related = tuple(related)

    @property
    def fields(self) -> tuple[str, ...]:
        """``field`` first, then ``related``: every option the failed check read."""
        return (self.field, *self.related)

    def __reduce__(self) -> tuple[type, tuple[str, str, tuple[str, ...]]]:
        # Pickling (a Ray worker's error reaching the driver) rebuilds from args, which hold only the message.
        return (type(self), (str(self), self.field, self.related))


class ImageLoadError(OpticamError, ValueError):
    """An image file or upload is missing, empty, not an image, too large, truncated or corrupt.

    ``kind`` says which, so that callers (the web page) can answer each case in their own words:
    ``missing``, ``empty``, ``not-image``, ``format``, ``too-many-pixels``, ``zero-size`` or ``corrupt``.
    ``size`` is ``(width, height)`` when the header gave it. ``detail`` is the underlying reason alone (PIL's
    words, without the file name and the kind), so that a caller who words the kind itself does not repeat it.
    """

    def __init__(
        self,
        message: str,
        kind: str = "corrupt",
        size: tuple[int, int] | None = None,
        pixels: int | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.size = size
        self.pixels = pixels
        self.detail = detail


class ModelLoadError(OpticamError, ValueError):
    """A model name is unknown, its weights cannot be had, or a checkpoint does not fit."""


class DatasetError(OpticamError, ValueError):
    """The image set cannot be read: missing, no labels, malformed CSV, unknown synset, an ``.npz`` file without
    the asked split's arrays or with mismatched lengths."""


class LayerNotFoundError(OpticamError, KeyError):
    """A target layer name does not name a module of the model."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


class TargetError(OpticamError, ValueError):
    """A target class index is out of range, or the number of targets does not match the batch."""


class NumericalError(OpticamError, FloatingPointError):
    """The model or the input produced NaN or infinite values."""


class InputError(OpticamError, ValueError):
    """Images, maps or logits of the wrong shape, size, channel count or value range for the call."""


class InputTypeError(OpticamError, TypeError):
    """An argument of the wrong type or dtype (a numpy array or an integer tensor where float images go)."""


class MethodNotApplicableError(OpticamError, ValueError):
    """A saliency method cannot work on this model (e.g. FullGrad or ShapleyCAM on a transformer, whose layers
    output tokens): the message names the method, says why, and which methods work instead."""


class ResourceError(OpticamError, OSError):
    """Something the command needed from the machine was not there when it ran: a port already in use, a
    Ray cluster that does not answer, a file or folder that cannot be written. The message names it.

    The command line exits with status 1 for it (a run-time failure), not 2 (a value that cannot work).
    """


class InputWarning(UserWarning):
    """The input can be explained but the result will say little: e.g. images so small that the layer's
    feature grid is a single cell, which makes every map constant."""
