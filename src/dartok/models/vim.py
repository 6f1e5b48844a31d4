"""Vision Mamba (Vim, hustvl/Vim) on timm, and Vim with DART (paper §4.3, Table 1).

After ``import dartok`` these names work with ``timm.create_model`` and
:func:`dartok.models.create_model`:

- ``vim_tiny_patch16_224`` (embed 192, depth 24), ``vim_small_patch16_224`` (384, 24):
  hustvl's "v2" configuration (``..._bimambav2_final_pool_mean_abs_pos_embed_with_midclstok
  _div2``): RMSNorm, float32 residual, bidirectional mixer ``bimamba_type="v2"`` with the two
  directions averaged, absolute position embeddings, a class token in the middle of the
  sequence whose output is the image feature. ``pretrained=True`` loads hustvl's released
  weights from the Hugging Face hub (``hustvl/Vim-tiny-midclstok``,
  ``hustvl/Vim-small-midclstok``; needs a network) through :func:`convert_vim_state_dict`.
- ``vim_micro_patch8``: a Vim that trains on two CPU cores (patch 8, embed 96, depth 6,
  one channel, 48×48 input → 36 tokens, 10 classes), the counterpart of
  ``vit_micro_patch8``.
- ``dart_vim_tiny_patch16_224``, ``dart_vim_small_patch16_224``, ``dart_vim_micro_patch8``:
  the same backbones with :class:`dartok.DART` as tokenizer (scorer head v2, docs/method.md §3;
  input 448 / 128, any token budget ``num_tokens``), built by :func:`patch_vim`.

Token order: patch tokens are row-major (band-major for DART, what its boxes give) and the
class token sits at index ``N // 2`` of the ``N + 1`` tokens, as in hustvl's
``use_middle_cls_token``. Its position embedding is the entry at that index of hustvl's
``pos_embed``; the other entries are the ``g×g`` grid.

DART model kwargs (as for :func:`dartok.patch_timm`): ``num_tokens``, ``img_size``,
``scorer``, ``scorer_head``, ``scorer_input_size``, ``scorer_stage``,
``scorer_pretrained``, ``trainable_scorer_trunk``, ``alpha``, ``bands``, ``antialias``,
``learn_contrast``; everything else goes to :class:`VisionMamba`.
"""
from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn as nn

from .. import _compat

_compat.ensure_torchvision_importable()

from timm.layers import PatchEmbed, resample_abs_pos_embed, resample_patch_embed, trunc_normal_  # noqa: E402
from timm.models import build_model_with_cfg, register_model, resolve_pretrained_cfg  # noqa: E402
from timm.models._registry import generate_default_cfgs  # noqa: E402

from ..compat.hcplab import hcplab_pretrained_cfgs  # noqa: E402
from ..layers.mamba import MambaClassifier, init_mamba_weights, segm_init_weights  # noqa: E402
from .._compat import is_tracing  # noqa: E402
from ..partition import DEFAULT_ALPHA  # noqa: E402
from ..scorer import Scorer  # noqa: E402
from ._adapter import (ClassTokenDartMixin, _cfg, create_dart, insert_token, is_dart, patch_backbone,  # noqa: E402
                       patch_options, refuse_feature_cls, refuse_scriptable)
from ._pretrained import check_pretrained_available  # noqa: E402
from .vit import convert_vit_state_dict  # noqa: E402

__all__ = ["DartVisionMamba", "VisionMamba", "convert_vim_state_dict", "load_vim_weights", "patch_vim"]


