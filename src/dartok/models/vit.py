"""DART on timm Vision Transformers: ``patch_timm``, registered models, weight loading.

After ``import dartok`` these names work with ``timm.create_model``:

- ``dart_deit_tiny_patch16_224``, ``dart_deit_small_patch16_224``,
  ``dart_deit_base_patch16_224``: DeiT with DART (paper §4.2; input 448, scorer trunk per
  docs/method.md §3: MobileNetV3-Small for Ti, -Large for S and B). ``pretrained=True`` takes the
  DeiT weights and the scorer trunk from timm's pretrained tags (needs a network). Their
  ``.hcplab_*`` tags (``dart_deit_tiny_patch16_224.hcplab_in1k``, ...) are the DART authors'
  ImageNet checkpoints with the authors' tokenizer (:mod:`dartok.compat.hcplab`).
- ``vit_micro_patch8`` and ``dart_vit_micro_patch8``: a small ViT that trains on two CPU
  cores, used identically by the fixed-grid baseline and the DART model.

Model kwargs for the DART models: ``num_tokens`` (default 196 / 36), ``img_size`` (the
input side the data pipeline should produce), ``scorer`` (trunk name), ``scorer_head``
(``"v1"``/``"v2"``), ``scorer_input_size``, ``scorer_stage``, ``scorer_pretrained``,
``trainable_scorer_trunk``, ``learn_contrast``, ``alpha``, ``bands``, ``antialias``, ``partition``
(``"bands"``/``"grid"``); everything else goes to timm's
``VisionTransformer``.

Prefix tokens: every layout timm's ``VisionTransformer`` and DeiT's distilled ViT have is
supported (class token, distillation token, register tokens, with position entries or
``no_embed_class``); they go in front of the DART tokens in timm's order (class,
distillation, registers). Anything else is refused (:meth:`DartVisionTransformer.check_backbone`).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .. import _compat

_compat.ensure_torchvision_importable()

from timm.layers import resample_abs_pos_embed, resample_patch_embed  # noqa: E402
from timm.models import build_model_with_cfg, register_model  # noqa: E402
from timm.models._registry import generate_default_cfgs  # noqa: E402
from timm.models.deit import VisionTransformerDistilled  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

from ..compat.hcplab import hcplab_pretrained_cfgs  # noqa: E402
from ..layers.mamba import MambaClassifier  # noqa: E402
from ..partition import DEFAULT_ALPHA  # noqa: E402
from ..scorer import Scorer  # noqa: E402
from ..tokenizer import DART, DartOutput  # noqa: E402
from ._adapter import (_DART_KEYS, DartModelMixin, _cfg, create_dart, is_dart, patch_backbone,  # noqa: E402
                       patch_options, tokens_to_feature_map)
from .warp import patch_warp  # noqa: E402

__all__ = ["DartVisionTransformer", "convert_vit_state_dict", "load_vit_weights", "patch_timm"]

_KNOWN_POS_EMBED = (VisionTransformer._pos_embed, VisionTransformerDistilled._pos_embed)
"""timm's ``_pos_embed`` implementations whose prefix-token placement DART reproduces."""


def _prefix_tokens(model: VisionTransformer) -> list[torch.Tensor]:
    """The prefix tokens (``1×k×D`` each) in timm's order: class, distillation, registers."""
    names = ("cls_token", "dist_token", "reg_token")
    return [t for t in (getattr(model, n, None) for n in names) if t is not None]


def _num_prefix_pos(model: VisionTransformer) -> int:
    """Prefix entries in ``model.pos_embed`` (0 for ``no_embed_class`` models)."""
    return 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens


