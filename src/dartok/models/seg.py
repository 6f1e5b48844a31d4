"""Dense prediction on any dartok backbone: Segmenter's linear decoder and tokens back to pixels.

The model (Strudel et al. 2021, "Segmenter", its linear baseline): the backbone's output patch
tokens (after its final norm), one linear layer to ``K`` class logits per token, and the
logits painted back onto the image with :func:`dartok.resample.tokens_to_map`: every pixel
takes the area-weighted average of the logits of the tokens whose boxes cover it. DART's
tokens cover adaptive boxes (:class:`dartok.DartOutput`'s ``boxes``); a fixed-grid model's
tokens cover its patch grid (:func:`dartok.resample.grid_boxes`, the same partition code for
a uniform score map), so both rows of a comparison use the same decoder and the grid model's
map is its patch logits upsampled nearest-neighbour, as Segmenter's linear decoder before its
bilinear upsampling.

:func:`dense_tokens` is the one place that knows how a backbone gives its patch tokens and
their boxes: timm's ``forward_intermediates`` (last block, final norm, ``NLC``, prefix tokens
removed), which timm's ViTs, dartok's Vim and their DART versions have; the boxes are caught from the DART
tokenizer's output, or are the patch grid. ``dartok.create_model(name, task="segmentation")``
wraps any such backbone (:func:`segmentation_model`).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..resample import grid_boxes, tokens_to_map
from ..tokenizer import DART
from ..video_tokenizer import VideoDART

__all__ = ["Segmenter", "dense_tokens", "segmentation_model"]


def dense_tokens(backbone: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A backbone's output patch tokens and the boxes they cover.

    Args:
        backbone: a timm model with ``forward_intermediates`` (ViT / DeiT, Vim; plain or DART).
        x: the backbone's input ``B×C×H×W``.

    Returns:
        ``(tokens B×N×D, boxes B×N×4)``: the last block's tokens after the final norm, without
        prefix tokens (class, distillation, registers), and their boxes ``(x0, y0, x1, y1)`` in
        [0, 1]: the DART tokenizer's partition, or the fixed grid's patches (row-major, the
        order timm's ViT keeps them in).

    Raises:
        TypeError: a backbone without ``forward_intermediates``.
        ValueError: as the backbone does (e.g. DART's input checks).
    """
    if not hasattr(backbone, "forward_intermediates"):
        raise TypeError(f"dense prediction needs a backbone with timm's forward_intermediates (a ViT / DeiT, plain "
                        f"or DART); {type(backbone).__name__} has none")
    embed = backbone.patch_embed
    seen: list[torch.Tensor] = []
    hook = embed.register_forward_hook(lambda _m, _a, out: seen.append(out.boxes)) if isinstance(embed, DART) else None
    try:
        tokens = backbone.forward_intermediates(x, indices=1, norm=True, output_fmt="NLC", intermediates_only=True)[-1]
    finally:
        if hook is not None:
            hook.remove()
    if hook is not None:
        return tokens, seen[-1]
    rows, cols = (int(v) for v in (embed.dynamic_feat_size(tuple(x.shape[-2:])) if hasattr(embed, "dynamic_feat_size")
                                   else embed.grid_size))
    if rows * cols != tokens.shape[1]:
        raise ValueError(f"{type(backbone).__name__} gave {tokens.shape[1]} patch tokens for a {rows}×{cols} grid")
    return tokens, grid_boxes(rows, cols, device=tokens.device).expand(tokens.shape[0], -1, -1)  # traceable B


