"""Keep freed CPU memory in the process, so that model passes stop paying for page faults.

PyTorch on the CPU allocates every activation with ``malloc``. glibc serves a large block (above its
``mmap`` threshold, at most 32 MiB) with a fresh ``mmap`` and gives it back with ``munmap`` when it is
freed, and trims the top of the heap as soon as 128 KiB are free there. A model pass allocates and frees
the same large activations every time, so each pass faults its pages in again (docs/speed.md, section 2b,
has the measurement). PyTorch's performance guide suggests preloading jemalloc or tcmalloc; raising glibc's two
thresholds with ``mallopt`` gives the same effect without a library to install.

The cost is that the process keeps its peak heap for its lifetime instead of returning it to the system
between passes, which is the behaviour wanted in a process that repeats the same passes (an explanation,
an evaluation run, the web server). ``opticam``'s command line therefore tunes the allocator at start
unless ``OPTICAM_MALLOC_TUNING=0``; the Python API does not change process-wide settings on import, and
:func:`tune_cpu_allocator` is there for programs that want it. ``benchmarks/allocator.py`` measures what it
buys.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from collections.abc import Mapping

# glibc's mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_LARGEST = 2**31 - 1  # mallopt takes an int

ENV_SWITCH = "OPTICAM_MALLOC_TUNING"

_tuned = False


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """This process's C library when it is glibc (Linux), with the signatures used here set; else None.

    Looked up once: the peak-memory measurement calls :func:`release_free_memory` before every timed run.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        # gnu_get_libc_version exists only in glibc: musl's mallopt is a no-op that also returns 1.
        libc.gnu_get_libc_version  # noqa: B018
        libc.mallopt  # noqa: B018
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def tune_cpu_allocator() -> bool:
    """Raise glibc's ``mmap`` and trim thresholds so freed activations are reused, not unmapped.

    Returns True when the settings took effect (Linux with glibc), False elsewhere (macOS, Windows, musl),
    where it changes nothing. Calling it again is harmless.
    """
    global _tuned
    if _tuned:
        return True
    libc = _glibc()
    if libc is None:
        return False
    _tuned = libc.mallopt(_M_MMAP_THRESHOLD, _LARGEST) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _LARGEST) == 1
    return _tuned


def is_tuned() -> bool:
    """Whether :func:`tune_cpu_allocator` has taken effect in this process."""
    return _tuned


def release_free_memory() -> bool:
    """Give the heap's free pages back to the system now (glibc ``malloc_trim(0)``); False where unsupported.

    With the allocator tuned, memory freed by earlier passes stays resident; a peak-memory measurement
    calls this first so that it counts what the measured block itself needs.
    """
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def tuning_wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """The command line's switch: tune unless ``OPTICAM_MALLOC_TUNING`` is ``0``, ``false``, ``no`` or ``off``."""
    return environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")
