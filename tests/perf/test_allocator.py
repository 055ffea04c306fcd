"""The CPU allocator tuning: it removes the page faults of repeated large allocations, and the CLI applies it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from opticam.perf import allocator
from opticam.perf.allocator import tuning_wanted

glibc_only = pytest.mark.skipif(allocator._glibc() is None, reason="mallopt/malloc_trim need Linux with glibc")

# A child process (so the test process keeps its own settings) that allocates, touches and frees a 64 MiB
# tensor 20 times and prints the minor page faults of the last 10 rounds.
CHILD = textwrap.dedent(
    """
    import resource, sys, torch
    from opticam.perf.allocator import tune_cpu_allocator
    if sys.argv[1] == "tuned":
        assert tune_cpu_allocator()
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(20):
        if i == 10:
            start = faults()
        block = torch.empty(16 * 2**20)  # 64 MiB
        block.fill_(1.0)
        del block
    print(faults() - start)
    """
)


def run_child(code: str, *args: str) -> int:
    """Run ``code`` in a fresh interpreter (so this process keeps its own allocator settings) and return
    the integer it prints last."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": src, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    return int(out.stdout.strip().splitlines()[-1])


def minor_faults(mode: str) -> int:
    return run_child(CHILD, mode)


@glibc_only
def test_tuning_stops_a_freed_block_from_faulting_in_again():
    # Untuned, glibc unmaps each freed 64 MiB block and the next one faults in ~16,000 pages again.
    default = minor_faults("default")
    tuned = minor_faults("tuned")
    assert default > 10 * 16_384 * 0.9, default
    assert tuned < default / 20, (tuned, default)


@glibc_only
def test_release_free_memory_lowers_the_resident_size():
    child = textwrap.dedent(
        """
        import torch
        from opticam.perf.allocator import tune_cpu_allocator, release_free_memory
        from opticam.perf.memory import _proc_status_kib
        tune_cpu_allocator()
        block = torch.ones(16 * 2**20); del block  # 64 MiB, kept by the tuned heap
        kept = _proc_status_kib("VmRSS")
        assert release_free_memory()
        print(kept - _proc_status_kib("VmRSS"))
        """
    )
    assert run_child(child) > 60 * 1024  # KiB: the 64 MiB went back


def test_tuning_switch_reads_the_environment():
    assert tuning_wanted({})
    assert tuning_wanted({"OPTICAM_MALLOC_TUNING": "1"})
    for off in ("0", "false", "No", " off "):
        assert not tuning_wanted({"OPTICAM_MALLOC_TUNING": off})


def test_off_glibc_tuning_is_a_clean_no_op(monkeypatch):
    monkeypatch.setattr(allocator, "_tuned", False)
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    assert allocator.tune_cpu_allocator() is False
    assert allocator.is_tuned() is False
    assert allocator.release_free_memory() is False


def test_cli_tunes_unless_switched_off(monkeypatch, capsys):
    import opticam.cli as cli

    calls = []
    monkeypatch.setattr(cli, "tune_cpu_allocator", lambda: calls.append(1) or True)
    monkeypatch.delenv("OPTICAM_MALLOC_TUNING", raising=False)
    assert cli.main(["explain", "--help"]) == 0  # argparse is done before any command runs: nothing tuned yet
    assert calls == []
    assert cli.main(["explain", "/nonexistent.jpg"]) != 0  # no image read: nothing to explain
    assert calls == [1]
    monkeypatch.setenv("OPTICAM_MALLOC_TUNING", "0")
    assert cli.main(["explain", "/nonexistent.jpg"]) != 0  # no image read: nothing to explain
    assert calls == [1]
    capsys.readouterr()
