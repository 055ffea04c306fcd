"""The Ray flags (``--ray``, ``--ray-address``, ``--workers``, ``--cpus-per-worker``, ``--gpus-per-worker``),
their checks, and the pool they describe (:mod:`opticam.evaluation.distributed`)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..evaluation.distributed import RayPlan, check_pool_sizes, check_ray_address, require_ray
from ..evaluation.distributed import ray_pool as distributed_pool
from ..perf.allocator import tune_cpu_allocator, tuning_wanted


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ray``, ``--ray-address``, ``--workers``, ``--cpus-per-worker``, ``--gpus-per-worker``."""
    g = parser.add_argument_group("Ray (pip install 'opticam[ray]'; docs/scale.md)")
    g.add_argument("--ray", action="store_true", help="run on a Ray worker pool (a local Ray unless --ray-address)")
    g.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="join this Ray cluster (auto, host:6379); implies --ray (default: none, a local Ray)",
    )
    g.add_argument("--workers", type=int, default=1, help="Ray workers, each with its own model (default 1)")
    g.add_argument(
        "--cpus-per-worker",
        type=float,
        default=None,
        help="CPUs per worker (its torch threads; default 1); fractions share CPUs, which a local pool of more "
        "workers than CPUs must ask for",
    )
    g.add_argument(
        "--gpus-per-worker", type=float, default=0.0, help="GPUs per worker, fractions allowed (default 0: CPU)"
    )


def check_ray_arguments(args: argparse.Namespace) -> None:
    """Bad Ray values are usage errors; ``--ray-address`` implies ``--ray``; a missing Ray says how to get it.

    A local pool (no ``--ray-address``, no Ray already running in this process) is checked against this
    machine's CPUs (``os.cpu_count()``): more workers than CPUs needs an explicit ``--cpus-per-worker``. An
    address is tried first (a TCP connection with a short timeout), so that a cluster nobody runs is one line
    within seconds, not a wait. Leaves ``args.cpus_per_worker`` set (1 when not given).
    """
    if args.ray_address:
        args.ray = True
    given = args.cpus_per_worker is not None
    cpus = args.cpus_per_worker if given else 1.0
    ray = sys.modules.get("ray")
    running = ray is not None and ray.is_initialized()  # a Ray this process already joined: its CPUs decide
    local = None if args.ray_address or running else (os.cpu_count() or 1)
    check_pool_sizes(args.workers, cpus, args.gpus_per_worker, local_cpus=local, cpus_given=given)
    args.cpus_per_worker = cpus
    if args.ray:
        if args.ray_address:
            check_ray_address(args.ray_address)
        require_ray()


def worker_process_setup():
    """What each Ray worker runs first: the CPU allocator tuning this command's own process got (docs/speed.md,
    section 2b), unless ``OPTICAM_MALLOC_TUNING=0``; ``None`` when off."""
    return tune_cpu_allocator if tuning_wanted() else None


def ray_plan(args: argparse.Namespace) -> RayPlan:
    """The Ray flags (checked by :func:`check_ray_arguments`) as a :class:`RayPlan`."""
    return RayPlan(args.workers, args.cpus_per_worker, args.gpus_per_worker, args.ray_address)


def ray_pool(args: argparse.Namespace, worker_cls: type, *worker_args: Any):
    """:func:`opticam.evaluation.distributed.ray_pool` per the Ray flags."""
    return distributed_pool(ray_plan(args), worker_cls, *worker_args)