class DartVisionTransformer(DartModelMixin, VisionTransformer):
    """A timm ``VisionTransformer`` whose ``patch_embed`` is a :class:`DART`.

    Not constructed directly: :func:`patch_timm` turns an existing ViT into one (the
    instance keeps its class's behaviour through a dynamic subclass, as ToMe does; a
    distilled DeiT keeps its two heads). ``pos_embed`` keeps only the prefix-token
    (class/distillation/register) entries, ``None`` for ``no_embed_class`` models; the grid
    part lives in ``patch_embed.pos_embed``.

    Shapes: ``forward(B×C×H×W) → B×num_classes`` for any H, W; ``forward_features →
    B×(k+N)×D`` with the k prefix tokens first.
    """

    backbone_cls = VisionTransformer
    backbone_desc = "timm VisionTransformer"
    patch_fn = "patch_timm"

    def _pos_embed(self, x: DartOutput) -> torch.Tensor:  # type: ignore[override]
        """DART tokens + their position embeddings, prefix tokens (+ their entries) in front: ``B×(k+N)×D``."""
        tokens = x.tokens + x.pos_embed
        prefix = _prefix_tokens(self)
        if prefix:
            prefix = torch.cat([t.expand(tokens.shape[0], -1, -1) for t in prefix], dim=1)
            if self.pos_embed is not None:
                prefix = prefix + self.pos_embed
            tokens = torch.cat([prefix, tokens], dim=1)
        return self.pos_drop(tokens)

    def forward_intermediates(self, x: torch.Tensor, *args, output_fmt: str = "NCHW", **kwargs):
        """timm's ``VisionTransformer.forward_intermediates`` (same arguments and results), with
        ``NCHW`` maps made from the DART boxes (:func:`~dartok.models.tokens_to_feature_map`,
        ``h×w`` = the tokenizer's ``grid_size``); ``NLC`` gives the N tokens as they are.

        Raises:
            ValueError: ``output_fmt`` other than NCHW / NLC, or as the tokenizer does.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        boxes: list[torch.Tensor] = []
        hook = self.patch_embed.register_forward_hook(lambda module, inputs, out: boxes.append(out.boxes))
        try:
            result = super().forward_intermediates(x, *args, output_fmt="NLC", **kwargs)
        finally:
            hook.remove()
        if output_fmt == "NLC":
            return result

        def to_map(y):
            if isinstance(y, tuple):  # (map, prefix tokens) with return_prefix_tokens
                return (to_map(y[0]), *y[1:])
            return tokens_to_feature_map(y, boxes[-1], self.patch_embed.grid_size)

        if isinstance(result, dict):
            result["image_intermediates"] = [to_map(y) for y in result["image_intermediates"]]
            return result
        if isinstance(result, list):  # intermediates_only
            return [to_map(y) for y in result]
        final, intermediates = result
        return final, [to_map(y) for y in intermediates]

    @classmethod
    def check_backbone(cls, model: VisionTransformer) -> None:
        """Refuse what the DART ViT cannot reproduce.

        Raises:
            ValueError: no learned absolute position embedding (or ``dynamic_img_size``), an
                overridden ``_pos_embed`` timm does not have, a distilled ViT with register
                tokens (timm's ``VisionTransformerDistilled`` ignores them), or prefix tokens /
                position entries that do not add up to ``num_prefix_tokens``.
        """
        if model.pos_embed is None or getattr(model, "dynamic_img_size", False):
            raise ValueError("patch_timm needs a ViT with learned absolute position embeddings (pos_embed='learn')")
        if type(model)._pos_embed not in _KNOWN_POS_EMBED:
            raise ValueError(f"patch_timm cannot tell where {type(model).__name__}._pos_embed puts the prefix tokens "
                             "(only timm's VisionTransformer and VisionTransformerDistilled layouts are supported)")
        if getattr(model, "dist_token", None) is not None and model.reg_token is not None:
            raise ValueError("patch_timm does not support a distilled ViT with register tokens "
                             "(timm's VisionTransformerDistilled leaves them out of its token sequence)")
        k = sum(t.shape[1] for t in _prefix_tokens(model))
        expected = model.patch_embed.num_patches + _num_prefix_pos(model)
        if k != model.num_prefix_tokens or model.pos_embed.shape[1] != expected:
            raise ValueError(f"unsupported prefix-token layout: {k} prefix tokens, num_prefix_tokens="
                             f"{model.num_prefix_tokens}, pos_embed of length {model.pos_embed.shape[1]} "
                             f"for {model.patch_embed.num_patches} patches")

    @classmethod
    def split_pos_embed(cls, model: VisionTransformer) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The first :func:`_num_prefix_pos` entries stay (``None`` if 0), the rest is the grid."""
        prefix = _num_prefix_pos(model)
        pos = model.pos_embed.data
        return (pos[:, :prefix] if prefix else None), pos[:, prefix:]


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
    score_source: str = "scorer",
    scorer_cam: bool | None = None,
    prior: str | None = None,
    prior_mode: str = "both",
    partition: str = "bands",
    compat: str | None = None,
    mode: str = "auto",
    warp_size: int | tuple[int, int] | None = None,
    patch_size: int | None = None,
    unwarp_features: bool = False,
) -> nn.Module:
    """Turn a timm ``VisionTransformer`` into a DART model in place, keeping its weights; put any
    other image model behind DART's regular-grid warp (paper App. C).

    The ViT call of :func:`dartok.models.patch_backbone` (the signature mirrors
    :func:`~dartok.models.vim.patch_vim` and :func:`~dartok.models.videomamba.patch_videomamba`).
    The patch projection (``patch_embed.proj``) moves into :class:`DART` unchanged, the
    grid part of ``pos_embed`` becomes the tokenizer's ``g×g×D`` position map, class /
    distillation / register tokens and their position entries stay. With a uniform pdf the
    patched model computes exactly what the original computed on a ``g·P`` input, for every
    prefix layout (paper §4.2).

    Args:
        model: a timm ``VisionTransformer`` (or DeiT's distilled one) with learned absolute
            position embeddings (with or without class / register tokens).
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
        score_source: ``"scorer"`` or ``"oracle"`` (the data's object box; :func:`~dartok.models.patch_backbone`).
        scorer_cam: the scorer's auxiliary class-activation head (docs/method.md §10): ``None``
            (default) on for a trunk trained from scratch, off for a pretrained one.
        prior: a training-free score map (``"saliency"``, ``"edges"``; :data:`dartok.scorer.PRIORS`)
            mixed into the scorer's while it learns, its share set by training's ``prior_epochs``
            (docs/method.md §10); ``None`` (default) none.
        prior_mode: ``"mix"``, ``"teach"`` or ``"both"`` (:data:`dartok.tokenizer.PRIOR_MODES`).
        partition: the token partition, ``"bands"`` (the paper's) or ``"grid"`` (the regular grid
            of App. C as tokens; :data:`dartok.partition.PARTITIONS`).
        compat: ``None`` (default) or ``"hcplab"``: the DART authors' tokenizer, defects included,
            for their checkpoints (:class:`DART`, docs/method.md §4a; ``scorer`` then a dict of
            :class:`~dartok.compat.hcplab.HcplabScorer` kwargs). Tokens only.
        mode: ``"auto"`` (default): a timm ``VisionTransformer`` gets the token tokenizer, any other
            model the warp; ``"tokens"`` or ``"warp"`` force one. Vision Mamba and VideoMamba take
            :func:`~dartok.models.vim.patch_vim` / :func:`~dartok.models.videomamba.patch_videomamba`.
        warp_size, patch_size, unwarp_features: the warp's output size, box side P and whether
            its feature maps come back in image coordinates (:func:`dartok.models.warp.patch_warp`);
            warp only.

    Returns:
        The same object, now an instance of a ``DartVisionTransformer`` subclass (tokens), or a
        new :class:`~dartok.models.warp.DartWarp` holding the model unchanged (warp).

    Raises:
        TypeError: tokens forced on a model that is not a timm VisionTransformer, a Vim /
            VideoMamba model, or not an ``nn.Module``.
        ValueError: an unknown ``mode`` or ``partition``, options of the other mode (``bands``,
            ``partition`` for the warp; ``warp_size``, ``patch_size``, ``unwarp_features`` for tokens); no learned
            absolute position embedding, a non-square grid, or a prefix layout timm does not have
            (:meth:`DartVisionTransformer.check_backbone`); a warp layout that does not tile.
    """
    options = patch_options(locals())
    warp_options = {k: options.pop(k) for k in ("mode", "warp_size", "patch_size", "unwarp_features")}
    if mode not in ("auto", "tokens", "warp"):
        raise ValueError(f"mode must be 'auto', 'tokens' or 'warp', got {mode!r}")
    if isinstance(model, MambaClassifier):
        raise TypeError(f"{type(model).__name__} is a Mamba model: use dartok.patch_vim or dartok.patch_videomamba")
    if mode == "warp" or (mode == "auto" and not isinstance(model, VisionTransformer)):
        if compat is not None:
            raise ValueError("compat is an option of the token tokenizer (a timm VisionTransformer), not of the warp")
        options.pop("compat")
        if bands is not None or partition != "bands":
            raise ValueError("bands and partition are options of the token tokenizer; the warp is always the "
                             "regular grid (set its layout with num_tokens, warp_size, patch_size)")
        options.pop("bands"), options.pop("partition")
        return patch_warp(model, **options, warp_size=warp_size, patch_size=patch_size,
                          unwarp_features=unwarp_features)
    if warp_size is not None or patch_size is not None or unwarp_features:
        raise ValueError("warp_size, patch_size and unwarp_features are options of the warp (mode='warp'); a ViT "
                         "keeps its own patch size and token features")
    return patch_backbone(model, DartVisionTransformer, **options)


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

