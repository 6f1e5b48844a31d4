"""DART in front of any timm model that takes an image: the regular-grid warp (paper App. C).

A convolutional or hierarchical backbone (ResNet, ConvNeXt, EfficientNet, Swin, ...) works on a
uniform pixel grid and takes no tokens. :func:`patch_warp` puts a :class:`~dartok.warp.WarpDART`
in front of it: DART's scorer and density, a non-uniform *regular* ``R×C`` grid (y-cuts from the
y-marginal, x-cuts from the x-marginal), every box resampled to ``P×P`` and stitched into an
``R·P × C·P`` image that goes to the unchanged backbone (docs/method.md §12). With a uniform pdf
and no anti-aliasing the warped image is the bilinear resize of the input, so the result computes
what the backbone computed on the resized image.

:func:`dartok.patch_timm` calls :func:`patch_warp` for every model that is not a timm
``VisionTransformer`` (``mode="warp"`` forces it for a ViT too). Registered names (``import
dartok``): ``dart_warp_resnet10t``, ``dart_warp_resnet18``, ``dart_warp_resnet50``,
``dart_warp_convnext_atto``, ``dart_warp_efficientnet_b0`` (warp 224, input 448, scorer
MobileNetV3-Small on a 224 copy, as DeiT-Ti + DART); ``num_tokens`` is the grid's box count R·C.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .. import _compat

_compat.ensure_torchvision_importable()

import timm  # noqa: E402
from timm.models import register_model  # noqa: E402
from timm.models._registry import generate_default_cfgs  # noqa: E402

from ..partition import DEFAULT_ALPHA  # noqa: E402
from ..scorer import Scorer  # noqa: E402
from ..warp import WarpDART, WarpOutput, _size_pair, unwarp, warp_layout  # noqa: E402
from ._adapter import (  # noqa: E402
    _DART_KEYS, _cfg, create_dart, is_dart, record_num_tokens, reset_scorer_cam, scorer_and_oracle_grid,
)

timm.layers.register_notrace_module(WarpDART)  # an FX leaf, as DART: its checks and branches in Python

__all__ = ["DartWarp", "patch_warp", "warp_layout"]

_WARP_KEYS = tuple(k for k in _DART_KEYS if k != "bands") + ("warp_size", "patch_size", "unwarp_features")
"""The kwargs of a registered warp model that go to :func:`patch_warp` (the rest to the backbone)."""


def _first_conv_in_chans(model: nn.Module) -> int:
    """Input channels of ``model``: its cfg's ``first_conv``, else its first ``Conv2d``."""
    name = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv")
    if isinstance(name, str):
        try:
            conv = model.get_submodule(name)
            if isinstance(conv, nn.Conv2d):
                return conv.in_channels
        except AttributeError:
            pass
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise TypeError(f"the warp goes in front of a model that takes B×C×H×W images (one with a Conv2d); "
                    f"{type(model).__name__} has none")


