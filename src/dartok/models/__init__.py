"""DART models: one shared adapter, one file per backbone family (issue 10, docs/architecture.md).

- :mod:`._adapter`: :class:`DartModelMixin`, :func:`patch_backbone` (the one adapter),
  :func:`make_scorer`, the DART-kwargs split, the cfg helper;
- :mod:`.factory`: :func:`create_model`, one budget rule for DART and fixed-grid models, and
  ``task="segmentation"`` for any of them;
- :mod:`.seg`: :class:`Segmenter` (Segmenter's linear decoder, tokens back to pixels) and
  :func:`dense_tokens` (a backbone's patch tokens and their boxes);
- :mod:`.vit`: timm ViT / DeiT (:func:`patch_timm`), :mod:`.vim`: Vision Mamba
  (:func:`patch_vim`), :mod:`.videomamba`: VideoMamba (:func:`patch_videomamba`), :mod:`.warp`: any
  model that takes an image, behind the regular-grid warp (:func:`patch_warp`, paper App. C).

Importing this package registers every dartok model with timm. Everything ``dartok.models``
exported when it was one module is re-exported here; the registered model functions
(``dart_vim_tiny_patch16_224``, ...) resolve in their family module.
"""
from .. import _compat
from ._adapter import (  # noqa: F401
    _DART_CLASSES, _DART_KEYS, DartModelMixin, _cfg, adopt_projection, create_dart, dart_subclass, is_dart,
    make_scorer, patch_backbone, set_input_cfg, set_num_tokens, split_dart_kwargs, tokens_to_feature_map,
)
from .factory import _patch_size_from_name, create_model  # noqa: F401
from .vit import (  # noqa: F401
    _DEIT_DEFAULTS, MICRO_VIT_ARGS, DartVisionTransformer, _create_dart, _num_prefix_pos, convert_vit_state_dict,
    dart_deit_base_patch16_224, dart_deit_small_patch16_224, dart_deit_tiny_patch16_224, dart_vit_micro_patch8,
    default_cfgs, load_vit_weights, patch_timm, vit_micro_patch8,
)
from .vim import DartVisionMamba, VisionMamba, convert_vim_state_dict, load_vim_weights, patch_vim  # noqa: F401
from .videomamba import DartVideoMamba, PatchEmbed3d, VideoMamba, patch_videomamba  # noqa: F401
from .seg import Segmenter, dense_tokens  # noqa: F401
from .warp import DartWarp, patch_warp  # noqa: F401
from . import videomamba as _videomamba, vim as _vim, vit as _vit, warp as _warp  # noqa: E402  (the family modules)
from timm.models import is_model  # noqa: E402  (after _adapter made timm importable)

__all__ = [
    "DartModelMixin", "DartVideoMamba", "DartVisionMamba", "DartVisionTransformer", "DartWarp", "PatchEmbed3d",
    "Segmenter", "VideoMamba",
    "VisionMamba", "convert_vim_state_dict", "convert_vit_state_dict", "create_model", "is_dart",
    "dense_tokens", "load_vim_weights", "load_vit_weights", "patch_backbone", "patch_timm", "patch_videomamba",
    "patch_vim", "patch_warp", "set_num_tokens", "tokens_to_feature_map",
    # the registered model functions (timm's register_model adds them to their module's __all__)
    *sorted(n for m in (_vit, _vim, _videomamba, _warp) for n in m.__all__ if is_model(n)),
]

__getattr__ = _compat.forward_attributes(__name__, _vit, _vim, _videomamba, _warp)
