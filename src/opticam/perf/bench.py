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
alike; the JSON says whether it was on (``allocator_tuned``). Optional extra lines:

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


def benchmark(
    model: nn.Module,
    layer: nn.Module | str,
    images: torch.Tensor,
    *,
    reshape_transform: Any = None,
    batches: Sequence[int] = (1, 8, 32),
    iterations: int = 100,
    repeats: int = 3,
    variants: Sequence[str] = ("default",),
    official: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[BenchRow]:
    """Time Opti-CAM (each variant) against the floor L for each batch size; see the module docstring.

    ``images`` must hold at least ``max(batches)`` images; each batch takes the first ones, explained for
    their predicted class. One untimed warm-up of each measured call runs first.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if not batches or min(batches) < 1:
        raise ValueError(f"batch sizes must be >= 1, got {list(batches)}")
    if images.shape[0] < max(batches):
        raise ValueError(f"need {max(batches)} images for batch {max(batches)}, got {images.shape[0]}")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; use some of {sorted(VARIANTS)}")
    device = images.device
    say = progress or (lambda _msg: None)
    rows: list[BenchRow] = []
    for batch in batches:
        x = images[:batch]
        base = OptiCAM(model, layer, reshape_transform, iterations=0)
        with frozen(model), torch.no_grad():
            logits, feats = base.features(x)
            classes = logits.argmax(dim=1)
            masks = saliency_mask(feats, torch.zeros(feats.shape[:2], device=device), tuple(x.shape[-2:]))
        cams = {v: OptiCAM(model, layer, reshape_transform, iterations=iterations, **VARIANTS[v]) for v in variants}

        def run_limit(x=x, masks=masks, classes=classes) -> None:
            bare_loop(model, x, masks, classes, iterations)

        # Warm-ups (also compiles the torch.compile variant), untimed.
        bare_loop(model, x, masks, classes, 1)
        for v, cam in cams.items():
            with _channels_last(model, v == "channels_last"):
                warm = OptiCAM(model, layer, reshape_transform, iterations=1, **VARIANTS[v])
                warm._compiled = cam.loop_model() if cam.config.compile else None
                warm.explain(x, classes)
        limit_runs: list[float] = []
        limit_cpu: list[float] = []
        limit_mem: list[float] = []
        cpus: dict[str, list[float]] = {v: [] for v in variants}
        runs: dict[str, list[float]] = {v: [] for v in variants}
        mems: dict[str, list[float]] = {v: [] for v in variants}
        passes: dict[str, float] = {}
        for rep in range(repeats):
            order = ["limit", *variants] if rep % 2 == 0 else [*reversed(variants), "limit"]
            for what in order:
                if what == "limit":
                    seconds, cpu, mem, _ = _timed(run_limit, device)
                    limit_runs.append(seconds / batch)
                    limit_cpu.append(cpu / batch)
                    limit_mem.append(mem)
                else:
                    with _channels_last(model, what == "channels_last"):
                        seconds, cpu, mem, result = _timed(lambda c=cams[what], x=x, t=classes: c.explain(x, t), device)
                    runs[what].append(seconds / batch)
                    cpus[what].append(cpu / batch)
                    mems[what].append(mem)
                    passes[what] = result.passes / batch
                say(f"batch {batch} rep {rep + 1}/{repeats} {what}: {seconds / batch:.4f} s/image")
        official_time = official_cpu = None
        if official:
            target = base.target_layer(x)
            official_loop(model, target, x, classes, 1)  # warm-up
            seconds, cpu, _, _ = _timed(
                lambda t=target, x=x, c=classes: official_loop(model, t, x, c, iterations), device
            )
            official_time = seconds / batch
            official_cpu = cpu / batch
            say(f"batch {batch} official loop: {official_time:.4f} s/image")
        limit = statistics.median(limit_runs)
        limit_cpu_median = statistics.median(limit_cpu)
        full = iterations + 2  # evaluations at steps 0..iterations, plus the capture pass
        for v in variants:
            seconds = statistics.median(runs[v])
            cpu = statistics.median(cpus[v])
            rows.append(
                BenchRow(
                    batch=batch,
                    variant=v,
                    iterations=iterations,
                    seconds_per_image=seconds,
                    limit_seconds_per_image=limit,
                    ratio=seconds / limit,
                    peak_mem_mb=max(mems[v]),
                    limit_peak_mem_mb=max(limit_mem),
                    passes_per_image=passes[v],
                    passes_without_early_stop=float(full),
                    early_stop_saved=1 - passes[v] / full,
                    repeats=repeats,
                    opticam_runs=runs[v],
                    limit_runs=limit_runs,
                    official_seconds_per_image=official_time if v == "default" else None,
                    official_ratio=official_time / limit if official_time is not None and v == "default" else None,
                    cpu_seconds_per_image=cpu,
                    limit_cpu_seconds_per_image=limit_cpu_median,
                    cpu_ratio=cpu / limit_cpu_median if limit_cpu_median > 0 else None,
                    opticam_cpu_runs=cpus[v],
                    limit_cpu_runs=limit_cpu,
                    official_cpu_ratio=official_cpu / limit_cpu_median
                    if official_cpu is not None and v == "default" and limit_cpu_median > 0
                    else None,
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