class DartWarp(nn.Module):
    """A model that takes an image, behind DART's regular-grid warp (paper App. C, docs/method.md §12).

    ``patch_embed`` is the :class:`~dartok.warp.WarpDART` (so :func:`dartok.is_dart` holds and
    training, the oracle, the localisation metric, ``dartok bench`` and ``visualize`` treat it as
    DART's tokenizer); ``backbone`` is the unchanged model, its weights under ``backbone.``.
    Built by :func:`patch_warp`.

    Shapes: ``forward(B×C×H×W) → `` the backbone's output on the ``R·P × C·P`` warped image
    (``B×num_classes`` for a classifier), any H, W; :meth:`forward_dense` maps the backbone's
    feature map back to ``H×W``.

    timm's model API is the backbone's, under ``backbone.``: ``forward_features`` /
    ``forward_head``, ``get_classifier`` / ``reset_classifier``, ``set_grad_checkpointing``,
    ``group_matcher`` (the scorer with the classifier, as :func:`~dartok.models._adapter.scorer_out_of_stem` says),
    ``feature_info``, :meth:`forward_intermediates` and :meth:`prune_intermediate_layers` (so
    ``features_only=True`` gives timm's ``FeatureGetterNet``, and FX / hook feature nets work on
    ``feature_info``'s modules). Features are the backbone's on the warped image, in warped
    coordinates, unless ``unwarp_features`` (or ``forward_intermediates(unwarp=True)``).

    Attributes:
        unwarp_features: :meth:`forward_intermediates` (and so ``features_only``) maps each
            feature map back to image coordinates by default (:func:`dartok.warp.unwarp`).
    """

    def __init__(self, backbone: nn.Module, warp: WarpDART, img_size: int, unwarp_features: bool = False):
        super().__init__()
        self.patch_embed = warp
        self.backbone = backbone
        self.in_chans = warp.in_chans
        self.unwarp_features = bool(unwarp_features)
        self.num_classes = int(getattr(backbone, "num_classes", 0) or 0)
        cfg = dict(getattr(backbone, "pretrained_cfg", None) or {})
        for key in ("first_conv", "classifier"):
            if isinstance(cfg.get(key), str):
                cfg[key] = f"backbone.{cfg[key]}"
        cfg.update(input_size=(warp.in_chans, img_size, img_size), fixed_input_size=False)
        cfg.pop("test_input_size", None)
        self.pretrained_cfg = self.default_cfg = cfg

    @property
    def num_features(self) -> int:
        """The backbone's ``num_features``."""
        return self.backbone.num_features

    @property
    def head_hidden_size(self) -> int:
        """The backbone's ``head_hidden_size`` (width of ``forward_head(pre_logits=True)``)."""
        return getattr(self.backbone, "head_hidden_size", self.backbone.num_features)

    @property
    def feature_info(self) -> list[dict]:
        """The backbone's ``feature_info``, modules under ``backbone.``, each ``reduction`` in input
        pixels: the backbone's stride × (recorded input side / warped height); 2× for the defaults
        (448 warped to 224). A map's size is the warped image's over the backbone's stride.

        Raises:
            AttributeError: a backbone without ``feature_info``.
        """
        scale = self.pretrained_cfg["input_size"][1] / self.patch_embed.out_size[0]
        out = []
        for info in self.backbone.feature_info:
            reduction = info["reduction"] * scale
            out.append({**info, "module": f"backbone.{info['module']}",
                        "reduction": int(reduction) if float(reduction).is_integer() else reduction})
        return out

    def tokenize(self, x: torch.Tensor, pdf: torch.Tensor | None = None) -> WarpOutput:
        """Only the warp: ``B×C×H×W`` → :class:`~dartok.warp.WarpOutput` (``pdf`` ``B×h×w`` replaces the scorer's)."""
        return self.patch_embed(x, pdf=pdf)

    @torch.jit.ignore
    def set_num_tokens(self, num_tokens: int, bands: int | None = None) -> None:
        """Change the box count N = R·C in place, without retraining: the warped image keeps its size
        (the backbone's cost does not change), its boxes become ``√(H·W/N)`` px
        (:meth:`dartok.warp.WarpDART.set_num_tokens`), as a warp built with this budget.

        Raises:
            ValueError: an N whose square boxes do not tile the warped image (the message lists
                those that do), or ``bands`` given.
        """
        self.patch_embed.set_num_tokens(num_tokens, bands)
        record_num_tokens(self, self.patch_embed)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's ``forward_features`` of the warped image."""
        return self.backbone.forward_features(self.patch_embed(x).image)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The backbone's ``forward_head``."""
        return self.backbone.forward_head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone on the warped image. Raises ``ValueError`` as the warp does (bad images or pdf)."""
        return self.backbone(self.patch_embed(x).image)

    def unwarp(self, maps: torch.Tensor, out: WarpOutput, size: tuple[int, int]) -> torch.Tensor:
        """``B×K×h×w`` maps on the warped image → ``B×K×H×W`` in image coordinates (:func:`dartok.warp.unwarp`)."""
        return unwarp(maps, out.ys, out.xs, size)

    def forward_dense(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """The backbone's feature map, mapped back to image coordinates: ``B×C×H×W`` → ``B×F×H'×W'``.

        ``forward_features`` of the warped image (``NHWC`` outputs, as timm's Swin gives, are
        permuted to ``NCHW``), then :func:`dartok.warp.unwarp` to ``size`` (default the input's
        ``H×W``): each output pixel reads the feature at its exact place in the warped image.

        Raises:
            ValueError: a backbone whose features are not a 4-D map (a ViT's token sequence).
        """
        out = self.patch_embed(x)
        feats = self.backbone.forward_features(out.image)
        if feats.dim() != 4:
            raise ValueError(f"forward_dense needs a B×C×h×w feature map; {type(self.backbone).__name__} gives "
                             f"shape {tuple(feats.shape)}")
        if getattr(self.backbone, "output_fmt", "NCHW") == "NHWC":
            feats = feats.permute(0, 3, 1, 2)
        return unwarp(feats, out.ys, out.xs, tuple(x.shape[-2:]) if size is None else tuple(size))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        unwarp: bool | None = None,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's ``forward_intermediates``: the backbone's on the warped image.

        Args:
            x: ``B×C×H×W`` images.
            indices, norm, stop_early, output_fmt, intermediates_only: the backbone's
                (``indices``: ``feature_info`` entries; an int n: the last n).
            unwarp: map each ``B×C'×h×w`` map back to image coordinates at its own size
                (:func:`dartok.warp.unwarp`, the warp's exact inverse sampled bilinearly: cell
                ``(i, j)`` reads the map where image point ``((j+½)/w, (i+½)/h)`` went). ``None``:
                :attr:`unwarp_features`. ``False``: the maps in warped coordinates, as the
                backbone computed them (a zoomed-in region fills more cells).

        Returns:
            The backbone's: a list of ``B×C'×h×w`` maps (``intermediates_only``), else
            ``(final features, maps)``; the final features are never unwarped.

        Raises:
            ValueError: as the warp (bad images) or the backbone (bad indices, ``output_fmt``) does;
                ``unwarp`` of maps that are not 4-D (a ViT backbone's ``NLC`` tokens).
        """
        out = self.patch_embed(x)
        result = self.backbone.forward_intermediates(out.image, indices=indices, norm=norm, stop_early=stop_early,
                                                     output_fmt=output_fmt, intermediates_only=intermediates_only)
        if not (self.unwarp_features if unwarp is None else unwarp):
            return result
        maps = result if intermediates_only else result[1]
        maps = [self._unwarp_map(m, out, output_fmt) for m in maps]
        return maps if intermediates_only else (result[0], maps)

    def _unwarp_map(self, fmap: torch.Tensor, out: WarpOutput, output_fmt: str) -> torch.Tensor:
        """One intermediate (``NCHW``, or ``NHWC`` where asked) in image coordinates, at its own size and layout."""
        if fmap.dim() != 4:
            raise ValueError(f"unwarp needs B×C×h×w maps; {type(self.backbone).__name__} gives "
                             f"{tuple(fmap.shape)} for output_fmt={output_fmt!r}")
        nhwc = output_fmt == "NHWC"
        fmap = fmap.permute(0, 3, 1, 2) if nhwc else fmap
        back = unwarp(fmap, out.ys, out.xs, tuple(fmap.shape[-2:]))
        return back.permute(0, 2, 3, 1) if nhwc else back

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """The backbone's ``prune_intermediate_layers`` (layers after the last of ``indices`` go;
        ``prune_head``: the classifier too, ``num_classes`` 0). Returns the kept indices."""
        kept = self.backbone.prune_intermediate_layers(indices, prune_norm=prune_norm, prune_head=prune_head)
        if prune_head:
            self.num_classes = 0
        return kept

    def get_classifier(self) -> nn.Module:
        """The backbone's classifier."""
        return self.backbone.get_classifier()

    def reset_classifier(self, num_classes: int, *args: Any, **kwargs: Any) -> None:
        """The backbone's ``reset_classifier``; ``num_classes`` and the scorer's CAM head follow
        (:func:`~dartok.models._adapter.reset_scorer_cam`)."""
        self.backbone.reset_classifier(num_classes, *args, **kwargs)
        self.num_classes = num_classes
        reset_scorer_cam(self.patch_embed, num_classes)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """The backbone's gradient checkpointing."""
        self.backbone.set_grad_checkpointing(enable)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        """Parameter groups for timm's layer-wise LR decay: the backbone's (``group_matcher``), under
        ``backbone.``; the scorer joins the classifier's group (LR scale 1), as on the token models.

        A callable (timm takes one): parameter name → the backbone's group index, with the
        backbone's own ordering (timm's ``group_with_matcher`` over its parameters).
        """
        from timm.models._manipulate import group_with_matcher

        unmatched = "\0"  # no backbone regex matches it: it lands in the classifier's (last) group
        names = [(n, None) for n, _ in self.backbone.named_parameters()] + [(unmatched, None)]
        group = group_with_matcher(names, self.backbone.group_matcher(coarse), reverse=True)
        prefix = "backbone."

        def matcher(name: str) -> tuple[int]:
            key = name[len(prefix):] if name.startswith(prefix) else unmatched
            return (group.get(key, group[unmatched]),)

        return matcher

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """The backbone's no-decay names, under ``backbone.``."""
        inner = getattr(self.backbone, "no_weight_decay", None)
        return {f"backbone.{n}" for n in (inner() if callable(inner) else ())}


def patch_warp(
    model: nn.Module,
    num_tokens: int | None = None,
    scorer: str | dict | Scorer | None = "mobilenetv3_small",
    img_size: int | None = None,
    alpha: float = DEFAULT_ALPHA,
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
    warp_size: int | tuple[int, int] | None = None,
    patch_size: int | None = None,
    unwarp_features: bool = False,
) -> DartWarp:
    """Put DART's regular-grid warp in front of ``model`` (any module that takes ``B×C×H×W`` images).

    Returns a new :class:`DartWarp` holding ``model`` unchanged (same object, same weights) as its
    ``backbone``. The warp's output size is ``warp_size`` (default: the model's own input size,
    ``pretrained_cfg["input_size"]``), cut into ``R×C`` boxes of ``P×P`` (:func:`warp_layout`).
    With a uniform pdf (``scorer=None``) and ``antialias=False`` the result equals ``model`` on the
    input resized bilinearly (``align_corners=False``) to ``warp_size``.

    Args:
        model: a timm model (ResNet, ConvNeXt, EfficientNet, Swin, a ViT...) or any image model.
        num_tokens: the box count R·C (default: from ``patch_size``).
        warp_size: ``(height, width)`` or a side of the warped image the backbone sees.
        patch_size: P, pixels per box side in the warped image (default 16, or from ``num_tokens``).
        img_size: the input side the data pipeline should produce (default: twice the warp's
            larger side, as DART's 448 for a 224 backbone); recorded in ``pretrained_cfg``; any
            input size works.
        antialias: anti-alias boxes larger than P×P (:func:`dartok.warp.warp_matrix`).
        unwarp_features: :meth:`DartWarp.forward_intermediates` / ``features_only`` give the maps
            in image coordinates (:func:`dartok.warp.unwarp`); default: in warped coordinates.
        scorer, alpha, scorer_head, scorer_input_size, scorer_stage, scorer_pretrained,
        trainable_scorer_trunk, learn_contrast, score_source, scorer_cam, prior, prior_mode: as
            :func:`dartok.patch_timm` (the same scorer and density as the token tokenizer).

    Returns:
        The :class:`DartWarp`.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or has no ``Conv2d`` (takes no images).
        ValueError: a model that is already DART, a layout that does not tile (:func:`warp_layout`),
            a model without a recorded input size and no ``warp_size``, bad scorer options.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"patch_warp expects an nn.Module, got {type(model).__name__}")
    if isinstance(model, DartWarp) or is_dart(model):
        raise ValueError("model already has a DART tokenizer")
    in_chans = _first_conv_in_chans(model)
    if warp_size is None:
        size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
        if not size or len(size) != 3:
            raise ValueError(f"{type(model).__name__} records no input size; pass warp_size=(height, width)")
        warp_size = (int(size[1]), int(size[2]))
    rows, cols, p = warp_layout(warp_size, num_tokens, patch_size)
    img_size = 2 * max(rows, cols) * p if img_size is None else img_size
    scorer, oracle_grid = scorer_and_oracle_grid(
        model, WarpDART, scorer, in_chans=in_chans, scorer_head=scorer_head, scorer_input_size=scorer_input_size,
        scorer_stage=scorer_stage, scorer_pretrained=scorer_pretrained, trainable_scorer_trunk=trainable_scorer_trunk,
        learn_contrast=learn_contrast, score_source=score_source, scorer_cam=scorer_cam)
    warp = WarpDART(grid=(rows, cols), patch_size=p, in_chans=in_chans, alpha=alpha, scorer=scorer,
                    img_size=img_size, antialias=antialias, score_source=score_source, oracle_grid=oracle_grid,
                    prior=prior, prior_mode=prior_mode)
    like = next(iter(model.parameters()), None)
    if like is not None:
        warp.to(device=like.device, dtype=like.dtype)
    return DartWarp(model, warp, img_size, unwarp_features=unwarp_features)


# --------------------------------------------------------------------------- registry

_WARP_DEFAULTS = {"warp_size": 224, "scorer": "mobilenetv3_small", "scorer_head": "v1", "scorer_input_size": 224}

_BACKBONES = {  # registered name -> (timm backbone, its first conv, its classifier, its feature_info entries)
    "dart_warp_resnet10t": ("resnet10t", "conv1.0", "fc", 5),
    "dart_warp_resnet18": ("resnet18", "conv1", "fc", 5),
    "dart_warp_resnet50": ("resnet50", "conv1", "fc", 5),
    "dart_warp_convnext_atto": ("convnext_atto", "stem.0", "head.fc", 4),
    "dart_warp_efficientnet_b0": ("efficientnet_b0", "conv_stem", "classifier", 5),
}

default_cfgs = generate_default_cfgs({
    name: _cfg(input_size=(3, 448, 448), first_conv=f"backbone.{conv}", classifier=f"backbone.{head}")
    for name, (_, conv, head, _) in _BACKBONES.items()
})


def _backbone_state_dict(state_dict: dict, model: DartWarp) -> dict:
    """A checkpoint for a registered warp model: its own keys as they are; a plain backbone's
    (``conv1.weight``, ...) moved under ``backbone.`` (the scorer then keeps its initialisation)."""
    sd = dict(state_dict)
    if any(k.startswith(("backbone.", "patch_embed.")) for k in sd):
        return sd
    return {f"backbone.{k}": v for k, v in sd.items()}


def _create_warp(name: str, pretrained: bool, kwargs: dict) -> DartWarp:
    """A registered warp model: the timm backbone with the non-DART kwargs, then :func:`patch_warp`
    (:func:`~dartok.models._adapter.create_dart`). A ``num_tokens`` without ``patch_size`` keeps the
    warp size and derives P (:func:`warp_layout`); the recorded input side defaults to twice the
    warp's larger side. ``features_only=True``: timm's ``FeatureGetterNet`` over every stage of the
    backbone's ``feature_info`` by default (``out_indices``), as timm's CNNs give."""
    defaults = dict(_WARP_DEFAULTS)
    defaults["img_size"] = 2 * max(_size_pair(kwargs.get("warp_size", defaults["warp_size"]), "warp_size"))
    backbone, _, _, stages = _BACKBONES[name]
    return create_dart(name, backbone, patch_warp, pretrained, defaults, kwargs, keys=_WARP_KEYS,
                       filter_fn=_backbone_state_dict, feature_cfg=dict(out_indices=tuple(range(stages))))


@register_model
def dart_warp_resnet10t(pretrained: bool = False, **kwargs) -> DartWarp:
    """ResNet-10-T behind DART's regular-grid warp (warp 224, input 448)."""
    return _create_warp("dart_warp_resnet10t", pretrained, kwargs)


@register_model
def dart_warp_resnet18(pretrained: bool = False, **kwargs) -> DartWarp:
    """ResNet-18 behind DART's regular-grid warp (warp 224, input 448)."""
    return _create_warp("dart_warp_resnet18", pretrained, kwargs)


@register_model
def dart_warp_resnet50(pretrained: bool = False, **kwargs) -> DartWarp:
    """ResNet-50 behind DART's regular-grid warp (warp 224, input 448)."""
    return _create_warp("dart_warp_resnet50", pretrained, kwargs)


@register_model
def dart_warp_convnext_atto(pretrained: bool = False, **kwargs) -> DartWarp:
    """ConvNeXt-Atto behind DART's regular-grid warp (warp 224, input 448)."""
    return _create_warp("dart_warp_convnext_atto", pretrained, kwargs)


@register_model
def dart_warp_efficientnet_b0(pretrained: bool = False, **kwargs) -> DartWarp:
    """EfficientNet-B0 behind DART's regular-grid warp (warp 224, input 448)."""
    return _create_warp("dart_warp_efficientnet_b0", pretrained, kwargs)
