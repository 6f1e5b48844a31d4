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

__all__ = ["TASKS", "create_model", "fixed_grid_shape"]


def _patch_size_from_name(name: str) -> int | None:
    """The patch size in a timm model name (``..._patch16_...`` → 16), or ``None``."""
    m = re.search(r"patch(\d+)", name)
    return int(m.group(1)) if m else None


def _patch_size(name: str, kwargs: dict) -> int:
    patch = kwargs.get("patch_size") or _patch_size_from_name(name)
    if patch is None:
        raise ValueError(f"cannot tell the patch size of {name!r}; pass patch_size=")
    return int(patch[0] if isinstance(patch, (tuple, list)) else patch)


def _check_grid(grid) -> tuple[int, int]:
    ok = (isinstance(grid, (tuple, list)) and len(grid) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in grid))
    if not ok:
        raise ValueError(f"grid must be (rows, cols) with two integers >= 1, got {grid!r}")
    return int(grid[0]), int(grid[1])


def fixed_grid_shape(num_tokens: int) -> tuple[int, int]:
    """``(rows, cols)`` of the most square fixed grid with ``num_tokens`` patches (98 → 7×14).

    Raises:
        ValueError: ``num_tokens`` < 1.
    """
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
        raise ValueError(f"num_tokens must be an integer >= 1, got {num_tokens!r}")
    rows = max(d for d in range(1, math.isqrt(num_tokens) + 1) if num_tokens % d == 0)
    return rows, num_tokens // rows


TASKS = ("classification", "segmentation")
"""What :func:`create_model` builds a model for (``task=``)."""


def create_model(name: str, num_tokens: int | None = None, pretrained: bool = False, *,
                 grid: tuple[int, int] | None = None, task: str = "classification",
                 output_size: tuple[int, int] | None = None, **kwargs) -> nn.Module:
    """``timm.create_model`` with a token budget that means the same for every family.

    - DART models (``dart_*``: ViT/DeiT, Vim, VideoMamba): ``num_tokens`` is passed through,
      N tokens per image (per clip for video, shared by its frames, paper §3.3); any N ≥ 1.
      ``scorer=None`` gives the uniform pdf (no scorer), which ``timm.create_model`` alone
      cannot say (it drops ``None`` kwargs).
    - fixed-grid models (``vit_*``, ``deit_*``, ``vim_*``, ``videomamba_*``): the grid of
      ``N = n²`` patches (per frame for video, whose T frames each get the grid) needs an
      input side ``n·P``; ``img_size`` is set to that and recorded in
      ``pretrained_cfg["input_size"]``. A non-square grid is asked for explicitly with
      ``grid=(rows, cols)`` (input ``rows·P × cols·P``; :func:`fixed_grid_shape` gives the
      most square one for a budget, as the scaling benchmark uses for 98 and 392).

    Args:
        name: a timm model name (``import dartok`` registers dartok's).
        num_tokens: the budget N (``None``: the model's default).
        pretrained: load pretrained weights (needs a network).
        grid: ``(rows, cols)`` of a fixed-grid model's patches (not for DART models); with
            ``num_tokens`` too, ``rows·cols`` must equal it.
        task: ``"classification"`` (the registered model as it is) or ``"segmentation"``: the
            model without its classifier inside a :class:`dartok.models.seg.Segmenter`
            (Segmenter's linear decoder, token logits back to pixels with
            :func:`dartok.resample.tokens_to_map`), ``B×C×H×W → B×K×h×w`` with ``K =
            num_classes`` (default: the model's) and ``(h, w) = output_size`` (default: the input's).
        output_size: segmentation only, ``(h, w)`` of the logits (e.g. the label masks' size).
        **kwargs: model kwargs (``patch_size`` overrides the one read from the name).

    Returns:
        The model (train mode, as timm returns it).

    Raises:
        ValueError: an unknown ``task`` or ``output_size`` without segmentation; a fixed-grid
            model with a ``num_tokens`` that is not a positive square
            (n×n; DART models take any budget) and no ``grid``, a ``grid`` that is not two
            positive integers or disagrees with ``num_tokens``, a ``grid`` for a DART model,
            or a patch size that cannot be told.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "segmentation":
        from .seg import segmentation_model

        return segmentation_model(lambda n, **kw: create_model(n, num_tokens, pretrained, grid=grid, **kw), name,
                                  kwargs.pop("num_classes", None), output_size, **kwargs)
    if output_size is not None:
        raise ValueError("output_size is the size of a segmentation model's logits; pass task='segmentation'")
    if grid is not None:
        if name.startswith("dart_"):
            raise ValueError(f"grid= is for fixed-grid models; {name!r} takes num_tokens (any budget)")
        rows, cols = _check_grid(grid)
        if num_tokens is not None and rows * cols != num_tokens:
            raise ValueError(f"grid {rows}×{cols} has {rows * cols} patches, not num_tokens={num_tokens}")
        kwargs["img_size"] = (rows * _patch_size(name, kwargs), cols * _patch_size(name, kwargs))
    elif num_tokens is not None and not name.startswith("dart_"):
        valid = isinstance(num_tokens, int) and not isinstance(num_tokens, bool) and num_tokens > 0
        side = math.isqrt(num_tokens) if valid else 0
        if side < 1 or side * side != num_tokens:  # 0 = 0² is no grid either
            raise ValueError(f"a fixed-grid model needs a square num_tokens (n×n), got {num_tokens}; "
                             "DART models take any budget")
        kwargs["img_size"] = side * _patch_size(name, kwargs)
    elif num_tokens is not None:
        kwargs["num_tokens"] = num_tokens
    model = timm.create_model(name, pretrained=pretrained, **kwargs)
    if is_dart(model) and "scorer" in kwargs and kwargs["scorer"] is None:
        model.patch_embed.scorer = None  # uniform pdf
        args = {k: v for k, v in getattr(model, "_model_args", {}).items()
                if k not in ("trainable_scorer_trunk", "scorer_cam", "scorer_pretrained")}
        model._model_args = {**args, "scorer": None}  # what save_for_hf records: rebuilt without a scorer
    if not is_dart(model) and "img_size" in kwargs:
        cfg = dict(model.pretrained_cfg)
        chans = kwargs.get("in_chans", cfg.get("input_size", (3,))[0])
        size = kwargs["img_size"]
        h, w = (size, size) if isinstance(size, int) else size
        cfg["input_size"] = (chans, h, w)
        model.pretrained_cfg = model.default_cfg = cfg
    return model
