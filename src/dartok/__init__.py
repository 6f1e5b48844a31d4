"""dartok: DART, the Differentiable Dynamic Adaptive Region Tokenizer (arXiv 2506.10390), on timm.

``import dartok`` registers the DART models with timm (``dart_deit_tiny_patch16_224``, ...).
"""
from ._compat import ensure_torchvision_importable

ensure_torchvision_importable()

from .partition import DEFAULT_ALPHA, band_layout, quantile_boxes  # noqa: E402
from .resample import box_average, sample_patches  # noqa: E402
from .scorer import Scorer, edge_pdf, uniform_pdf  # noqa: E402
from .tokenizer import DART, DartOutput  # noqa: E402
from .models import create_model, is_dart, load_vit_weights, patch_timm  # noqa: E402
from .mamba import selective_scan  # noqa: E402
from .vim import DartVisionMamba, VisionMamba, load_vim_weights, patch_vim  # noqa: E402  (registers vim_* models)
from .videomamba import VideoMamba  # noqa: E402  (registers videomamba_* models)
from .video import DartVideoMamba, VideoDART, frame_token_counts, patch_videomamba  # noqa: E402  (dart_videomamba_*)

__version__ = "0.1.0"

__all__ = [
    "DART", "DEFAULT_ALPHA", "DartOutput", "Scorer", "band_layout", "box_average", "create_model",
    "edge_pdf", "is_dart", "load_vit_weights", "patch_timm", "quantile_boxes", "sample_patches",
    "uniform_pdf", "__version__",
    "DartVisionMamba", "VideoMamba", "VisionMamba", "load_vim_weights", "patch_vim", "selective_scan",
    "DartVideoMamba", "VideoDART", "frame_token_counts", "patch_videomamba",
]
