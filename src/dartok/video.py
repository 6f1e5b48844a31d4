"""Old path of DART for video, kept so existing imports work (issue 10 split it in two).

The tokenizer (:class:`VideoDART`, :func:`stack_frames`, :func:`frame_token_counts`, ...) is
:mod:`dartok.video_tokenizer`; the VideoMamba model with it (:class:`DartVideoMamba`,
:func:`patch_videomamba`, the registered ``dart_videomamba_*``) is
:mod:`dartok.models.videomamba`. Every name the old module had resolves to one of them.
"""
from . import video_tokenizer as _tokenizer
from ._compat import forward_attributes
from .models import videomamba as _videomamba
from .models.videomamba import DartVideoMamba, patch_videomamba  # noqa: F401
from .video_tokenizer import (  # noqa: F401
    TEMPORAL_DIFF_MODES, VideoDART, frame_boxes, frame_token_counts, stack_frames, temporal_difference,
    token_frames, unstack_frames, video_bands,
)

__all__ = sorted([*_tokenizer.__all__, "DartVideoMamba", "patch_videomamba", "dart_videomamba_micro_patch8",
                  "dart_videomamba_tiny_patch16_224"])

__getattr__ = forward_attributes(__name__, _tokenizer, _videomamba)
