"""Old path of VideoMamba, kept so existing imports work: the code is :mod:`dartok.models.videomamba` (issue 10).

Every name the old module had (``VideoMamba``, ``PatchEmbed3d``, ``MICRO_VIDEOMAMBA_ARGS``,
the registered ``videomamba_*`` functions, ...) resolves there.
"""
from ._compat import forward_attributes
from .models import videomamba as _videomamba
from .models.videomamba import MICRO_VIDEOMAMBA_ARGS, PatchEmbed3d, VideoMamba  # noqa: F401

__all__ = ["PatchEmbed3d", "VideoMamba", "videomamba_micro_patch8", "videomamba_tiny_patch16_224"]

__getattr__ = forward_attributes(__name__, _videomamba)
