"""Performance: the CPU allocator tuning, memory probes, and the speed benchmark behind ``opticam bench``."""

from .allocator import is_tuned, release_free_memory, tune_cpu_allocator, tuning_wanted

__all__ = ["is_tuned", "release_free_memory", "tune_cpu_allocator", "tuning_wanted"]