class VisionMamba(MambaClassifier):
    """Vision Mamba (Zhu et al. 2024, hustvl/Vim ``models_mamba.VisionMamba``) for timm.

    Parameter names and shapes are hustvl's, so its checkpoints load unchanged
    (``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``layers.{i}.mixer.*``,
    ``layers.{i}.norm``, ``norm_f``, ``head``).

    Args:
        img_size: input side (int or ``(H, W)``); the grid is fixed by it.
        patch_size: patch side P (stride = P).
        depth: number of blocks. embed_dim: token width D. d_state: SSM state size N.
        in_chans: image channels. num_classes: classifier outputs (0: no head).
        ssm_cfg: extra :class:`dartok.mamba.Mamba` kwargs.
        drop_rate: dropout after the position embedding. drop_path_rate: stochastic depth
            (hustvl's schedule: block i gets ``[0, linspace(0, rate, depth)][i]``).
        norm_epsilon, rms_norm: norm type and epsilon.
        initializer_cfg: extra kwargs of :func:`dartok.mamba.init_mamba_weights`.
        fused_add_norm: accepted for compatibility (the PyTorch blocks compute the same).
        residual_in_fp32: keep the residual stream in float32.
        final_pool_type: ``"mean"`` or ``"none"`` (last token): hustvl's pooling when there
            is no class token (the default ``global_pool`` then: ``"avg"`` / ``"last"``).
        if_abs_pos_embed: learned absolute position embeddings.
        bimamba_type: ``"v2"`` (bidirectional) or ``"none"``.
        if_cls_token: use a class token. use_middle_cls_token: put it at index ``N // 2``
            (else at the head).
        if_devide_out: average rather than add the two scan directions (hustvl's spelling).
        if_bidirectional, if_rope, use_double_cls_token: hustvl options outside the "v2"
            configuration; only ``False`` is supported.
        global_pool: timm's pooling before the head: ``"token"`` (the class token, default
            with one), ``"avg"`` (mean of the other tokens), ``"last"`` (the last token) or
            ``""`` (none: ``forward_head`` maps every token). ``None``: from the class token /
            ``final_pool_type`` as hustvl pools.

    Shapes:
        ``forward(B×C×H×W) → B×num_classes``; ``forward_features → B×(N+1)×D`` (normed).

    Raises:
        ValueError: an unsupported option, a bad size, or (in forward) an input of the wrong
            rank, channel count or size.
    """

    global_pool_types = ("token", "avg", "last", "")

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        depth: int = 24,
        embed_dim: int = 192,
        d_state: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        ssm_cfg: dict | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        norm_epsilon: float = 1e-5,
        rms_norm: bool = True,
        initializer_cfg: dict | None = None,
        fused_add_norm: bool = True,
        residual_in_fp32: bool = True,
        final_pool_type: str = "mean",
        if_abs_pos_embed: bool = True,
        bimamba_type: str = "v2",
        if_cls_token: bool = True,
        if_devide_out: bool = True,
        use_middle_cls_token: bool = True,
        if_bidirectional: bool = False,
        if_rope: bool = False,
        use_double_cls_token: bool = False,
        global_pool: str | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        for name, flag in (("if_bidirectional", if_bidirectional), ("if_rope", if_rope),
                           ("use_double_cls_token", use_double_cls_token)):
            if flag:
                raise ValueError(f"{name}=True is not supported (hustvl's 'v2' Vim uses False)")
        if final_pool_type not in ("mean", "none"):
            raise ValueError(f"final_pool_type must be 'mean' or 'none', got {final_pool_type!r}")
        if depth < 1 or embed_dim < 1:
            raise ValueError(f"depth and embed_dim must be ≥ 1, got depth={depth}, embed_dim={embed_dim}")
        factory = {"device": device, "dtype": dtype}
        self.residual_in_fp32 = residual_in_fp32
        self.fused_add_norm = fused_add_norm
        self.final_pool_type = final_pool_type
        self.if_abs_pos_embed = if_abs_pos_embed
        self.if_cls_token = if_cls_token
        self.use_middle_cls_token = use_middle_cls_token
        self.num_prefix_tokens = 1 if if_cls_token else 0
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.d_model = self.num_features = self.embed_dim = embed_dim
        self.depth = depth

        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                      embed_dim=embed_dim, **factory)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim, **factory)) if if_cls_token else None
        if if_abs_pos_embed:
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + self.num_prefix_tokens, embed_dim, **factory))
        else:
            self.pos_embed = None
        self.pos_drop = nn.Dropout(p=drop_rate)
        self.head_drop = nn.Identity()  # hustvl's Vim has no dropout before the head
        self.head = nn.Linear(embed_dim, num_classes, **factory) if num_classes > 0 else nn.Identity()
        self._init_stack(depth, embed_dim, drop_path_rate, d_state=d_state, ssm_cfg=ssm_cfg, norm_epsilon=norm_epsilon,
                         rms_norm=rms_norm, residual_in_fp32=residual_in_fp32, fused_add_norm=fused_add_norm,
                         bimamba_type=bimamba_type, if_devide_out=if_devide_out, **factory)
        if global_pool is None:
            global_pool = "token" if if_cls_token else {"mean": "avg", "none": "last"}[final_pool_type]
        self.global_pool = self._check_global_pool(global_pool)
        self.init_weights(initializer_cfg)

    def init_weights(self, initializer_cfg: dict | None = None) -> None:
        """hustvl's initialisation: patch embed / head, position and class token, then mamba's."""
        self.patch_embed.apply(segm_init_weights)
        self.head.apply(segm_init_weights)
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            trunc_normal_(self.cls_token, std=0.02)
        self.apply(partial(init_mamba_weights, n_layer=self.depth, **(initializer_cfg or {})))

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def cls_position(self, num_patches: int) -> int | None:
        """Index of the class token among ``num_patches + 1`` tokens (``None`` without one)."""
        if not self.if_cls_token:
            return None
        return num_patches // 2 if self.use_middle_cls_token else 0

    def _check_images(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"images must be B×C×H×W, got {got}")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"images have {x.shape[1]} channels, the model expects in_chans={self.in_chans}")

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``B×C×H×W`` → tokens ``B×(N+1)×D`` with class token and position embeddings.

        Raises:
            ValueError: wrong rank/channels, or an image size other than the model's (not
                checked under graph capture, :func:`dartok._compat.is_tracing`).
        """
        if not is_tracing(x):
            self._check_images(x)
            if tuple(x.shape[-2:]) != tuple(self.patch_embed.img_size):
                raise ValueError(f"images are {tuple(x.shape[-2:])}, this Vim takes "
                                 f"{tuple(self.patch_embed.img_size)} (its position embedding fixes the grid)")
        tokens = self.patch_embed(x)
        if self.cls_token is not None:
            tokens = insert_token(tokens, self.cls_token, self.cls_position(tokens.shape[1]))
        if self.pos_embed is not None:
            tokens = tokens + self.pos_embed
        return self.pos_drop(tokens)


class DartVisionMamba(ClassTokenDartMixin, VisionMamba):
    """A :class:`VisionMamba` whose ``patch_embed`` is a :class:`~dartok.DART` (built by :func:`patch_vim`).

    ``pos_embed`` holds only the class token's entry (``1×1×D``); the grid lives in
    ``patch_embed.pos_embed`` and each token gets the area average of it over its box. The
    class token goes to index ``N // 2`` as in the plain model. Any input size works.

    Shapes: ``forward(B×C×H×W) → B×num_classes``; ``embed → B×(N+1)×D``.
    """

    backbone_cls = VisionMamba
    backbone_desc = "dartok VisionMamba"
    patch_fn = "patch_vim"

    @classmethod
    def split_pos_embed(cls, model: VisionMamba) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The class token's entry (index ``N // 2``) stays, the other ``g²`` entries are the grid."""
        if model.pos_embed is None:
            return None, None
        return split_cls_pos(model.pos_embed.data, model.cls_position(model.patch_embed.num_patches))


