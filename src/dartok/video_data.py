"""Old path of :mod:`dartok.data.video` (video datasets), kept so existing imports work."""
from .data.video import *  # noqa: F401,F403
from .data.video import __all__  # noqa: F401
