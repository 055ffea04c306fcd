"""How close Opti-CAM runs to the hardware floor: the benchmark behind ``opticam bench``.

The floor ``L`` is the bare loop ``iterations x (forward pass of the masked batch + backward pass to the
input)`` with frozen parameters, same model, batch and iteration count: Opti-CAM cannot do less work than
that. Both are timed **in the same run, alternating** (Opti-CAM, L, then L, Opti-CAM, ...) so that load
from other processes hits both alike; the reported figure is the median over the repeats. On a CPU
shared with other work, wall time swings by tens of percent between repeats, so each run also records the
**CPU time of this process** (``time.process_time``): the work done, which another process's load barely
changes; ``cpu_ratio`` is the steadier comparison there. On CUDA, wall time (synchronized) is the measure.

Per batch size the result has Opti-CAM's seconds per image, L's, their ratio, the share of model passes
per-image early stopping saved, and the peak memory of the Opti-CAM run (CUDA: peak allocated; CPU: peak
resident set size above the level before the run, from the kernel's high-water mark, after the heap's free
pages are handed back so that memory an earlier pass left behind is not mistaken for headroom). The
command line runs with the tuned CPU allocator (:mod:`opticam.perf.allocator`), which speeds L and Opti-CAM
alike; the JSON says whether it was on (``allocator_tuned``). Optional extra lines (:class:`BenchSettings`):

* ``variants``: Opti-CAM with ``channels_last``, ``bfloat16`` autocast, ``torch.compile``, ... timed against
  the same float32 floor, to record what each buys;
* ``official``: the official research code's loop (hooks kept registered, parameter gradients on,
  ``retain_graph=True``), as a second reference line.

No assertion on speed lives here or in the tests: timings depend on the machine and its load.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..methods.base import frozen
from ..methods.opticam import OptiCAM
from ..methods.opticam_maths import saliency_mask
from .allocator import is_tuned
from .memory import PeakMemory

# Variant name -> OptiCAM options (and, for channels_last, a model in that memory format).
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "channels_last": {"channels_last": True},
    "bfloat16": {"precision": "bfloat16"},
    "float16": {"precision": "float16"},
    "compile": {"compile": True},
}


@dataclass
class BenchRow:
    """One batch size (and variant): Opti-CAM against the floor L, both per image."""

    batch: int
    variant: str
    iterations: int
    seconds_per_image: float
    limit_seconds_per_image: float
    ratio: float
    peak_mem_mb: float
    limit_peak_mem_mb: float
    passes_per_image: float
    passes_without_early_stop: float
    early_stop_saved: float
    repeats: int
    opticam_runs: list[float] = field(default_factory=list)
    limit_runs: list[float] = field(default_factory=list)
    official_seconds_per_image: float | None = None
    official_ratio: float | None = None
    cpu_seconds_per_image: float | None = None
    limit_cpu_seconds_per_image: float | None = None
    cpu_ratio: float | None = None
    opticam_cpu_runs: list[float] = field(default_factory=list)
    limit_cpu_runs: list[float] = field(default_factory=list)
    official_cpu_ratio: float | None = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(model: nn.Module, x: torch.Tensor, masks: torch.Tensor, classes: torch.Tensor, iterations: int) -> None:
    """The floor L: ``iterations`` x (forward of the masked batch + backward to the input), parameters frozen."""
    rows = torch.arange(x.shape[0], device=x.device)
    with frozen(model):
        for _ in range(iterations):
            masked = (x * masks).requires_grad_(True)
            model(masked)[rows, classes].sum().backward()


def official_loop(model: nn.Module, layer: nn.Module, x: torch.Tensor, classes: torch.Tensor, iterations: int) -> None:
    """The official research code's loop (``Basic_OptCAM``), reproduced for timing only.

    pytorch-grad-cam's ``ActivationsAndGradients`` hooks stay registered for the whole loop, the model's
    parameters keep ``requires_grad=True``, the loss is ``sum(y_c(x) - y_c(x * M))`` and every backward
    keeps the graph (``retain_graph=True``). Its maps are not used: only its time is.
    """
    from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients

    model.eval()
    rows = torch.arange(x.shape[0], device=x.device)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(True)
    wrapper = ActivationsAndGradients(model, [layer], None, detach=True)
    try:
        logits = wrapper(x)
        # pytorch-grad-cam keeps the captured activations on the CPU; the official code moves them back.
        feats = torch.relu(wrapper.activations[-1].to(x.device))
        original = logits[rows, classes].detach()
        u = torch.full(feats.shape[:2], 0.5, device=x.device, requires_grad=True)
        optimizer = torch.optim.Adam([u], lr=0.1)
        size = tuple(x.shape[-2:])
        for _ in range(iterations):
            masks = saliency_mask(feats, u, size, "range")
            loss = (original - wrapper(x * masks)[rows, classes]).sum()
            optimizer.zero_grad()
            loss.backward(retain_graph=True)
            optimizer.step()
    finally:
        wrapper.release()
        model.zero_grad(set_to_none=True)
        for p, flag in flags:
            p.requires_grad_(flag)


@contextlib.contextmanager
def _channels_last(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Temporarily put the model's 4-d weights in channels-last memory format."""
    if not enabled:
        yield
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float, float, Any]:
    """``(wall seconds, CPU seconds of this process, peak MiB, fn())``."""
    memory = PeakMemory(device)
    _sync(device)
    with memory.watch():
        start, cpu_start = time.perf_counter(), time.process_time()
        out = fn()
        _sync(device)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return seconds, cpu, memory.peak_mb, out