def split_cls_pos(pos: torch.Tensor, cls_index: int | None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Split a ``1×(N+1)×D`` position embedding into the class entry ``1×1×D`` and the grid ``1×N×D``.

    ``cls_index`` ``None`` means no class entry (the whole tensor is the grid).
    """
    if cls_index is None:
        return None, pos
    return pos[:, cls_index:cls_index + 1], torch.cat([pos[:, :cls_index], pos[:, cls_index + 1:]], dim=1)


def patch_vim(
    model: VisionMamba,
    num_tokens: int | None = None,
    scorer: str | dict | Scorer | None = "mobilenetv3_small",
    img_size: int | None = None,
    alpha: float = DEFAULT_ALPHA,
    bands: int | None = None,
    scorer_head: str = "v2",
    scorer_input_size: int = 224,
    scorer_stage: int | None = None,
    scorer_pretrained: bool = False,
    trainable_scorer_trunk: bool | None = None,
    antialias: bool = False,
    learn_contrast: bool = True,
    score_source: str = "scorer",
    scorer_cam: bool | None = None,
    prior: str | None = None,
    prior_mode: str = "both",
    compat: str | None = None,
) -> VisionMamba:
    """Turn a :class:`VisionMamba` into a DART Vim in place, keeping its weights (paper §4.3).

    The Vim call of :func:`dartok.models.patch_backbone`; the signature mirrors
    :func:`dartok.patch_timm` (only the scorer head default differs: ``"v2"``).

    ``patch_embed.proj`` moves into :class:`DART` unchanged; the grid part of
    ``pos_embed`` (every entry but the class token's, at index ``N // 2``) becomes DART's
    ``g×g×D`` map; the class token and its position entry stay. With a uniform pdf the
    patched model computes exactly what the original computed on a ``g·P`` input.

    Args:
        model: a :class:`VisionMamba` with a square patch grid.
        num_tokens: token budget N (default: the model's ``num_patches``); any N ≥ 1.
        scorer: trunk name, dict of :class:`~dartok.scorer.Scorer` kwargs, a ``Scorer``, or
            ``None`` (uniform pdf). Vim uses head ``"v2"`` (paper §4.3, docs/method.md §3).
        img_size: input side the data pipeline should produce (default: twice the model's,
            448 for a 224 model); recorded in ``pretrained_cfg["input_size"]``.
        alpha, bands, antialias: :class:`DART` options.
        scorer_head, scorer_input_size, scorer_stage, scorer_pretrained,
        trainable_scorer_trunk, learn_contrast: used when ``scorer`` is a name.
        score_source: ``"scorer"`` or ``"oracle"`` (the data's object box; :func:`~dartok.models.patch_backbone`).
        scorer_cam, prior, prior_mode: training a scorer from scratch (docs/method.md §10), as
            in :func:`dartok.patch_timm`: the auxiliary CAM head (``None``: on for a trunk
            learned from scratch) and a training-free prior (``None``: none).
        compat: ``None`` or ``"hcplab"``: the DART authors' tokenizer, for their checkpoints
            (:class:`~dartok.DART`, docs/method.md §4a).

    Returns:
        The same object, now a :class:`DartVisionMamba`.

    Raises:
        TypeError: not a :class:`VisionMamba`.
        ValueError: already DART, or a non-square grid.
    """
    return patch_backbone(model, DartVisionMamba, **patch_options(locals()))


# --------------------------------------------------------------------------- weights

def convert_vim_state_dict(state_dict: dict[str, torch.Tensor], model: VisionMamba) -> dict[str, torch.Tensor]:
    """Map a hustvl Vim checkpoint onto ``model``'s keys and shapes (plain or DART Vim).

    Accepts the released checkpoints' ``{"model": state_dict, ...}`` wrapper. hustvl's
    ``pos_embed`` is ``1×(N+1)×D`` with the class token's entry at index ``N // 2``
    (``use_middle_cls_token``; at 0 if the checkpoint has no ``cls_token`` key, it has no
    class entry).

    - plain :class:`VisionMamba`: if the grid sizes differ, the grid part is resampled
      (timm's ``resample_abs_pos_embed``, bicubic) and the class entry re-inserted at the
      model's index; ``patch_embed.proj.weight`` is resampled if the patch size differs.
    - :class:`DartVisionMamba`: the class entry → ``pos_embed``, the grid →
      ``patch_embed.pos_embed`` (resampled to DART's map if needed), via
      :func:`dartok.models.convert_vit_state_dict`. A state dict already in DART layout
      passes through.

    Also usable as timm's ``pretrained_filter_fn``.

    Raises:
        ValueError: a position embedding whose grid part is not square.
    """
    sd = dict(state_dict)
    if "model" in sd and isinstance(sd["model"], dict):
        sd = dict(sd["model"])
    pos = sd.get("pos_embed")
    if pos is None or "patch_embed.pos_embed" in sd:
        return convert_vit_state_dict(sd, model) if is_dart(model) else sd
    has_cls = "cls_token" in sd
    n_src = pos.shape[1] - int(has_cls)
    g_src = math.isqrt(n_src)
    if g_src * g_src != n_src:
        raise ValueError(f"pos_embed of length {pos.shape[1]} is not a square grid plus {int(has_cls)} class entry")
    cls_pos, grid = split_cls_pos(pos, n_src // 2 if has_cls else None)
    if is_dart(model):  # class entry first: the layout convert_vit_state_dict reads
        sd["pos_embed"] = grid if cls_pos is None else torch.cat([cls_pos, grid], dim=1)
        return convert_vit_state_dict(sd, model)
    g_dst = tuple(model.patch_embed.grid_size)
    if (g_src, g_src) != g_dst:
        grid = resample_abs_pos_embed(grid, new_size=list(g_dst), old_size=[g_src, g_src], num_prefix_tokens=0)
    if cls_pos is not None and model.if_cls_token:
        grid = insert_token(grid, cls_pos, model.cls_position(grid.shape[1]))
    sd["pos_embed"] = grid
    w = sd.get("patch_embed.proj.weight")
    own = model.patch_embed.proj.weight
    if w is not None and w.shape[-2:] != own.shape[-2:]:
        sd["patch_embed.proj.weight"] = resample_patch_embed(w, list(own.shape[-2:]))
    return sd


def load_vim_weights(model: VisionMamba, state_dict: dict[str, torch.Tensor], strict: bool = True):
    """Load a hustvl Vim checkpoint (or one of ours) into a plain or DART Vim.

    Scorer keys (``patch_embed.scorer.*``) may be missing: the scorer keeps its weights.

    Returns:
        ``(missing_keys, unexpected_keys)`` as lists.

    Raises:
        ValueError: a shape mismatch, or (``strict``) missing / unexpected keys, with names.
    """
    sd = convert_vim_state_dict(state_dict, model)
    own = model.state_dict()
    errors = [f"{k}: {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in sd.items()
              if k in own and own[k].shape != v.shape]
    if errors:
        raise ValueError("shape mismatch loading Vim weights: " + "; ".join(errors))
    result = model.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("patch_embed.scorer.")]
    if strict and (missing or result.unexpected_keys):
        raise ValueError(f"Vim weights do not fit the model: missing {missing}, "
                         f"unexpected {list(result.unexpected_keys)}")
    return list(result.missing_keys), list(result.unexpected_keys)


# --------------------------------------------------------------------------- registry

def _vim_cfg(**kwargs):
    return _cfg(fixed_input_size=True, **kwargs)


_MICRO_DATA = dict(num_classes=10, mean=(0.5,), std=(0.5,))

default_cfgs = generate_default_cfgs({
    "vim_tiny_patch16_224": _vim_cfg(hf_hub_id="hustvl/Vim-tiny-midclstok",
                                     hf_hub_filename="vim_t_midclstok_76p1acc.pth"),
    "vim_small_patch16_224": _vim_cfg(hf_hub_id="hustvl/Vim-small-midclstok",
                                      hf_hub_filename="vim_s_midclstok_80p5acc.pth"),
    "vim_micro_patch8": _vim_cfg(input_size=(1, 48, 48), **_MICRO_DATA),
    # '.hcplab_*': the DART authors' checkpoints (dartok.compat.hcplab); '.*' after them keeps the
    # untagged cfg the default
    **hcplab_pretrained_cfgs("dart_vim_tiny_patch16_224", **_cfg(input_size=(3, 448, 448))),
    "dart_vim_tiny_patch16_224.*": _cfg(input_size=(3, 448, 448)),
    **hcplab_pretrained_cfgs("dart_vim_small_patch16_224", **_cfg(input_size=(3, 448, 448))),
    "dart_vim_small_patch16_224.*": _cfg(input_size=(3, 448, 448)),
    "dart_vim_micro_patch8": _cfg(input_size=(1, 128, 128), **_MICRO_DATA),
})

MICRO_VIM_ARGS = dict(patch_size=8, embed_dim=96, depth=6, d_state=8, in_chans=1, num_classes=10)
"""The CPU-trainable Vim shared by ``vim_micro_patch8`` and ``dart_vim_micro_patch8``.

``d_state=8`` (Vim-Ti: 16) halves the PyTorch scan, which is most of a CPU training step
(batch 64, 16 tokens, 1 thread: 0.79 s with 16, 0.45 s with 8; measured 2026-11-21)."""


def _create_vim(variant: str, pretrained: bool, defaults: dict, kwargs: dict) -> VisionMamba:
    refuse_scriptable(variant, "the Mamba mixer's selective scan is a torch.autograd.Function")
    refuse_feature_cls(variant, kwargs)
    args = {**defaults, **kwargs}
    if pretrained:
        cfg = resolve_pretrained_cfg(variant, args.get("pretrained_cfg"), args.get("pretrained_cfg_overlay"))
        check_pretrained_available(variant, {variant: cfg}, cache_dir=args.get("cache_dir"))
    model = build_model_with_cfg(VisionMamba, variant, pretrained, pretrained_filter_fn=convert_vim_state_dict,
                                 feature_cfg=dict(out_indices=3, feature_cls="getter"), **args)
    if not isinstance(model, VisionMamba):  # features_only: timm's FeatureGetterNet around it
        return model
    cfg = dict(model.pretrained_cfg)
    side = tuple(model.patch_embed.img_size)
    cfg.update(input_size=(model.in_chans, *side), num_classes=model.num_classes)
    model.pretrained_cfg = model.default_cfg = cfg
    return model


def _create_dart_vim(variant: str, vim_name: str, pretrained: bool, defaults: dict, kwargs: dict) -> DartVisionMamba:
    refuse_feature_cls(variant, kwargs)
    return create_dart(variant, vim_name, patch_vim, pretrained, defaults, kwargs, filter_fn=convert_vim_state_dict)


_TI = dict(patch_size=16, embed_dim=192, depth=24)
_S = dict(patch_size=16, embed_dim=384, depth=24)


@register_model
def vim_tiny_patch16_224(pretrained: bool = False, **kwargs) -> VisionMamba:
    """Vim-Ti, hustvl "v2" (middle class token, 76.1 top-1; 1.60 GMACs in the papers' count)."""
    return _create_vim("vim_tiny_patch16_224", pretrained, _TI, kwargs)


@register_model
def vim_small_patch16_224(pretrained: bool = False, **kwargs) -> VisionMamba:
    """Vim-S, hustvl "v2" (middle class token, 80.5 top-1; 5.30 GMACs in the papers' count)."""
    return _create_vim("vim_small_patch16_224", pretrained, _S, kwargs)


@register_model
def vim_micro_patch8(pretrained: bool = False, **kwargs) -> VisionMamba:
    """Small fixed-grid Vim for CPU training (img_size 48 → 36 tokens by default)."""
    return _create_vim("vim_micro_patch8", pretrained, {**MICRO_VIM_ARGS, "img_size": 48}, kwargs)


_DART_VIM_DEFAULTS = {"num_tokens": 196, "img_size": 448, "scorer_head": "v2", "scorer_input_size": 224}


@register_model
def dart_vim_tiny_patch16_224(pretrained: bool = False, **kwargs) -> DartVisionMamba:
    """Vim-Ti + DART (paper Table 1: 77.2 top-1 at 196 tokens; scorer MobileNetV3-Small, head v2)."""
    return _create_dart_vim("dart_vim_tiny_patch16_224", "vim_tiny_patch16_224", pretrained,
                            {**_DART_VIM_DEFAULTS, "scorer": "mobilenetv3_small"}, kwargs)


@register_model
def dart_vim_small_patch16_224(pretrained: bool = False, **kwargs) -> DartVisionMamba:
    """Vim-S + DART (paper Table 1: 81.5 top-1 at 196 tokens; scorer MobileNetV3-Large, head v2)."""
    return _create_dart_vim("dart_vim_small_patch16_224", "vim_small_patch16_224", pretrained,
                            {**_DART_VIM_DEFAULTS, "scorer": "mobilenetv3_large"}, kwargs)


@register_model
def dart_vim_micro_patch8(pretrained: bool = False, **kwargs) -> DartVisionMamba:
    """``vim_micro_patch8`` with DART (36 tokens, 128 input, scorer v2 on a 128 copy, anti-aliased boxes
    as ``dart_vit_micro_patch8``)."""
    defaults = {"num_tokens": 36, "img_size": 128, "scorer": "mobilenetv3_small", "scorer_head": "v2",
                "scorer_input_size": 128, "antialias": True}
    return _create_dart_vim("dart_vim_micro_patch8", "vim_micro_patch8", pretrained, defaults, kwargs)
