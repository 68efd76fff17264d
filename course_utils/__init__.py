"""course_utils: the small shared package behind every scaleml-workbook notebook.

Infrastructure only (devices, seeding, timing, hardware ceilings, plots, checks, data); the lessons themselves
live in the notebooks, where students read and write them.
"""
from .analysis import PowerLawFit, fit_power_law
from .checks import assert_close, check_that
from .data import Split, load_digits_split
from .device import get_device, is_available, seed_everything, synchronize
from .gpt import GPT, GPTConfig
from .hardware import environment_info, environment_report, measure_matmul_flops, measure_memory_bandwidth
from .memory import track_peak_memory
from .parallel import map_on_cores
from .plotting import labelled_axes, use_style
from .text import BPETokenizer, CharTokenizer, Corpus, load_corpus
from .timing import BenchmarkResult, benchmark, format_seconds
from .training import get_batch, load_checkpoint, save_checkpoint, train_lm, train_lm_wsd

__version__ = "0.1.0"
__all__ = [
    "BPETokenizer", "BenchmarkResult", "CharTokenizer", "Corpus", "GPT", "GPTConfig", "PowerLawFit", "Split", "assert_close", "benchmark", "check_that", "environment_info",
    "environment_report", "fit_power_law", "format_seconds", "get_device", "is_available", "labelled_axes",
    "load_digits_split", "map_on_cores", "measure_matmul_flops", "measure_memory_bandwidth", "seed_everything", "synchronize",
    "use_style", "get_batch", "load_checkpoint", "load_corpus", "save_checkpoint", "track_peak_memory", "train_lm", "train_lm_wsd",
]
