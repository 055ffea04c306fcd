"""The benchmark runs and its numbers hang together. No assertion on speed: timings depend on the load."""

from __future__ import annotations

import dataclasses
import json
import statistics
import threading

import pytest
import torch

from opticam.cli import main
from opticam.perf import bench
from opticam.perf import memory as memory_module
from opticam.perf.bench import BenchSettings, PeakMemory, bare_loop, benchmark, format_table, official_loop, report
from tests.tinymodels import tiny_images, tiny_pixel_model


class CountingModel(torch.nn.Module):
    """Counts forward calls and images; records whether the input asked for a gradient."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.images = 0
        self.input_grad = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.images += x.shape[0]
        self.input_grad.append(x.requires_grad)
        return self.inner(x)


def test_bare_loop_is_iterations_forward_backward_to_the_input():
    model = CountingModel(tiny_pixel_model())
    x = tiny_images(3)
    masks = torch.rand(3, 1, 8, 8)
    bare_loop(model, x, masks, torch.tensor([0, 1, 2]), iterations=4)
    assert model.calls == 4 and model.images == 12
    assert all(model.input_grad)  # the backward reaches the input...
    assert all(p.grad is None for p in model.parameters())  # ...and stops there
    assert all(p.requires_grad for p in model.parameters())  # frozen only for the loop


def test_official_loop_leaves_no_hooks_or_gradients():
    inner = tiny_pixel_model()
    model = CountingModel(inner)
    for p in model.parameters():
        p.requires_grad_(False)
    layer = inner.model.features
    official_loop(model, layer, tiny_images(2), torch.tensor([0, 1]), iterations=3)
    assert model.calls == 1 + 3  # capture + one masked pass per iteration
    assert not layer._forward_hooks
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())


def test_peak_memory_sees_a_large_allocation():
    memory = PeakMemory(torch.device("cpu"))
    with memory.watch():
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched, freed before the block ends
        block.add_(1)
        del block
    assert memory.method in ("hwm", "sampled")
    if memory.method == "hwm":  # exact: the kernel's high-water mark cannot miss a peak
        assert 60 <= memory.peak_mb < 200


def test_peak_memory_sampler_catches_a_transient_peak(monkeypatch):
    """The fallback (no ``clear_refs``): the sampling thread records a peak that is gone by the end."""
    base, high = 100 * 2**20, 164 * 2**20
    rss = [base]
    seen_high = threading.Event()

    def fake_rss() -> int:
        value = rss[0]
        if value == high:
            seen_high.set()
        return value

    monkeypatch.setattr(memory_module, "_reset_high_water_mark", lambda: False)
    monkeypatch.setattr(memory_module, "_rss_bytes", fake_rss)
    memory = PeakMemory(torch.device("cpu"), interval=0.001)
    with memory.watch():
        rss[0] = high
        assert seen_high.wait(timeout=30), "the sampling thread never ran"
        rss[0] = base
    assert memory.method == "sampled"
    assert memory.peak_mb == 64


def test_benchmark_rows_are_consistent():
    model = tiny_pixel_model(channels=5)
    x = tiny_images(3, size=12)
    settings = BenchSettings(
        batches=(1, 3), iterations=3, repeats=3, variants=("default", "channels_last"), official=True
    )
    rows = benchmark(model, "features", x, settings)
    assert [(r.batch, r.variant) for r in rows] == [
        (1, "default"),
        (1, "channels_last"),
        (3, "default"),
        (3, "channels_last"),
    ]
    for r in rows:
        assert len(r.opticam_runs) == len(r.limit_runs) == 3
        assert r.seconds_per_image == pytest.approx(statistics.median(r.opticam_runs))
        assert r.limit_seconds_per_image == pytest.approx(statistics.median(r.limit_runs))
        assert r.ratio == pytest.approx(r.seconds_per_image / r.limit_seconds_per_image)
        assert len(r.opticam_cpu_runs) == len(r.limit_cpu_runs) == 3
        assert r.cpu_seconds_per_image == pytest.approx(statistics.median(r.opticam_cpu_runs))
        assert r.cpu_ratio == pytest.approx(r.cpu_seconds_per_image / r.limit_cpu_seconds_per_image)
        assert r.passes_without_early_stop == 3 + 2
        assert 0 < r.passes_per_image <= r.passes_without_early_stop
        assert r.early_stop_saved == pytest.approx(1 - r.passes_per_image / 5)
        assert r.peak_mem_mb >= 0 and r.limit_peak_mem_mb >= 0
        if r.variant == "default":
            assert r.official_ratio == pytest.approx(r.official_seconds_per_image / r.limit_seconds_per_image)
        else:
            assert r.official_ratio is None
    same_batch = [r for r in rows if r.batch == 3]
    assert same_batch[0].limit_runs == same_batch[1].limit_runs  # one floor per batch, shared by the variants
    doc = report(rows, "tiny", torch.device("cpu"))
    assert doc["iterations"] == 3 and len(doc["results"]) == 4
    assert "| 3 | channels_last |" in format_table(rows)


def test_benchmark_counts_what_early_stopping_saved():
    # A huge tolerance stops every image at step 1: evaluations at steps 0 and 1 + the capture = 3 passes.

    model, x = tiny_pixel_model(), tiny_images(2)
    original = bench.VARIANTS.copy()
    bench.VARIANTS["loose"] = {"tol": 1e9}
    try:
        (row,) = benchmark(
            model, "features", x, BenchSettings(batches=(2,), iterations=4, repeats=1, variants=("loose",))
        )
    finally:
        bench.VARIANTS.clear()
        bench.VARIANTS.update(original)
    assert row.passes_per_image == 3
    assert row.early_stop_saved == pytest.approx(1 - 3 / 6)


@pytest.mark.parametrize(
    "kwargs",
    [{"repeats": 0}, {"iterations": 0}, {"batches": (0,)}, {"batches": (9,)}, {"variants": ("warp",)}],
)
def test_benchmark_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        benchmark(
            tiny_pixel_model(), "features", tiny_images(2), BenchSettings(**{"iterations": 1, "repeats": 1, **kwargs})
        )


def test_bench_settings_are_frozen_with_tuples():
    settings = BenchSettings(batches=[1, 2], variants=["default"])  # as argparse gives them
    assert settings.batches == (1, 2) and settings.variants == ("default",)
    assert settings == BenchSettings(batches=(1, 2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.iterations = 1


def test_bench_cli_writes_json_on_real_images(tmp_path, samples_dir):
    out = tmp_path / "bench.json"
    args = ["bench", "--batches", "1", "--iterations", "1", "--repeats", "1"]
    assert main([*args, "--samples", str(samples_dir), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["model"] == "efficientnet_lite0" and doc["iterations"] == 1
    (r,) = doc["results"]
    assert r["batch"] == 1 and r["variant"] == "default"
    assert r["ratio"] == pytest.approx(r["seconds_per_image"] / r["limit_seconds_per_image"])
    assert r["peak_mem_mb"] >= 0


def test_bench_cli_explains_missing_samples(tmp_path, capsys):
    code = main(["bench", "--random-weights", "--samples", str(tmp_path), "--batches", "1", "--iterations", "1"])
    assert code == 2
    assert "--random-images" in capsys.readouterr().err
