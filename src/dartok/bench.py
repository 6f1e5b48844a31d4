"""Old path of :mod:`dartok.tools.bench` and :mod:`dartok.tools.flops` (kept so every import still works)."""
from .tools.bench import (  # noqa: F401
    DEFAULT_BUDGETS, DEFAULT_MODELS, DEFAULT_RESOLUTIONS, PAPER_GMACS, finish_report, fixed_grid_shape, machine_info,
    make_model, measure_speed, measure_speeds, paired_speed_ratio, parse_model_spec, render_markdown, run_bench,
    run_compute, run_scaling, script_command, time_callable, tokenizer_breakdown, with_frames, write_results,
)
from .tools.flops import HAND_COUNTED_OPS, MacReport, count_macs, count_params, unfused_attention  # noqa: F401

__all__ = [
    "HAND_COUNTED_OPS", "MacReport", "PAPER_GMACS", "count_macs", "count_params", "fixed_grid_shape", "machine_info",
    "make_model", "measure_speed", "measure_speeds", "paired_speed_ratio", "parse_model_spec", "render_markdown",
    "run_compute", "run_scaling", "time_callable", "tokenizer_breakdown", "unfused_attention", "with_frames",
    "write_results",
]
