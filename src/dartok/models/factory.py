"""``create_model``: one token-budget rule for every registered dartok model (issue 10).

The one place that turns a budget ``num_tokens`` into model kwargs, for DART models and
fixed-grid models alike; :func:`dartok.bench.make_model` and :func:`dartok.engine.build_model`
build through it.
"""
from __future__ import annotations

import math
import re

import torch.nn as nn

from .. import _compat

_compat.ensure_torchvision_importable()

import timm  # noqa: E402

from ._adapter import is_dart  # noqa: E402

__all__ = ["create_model"]


def _patch_size_from_name(name: str) -> int | None:
    """The patch size in a timm model name (``..._patch16_...`` → 16), or ``None``."""
    m = re.search(r"patch(\d+)", name)
    return int(m.group(1)) if m else None


def create_model(name: str, num_tokens: int | None = None, pretrained: bool = False, **kwargs) -> nn.Module:
    """``timm.create_model`` with a token budget that means the same for every family.

    - DART models (``dart_*``: ViT/DeiT, Vim, VideoMamba): ``num_tokens`` is passed through,
      N tokens per image (per clip for video, shared by its frames, paper §3.3); any N ≥ 1.
      ``scorer=None`` gives the uniform pdf (no scorer), which ``timm.create_model`` alone
      cannot say (it drops ``None`` kwargs).
    - fixed-grid models (``vit_*``, ``deit_*``, ``vim_*``, ``videomamba_*``): the grid of
      ``N = n²`` patches (per frame for video, whose T frames each get the grid) needs an
      input side ``n·P``; ``img_size`` is set to that and recorded in
      ``pretrained_cfg["input_size"]``.

    Args:
        name: a timm model name (``import dartok`` registers dartok's).
        num_tokens: the budget N (``None``: the model's default).
        pretrained: load pretrained weights (needs a network).
        **kwargs: model kwargs (``patch_size`` overrides the one read from the name).

    Returns:
        The model (train mode, as timm returns it).

    Raises:
        ValueError: a fixed-grid model with a ``num_tokens`` that is not a positive square
            (n×n; DART models take any budget), or whose patch size cannot be told.
    """
    if num_tokens is not None and not name.startswith("dart_"):
        valid = isinstance(num_tokens, int) and not isinstance(num_tokens, bool) and num_tokens > 0
        side = math.isqrt(num_tokens) if valid else 0
        if side < 1 or side * side != num_tokens:  # 0 = 0² is no grid either
            raise ValueError(f"a fixed-grid model needs a square num_tokens (n×n), got {num_tokens}; "
                             "DART models take any budget")
        patch = kwargs.get("patch_size") or _patch_size_from_name(name)
        if patch is None:
            raise ValueError(f"cannot tell the patch size of {name!r}; pass patch_size=")
        kwargs["img_size"] = side * patch
    elif num_tokens is not None:
        kwargs["num_tokens"] = num_tokens
    model = timm.create_model(name, pretrained=pretrained, **kwargs)
    if is_dart(model) and "scorer" in kwargs and kwargs["scorer"] is None:
        model.patch_embed.scorer = None  # uniform pdf
    if not is_dart(model) and "img_size" in kwargs:
        cfg = dict(model.pretrained_cfg)
        chans = kwargs.get("in_chans", cfg.get("input_size", (3,))[0])
        cfg["input_size"] = (chans, kwargs["img_size"], kwargs["img_size"])
        model.pretrained_cfg = model.default_cfg = cfg
    return model
