"""Peak memory of a block of work: CUDA's peak allocation, or on a CPU the kernel's high-water mark.

Used by the speed benchmark (:mod:`opticam.perf.bench`) to report what Opti-CAM costs in memory next to
the floor L.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

from .allocator import release_free_memory


class PeakMemory:
    """Peak memory of a block in MiB: CUDA peak allocated, or on CPU the peak RSS above the start level.

    On Linux the CPU peak is the kernel's own high-water mark (``VmHWM``), reset at the start of the block
    through ``/proc/self/clear_refs``: exact, and independent of thread scheduling. Where that reset is not
    allowed, a background thread samples the RSS every ``interval`` seconds instead, which can miss a
    short-lived peak on a busy machine; ``method`` says which was used ("cuda", "hwm" or "sampled").
    """

    def __init__(self, device: torch.device, interval: float = 0.002) -> None:
        self.device = device
        self.interval = interval
        self.peak_mb = 0.0
        self.method = ""

    @contextlib.contextmanager
    def watch(self) -> Iterator[PeakMemory]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
            yield self
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - base) / 2**20
            self.method = "cuda"
            return
        release_free_memory()  # memory kept by a tuned allocator (opticam.perf.allocator) is not this block's
        base = _proc_status_kib("VmRSS")
        if base is not None and _reset_high_water_mark():
            try:
                yield self
            finally:
                peak = _proc_status_kib("VmHWM") or base
                self.peak_mb = max(0.0, (peak - base) / 1024)
                self.method = "hwm"
            return
        with self._sampled():
            yield self

    @contextlib.contextmanager
    def _sampled(self) -> Iterator[None]:
        base = _rss_bytes()
        peak = [base]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _rss_bytes())
                stop.wait(self.interval)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            peak[0] = max(peak[0], _rss_bytes())
            self.peak_mb = max(0.0, (peak[0] - base) / 2**20)
            self.method = "sampled"


def _proc_status_kib(field: str) -> int | None:
    """One ``kB`` field of ``/proc/self/status`` (Linux), or None where there is no such file or field."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_high_water_mark() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_bytes() -> int:
    """Resident set size of this process in bytes (Linux ``/proc``; 0 elsewhere)."""
    return (_proc_status_kib("VmRSS") or 0) * 1024