def _create_dart(variant: str, vit_name: str, pretrained: bool, defaults: dict, kwargs: dict) -> VisionTransformer:
    return create_dart(variant, vit_name, patch_timm, pretrained, defaults, kwargs, keys=_DART_KEYS + ("partition",),
                       filter_fn=convert_vit_state_dict)


_DART_DEIT_CFG = _cfg(input_size=(3, 448, 448))


default_cfgs = generate_default_cfgs({
    # the '.hcplab_*' tags are the DART authors' checkpoints and their tokenizer (dartok.compat.hcplab);
    # '.*' after them: the untagged cfg stays the default (no weights of its own: DeiT's + the scorer trunk's)
    **hcplab_pretrained_cfgs("dart_deit_tiny_patch16_224", **_DART_DEIT_CFG),
    "dart_deit_tiny_patch16_224.*": _DART_DEIT_CFG,
    **hcplab_pretrained_cfgs("dart_deit_small_patch16_224", **_DART_DEIT_CFG),
    "dart_deit_small_patch16_224.*": _DART_DEIT_CFG,
    "dart_deit_base_patch16_224": _DART_DEIT_CFG,
    # fixed as timm's ViTs: the position embedding fixes the grid (timm's PatchEmbed refuses other sizes)
    "vit_micro_patch8": _cfg(input_size=(1, 48, 48), fixed_input_size=True, num_classes=10, mean=(0.5,), std=(0.5,)),
    "dart_vit_micro_patch8": _cfg(input_size=(1, 128, 128), num_classes=10, mean=(0.5,), std=(0.5,)),
})

