"""course_utils: the small shared package behind every scaleml-workbook notebook.

Infrastructure only (devices, seeding, timing, hardware ceilings, plots, checks, data); the lessons themselves
live in the notebooks, where students read and write them.

Names are loaded on first use (PEP 562): `import course_utils` alone imports neither torch nor matplotlib, so a
process that needs one small module (a torchrun worker's entry point, the grader) does not pay for all of them.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the submodule that defines it
_HOME = {
    "PowerLawFit": "analysis", "fit_power_law": "analysis",
    "assert_close": "checks", "check_equal": "checks", "check_that": "checks", "plain": "checks",
    "needs_exercise": "checks",
    "Split": "data", "load_digits_split": "data",
    "autocast_dtype": "device", "get_device": "device", "is_available": "device", "seed_everything": "device",
    "synchronize": "device",
    "GPT": "gpt", "GPTConfig": "gpt",
    "OtherLoad": "hardware", "environment_info": "hardware", "environment_report": "hardware", "measure_matmul_flops": "hardware",
    "last_level_cache_bytes": "hardware",
    "measure_memory_bandwidth": "hardware",
    "track_peak_memory": "memory",
    "map_on_cores": "parallel",
    "labelled_axes": "plotting", "use_style": "plotting",
    "BPETokenizer": "text", "CharTokenizer": "text", "Corpus": "text", "load_corpus": "text",
    "BenchmarkResult": "timing", "benchmark": "timing", "benchmark_interleaved": "timing", "format_seconds": "timing",
    "median_interval": "timing",
    "get_batch": "training", "load_checkpoint": "training", "save_checkpoint": "training", "train_lm": "training",
    "train_lm_wsd": "training",
}
__all__ = sorted(_HOME)


_SUBMODULES = ("analysis", "checks", "data", "device", "distributed", "gpt", "hardware", "memory", "parallel",
               "plotting", "processes", "text", "timing", "training", "zygote")


def __getattr__(name: str):
    if name in _SUBMODULES:                              # `cu.gpt.Block` works without importing course_utils.gpt
        return importlib.import_module(f".{name}", __name__)
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'course_utils' has no attribute {name!r} (its public names: {', '.join(__all__)})")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value                              # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
