"""DART on timm Vision Transformers: ``patch_timm``, registered models, weight loading.

After ``import dartok`` these names work with ``timm.create_model``:

- ``dart_deit_tiny_patch16_224``, ``dart_deit_small_patch16_224``,
  ``dart_deit_base_patch16_224``: DeiT with DART (paper §4.2; input 448, scorer trunk per
  SPEC §3: MobileNetV3-Small for Ti, -Large for S and B). ``pretrained=True`` takes the
  DeiT weights and the scorer trunk from timm's pretrained tags (needs a network).
- ``vit_micro_patch8`` and ``dart_vit_micro_patch8``: a small ViT that trains on two CPU
  cores, used identically by the fixed-grid baseline and the DART model.

Model kwargs for the DART models: ``num_tokens`` (default 196 / 36), ``img_size`` (the
input side the data pipeline should produce), ``scorer`` (trunk name), ``scorer_head``
(``"v1"``/``"v2"``), ``scorer_input_size``, ``scorer_stage``, ``scorer_pretrained``,
``trainable_scorer_trunk``, ``learn_contrast``, ``alpha``, ``bands``, ``antialias``; everything else goes to timm's
``VisionTransformer``.
"""
from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn as nn

from . import _compat

_compat.ensure_torchvision_importable()

import timm  # noqa: E402
from timm.layers import resample_abs_pos_embed, resample_patch_embed  # noqa: E402
from timm.models import build_model_with_cfg, register_model  # noqa: E402
from timm.models._registry import generate_default_cfgs  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

from .partition import DEFAULT_ALPHA  # noqa: E402
from .scorer import Scorer  # noqa: E402
from .tokenizer import DART, DartOutput  # noqa: E402

__all__ = ["DartVisionTransformer", "convert_vit_state_dict", "create_model", "is_dart", "load_vit_weights", "patch_timm"]


class DartVisionTransformer(VisionTransformer):
    """A timm ``VisionTransformer`` whose ``patch_embed`` is a :class:`DART`.

    Not constructed directly: :func:`patch_timm` turns an existing ViT into one (the
    instance keeps its class's behaviour through a dynamic subclass, as ToMe does).
    ``pos_embed`` keeps only the prefix-token (class/distillation/register) entries;
    the grid part lives in ``patch_embed.pos_embed``.
    """

    def _pos_embed(self, x: DartOutput) -> torch.Tensor:  # type: ignore[override]
        tokens = x.tokens + x.pos_embed
        prefix = []
        if self.cls_token is not None:
            prefix.append(self.cls_token.expand(tokens.shape[0], -1, -1))
        if getattr(self, "reg_token", None) is not None:
            prefix.append(self.reg_token.expand(tokens.shape[0], -1, -1))
        if prefix:
            prefix = torch.cat(prefix, dim=1)
            if self.pos_embed is not None:
                prefix = prefix + self.pos_embed
            tokens = torch.cat([prefix, tokens], dim=1)
        return self.pos_drop(tokens)

    def init_weights(self, mode: str = "", needs_reset: bool = True) -> None:
        """timm's ViT init, leaving the scorer trunk (pretrained or not) untouched."""
        scorer = getattr(self.patch_embed, "scorer", None)
        trunk = scorer.trunk if scorer is not None else None
        if trunk is not None:
            scorer.trunk = None
        try:
            super().init_weights(mode, needs_reset)
        finally:
            if trunk is not None:
                scorer.trunk = trunk

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token", "dist_token", "reg_token", "patch_embed.pos_embed"}

    def tokenize(self, images: torch.Tensor, pdf: torch.Tensor | None = None) -> DartOutput:
        """Run only the tokenizer: tokens, position embeddings, boxes, pdf."""
        return self.patch_embed(images, pdf=pdf)


_DART_CLASSES: dict[tuple[type, type], type] = {}


def dart_subclass(cls: type, dart_base: type) -> type:
    """The class a ``patch_*`` call gives a backbone of class ``cls``.

    ``cls`` itself if it already is a ``dart_base``; ``dart_base`` for its own plain parent
    (``VisionTransformer`` → ``DartVisionTransformer``); otherwise a cached
    ``Dart<cls>`` subclass of ``(dart_base, cls)``, so a user's ViT subclass keeps its methods.
    """
    if issubclass(cls, dart_base):
        return cls
    if cls in dart_base.__bases__:
        return dart_base
    key = (dart_base, cls)
    if key not in _DART_CLASSES:
        _DART_CLASSES[key] = type(f"Dart{cls.__name__}", (dart_base, cls), {})
    return _DART_CLASSES[key]