class Segmenter(nn.Module):
    """A backbone with Segmenter's linear decoder, its token logits painted back to pixels.

    ``forward(B×C×H×W) → B×K×h×w`` logits, ``(h, w)`` = ``output_size`` if set, else the input's
    ``(H, W)``: :func:`dense_tokens` → ``decode_head`` (``nn.Linear(D, K)``) → ``B×N×K`` →
    :func:`dartok.resample.tokens_to_map`. Keys: ``backbone.*`` (the classifier-less backbone,
    ``num_classes=0``) and ``decode_head.*`` (mmsegmentation's names).

    Attributes a DART or timm tool looks for are the backbone's: ``patch_embed`` (so
    :func:`dartok.is_dart`, the oracle score source and the localisation metric see the
    tokenizer), ``pretrained_cfg`` (input size, mean, std; ``num_classes`` = K),
    ``no_weight_decay()`` (prefixed ``backbone.``).

    Args:
        backbone: a model :func:`dense_tokens` accepts, with ``num_features`` = D.
        num_classes: K >= 1 (background included).
        output_size: ``(h, w)`` of the logits (e.g. the label masks' size), or ``None``.

    Raises:
        ValueError: ``num_classes`` < 1, a bad ``output_size``, or a video backbone.
        TypeError: a backbone :func:`dense_tokens` cannot read.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, output_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        if output_size is not None:
            ok = (isinstance(output_size, (tuple, list)) and len(output_size) == 2
                  and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in output_size))
            if not ok:
                raise ValueError(f"output_size must be None or (h, w) with two integers >= 1, got {output_size!r}")
            output_size = (int(output_size[0]), int(output_size[1]))
        if not hasattr(backbone, "forward_intermediates"):
            dense_tokens(backbone, torch.empty(0))  # raises the TypeError
        if getattr(backbone, "num_frames", None) or isinstance(getattr(backbone, "patch_embed", None), VideoDART):
            raise ValueError(f"{type(backbone).__name__} takes clips; the segmentation model takes images (for clips, "
                             "tokens_to_map(..., num_frames=T) gives one map per frame)")
        self.backbone = backbone
        self.num_classes = num_classes
        self.output_size = output_size
        self.decode_head = nn.Linear(backbone.num_features, num_classes)
        nn.init.trunc_normal_(self.decode_head.weight, std=0.02)  # Segmenter's init
        nn.init.zeros_(self.decode_head.bias)
        cfg = dict(getattr(backbone, "pretrained_cfg", None) or {})
        cfg.update(num_classes=num_classes, classifier="decode_head")
        self.pretrained_cfg = self.default_cfg = cfg

    @property
    def patch_embed(self) -> nn.Module:
        """The backbone's patch embedding (DART's tokenizer for a DART backbone)."""
        return self.backbone.patch_embed

    @torch.jit.ignore
    def set_num_tokens(self, num_tokens: int, bands: int | None = None) -> None:
        """The backbone's ``set_num_tokens`` (a DART backbone's budget; the decoder takes any N).

        Raises:
            ValueError: a fixed-grid backbone, or a budget its tokenizer refuses.
        """
        if not callable(getattr(self.backbone, "set_num_tokens", None)):
            raise ValueError(f"num_tokens changes the budget of a DART backbone; {type(self.backbone).__name__} "
                             "is a fixed-grid model (its token count follows its input size)")
        self.backbone.set_num_tokens(num_tokens, bands)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """The backbone's no-decay parameter names, prefixed ``backbone.``."""
        inner = getattr(self.backbone, "no_weight_decay", None)
        return {f"backbone.{n}" for n in (inner() if callable(inner) else ())}

    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B×N×K token logits, B×N×4 boxes)`` of images ``B×C×H×W``."""
        tokens, boxes = dense_tokens(self.backbone, x)
        return self.decode_head(tokens), boxes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B×C×H×W`` images → ``B×K×h×w`` logits (``h×w``: ``output_size``, else ``H×W``)."""
        logits, boxes = self.forward_tokens(x)
        return tokens_to_map(logits, boxes, self.output_size or tuple(x.shape[-2:]))


def segmentation_model(backbone_factory, name: str, num_classes: int | None, output_size=None,
                       **kwargs: Any) -> Segmenter:
    """``Segmenter(backbone_factory(name, num_classes=0, **kwargs), K, output_size)``: what
    :func:`dartok.create_model` builds for ``task="segmentation"``.

    ``num_classes`` ``None`` takes the registered model's default class count.

    A DART backbone gets no auxiliary CAM head (``scorer_cam=False``: it learns image labels).

    Raises:
        ValueError: no class count to be had, ``scorer_cam`` on, or as :class:`Segmenter`.
    """
    if num_classes is None:
        import timm.models

        cfg = timm.models.get_pretrained_cfg(name)
        num_classes = getattr(cfg, "num_classes", None) if cfg is not None else None
        if not num_classes:
            raise ValueError(f"a segmentation model needs num_classes (the classes of its masks, background "
                             f"included); {name!r} has no default")
    if name.startswith("dart_"):  # masks are no image labels: no auxiliary CAM head (docs/method.md §10)
        if kwargs.get("scorer_cam") not in (None, False):
            raise ValueError(f"scorer_cam={kwargs['scorer_cam']!r}: the scorer's CAM head learns image labels; a "
                             "segmentation model has masks (leave scorer_cam unset or False)")
        kwargs["scorer_cam"] = False
    backbone = backbone_factory(name, num_classes=0, **kwargs)
    return Segmenter(backbone, num_classes, output_size)