_DEIT_DEFAULTS = {"num_tokens": 196, "img_size": 448, "scorer_head": "v1", "scorer_input_size": 224}


@register_model
def dart_deit_tiny_patch16_224(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """DeiT-Ti + DART (paper Table 1: 73.8 top-1, 1.32 GMACs at 196 tokens)."""
    return _create_dart("dart_deit_tiny_patch16_224", "deit_tiny_patch16_224", pretrained,
                        {**_DEIT_DEFAULTS, "scorer": "mobilenetv3_small"}, kwargs)


@register_model
def dart_deit_small_patch16_224(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """DeiT-S + DART (paper Table 1: 80.6 top-1, 4.84 GMACs at 196 tokens)."""
    return _create_dart("dart_deit_small_patch16_224", "deit_small_patch16_224", pretrained,
                        {**_DEIT_DEFAULTS, "scorer": "mobilenetv3_large"}, kwargs)


@register_model
def dart_deit_base_patch16_224(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """DeiT-B + DART (scorer MobileNetV3-Large; not in the paper's tables)."""
    return _create_dart("dart_deit_base_patch16_224", "deit_base_patch16_224", pretrained,
                        {**_DEIT_DEFAULTS, "scorer": "mobilenetv3_large"}, kwargs)


MICRO_VIT_ARGS = dict(patch_size=8, embed_dim=96, depth=6, num_heads=3, mlp_ratio=3.0, in_chans=1, num_classes=10)
"""The small CPU-trainable ViT shared by ``vit_micro_patch8`` and ``dart_vit_micro_patch8``."""


@register_model
def vit_micro_patch8(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """Small fixed-grid ViT for CPU training (img_size 48 → 36 tokens by default)."""
    args = {**MICRO_VIT_ARGS, "img_size": 48, **kwargs}
    model = build_model_with_cfg(VisionTransformer, "vit_micro_patch8", pretrained,
                                 feature_cfg=dict(out_indices=3, feature_cls="getter"), **args)  # as timm's ViTs
    if not isinstance(model, VisionTransformer):  # features_only: timm's FeatureGetterNet around it
        return model
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
    return _create_dart("dart_vit_micro_patch8", "vit_micro_patch8", pretrained, defaults, kwargs)
