"""Old path of :mod:`dartok.tools.compare` (kept so every import still works)."""
from .tools.compare import (  # noqa: F401
    DEMO_DEFAULTS, PRESETS, RunSpec, collect, compare, demo, demo_preset, plot_accuracy_vs_macs, publish_results,
    run_plan, run_specs, train_config, write_tables,
)

__all__ = ["PRESETS", "RunSpec", "collect", "plot_accuracy_vs_macs", "run_specs", "write_tables"]
