"""``opticam evaluate --ray``: a local Ray cluster of 2 workers gives exactly the single-process rows, also
when a worker process is SIGKILLed part-way (Ray restarts it and re-runs its chunk; every row once)."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch

from opticam.cli import main
from opticam.errors import UsageError
from opticam.evaluation import EvaluationSettings, ResultStore, evaluate, read_dataset, run_config
from opticam.evaluation.distributed import (
    INSTALL_HINT,
    EvaluationWorker,
    WorkerPool,
    WorkerRecipe,
    evaluate_on_ray,
    require_ray,
)
from opticam.evaluation.runner import ChunkStored
from opticam.methods import create_method
from tests.conftest import sample_rows
from tests.evaluation.test_evaluate import cli, cli_args, env, make_synset_folders, run_here, stored, table_rows

pytestmark = pytest.mark.usefixtures("one_thread")

METHODS = ("gradcam", "fakecam")
# Insertion/deletion with 8 points per curve: the curves are checked too, at a fraction of the default cost.
SETTINGS = EvaluationSettings(target="gt", batch_size=2, metric_options={"insdel": {"step": 6272}})
COMPARED = (
    "image, method, label, class_index, predicted, p, o, ad_term, ag_term, ai_term, insertion, deletion, "
    "insertion_curve, deletion_curve, iterations, extra"
)  # fmt: skip  (all but timing, device and date)


def test_worker_setup_runs_the_recipe_setup_and_the_cli_passes_the_allocator_tuning(monkeypatch):
    """Workers are separate processes: the command line's allocator tuning reaches them only through
    ``WorkerRecipe.setup``, which ``worker_setup`` runs first (and ``OPTICAM_MALLOC_TUNING=0`` turns off)."""
    from opticam.cli.ray_args import worker_process_setup
    from opticam.evaluation.distributed import worker_setup
    from opticam.perf.allocator import ENV_SWITCH, tune_cpu_allocator

    calls: list[str] = []
    before = torch.get_num_threads()
    try:
        assert worker_setup(1, lambda: calls.append("setup")) in ("cpu", "cuda")
    finally:
        torch.set_num_threads(before)
    assert calls == ["setup"]
    monkeypatch.delenv(ENV_SWITCH, raising=False)
    assert worker_process_setup() is tune_cpu_allocator
    monkeypatch.setenv(ENV_SWITCH, "0")
    assert worker_process_setup() is None


def test_missing_ray_is_one_usage_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(UsageError, match=r"pip install 'opticam\[ray\]'"):
        require_ray()


def test_chunk_killed_for_memory_is_reported_and_the_others_still_run(capsys):
    """Ray's memory monitor kills a task with ``OutOfMemoryError`` (not an actor or task error): that chunk is
    reported with what to change and left for the next run; the worker's next chunks still run."""
    ray = pytest.importorskip("ray")

    class Ref:
        def __init__(self, number):
            self.number = number

    class Actor:
        class run:  # noqa: N801  (mimics ``actor.run.remote``)
            @staticmethod
            def remote(number, payload):
                return Ref(number)

    class FakeRay:
        exceptions = ray.exceptions

        @staticmethod
        def wait(refs, num_returns):
            return [min(refs, key=lambda r: r.number)], []

        @staticmethod
        def get(ref):
            if ref.number == 1:
                raise ray.exceptions.OutOfMemoryError("node running low on memory")
            return SimpleNamespace(pid=7)  # what the pool reads of a chunk's result

    pool = object.__new__(WorkerPool)  # the pool's bookkeeping without starting Ray
    pool.ray, pool.actors, pool.alive, pool.pids = FakeRay, [Actor()], [True], [0]
    done = [number for _, number, _, _ in pool.stream([(n, f"chunk-{n}") for n in range(4)], in_flight=1)]
    assert done == [0, 2, 3]
    err = capsys.readouterr().err
    assert "chunk 1 not computed: its worker ran out of memory" in err and "--batch-size" in err


def test_bad_worker_counts_are_usage_errors(tmp_path, capsys):
    for flag, value in (("--workers", "0"), ("--cpus-per-worker", "0"), ("--gpus-per-worker", "-1")):
        code = run_here(capsys, ["evaluate", "--images", str(tmp_path), "--ray", flag, value])[0]
        assert code == 2


@pytest.fixture(scope="module")
def ray_cluster():
    try:
        ray = require_ray()
    except UsageError:
        pytest.skip(INSTALL_HINT)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def eight(lite0, tmp_path_factory):
    """The first 8 real sample images as a dataset, and the single-process run's rows over them."""
    root = tmp_path_factory.mktemp("ray")
    labels = root / "labels.csv"
    with labels.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "class_index"])
        w.writerows([(str(p), c) for p, c in sample_rows(8)])
    _, samples = read_dataset(labels)
    config = run_config(lite0, dataset_root=str(root), layer=None, settings=SETTINGS)
    methods = {n: create_method(n, lite0) for n in METHODS}
    with ResultStore(root / "one.sqlite") as store:
        run_id = store.open_run(config)
        assert evaluate(lite0, samples, methods, store, run_id, SETTINGS, progress=False) == dict.fromkeys(METHODS, 8)
    return samples, config, rows(root / "one.sqlite")


def rows(db) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return sorted(con.execute(f"SELECT run_id, {COMPARED} FROM results").fetchall())


def ray_run(samples, config, db, kwargs=lambda pool: {}):
    pool = WorkerPool(
        EvaluationWorker,
        WorkerRecipe(model="efficientnet_lite0", methods={n: {} for n in METHODS}),
        SETTINGS,
        workers=2,
    )
    try:
        with ResultStore(db) as store:
            run_id = store.open_run(config)
            added = evaluate_on_ray(pool, samples, METHODS, store, run_id, SETTINGS, progress=False, **kwargs(pool))
    finally:
        pool.shutdown()
    return pool, added


