"""Old path of Vision Mamba, kept so existing imports work: the code is :mod:`dartok.models.vim` (issue 10).

Every name the old module had (``VisionMamba``, ``patch_vim``, ``convert_vim_state_dict``,
``insert_token``, ``MICRO_VIM_ARGS``, the registered ``vim_*`` functions, ...) resolves there.
"""
from ._compat import forward_attributes
from .models import vim as _vim
from .models.vim import (  # noqa: F401
    MICRO_VIM_ARGS, DartVisionMamba, VisionMamba, convert_vim_state_dict, insert_token, load_vim_weights, patch_vim,
    split_cls_pos,
)

__all__ = list(_vim.__all__)

__getattr__ = forward_attributes(__name__, _vim)
