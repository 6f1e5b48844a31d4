"""dartok: DART, the Differentiable Dynamic Adaptive Region Tokenizer (arXiv 2506.10390), on timm.

``import dartok`` registers the DART models with timm (``dart_deit_tiny_patch16_224``, ...).
"""
from ._compat import ensure_torchvision_importable

ensure_torchvision_importable()

from .partition import DEFAULT_ALPHA, band_layout, quantile_boxes  # noqa: E402
from .resample import box_average, sample_patches, tokens_to_map  # noqa: E402
from .scorer import Scorer, edge_pdf, uniform_pdf  # noqa: E402
from .tokenizer import DART, DartOutput  # noqa: E402
from .ops.selective_scan import selective_scan  # noqa: E402
from .video_tokenizer import VideoDART, frame_token_counts  # noqa: E402
from .models import (  # noqa: E402  (registers every dartok model with timm)
    DartVideoMamba, DartVisionMamba, VideoMamba, VisionMamba, create_model, is_dart, load_vim_weights,
    load_vit_weights, patch_timm, patch_videomamba, patch_vim,
)

from ._version import __version__  # noqa: E402

__all__ = [
    "DART", "DEFAULT_ALPHA", "DartOutput", "Scorer", "band_layout", "box_average", "create_model",
    "edge_pdf", "is_dart", "load_vit_weights", "patch_timm", "quantile_boxes", "sample_patches",
    "tokens_to_map", "uniform_pdf", "__version__",
    "DartVisionMamba", "VideoMamba", "VisionMamba", "load_vim_weights", "patch_vim", "selective_scan",
    "DartVideoMamba", "VideoDART", "frame_token_counts", "patch_videomamba",
]