@dataclass(frozen=True)
class BenchSettings:
    """What :func:`benchmark` measures, apart from the model and images (``opticam bench``'s flags).

    Frozen: one settings object describes one benchmark run and can be shared by several; lists given
    for the sequences are kept as tuples.
    """

    batches: Sequence[int] = (1, 8, 32)
    """Batch sizes, each timed on the first that many images (so ``images`` must hold ``max(batches)``)."""
    iterations: int = 100
    """Opti-CAM's optimizer steps, and the masked forward + backward passes of the floor L."""
    repeats: int = 3
    """Timed runs of each measurement, alternating between L and Opti-CAM; the rows report the median."""
    variants: Sequence[str] = ("default",)
    """Opti-CAM variants (names in :data:`VARIANTS`), each timed against the same float32 floor."""
    official: bool = False
    """Also time the official research code's loop once per batch (reported on the ``default`` row)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "batches", tuple(self.batches))
        object.__setattr__(self, "variants", tuple(self.variants))


@dataclass
class _Batch:
    """One batch's fixed inputs, shared by every measurement of it: the images, the class explained for each
    (its prediction), and the mask L multiplies in (the map at ``u = 0``; L's work does not depend on it)."""

    x: torch.Tensor
    classes: torch.Tensor
    masks: torch.Tensor
    base: OptiCAM  # iterations=0: finds the target layer for the official loop

    @property
    def size(self) -> int:
        return self.x.shape[0]


@dataclass
class _Runs:
    """One measured call's repeats, per image: wall seconds, CPU seconds of this process, peak MiB."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    mem: list[float] = field(default_factory=list)

    def add(self, seconds: float, cpu: float, mem: float, batch: int) -> float:
        """Record one run of a whole batch; returns its wall seconds per image (for the progress line)."""
        self.wall.append(seconds / batch)
        self.cpu.append(cpu / batch)
        self.mem.append(mem)
        return seconds / batch


def benchmark(
    model: nn.Module,
    layer: nn.Module | str,
    images: torch.Tensor,
    settings: BenchSettings = BenchSettings(),
    *,
    reshape_transform: Any = None,
    progress: Callable[[str], None] | None = None,
) -> list[BenchRow]:
    """Time Opti-CAM (each variant) against the floor L for each batch size; see the module docstring.

    ``images`` must hold at least ``max(settings.batches)`` images; each batch takes the first ones, explained
    for their predicted class. One untimed warm-up of each measured call runs first. ``progress`` gets one
    line per timed run.
    """
    _check(settings, images)
    say = progress or (lambda _msg: None)
    rows: list[BenchRow] = []
    for size in settings.batches:
        batch = _prepare(model, layer, reshape_transform, images[:size])
        cams = {
            v: OptiCAM(model, layer, reshape_transform, iterations=settings.iterations, **VARIANTS[v])
            for v in settings.variants
        }
        _warm_up(model, layer, reshape_transform, batch, cams)
        limit, runs, passes = _alternate(model, batch, cams, settings, say)
        official = _time_official(model, batch, settings.iterations, say) if settings.official else None
        rows += _summarize(batch.size, settings, limit, runs, passes, official)
    return rows


def _check(settings: BenchSettings, images: torch.Tensor) -> None:
    """Refuse settings that cannot be measured (``ValueError``) before any model pass is spent on them."""
    if settings.repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {settings.repeats}")
    if settings.iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {settings.iterations}")
    if not settings.batches or min(settings.batches) < 1:
        raise ValueError(f"batch sizes must be >= 1, got {list(settings.batches)}")
    if images.shape[0] < max(settings.batches):
        raise ValueError(
            f"need {max(settings.batches)} images for batch {max(settings.batches)}, got {images.shape[0]}"
        )
    unknown = [v for v in settings.variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; use some of {sorted(VARIANTS)}")


def _prepare(model: nn.Module, layer: nn.Module | str, reshape_transform: Any, x: torch.Tensor) -> _Batch:
    """The batch's predicted classes and L's mask, from one untimed pass: computed once so that every timed
    run of the batch, L and Opti-CAM alike, works on the same inputs and targets."""
    base = OptiCAM(model, layer, reshape_transform, iterations=0)
    with frozen(model), torch.no_grad():
        logits, feats = base.features(x)
        classes = logits.argmax(dim=1)
        masks = saliency_mask(feats, torch.zeros(feats.shape[:2], device=x.device), tuple(x.shape[-2:]))
    return _Batch(x, classes, masks, base)


def _warm_up(model: nn.Module, layer: nn.Module | str, reshape_transform: Any, batch: _Batch, cams: dict) -> None:
    """One untimed run of L and of each variant (one iteration each), so that one-off costs (allocator growth,
    lazy initialization, ``torch.compile``'s compilation, reused by the timed runs) stay out of the timings."""
    bare_loop(model, batch.x, batch.masks, batch.classes, 1)
    for v, cam in cams.items():
        with _channels_last(model, v == "channels_last"):
            warm = OptiCAM(model, layer, reshape_transform, iterations=1, **VARIANTS[v])
            warm._compiled = cam.loop_model() if cam.config.compile else None
            warm.explain(batch.x, batch.classes)


def _time_limit(model: nn.Module, batch: _Batch, iterations: int, runs: _Runs) -> float:
    """Time the floor L once on the batch into ``runs``; returns its seconds per image."""
    seconds, cpu, mem, _ = _timed(
        lambda: bare_loop(model, batch.x, batch.masks, batch.classes, iterations), batch.x.device
    )
    return runs.add(seconds, cpu, mem, batch.size)


def _time_opticam(model: nn.Module, variant: str, cam: OptiCAM, batch: _Batch, runs: _Runs) -> tuple[float, float]:
    """Time one Opti-CAM variant once on the batch into ``runs`` (``channels_last``: with the model converted
    for the run only); returns its seconds per image and its model passes per image (early stopping cuts them)."""
    with _channels_last(model, variant == "channels_last"):
        seconds, cpu, mem, result = _timed(lambda: cam.explain(batch.x, batch.classes), batch.x.device)
    return runs.add(seconds, cpu, mem, batch.size), result.passes / batch.size


def _alternate(
    model: nn.Module, batch: _Batch, cams: dict[str, OptiCAM], settings: BenchSettings, say: Callable[[str], None]
) -> tuple[_Runs, dict[str, _Runs], dict[str, float]]:
    """The timed repeats: ``L, variants...`` on even repeats, the reverse order on odd ones, so that a drift in
    the machine's load (or its clock speed) falls on L and Opti-CAM alike. Returns L's runs, each variant's runs,
    and each variant's passes per image (from its last run)."""
    limit, runs, passes = _Runs(), {v: _Runs() for v in cams}, {}
    for rep in range(settings.repeats):
        order = ["limit", *settings.variants] if rep % 2 == 0 else [*reversed(settings.variants), "limit"]
        for what in order:
            if what == "limit":
                per_image = _time_limit(model, batch, settings.iterations, limit)
            else:
                per_image, passes[what] = _time_opticam(model, what, cams[what], batch, runs[what])
            say(f"batch {batch.size} rep {rep + 1}/{settings.repeats} {what}: {per_image:.4f} s/image")
    return limit, runs, passes


def _time_official(model: nn.Module, batch: _Batch, iterations: int, say: Callable[[str], None]) -> tuple[float, float]:
    """The official research code's loop, warmed up then timed once: ``(wall, CPU)`` seconds per image, the
    second reference line (what the same work costs written the usual way)."""
    target = batch.base.target_layer(batch.x)
    official_loop(model, target, batch.x, batch.classes, 1)  # warm-up
    seconds, cpu, _, _ = _timed(
        lambda: official_loop(model, target, batch.x, batch.classes, iterations), batch.x.device
    )
    say(f"batch {batch.size} official loop: {seconds / batch.size:.4f} s/image")
    return seconds / batch.size, cpu / batch.size


def _summarize(
    size: int,
    settings: BenchSettings,
    limit: _Runs,
    runs: dict[str, _Runs],
    passes: dict[str, float],
    official: tuple[float, float] | None,
) -> list[BenchRow]:
    """One row per variant: medians over the repeats (robust to one run hit by load), ratios to L's medians
    (every variant against the same floor), the official loop on the ``default`` row only."""
    wall, cpu = statistics.median(limit.wall), statistics.median(limit.cpu)
    full = settings.iterations + 2  # evaluations at steps 0..iterations, plus the capture pass
    rows = []
    for v in settings.variants:
        mine = runs[v]
        seconds, my_cpu = statistics.median(mine.wall), statistics.median(mine.cpu)
        reference = official if v == "default" else None
        rows.append(
            BenchRow(
                batch=size,
                variant=v,
                iterations=settings.iterations,
                seconds_per_image=seconds,
                limit_seconds_per_image=wall,
                ratio=seconds / wall,
                peak_mem_mb=max(mine.mem),
                limit_peak_mem_mb=max(limit.mem),
                passes_per_image=passes[v],
                passes_without_early_stop=float(full),
                early_stop_saved=1 - passes[v] / full,
                repeats=settings.repeats,
                opticam_runs=mine.wall,
                limit_runs=limit.wall,
                official_seconds_per_image=reference[0] if reference else None,
                official_ratio=reference[0] / wall if reference else None,
                cpu_seconds_per_image=my_cpu,
                limit_cpu_seconds_per_image=cpu,
                cpu_ratio=my_cpu / cpu if cpu > 0 else None,
                opticam_cpu_runs=mine.cpu,
                limit_cpu_runs=limit.cpu,
                official_cpu_ratio=reference[1] / cpu if reference and cpu > 0 else None,
            )
        )
    return rows


def report(rows: Sequence[BenchRow], model_name: str, device: torch.device) -> dict[str, Any]:
    """The JSON document ``opticam bench --json`` writes."""
    return {
        "model": model_name,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "allocator_tuned": is_tuned(),
        "iterations": rows[0].iterations if rows else None,
        "results": [asdict(r) for r in rows],
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"


def format_table(rows: Sequence[BenchRow]) -> str:
    """A Markdown table of the rows."""
    lines = [
        "| batch | variant | Opti-CAM s/img | L s/img | ratio | CPU-time ratio | early stop saved | peak MiB "
        "| official loop |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        official = ""
        if r.official_ratio:
            official = f"{r.official_seconds_per_image:.4f} s ({r.official_ratio:.2f} x L"
            official += f", CPU {r.official_cpu_ratio:.2f} x)" if r.official_cpu_ratio else ")"
        cpu = f"{r.cpu_ratio:.3f}" if r.cpu_ratio is not None else ""
        lines.append(
            f"| {r.batch} | {r.variant} | {r.seconds_per_image:.4f} | {r.limit_seconds_per_image:.4f} | "
            f"{r.ratio:.3f} | {cpu} | {100 * r.early_stop_saved:.1f}% | {r.peak_mem_mb:.0f} | {official} |"
        )
    return "\n".join(lines)