def adopt_projection(dart: DART, proj: nn.Module, like: torch.Tensor) -> None:
    """Move ``dart`` to ``like``'s device and dtype, then copy the backbone's patch projection.

    ``proj`` is the replaced ``Conv2d`` (or a tubelet-1 ``Conv3d``, ``D×C×1×P×P``, whose
    weight is reshaped to ``D×C×P×P``). Moving first keeps float64 weights exact (no
    float32 round trip). Copy position embeddings after this call for the same reason.
    Shared by :func:`patch_timm`, :func:`dartok.vim.patch_vim` and
    :func:`dartok.video.patch_videomamba`.
    """
    dart.to(device=like.device, dtype=like.dtype)
    with torch.no_grad():
        dart.proj.weight.copy_(proj.weight.reshape(dart.proj.weight.shape))
        if proj.bias is not None:
            dart.proj.bias.copy_(proj.bias)


def set_input_cfg(model: nn.Module, in_chans: int, img_size: int, **extra: Any) -> None:
    """Record the input a DART model takes in ``pretrained_cfg`` / ``default_cfg`` (any size works)."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    cfg.update(input_size=(in_chans, img_size, img_size), fixed_input_size=False, **extra)
    model.pretrained_cfg = model.default_cfg = cfg


def split_dart_kwargs(kwargs: dict, defaults: dict, pretrained: bool, keys: tuple[str, ...] | None = None) -> dict:
    """Pop the DART options (``keys``, default :data:`_DART_KEYS`) out of a registered DART
    model's ``kwargs`` (the rest go to the backbone), over ``defaults``.

    timm's ``pretrained_cfg`` / ``pretrained_cfg_overlay`` belong to the DART variant, not the
    backbone, and are dropped; ``scorer_pretrained`` left at ``None`` follows ``pretrained``.
    """
    for key in ("pretrained_cfg", "pretrained_cfg_overlay"):
        kwargs.pop(key, None)
    keys = _DART_KEYS if keys is None else keys
    dart_kwargs = {**defaults, **{k: kwargs.pop(k) for k in list(kwargs) if k in keys}}
    if dart_kwargs.get("scorer_pretrained") is None:
        dart_kwargs["scorer_pretrained"] = pretrained
    return dart_kwargs


def _num_prefix_pos(model: VisionTransformer) -> int:
    """Prefix entries in ``model.pos_embed`` (0 for ``no_embed_class`` models)."""
    return 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens


def make_scorer(
    scorer: str | dict | Scorer | None,
    *,
    in_chans: int,
    head: str = "v1",
    input_size: int = 224,
    stage: int | None = None,
    pretrained: bool = False,
    trainable_trunk: bool | None = None,
    learn_contrast: bool = True,
) -> Scorer | dict | None:
    """The scorer of a ``patch_*`` call: a trunk name becomes a :class:`Scorer` with these options.

    A dict of ``Scorer`` kwargs, a ``Scorer`` or ``None`` (uniform pdf) is returned as is
    (:class:`DART` builds a dict itself). Shared by :func:`patch_timm`,
    :func:`dartok.vim.patch_vim` and :func:`dartok.video.patch_videomamba`.
    """
    if isinstance(scorer, str):
        return Scorer(trunk=scorer, head=head, stage=stage, input_size=input_size, in_chans=in_chans,
                      pretrained=pretrained, trainable_trunk=trainable_trunk, learn_contrast=learn_contrast)
    return scorer


def patch_timm(
    model: VisionTransformer,
    num_tokens: int | None = None,
    scorer: str | dict | Scorer | None = "mobilenetv3_small",
    img_size: int | None = None,
    alpha: float = DEFAULT_ALPHA,
    bands: int | None = None,
    scorer_head: str = "v1",
    scorer_input_size: int = 224,
    scorer_stage: int | None = None,
    scorer_pretrained: bool = False,
    trainable_scorer_trunk: bool | None = None,
    antialias: bool = False,
    learn_contrast: bool = True,
) -> VisionTransformer:
    """Turn a timm ``VisionTransformer`` into a DART model in place, keeping its weights.

    The patch projection (``patch_embed.proj``) moves into :class:`DART` unchanged, the
    grid part of ``pos_embed`` becomes the tokenizer's ``g×g×D`` position map, class /
    register tokens and their position entries stay. With a uniform pdf the patched
    model computes exactly what the original computed on a ``g·P`` input.

    Args:
        model: a timm ``VisionTransformer`` with learned absolute position embeddings
            (with or without class token).
        num_tokens: token budget N (default: the model's own ``num_patches``).
        scorer: trunk name (see :data:`dartok.scorer.SCORER_TRUNKS`), a dict of
            :class:`~dartok.scorer.Scorer` kwargs, a ``Scorer``, or ``None`` (uniform).
        img_size: the input side the data pipeline should produce (default: twice the
            model's, 448 for a 224 model, as in the paper). Recorded in
            ``model.pretrained_cfg["input_size"]``; DART accepts any size.
        alpha, bands: partition options (:func:`dartok.quantile_boxes`).
        antialias: anti-alias large boxes (:class:`DART`).
        scorer_head, scorer_input_size, scorer_stage, scorer_pretrained,
        trainable_scorer_trunk, learn_contrast: used when ``scorer`` is a name.

    Returns:
        The same object, now an instance of a ``DartVisionTransformer`` subclass.

    Raises:
        TypeError: not a timm VisionTransformer.
        ValueError: no learned absolute position embedding, or a non-square grid.
    """
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"patch_timm expects a timm VisionTransformer, got {type(model).__name__}")
    if isinstance(model.patch_embed, DART):
        raise ValueError("model already has a DART tokenizer")
    if model.pos_embed is None or getattr(model, "dynamic_img_size", False):
        raise ValueError("patch_timm needs a ViT with learned absolute position embeddings (pos_embed='learn')")
    old = model.patch_embed
    grid = tuple(old.grid_size)
    if grid[0] != grid[1]:
        raise ValueError(f"patch_timm needs a square patch grid, got {grid}")
    patch = old.patch_size[0]
    embed_dim = model.embed_dim
    in_chans = old.proj.in_channels
    if num_tokens is None:
        num_tokens = old.num_patches
    if img_size is None:
        img_size = 2 * old.img_size[0]
    scorer = make_scorer(scorer, in_chans=in_chans, head=scorer_head, input_size=scorer_input_size,
                         stage=scorer_stage, pretrained=scorer_pretrained, trainable_trunk=trainable_scorer_trunk,
                         learn_contrast=learn_contrast)
    dart = DART(
        num_tokens=num_tokens,
        patch_size=patch,
        in_chans=in_chans,
        embed_dim=embed_dim,
        pos_grid=grid[0],
        bands=bands,
        alpha=alpha,
        scorer=scorer,
        img_size=img_size,
        bias=old.proj.bias is not None,
        antialias=antialias,
    )
    prefix = _num_prefix_pos(model)
    adopt_projection(dart, old.proj, model.pos_embed)
    with torch.no_grad():
        dart.pos_embed.copy_(model.pos_embed[:, prefix:])
    dart.norm = old.norm
    model.patch_embed = dart
    model.pos_embed = nn.Parameter(model.pos_embed.data[:, :prefix].clone()) if prefix > 0 else None
    model.__class__ = dart_subclass(type(model), DartVisionTransformer)
    set_input_cfg(model, in_chans, img_size)
    return model


def is_dart(model: nn.Module) -> bool:
    """True if ``model`` tokenizes with :class:`DART`."""
    return isinstance(getattr(model, "patch_embed", None), DART)


def convert_vit_state_dict(state_dict: dict[str, torch.Tensor], model: DartVisionTransformer) -> dict[str, torch.Tensor]:
    """Map a timm DeiT/ViT state dict onto a DART model's keys and shapes.

    ``pos_embed`` is split into the prefix entries (kept in ``pos_embed``) and the grid
    (→ ``patch_embed.pos_embed``, resampled to the model's map size if it differs);
    ``patch_embed.proj.weight`` is resampled if the patch size differs (timm's
    ``resample_patch_embed``); distillation tokens/heads the model lacks are dropped.
    A state dict already in DART layout passes through.

    Raises:
        ValueError: the position embedding's length fits no square grid.
    """
    if not is_dart(model):
        raise TypeError("convert_vit_state_dict expects a DART model (see patch_timm)")
    sd = dict(state_dict)
    if "model" in sd and isinstance(sd["model"], dict):  # DeiT's released checkpoints
        sd = dict(sd["model"])
    dart: DART = model.patch_embed
    if "pos_embed" in sd and "patch_embed.pos_embed" not in sd:
        pos = sd.pop("pos_embed")
        n = pos.shape[1]
        src_prefix = sum(1 for k in ("cls_token", "dist_token") if k in sd)
        if "reg_token" in sd:
            src_prefix += sd["reg_token"].shape[1]
        if math.isqrt(n - src_prefix) ** 2 == n - src_prefix:
            pass
        elif math.isqrt(n) ** 2 == n:
            src_prefix = 0  # no_embed_class layout
        else:
            raise ValueError(f"pos_embed of length {n} is not prefix + a square grid")
        grid = pos[:, src_prefix:]
        g_src = math.isqrt(grid.shape[1])
        if dart.pos_embed is not None:
            if g_src != dart.pos_grid:
                grid = resample_abs_pos_embed(grid, new_size=(dart.pos_grid,) * 2,
                                              old_size=(g_src, g_src), num_prefix_tokens=0)
            sd["patch_embed.pos_embed"] = grid
        n_prefix = _num_prefix_pos(model)
        if model.pos_embed is not None:
            src = pos[:, :src_prefix]
            if src.shape[1] >= n_prefix:
                sd["pos_embed"] = src[:, :n_prefix]
    w = sd.get("patch_embed.proj.weight")
    if w is not None and w.shape[-2:] != dart.proj.weight.shape[-2:]:
        sd["patch_embed.proj.weight"] = resample_patch_embed(w, list(dart.proj.weight.shape[-2:]))
    own = model.state_dict()
    for key in ("dist_token", "head_dist.weight", "head_dist.bias"):
        if key in sd and key not in own:
            sd.pop(key)
    return sd


def load_vit_weights(model: DartVisionTransformer, state_dict: dict[str, torch.Tensor], strict_backbone: bool = True):
    """Load a timm DeiT/ViT (or DART) state dict into a DART model.

    Keys of the scorer (``patch_embed.scorer.*``) may be missing: the scorer then keeps
    its own weights. Any other missing key, unexpected key or shape mismatch raises when
    ``strict_backbone`` is True.

    Returns:
        ``(missing_keys, unexpected_keys)`` as lists.

    Raises:
        ValueError: mismatched keys or shapes (with the offending names).
    """
    sd = convert_vit_state_dict(state_dict, model)
    own = model.state_dict()
    shape_errors = [f"{k}: {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                    for k, v in sd.items() if k in own and own[k].shape != v.shape]
    if shape_errors:
        raise ValueError("shape mismatch loading ViT weights: " + "; ".join(shape_errors))
    result = model.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("patch_embed.scorer.")]
    if strict_backbone and (missing or result.unexpected_keys):
        raise ValueError(f"ViT weights do not fit the model: missing {missing}, unexpected {list(result.unexpected_keys)}")
    return list(result.missing_keys), list(result.unexpected_keys)


# --------------------------------------------------------------------------- registry

_DART_KEYS = (
    "num_tokens", "img_size", "scorer", "scorer_head", "scorer_input_size", "scorer_stage",
    "scorer_pretrained", "trainable_scorer_trunk", "alpha", "bands", "antialias", "learn_contrast",
)


def _create_dart(vit_name: str, pretrained: bool, defaults: dict, kwargs: dict) -> VisionTransformer:
    dart_kwargs = split_dart_kwargs(kwargs, defaults, pretrained)
    vit = timm.create_model(vit_name, pretrained=pretrained, **kwargs)
    return patch_timm(vit, **dart_kwargs)


def _cfg(input_size=(3, 224, 224), **kwargs) -> dict[str, Any]:
    return {
        "url": "", "num_classes": 1000, "input_size": input_size, "pool_size": None,
        "crop_pct": 0.875, "interpolation": "bicubic", "fixed_input_size": False,
        "mean": timm.data.IMAGENET_DEFAULT_MEAN, "std": timm.data.IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj", "classifier": "head", **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "dart_deit_tiny_patch16_224": _cfg(input_size=(3, 448, 448)),
    "dart_deit_small_patch16_224": _cfg(input_size=(3, 448, 448)),
    "dart_deit_base_patch16_224": _cfg(input_size=(3, 448, 448)),
    "vit_micro_patch8": _cfg(input_size=(1, 48, 48), num_classes=10, mean=(0.5,), std=(0.5,)),
    "dart_vit_micro_patch8": _cfg(input_size=(1, 128, 128), num_classes=10, mean=(0.5,), std=(0.5,)),
})

_DEIT_DEFAULTS = {"num_tokens": 196, "img_size": 448, "scorer_head": "v1", "scorer_input_size": 224}


@register_model
def dart_deit_tiny_patch16_224(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """DeiT-Ti + DART (paper Table 1: 73.8 top-1, 1.32 GMACs at 196 tokens)."""
    return _create_dart("deit_tiny_patch16_224", pretrained,
                        {**_DEIT_DEFAULTS, "scorer": "mobilenetv3_small"}, kwargs)


@register_model
def dart_deit_small_patch16_224(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """DeiT-S + DART (paper Table 1: 80.6 top-1, 4.84 GMACs at 196 tokens)."""
    return _create_dart("deit_small_patch16_224", pretrained,
                        {**_DEIT_DEFAULTS, "scorer": "mobilenetv3_large"}, kwargs)


@register_model
def dart_deit_base_patch16_224(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """DeiT-B + DART (scorer MobileNetV3-Large; not in the paper's tables)."""
    return _create_dart("deit_base_patch16_224", pretrained,
                        {**_DEIT_DEFAULTS, "scorer": "mobilenetv3_large"}, kwargs)


MICRO_VIT_ARGS = dict(patch_size=8, embed_dim=96, depth=6, num_heads=3, mlp_ratio=3.0, in_chans=1, num_classes=10)
"""The small CPU-trainable ViT shared by ``vit_micro_patch8`` and ``dart_vit_micro_patch8``."""


@register_model
def vit_micro_patch8(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """Small fixed-grid ViT for CPU training (img_size 48 → 36 tokens by default)."""
    args = {**MICRO_VIT_ARGS, "img_size": 48, **kwargs}
    model = build_model_with_cfg(VisionTransformer, "vit_micro_patch8", pretrained, **args)
    cfg = dict(model.pretrained_cfg)
    cfg.update(input_size=(args["in_chans"], args["img_size"], args["img_size"]), num_classes=args["num_classes"])
    model.pretrained_cfg = model.default_cfg = cfg
    return model


@register_model
def dart_vit_micro_patch8(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """``vit_micro_patch8`` with DART (36 tokens, 128 input, scorer on a 128 copy, anti-aliased boxes).

    Anti-aliasing is on by default here (unlike the paper's DeiT models): at the small
    budgets this model is for, most boxes are several times the 8×8 patch and point
    sampling aliases them (measured: +3.3 points top-1 at N = 16, README "Accuracy").
    """
    defaults = {"num_tokens": 36, "img_size": 128, "scorer": "mobilenetv3_small",
                "scorer_head": "v1", "scorer_input_size": 128, "antialias": True}
    dart_kwargs = {**defaults, **{k: kwargs.pop(k) for k in list(kwargs) if k in _DART_KEYS}}
    vit = vit_micro_patch8(pretrained=pretrained, **kwargs)
    return patch_timm(vit, **dart_kwargs)


def _patch_size_from_name(name: str) -> int | None:
    m = re.search(r"patch(\d+)", name)
    return int(m.group(1)) if m else None


def create_model(name: str, num_tokens: int | None = None, pretrained: bool = False, **kwargs) -> nn.Module:
    """``timm.create_model`` with a token budget that means the same for both kinds.

    For DART models (``dart_*``) ``num_tokens`` is passed through. For a plain ViT the
    fixed grid of N = n² tokens needs an input of side ``n·patch_size``: ``img_size`` is
    set to that and recorded in ``pretrained_cfg["input_size"]``.

    Raises:
        ValueError: a fixed-grid ViT with a non-square ``num_tokens``.
    """
    if num_tokens is not None and not name.startswith("dart_"):
        side = math.isqrt(num_tokens) if isinstance(num_tokens, int) and num_tokens > 0 else 0
        if side * side != num_tokens:
            raise ValueError(f"a fixed-grid ViT needs a square num_tokens (n×n), got {num_tokens}; "
                             "DART models take any budget")
        patch = kwargs.get("patch_size") or _patch_size_from_name(name)
        if patch is None:
            raise ValueError(f"cannot tell the patch size of {name!r}; pass patch_size=")
        kwargs["img_size"] = side * patch
    elif num_tokens is not None:
        kwargs["num_tokens"] = num_tokens
    model = timm.create_model(name, pretrained=pretrained, **kwargs)
    if not is_dart(model) and "img_size" in kwargs:
        cfg = dict(model.pretrained_cfg)
        chans = cfg.get("input_size", (3,))[0]
        chans = kwargs.get("in_chans", chans)
        cfg["input_size"] = (chans, kwargs["img_size"], kwargs["img_size"])
        model.pretrained_cfg = model.default_cfg = cfg
    return model
