"""Old path of :mod:`dartok.tools.viz` (kept so every import still works)."""
from .tools.viz import (  # noqa: F401
    plot_partition, plot_video_partition, save_partition_figure, save_video_partition_figure, to_display_image,
)

__all__ = ["to_display_image", "plot_partition", "save_partition_figure", "plot_video_partition",
           "save_video_partition_figure"]