def test_two_workers_give_the_single_process_rows(ray_cluster, eight, tmp_path):
    samples, config, expected = eight
    _, added = ray_run(samples, config, tmp_path / "ray.sqlite")
    assert added == dict.fromkeys(METHODS, 8)
    assert rows(tmp_path / "ray.sqlite") == expected  # the same numbers, bit for bit
    # The same command again schedules nothing: stored rows are skipped before anything is sent.
    _, added = ray_run(samples, config, tmp_path / "ray.sqlite")
    assert added == dict.fromkeys(METHODS, 0)


def test_sigkilled_worker_is_replaced_and_every_row_stored_once(ray_cluster, eight, tmp_path):
    samples, config, expected = eight
    killed: list[int] = []

    def hooks(pool):
        started = list(pool.pids)

        def kill_the_other_worker(event: ChunkStored) -> None:
            worker = event.worker
            assert worker is not None and event.rows > 0
            # After the first stored chunk, the worker that sent it waits for its next chunk and the other one
            # is busy with its own (one chunk in flight each): SIGKILL the busy one's process.
            if not killed:
                killed.append(started[1 - worker])
                os.kill(killed[0], signal.SIGKILL)

        return {"on_chunk": kill_the_other_worker, "in_flight": 1}

    pool, added = ray_run(samples, config, tmp_path / "killed.sqlite", kwargs=hooks)
    assert killed and killed[0] not in pool.pids  # that worker was replaced by a new process
    assert added == dict.fromkeys(METHODS, 8)
    got = rows(tmp_path / "killed.sqlite")
    assert len(got) == len({(r[1], r[2]) for r in got}) == 16  # every (image, method) exactly once
    assert got == expected


# -- the command line on the tiny model -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    torch.save(timm.create_model("test_efficientnet").state_dict(), root / "tiny.pth")
    make_synset_folders(root / "data")
    return root


def test_cli_ray_equals_one_process(ray_cluster, tiny, tmp_path, capsys):
    """`--ray --workers 2` (on the Ray already running here) stores the rows of a plain run; --shard is gone."""
    args = ["--limit", "6", "--insdel-step", "0"]
    assert run_here(capsys, cli_args(tiny, tmp_path / "one.sqlite", *args))[0] == 0
    code, out, err = run_here(capsys, cli_args(tiny, tmp_path / "ray.sqlite", *args, "--ray", "--workers", "2"))
    assert code == 0, err
    assert "stored 18 new rows" in err and "| fakecam |" in out
    assert table_rows(tmp_path / "ray.sqlite") == table_rows(tmp_path / "one.sqlite")
    code, _, err = run_here(capsys, cli_args(tiny, tmp_path / "x.sqlite", "--shard", "0/2"))
    assert code == 2 and "unrecognized arguments: --shard" in err  # argparse's complaint: one line, status 2


def test_killed_ray_driver_is_resumed_by_the_same_command(ray_cluster, tiny, tmp_path, capsys):
    """SIGKILL the driver of `evaluate --ray` (its own local Ray, in a separate process) part-way; the same
    command run again stores only the missing rows, and the table equals an uninterrupted run's."""
    args = ["--iterations", "20"]  # slow enough per chunk for the kill to land part-way
    total = 8 * 3
    assert run_here(capsys, cli_args(tiny, tmp_path / "clean.sqlite", *args))[0] == 0
    db = tmp_path / "killed.sqlite"
    proc = subprocess.Popen(
        cli(tiny, db, *args, "--ray", "--workers", "2"), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 600
    while stored(db) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    partial = stored(db)
    assert 1 <= partial < total, f"the driver should have been stopped part-way, it had {partial} of {total} rows"

    code, _, err = run_here(capsys, cli_args(tiny, db, *args, "--ray", "--workers", "2"))
    assert code == 0, err
    assert f"stored {total - partial} new rows" in err
    assert stored(db) == total
    assert table_rows(db) == table_rows(tmp_path / "clean.sqlite")


# -- opticam explain DIR --ray ---------------------------------------------------------------------------


def test_explain_folder_on_ray_writes_what_explain_writes_and_resumes(
    ray_cluster, samples_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # a relative folder: the workers get absolute paths, the records keep these
    folder = Path("images")
    folder.mkdir()
    for path, _ in sample_rows(3):
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image")
    common = ["--iterations", "2", "--save-maps", "--batch-size", "1", "--device", "cpu"]  # same batches both ways
    assert main(["explain", str(folder), "--out", str(tmp_path / "one"), *common]) == 1  # the broken file
    capsys.readouterr()
    ray_args = ["explain", str(folder), "--out", str(tmp_path / "ray"), *common, "--ray", "--workers", "2"]
    assert main(ray_args) == 1
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "1 of 4 image(s) could not be read" in err
    one, ray = sorted((tmp_path / "one").iterdir()), sorted((tmp_path / "ray").iterdir())
    assert [p.name for p in one] == [p.name for p in ray] and len(one) == 3 * 3  # png, json, npy per image
    for a, b in zip(one, ray, strict=True):
        if a.suffix == ".json":
            ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
            ja.pop("seconds"), jb.pop("seconds")
            assert ja == jb and ja["image"].startswith("images/")
        elif a.suffix == ".npy":
            assert np.array_equal(np.load(a), np.load(b))
    # Run again: every readable image has its outputs, so nothing is computed or rewritten.
    stamps = {p.name: p.stat().st_mtime_ns for p in ray}
    assert main(ray_args) == 1  # only the broken file, tried again
    assert "3 of 4 images already explained" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").iterdir()} == stamps
