"""Old path of :mod:`dartok.train.checkpoint` (the checkpoint folder format), kept so existing imports work."""
from .train.checkpoint import *  # noqa: F401,F403
from .train.checkpoint import __all__  # noqa: F401
