"""Old path of :mod:`dartok.data.video` (video datasets), kept so existing imports work."""
from .data.video import *  # noqa: F401,F403
from .data.video import (  # noqa: F401
    DIRECTIONS,
    FRAME_EXTENSIONS,
    VIDEO_EXTENSIONS,
    MovingClutteredFashionMNIST,
    VideoFolderDataset,
    create_video_dataset,
    read_annotations,
    segment_indices,
)
from .data.video import __all__  # noqa: F401
