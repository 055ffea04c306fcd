"""The benchmark on a Ray worker pool: a laptop, one GPU box or a multi-node cluster, same command.

Design: a pool of **Ray Core actors** (not Ray Data). Each actor builds the model and the methods once
(from a :class:`WorkerRecipe`, so the driver ships a recipe and file names, never tensors), then turns
whole chunks into rows with the runner's own :func:`~opticam.evaluation.runner.chunk_rows`. The driver
cuts the run into the runner's chunks (:func:`~opticam.evaluation.runner.pending`, which already leaves
out what the store has), keeps two chunks in flight per worker, and stores each chunk's rows in one
transaction as it comes back: it is the only writer of the SQLite file.

Why actors and not Ray Data's ``map_batches``: the chunk is the unit of resumption and of the stored
numbers (batch composition changes Opti-CAM's batched optimisation and the per-batch timing), and Ray Data
re-blocks rows as it likes, so its batches are not guaranteed to be the runner's chunks; its output goes to
a dataset sink, not to one transaction per chunk on the driver; and it has no place for "skip what is
stored" before scheduling. Actors give exactly the runner's chunks, streaming results with
:func:`ray.wait`, and Ray's own fault tolerance: an actor whose process dies is restarted
(``max_restarts``) and its unfinished chunks are re-run (``max_task_retries``). A chunk that still fails
(an exception in the method, a worker killed by Ray's memory monitor, or a worker that keeps dying) is
reported and skipped, never retried forever; the next run of the same command computes it again.

Ray is optional (``pip install 'opticam[ray]'``); :func:`require_ray` says so in one line.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import OpticamError, ResourceError, UsageError
from .dataset import Sample
from .runner import ChunkStored, EvaluationSettings, OnChunk, chunk_rows, pending, print_report, progress_bar
from .store import ResultRow, ResultStore

INSTALL_HINT = "Ray is not installed: pip install 'opticam[ray]'"


def require_ray():
    """The ``ray`` module, or a one-line :class:`UsageError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return ray


MAX_WORKERS = 1024
"""The most workers a pool may have (each holds its own model): more is a typo, not a plan."""

LOCAL_WORKERS_PER_CPU = 4
"""A local pool may share each CPU among at most this many workers (with an explicit ``--cpus-per-worker``)."""


def check_pool_sizes(
    workers: int,
    cpus_per_worker: float,
    gpus_per_worker: float,
    *,
    local_cpus: int | None = None,
    cpus_given: bool = True,
) -> None:
    """The pool's sizes, or a :class:`UsageError` naming the flag (the CLI checks them before loading anything).

    With ``local_cpus`` (a pool on this machine, which has that many CPUs): more workers than CPUs at the
    default one CPU each (``cpus_given=False``) is refused, saying to share the CPUs explicitly with a
    fractional ``--cpus-per-worker``; more than :data:`LOCAL_WORKERS_PER_CPU` workers per CPU is refused
    whatever the share (each worker loads a model and runs torch threads). Any pool: at most
    :data:`MAX_WORKERS`.
    """
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if workers > MAX_WORKERS:
        raise UsageError(f"--workers {workers}: at most {MAX_WORKERS} (each worker holds its own model)")
    if not math.isfinite(cpus_per_worker) or cpus_per_worker <= 0:
        raise UsageError(f"--cpus-per-worker must be > 0, got {cpus_per_worker}")
    if not math.isfinite(gpus_per_worker) or gpus_per_worker < 0:
        raise UsageError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker}")
    if local_cpus is None:
        return
    if workers > LOCAL_WORKERS_PER_CPU * local_cpus:
        raise UsageError(
            f"--workers {workers}: this machine has {local_cpus} CPU(s), and a local pool takes at most "
            f"{LOCAL_WORKERS_PER_CPU} workers per CPU (each loads its own model); join a cluster with "
            "--ray-address for more"
        )
    if not cpus_given and workers * cpus_per_worker > local_cpus:
        share = local_cpus / workers
        raise UsageError(
            f"--workers {workers}: this machine has {local_cpus} CPU(s) and each worker takes 1 by default; "
            f"use --workers {local_cpus} or fewer, or share the CPUs explicitly with --cpus-per-worker {share:.2g}"
        )


def check_ray_address(address: str, timeout: float = 3.0) -> None:
    """Try a TCP connection to ``address`` (``host:port``, ``ray://host:port``) within ``timeout`` seconds, so
    that a cluster nobody runs is a one-line :class:`~opticam.errors.ResourceError` at once, before Ray's own
    connection attempts (which retry for a minute or more). ``auto`` and other forms without a port are
    left to Ray.

    Raises:
        UsageError: a port that is not a number from 1 to 65535.
        ResourceError: nothing accepts a connection there.
    """
    text = address.removeprefix("ray://")
    if ":" not in text or text in ("auto", "local"):
        return
    host, _, port_text = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"--ray-address {address}: the port {port_text!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise UsageError(f"--ray-address {address}: the port must be between 1 and 65535, got {port}")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ResourceError(
            f"--ray-address {address}: no Ray cluster answers at {host}:{port} ({reason} within {timeout:g} s); "
            "start one with 'ray start --head' or check the address"
        ) from None


@dataclass(frozen=True)
class WorkerRecipe:
    """What a worker needs to build its model and methods itself (small and picklable).

    Attributes:
        model, checkpoint, random_weights: as :func:`opticam.load_model` takes them. A factory model's file
            (``models.py:cnn``) is made absolute when the recipe is made, in the driver's working folder.
        layer: the target layer (``None``: the model's default).
        methods: method name -> the options :func:`opticam.methods.create_method` gets, in run order.
        setup: called once in each worker process before anything else (picklable by reference, e.g. a
            module-level function). The command line passes :func:`opticam.perf.tune_cpu_allocator`, so that
            workers get the allocator tuning its own process has.
        import_path: for a ``package.module:factory`` model, the folder the driver imported the package from;
            a worker puts it on its ``sys.path`` (filled in when the recipe is made).
    """

    model: str
    checkpoint: str | None = None
    random_weights: bool = False
    layer: str | None = None
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    setup: Callable[[], Any] | None = None
    import_path: str | None = None

    def __post_init__(self) -> None:
        from ..models.factory import import_path_for, is_factory_name, parse_factory_name

        if is_factory_name(self.model):  # in the driver: its working folder and sys.path decide
            object.__setattr__(self, "model", parse_factory_name(self.model).portable)
            if self.import_path is None:
                object.__setattr__(self, "import_path", import_path_for(self.model))

    def build(self, device: str):
        """``(LoadedModel, {name: SaliencyMethod})`` on ``device``."""
        import sys

        from ..methods.registry import create_method
        from ..models.loading import load_model

        if self.import_path is not None and self.import_path not in sys.path:
            sys.path.insert(0, self.import_path)

        loaded = load_model(self.model, pretrained=not self.random_weights, checkpoint=self.checkpoint, device=device)
        methods = {name: create_method(name, loaded, layer=self.layer, **opts) for name, opts in self.methods.items()}
        return loaded, methods


@dataclass
class ChunkOutput:
    """What a worker sends back for one chunk: its rows, the unreadable images, and who computed it."""

    number: int
    rows: list[ResultRow]
    reports: list[str]
    pid: int


class EvaluationWorker:
    """One pool member (a Ray actor): builds the model once, then computes chunks."""

    def __init__(self, threads: int, recipe: WorkerRecipe, settings: EvaluationSettings) -> None:
        self.device = worker_setup(threads, recipe.setup)
        self.settings = settings
        self.loaded, self.methods = recipe.build(self.device)

    def pid(self) -> int:
        return os.getpid()

    def run(self, number: int, wanted: dict[str, list[Sample]]) -> ChunkOutput:
        import torch

        reports: list[str] = []
        rows: list[ResultRow] = []
        with torch.inference_mode(False):
            for _, method_rows in chunk_rows(
                self.loaded, self.methods, wanted, self.settings, self.device, report=reports.append
            ):
                rows.extend(method_rows)
        return ChunkOutput(number, rows, reports, os.getpid())


def worker_setup(threads: int, setup: Callable[[], Any] | None = None) -> str:
    """In a worker process: ``setup()``, ``threads`` torch threads; the device, CUDA when Ray gave the worker
    a GPU."""
    import torch

    if setup is not None:
        setup()
    torch.set_num_threads(max(1, threads))
    return "cuda" if torch.cuda.is_available() else "cpu"  # Ray shows a worker only its own GPUs


def start_ray(address: str | None = None, *, num_cpus: int | None = None, **kwargs: Any):
    """Join the cluster at ``address`` (``auto``, ``ray://host:10001``, ``host:6379``) or start a local one.

    An address is tried with :func:`check_ray_address` first, and a failure to join is one
    :class:`~opticam.errors.ResourceError` line naming it, never Ray's traceback.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    if address:
        check_ray_address(address)
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ResourceError(f"--ray-address {address}: cannot join the Ray cluster ({first})") from None
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)
    return ray


class WorkerPool:
    """``workers`` actors of ``worker_cls`` (built as ``worker_cls(threads, *args)``) on the current Ray
    instance (call :func:`start_ray` first). Each has ``pid()`` and ``run(number, payload)``, whose result
    has a ``pid``.

    ``pids`` holds each worker's process id, updated from every chunk it returns (a restarted worker has a
    new one). ``max_restarts`` / ``max_task_retries`` are Ray's: how often a dead worker is replaced and a
    chunk it was running is re-run.
    """

    def __init__(
        self,
        worker_cls: type,
        *args: Any,
        workers: int = 1,
        cpus_per_worker: float = 1,
        gpus_per_worker: float = 0,
        max_restarts: int = 3,
        max_task_retries: int = 3,
    ) -> None:
        ray = require_ray()
        check_pool_sizes(workers, cpus_per_worker, gpus_per_worker)
        actor = ray.remote(worker_cls).options(
            num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker,
            max_restarts=max_restarts,
            max_task_retries=max_task_retries,
        )
        self.ray = ray
        threads = max(1, int(cpus_per_worker))
        self.actors = [actor.remote(threads, *args) for _ in range(workers)]
        self.alive = [True] * workers
        self.pids = ray.get([a.pid.remote() for a in self.actors])  # also waits until every model is loaded

    @property
    def live(self) -> int:
        return sum(self.alive)

    def shutdown(self) -> None:
        for a in self.actors:
            self.ray.kill(a)

    def stream(self, jobs: Sequence[tuple[int, Any]], *, in_flight: int = 2) -> Iterator[tuple[int, int, Any, Any]]:
        """Run ``(number, payload)`` jobs; yield ``(worker index, number, payload, result)`` as they finish.

        A job whose method raised, whose worker ran out of memory, or whose worker died more often than Ray
        retries, is reported on stderr and left out (never retried forever; the next run of the command
        computes it again). The next job of a worker is sent after the caller has handled its last result.
        """
        ray = self.ray
        queue = list(reversed(jobs))
        flying: dict[Any, tuple[int, tuple[int, Any]]] = {}  # ref -> (actor index, job)

        def submit(index: int) -> None:
            if queue and self.alive[index]:
                job = queue.pop()
                flying[self.actors[index].run.remote(*job)] = (index, job)

        for index in range(len(self.actors)):
            for _ in range(in_flight):
                submit(index)
        while flying:
            (ref,), _ = ray.wait(list(flying), num_returns=1)
            index, (number, payload) = flying.pop(ref)
            try:
                out = ray.get(ref)
            except ray.exceptions.RayActorError as exc:  # died more often than max_restarts / max_task_retries
                self.alive[index] = False
                print_report(f"chunk {number} not computed, its worker is gone ({type(exc).__name__}); rerun to retry")
                if not self.live and (queue or flying):
                    raise OpticamError("every Ray worker died; run the same command again to resume") from exc
                continue
            except ray.exceptions.OutOfMemoryError:  # Ray's memory monitor killed the task: the chunk is lost
                print_report(
                    f"chunk {number} not computed: its worker ran out of memory (Ray's memory monitor killed it); "
                    "rerun with fewer --workers or a smaller --batch-size to compute it"
                )
                submit(index)
                continue
            except ray.exceptions.RayTaskError as exc:  # the method itself failed: report, do not retry
                print_report(f"chunk {number} failed and was skipped: {exc.cause!r}")
                submit(index)
                continue
            self.pids[index] = out.pid
            yield index, number, payload, out
            submit(index)


def evaluate_on_ray(
    pool: WorkerPool,
    samples: Sequence[Sample],
    methods: Sequence[str],
    store: ResultStore,
    run_id: str,
    settings: EvaluationSettings,
    *,
    progress: bool = True,
    in_flight: int = 2,
    on_chunk: OnChunk | None = None,
) -> dict[str, int]:
    """Like :func:`~opticam.evaluation.runner.evaluate` on a pool of :class:`EvaluationWorker`: stores every
    missing row, returns rows added per method. ``on_chunk`` is told of each stored chunk, with the worker
    that computed it (:class:`~opticam.evaluation.runner.ChunkStored`), before that worker gets its next one."""
    todo = pending(samples, list(methods), store, run_id, settings.batch_size)  # stored rows never scheduled
    total = sum(len(g) for _, wanted in todo for g in wanted.values())
    added = dict.fromkeys(methods, 0)
    bar = progress_bar(total, len(samples), len(methods), unit="row") if progress else None
    try:
        if bar is not None:
            bar.set_postfix(workers=pool.live)
        for index, _, wanted, out in pool.stream(todo, in_flight=in_flight):
            for message in out.reports:
                print_report(message)
            if out.rows:
                store.add(run_id, out.rows)  # one transaction per chunk; a duplicate would raise
                for row in out.rows:
                    added[row.method] += 1
                if on_chunk is not None:
                    on_chunk(ChunkStored(len(out.rows), dict(added), index))
            if bar is not None:
                bar.set_postfix(workers=pool.live)
                bar.update(sum(len(g) for g in wanted.values()))
    finally:
        if bar is not None:
            bar.close()
    return added


__all__ = [
    "INSTALL_HINT",
    "EvaluationWorker",
    "WorkerPool",
    "WorkerRecipe",
    "check_pool_sizes",
    "check_ray_address",
    "evaluate_on_ray",
    "require_ray",
    "start_ray",
    "worker_setup",
]


@dataclass(frozen=True)
class RayPlan:
    """How big a Ray pool to start, and where: ``workers`` each with ``cpus_per_worker`` CPUs (its torch
    threads) and ``gpus_per_worker`` GPUs, on the cluster at ``address`` (``None``: a local Ray)."""

    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    address: str | None = None


@contextlib.contextmanager
def ray_pool(plan: RayPlan, worker_cls: type, *worker_args: Any) -> Iterator[WorkerPool]:
    """A :class:`WorkerPool` of ``worker_cls(threads, *worker_args)`` per ``plan``, on a local Ray (sized to
    fit the pool, stopped afterwards) or the cluster at ``plan.address``."""
    need = math.ceil(plan.workers * plan.cpus_per_worker)
    ours = not require_ray().is_initialized() and not plan.address  # a Ray we start, we stop
    ray = start_ray(plan.address, num_cpus=None if plan.address else max(os.cpu_count() or 1, need))
    pool = WorkerPool(
        worker_cls,
        *worker_args,
        workers=plan.workers,
        cpus_per_worker=plan.cpus_per_worker,
        gpus_per_worker=plan.gpus_per_worker,
    )
    try:
        yield pool
    finally:
        pool.shutdown()
        if ours:
            ray.shutdown()
