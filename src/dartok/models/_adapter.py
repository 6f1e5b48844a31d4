"""The one adapter that puts DART in front of a backbone (issue 10; paper §3, §4.2-§4.4).

Every ``patch_*`` call does the same steps, written once here in :func:`patch_backbone`:

1. check the backbone (its family's class, not DART yet, a plain patch projection whose
   kernel equals its stride, a square grid, whatever its family refuses);
2. make the scorer (:func:`make_scorer`) and the tokenizer (:class:`~dartok.DART`, or
   :class:`~dartok.video_tokenizer.VideoDART` for video);
3. adopt the backbone's patch projection (:func:`adopt_projection`) and move its position
   map: the grid part becomes the tokenizer's ``g×g×D`` map, the prefix-token entries stay
   on the model, parameters the family names in ``moved_parameters`` move into the tokenizer;
4. swap the instance's class for its DART class (:func:`dart_subclass`) and record the
   input the model now takes (:func:`set_input_cfg`).

A family says only what is particular to it, as class attributes and hooks of its DART
class (a :class:`DartModelMixin` subclass): which backbone class it takes, where the
prefix tokens' position entries sit in ``pos_embed`` (:meth:`DartModelMixin.split_pos_embed`),
the default budget and input size, and where its prefix tokens go in the token sequence
(its own ``embed`` / ``_pos_embed`` method).
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, ClassVar, Iterator

import torch
import torch.nn as nn

from .. import _compat

_compat.ensure_torchvision_importable()

import timm  # noqa: E402

from ..compat.hcplab import convert_hcplab_state_dict, hcplab_checkpoint, load_hcplab_checkpoint  # noqa: E402
from ..partition import DEFAULT_ALPHA  # noqa: E402
from ..scorer import Scorer  # noqa: E402
from ..tokenizer import DART, DartOutput  # noqa: E402

__all__ = [
    "ClassTokenDartMixin", "DartModelMixin", "insert_token", "adopt_projection", "create_dart", "dart_subclass", "is_dart", "make_scorer", "patch_backbone",
    "reset_scorer_cam", "scorer_and_oracle_grid", "scorer_cam_classes", "scorer_out_of_stem",
    "refuse_feature_cls", "refuse_scriptable", "set_input_cfg", "set_num_tokens", "split_dart_kwargs",
    "tokens_to_feature_map",
]

_DART_KEYS = (
    "num_tokens", "img_size", "scorer", "scorer_head", "scorer_input_size", "scorer_stage",
    "scorer_pretrained", "trainable_scorer_trunk", "alpha", "bands", "antialias", "learn_contrast",
    "score_source", "scorer_cam", "prior", "prior_mode", "compat",
)
"""The kwargs of a registered DART model that go to its ``patch_*`` function (the rest go to
the backbone); a family adds its own (VideoMamba: ``temporal_diff``)."""

_TOKENIZER_NO_DECAY = ("patch_embed.pos_embed", "patch_embed.temporal_pos_embedding")
_logger = logging.getLogger(__name__)

# The tokenizer is an FX leaf (timm's get_notrace_modules(), which timm's FX feature extraction
# passes as leaf_modules): its input checks, dtype promotion and partition branch in Python.
timm.layers.register_notrace_module(DART)


def is_dart(model: nn.Module) -> bool:
    """True if ``model`` tokenizes with :class:`DART` (or a subclass such as ``VideoDART``)."""
    return isinstance(getattr(model, "patch_embed", None), DART)


@contextlib.contextmanager
def _trunk_detached(model: nn.Module) -> Iterator[None]:
    """Take the scorer trunk out of ``model`` for the duration (so an init cannot reach it)."""
    scorer = getattr(getattr(model, "patch_embed", None), "scorer", None)
    trunk = getattr(scorer, "trunk", None)
    if trunk is not None:
        scorer.trunk = None
    try:
        yield
    finally:
        if trunk is not None:
            scorer.trunk = trunk


class DartModelMixin:
    """What every DART model adds to its backbone class, and what a family declares.

    A family's DART class is ``class DartX(DartModelMixin, X)`` (``X`` its plain backbone
    class); :func:`patch_backbone` turns an ``X`` into one in place. The mixin gives:

    - :meth:`tokenize`: the tokenizer alone (:class:`~dartok.DartOutput`);
    - :meth:`no_weight_decay`: the backbone's set plus the tokenizer's position maps,
      restricted to parameters the model has;
    - :meth:`init_weights`: the backbone's init, with the scorer trunk (pretrained or
      frozen) taken out while it runs.

    Class attributes a family sets:
        backbone_cls: the plain class ``patch_backbone`` accepts (``TypeError`` otherwise).
        backbone_desc: how the error names it (``"timm VisionTransformer"``).
        patch_fn: the family's ``patch_*`` name, for error messages.
        tokenizer_cls: :class:`DART` (images) or ``VideoDART`` (clips).
        img_size_factor: default input side as a multiple of the backbone's (2: the paper's
            448 for a 224 model; 1 for video).
        moved_parameters: names of backbone parameters that move into the tokenizer
            unchanged (VideoMamba's ``temporal_pos_embedding``).

    Hooks (class methods on the plain backbone, overridable): :meth:`check_backbone`,
    :meth:`split_pos_embed`, :meth:`default_num_tokens`, :meth:`tokenizer_kwargs`.
    """

    backbone_cls: ClassVar[type] = nn.Module
    backbone_desc: ClassVar[str] = "backbone"
    patch_fn: ClassVar[str] = "patch_backbone"
    tokenizer_cls: ClassVar[type] = DART
    img_size_factor: ClassVar[int] = 2
    moved_parameters: ClassVar[tuple[str, ...]] = ()

    def tokenize(self, x: torch.Tensor, pdf: torch.Tensor | None = None) -> DartOutput:
        """Run only the tokenizer on images ``B×C×H×W`` (clips ``B×C×T×H×W`` for video).

        Returns tokens and position embeddings ``B×N×D``, boxes ``B×N×4`` and the pdf used;
        ``pdf`` (``B×h×w``) replaces the scorer's. Raises ``ValueError`` as the tokenizer does.
        """
        return self.patch_embed(x, pdf=pdf)

    @torch.jit.ignore
    def set_num_tokens(self, num_tokens: int, bands: int | None = None) -> None:
        """Change the token budget N in place, without retraining (README "Elastic token budget").

        :meth:`DART.set_num_tokens <dartok.DART.set_num_tokens>` on the tokenizer: its bands
        follow N, every token's position embedding is the area average of the same ``g×g`` map
        over its box, and the blocks take any token count, so the model then computes exactly
        what the same model built with ``num_tokens`` and these weights computes (a state dict
        loads across budgets: no parameter depends on N). timm's ``_model_args`` (what
        ``save_for_hf`` records) and ``feature_info``'s reductions follow. The timm analogue
        for a fixed-grid ViT is ``set_input_size``, which changes the input size instead.

        Args:
            num_tokens: the new N, an integer ≥ 1 (``partition="grid"``: an even row layout).
            bands: rows R for the new budget (``None``: the rule the model was built with).

        Raises:
            ValueError: a budget the tokenizer refuses (the model is left unchanged).
        """
        self.patch_embed.set_num_tokens(num_tokens, bands)
        record_num_tokens(self, self.patch_embed, bands)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """The backbone's no-decay names plus the tokenizer's position maps, those that are parameters."""
        names = {name for name, _ in self.named_parameters()}
        return {n for n in set(super().no_weight_decay()) | set(_TOKENIZER_NO_DECAY) if n in names}

    def init_weights(self, *args: Any, **kwargs: Any) -> None:
        """The backbone's ``init_weights``, leaving the scorer trunk (pretrained or not) untouched."""
        with _trunk_detached(self):
            super().init_weights(*args, **kwargs)

    def reset_classifier(self, num_classes: int, *args: Any, **kwargs: Any) -> None:
        """The backbone's ``reset_classifier``; the scorer's CAM head follows (:func:`reset_scorer_cam`)."""
        super().reset_classifier(num_classes, *args, **kwargs)
        reset_scorer_cam(self.patch_embed, num_classes)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """The backbone's parameter groups (timm's layer-wise LR decay), the scorer taken out of the
        stem (:func:`scorer_out_of_stem`): it trains at the classifier's LR scale."""
        return scorer_out_of_stem(super().group_matcher(coarse))

    # --------------------------------------------------------------- family hooks

    @classmethod
    def check_backbone(cls, model: nn.Module) -> None:
        """Raise ``ValueError`` for a backbone layout this family cannot adopt (default: none)."""

    @classmethod
    def split_pos_embed(cls, model: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(prefix, grid)`` of ``model.pos_embed``: the prefix tokens' entries ``1×k×D`` that stay
        on the model (``None``: none) and the grid ``1×g²×D`` that moves into the tokenizer
        (``None``: no position embedding). Default: no prefix entries."""
        return None, model.pos_embed

    @classmethod
    def default_num_tokens(cls, model: nn.Module) -> int:
        """The budget N when ``num_tokens`` is not given (default: the backbone's patch count)."""
        return model.patch_embed.num_patches

    @classmethod
    def tokenizer_kwargs(cls, model: nn.Module) -> dict[str, Any]:
        """Extra ``tokenizer_cls`` kwargs read off the backbone (VideoMamba: ``num_frames``)."""
        return {}



def record_num_tokens(model: nn.Module, tokenizer: DART, bands: int | None = None) -> None:
    """After a budget change: ``model._model_args`` (timm's record of the build kwargs) gets the
    tokenizer's ``num_tokens`` (and ``bands`` / ``patch_size`` where they were recorded or given),
    and ``feature_info`` reductions the tokenizer's :meth:`~dartok.DART.feat_ratio`."""
    args = getattr(model, "_model_args", None)
    if isinstance(args, dict):
        args["num_tokens"] = tokenizer.num_tokens
        if bands is not None:
            args["bands"] = bands
        if "patch_size" in args and args["patch_size"] is not None:
            args["patch_size"] = tokenizer.patch_size[0]
    if isinstance(getattr(model, "feature_info", None), list) and "feature_info" in vars(model):
        for info in model.feature_info:
            info["reduction"] = tokenizer.feat_ratio()


def set_num_tokens(model: nn.Module, num_tokens: int) -> nn.Module:
    """Set the token budget N of any DART model in place (its ``set_num_tokens``) and return it.

    What ``--num-tokens`` of ``dartok eval`` / ``predict`` does to a checkpoint's model: the DART
    ViT / DeiT, Vim, VideoMamba, the warp (:meth:`~dartok.models.DartWarp.set_num_tokens`) and a
    Segmenter over any of them.

    Raises:
        ValueError: a model without a DART tokenizer (a fixed-grid model's token count is set by
            its input size), or a budget the tokenizer refuses (the message says what is allowed).
    """
    if not callable(getattr(model, "set_num_tokens", None)) or not is_dart(model):
        raise ValueError(f"num_tokens changes the budget of a DART model; {type(model).__name__} is a fixed-grid "
                         "model (its token count follows its input size)")
    model.set_num_tokens(num_tokens)
    return model


def reset_scorer_cam(tokenizer: nn.Module, num_classes: int) -> None:
    """What a DART model's ``reset_classifier(num_classes)`` does to its scorer's CAM head (docs/method.md §10).

    The CAM head is an auxiliary classifier over the model's classes: with a new classifier
    (``num_classes > 0``) it is replaced by a fresh one of ``num_classes`` classes, as timm
    re-initialises the head. ``num_classes = 0`` (a model without its classifier: features,
    ``prune_intermediate_layers``) keeps it as it is, since the score map, and so every
    token, depends on it. A scorer without a CAM head is left alone.
    """
    scorer = getattr(tokenizer, "scorer", None)
    if isinstance(scorer, Scorer) and scorer.cam is not None and num_classes > 0:
        scorer.reset_cam(num_classes)


_SCORER = "patch_embed.scorer."
"""Where the scorer's parameters live in every DART model."""


def scorer_out_of_stem(groups: dict) -> dict:
    """A timm ``group_matcher`` dict whose ``stem`` no longer takes the scorer (``patch_embed.scorer.*``).

    timm's layer-wise LR decay (``param_groups_layer_decay``) gives the stem the smallest
    scale (``layer_decay ** (depth + 1)``, 0.75¹³ ≈ 0.024 for a 12-block model). The scorer
    sits at the input but is new: its head and contrast are always initialised here, its
    trunk often too (docs/method.md §10), so at the stem's scale it would hardly move.
    Unmatched, it joins the classifier's group (scale 1), as timm treats a new head; a
    pretrained frozen trunk takes no step anyway.
    """
    groups = dict(groups)
    stem = groups.get("stem")
    if isinstance(stem, str):
        groups["stem"] = rf"(?!patch_embed\.scorer\.)(?:{stem})"
    return groups


def tokens_to_feature_map(tokens: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """DART tokens ``B×N×D`` → a feature map ``B×D×h×w`` aligned with the image: each cell of an
    ``h×w`` grid over ``[0, 1]²`` takes the token whose box holds the cell's centre.

    DART's tokens do not lie on a grid; this is the ``NCHW`` form timm's
    ``forward_intermediates`` / ``features_only`` return (``size`` = the tokenizer's
    ``grid_size``, bands × the most tokens in a band). With a uniform pdf and ``N = h·w`` it
    is the token grid itself; with a learned pdf a large box fills several cells and a small
    one may fill none (``NLC`` keeps every token). Boxes tile the square (band-major,
    half-open), so every centre lies in exactly one box. For a clip (``VideoDART``) the
    grid covers the stacked frames: ``h`` spans all T frames.

    Args:
        tokens: ``B×N×D``. boxes: ``B×N×4`` ``(x0, y0, x1, y1)`` in [0, 1]. size: ``(h, w)``.

    Returns:
        ``B×D×h×w`` in the tokens' dtype.
    """
    h, w = size
    dtype = torch.promote_types(boxes.dtype, torch.float32)
    b = boxes.detach().to(dtype)
    ys = (torch.arange(h, device=b.device, dtype=dtype) + 0.5) / h
    xs = (torch.arange(w, device=b.device, dtype=dtype) + 0.5) / w
    in_y = (b[..., 1:2] <= ys) & (ys < b[..., 3:4])  # B×N×h
    in_x = (b[..., 0:1] <= xs) & (xs < b[..., 2:3])  # B×N×w
    cover = (in_y.unsqueeze(-1) & in_x.unsqueeze(-2)).flatten(2)  # B×N×(h·w)
    index = cover.to(torch.uint8).argmax(dim=1)  # B×(h·w): the token holding each centre
    cells = tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
    return cells.reshape(tokens.shape[0], h, w, tokens.shape[-1]).permute(0, 3, 1, 2).contiguous()


def insert_token(tokens: torch.Tensor, token: torch.Tensor, index: int) -> torch.Tensor:
    """Insert ``token`` (``1×1×D`` or ``B×1×D``) into ``tokens`` (``B×N×D``) before position ``index``."""
    token = token.expand(tokens.shape[0], -1, -1)
    return torch.cat([tokens[:, :index], token, tokens[:, index:]], dim=1)


class ClassTokenDartMixin(DartModelMixin):
    """DART for backbones with one class token at ``cls_position(N)`` and an ``embed`` hook (Vim, VideoMamba).

    ``embed`` becomes :meth:`embed_tokens` of the tokenizer's output: the N DART tokens plus
    their area-averaged position embeddings, with the class token (plus its own ``pos_embed``
    entry, ``1×1×D``, if the model has one) inserted at ``cls_position(N)`` (Vim: ``N // 2``,
    VideoMamba: 0), then ``pos_drop``.

    Shapes: ``embed(B×C×H×W | B×C×T×H×W) → B×(N+1)×D`` (``B×N×D`` without a class token).
    """

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Input → tokens with positions and class token. Raises ``ValueError`` as the tokenizer does."""
        return self.embed_tokens(self.patch_embed(x))

    def embed_with_boxes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`embed` and the DART boxes ``B×N×4`` (for :meth:`feature_map`)."""
        out = self.patch_embed(x)
        return self.embed_tokens(out), out.boxes

    def feature_map(self, tokens: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Patch tokens → ``B×D×h×w`` by their boxes (:func:`tokens_to_feature_map`, ``grid_size``)."""
        return tokens_to_feature_map(tokens, boxes, self.patch_embed.grid_size)

    def embed_tokens(self, out: DartOutput) -> torch.Tensor:
        """A :class:`DartOutput` → ``B×(N+1)×D`` tokens as :meth:`embed` makes them."""
        tokens = out.tokens + out.pos_embed
        if self.cls_token is not None:
            cls = self.cls_token if self.pos_embed is None else self.cls_token + self.pos_embed
            tokens = insert_token(tokens, cls, self.cls_position(tokens.shape[1]))
        return self.pos_drop(tokens)


_DART_CLASSES: dict[tuple[type, type], type] = {}


def dart_subclass(cls: type, dart_base: type) -> type:
    """The class a ``patch_*`` call gives a backbone of class ``cls``.

    ``cls`` itself if it already is a ``dart_base``; ``dart_base`` for its own plain parent
    (``VisionTransformer`` → ``DartVisionTransformer``); otherwise a cached
    ``Dart<cls>`` subclass of ``(dart_base, cls)``, so a user's subclass keeps its methods
    (as ToMe patches timm models).
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

    ``proj`` is the replaced ``Conv2d`` (``D×C×P×P``) or a tubelet-1 ``Conv3d``
    (``D×C×1×P×P``, reshaped to ``D×C×P×P``). Moving first keeps float64 weights exact (no
    float32 round trip); copy position embeddings after this call for the same reason.
    """
    dart.to(device=like.device, dtype=like.dtype)
    with torch.no_grad():
        dart.proj.weight.copy_(proj.weight.reshape(dart.proj.weight.shape))
        if proj.bias is not None:
            dart.proj.bias.copy_(proj.bias)


def set_input_cfg(model: nn.Module, in_chans: int, img_size: int, **extra: Any) -> None:
    """Record the input a DART model takes in ``pretrained_cfg`` / ``default_cfg`` (any size works).

    Sets ``input_size = (in_chans, img_size, img_size)``, ``fixed_input_size = False`` and ``extra``.
    """
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    cfg.update(input_size=(in_chans, img_size, img_size), fixed_input_size=False, **extra)
    model.pretrained_cfg = model.default_cfg = cfg


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
    cam_classes: int = 0,
) -> Scorer | dict | None:
    """The scorer of a ``patch_*`` call: a trunk name becomes a :class:`Scorer` with these options.

    A dict of ``Scorer`` kwargs, a ``Scorer`` or ``None`` (uniform pdf) is returned as is
    (:class:`DART` builds a dict itself). Head ``"v1"`` for DeiT, ``"v2"`` for Vim and
    VideoMamba (paper §4.2-§4.4, docs/method.md §3); ``cam_classes`` > 0 adds the auxiliary
    class-activation head (docs/method.md §10).
    """
    if isinstance(scorer, str):
        return Scorer(trunk=scorer, head=head, stage=stage, input_size=input_size, in_chans=in_chans,
                      pretrained=pretrained, trainable_trunk=trainable_trunk, learn_contrast=learn_contrast,
                      cam_classes=cam_classes)
    return scorer


def scorer_cam_classes(model: nn.Module, tokenizer_cls: type, scorer: Any, scorer_cam: bool | int | None,
                       scorer_pretrained: bool, trainable_scorer_trunk: bool | None, score_source: str) -> int:
    """How many classes the scorer's auxiliary CAM head gets (0: none; docs/method.md §10).

    ``scorer_cam=None`` (the default) turns it on exactly where a trunk learns from scratch:
    a scorer named by its trunk, not pretrained, trained (``trainable_scorer_trunk`` not
    False), from the learned score source, on a tokenizer that supports it
    (``tokenizer_cls.supports_cam``: images, not video) and a model with a classifier
    (``model.num_classes > 0``). The pretrained, frozen trunk of the paper keeps the paper's
    scorer. ``True`` / ``False`` force it on / off; an int ``K >= 1`` is ``True`` (what a
    registered model records: the class count its CAM head had, which
    :func:`create_dart` gives a model built with ``num_classes=0``). The head has
    ``model.num_classes`` classes.

    Raises:
        ValueError: ``scorer_cam=True`` where it cannot apply (no classifier, a video
            tokenizer, the oracle, or a scorer given as a dict / module: set ``cam_classes``
            there instead).
    """
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    possible = (isinstance(scorer, str) and score_source == "scorer" and num_classes > 0
                and getattr(tokenizer_cls, "supports_cam", False))
    if scorer_cam is None:
        on = possible and not scorer_pretrained and trainable_scorer_trunk is not False
    elif (scorer_cam is True or _is_count(scorer_cam)) and not possible:
        raise ValueError("scorer_cam=True needs a scorer named by its trunk, the learned score source, an image "
                         "tokenizer and a model with a classifier (num_classes > 0); for a scorer given as a "
                         "dict or module set its cam_classes")
    elif scorer_cam is False:
        on = False
    elif scorer_cam is True or _is_count(scorer_cam):
        on = True
    else:
        raise ValueError(f"scorer_cam must be None, True, False or a class count >= 1, got {scorer_cam!r}")
    return num_classes if on else 0


def _is_count(value: Any) -> bool:
    """An int >= 1 that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def scorer_and_oracle_grid(model: nn.Module, tokenizer_cls: type, scorer: str | dict | Scorer | None, *,
                           in_chans: int, scorer_head: str, scorer_input_size: int, scorer_stage: int | None,
                           scorer_pretrained: bool, trainable_scorer_trunk: bool | None, learn_contrast: bool,
                           score_source: str, scorer_cam: bool | None) -> tuple[Scorer | dict | None, tuple | None]:
    """The tokenizer's ``(scorer, oracle_grid)`` for a ``patch_*`` call (step 2 of the module docstring).

    The scorer is :func:`make_scorer`'s, with the CAM head :func:`scorer_cam_classes` decides on
    ``model`` and ``tokenizer_cls``. ``score_source="oracle"`` (or ``"motion"``) builds no
    scorer: it returns ``(None, the grid the scorer would have made)`` (``None`` without one),
    so the oracle (the motion map) cuts the learned scorer's grid (docs/method.md §9, §6).

    Raises:
        ValueError: as :func:`scorer_cam_classes`.
    """
    cam_classes = scorer_cam_classes(model, tokenizer_cls, scorer, scorer_cam, scorer_pretrained,
                                     trainable_scorer_trunk, score_source)
    scorer = make_scorer(scorer, in_chans=in_chans, head=scorer_head, input_size=scorer_input_size,
                         stage=scorer_stage, pretrained=scorer_pretrained, trainable_trunk=trainable_scorer_trunk,
                         learn_contrast=learn_contrast, cam_classes=cam_classes)
    if score_source not in ("oracle", "motion"):
        return scorer, None
    if isinstance(scorer, dict):
        scorer = Scorer(in_chans=in_chans, **scorer)
    return None, (tuple(scorer.grid_size) if scorer is not None else None)


def _check_patch_embed(old: nn.Module, patch_fn: str) -> None:
    """The backbone's patch embedding must be a plain projection: kernel = stride = patch, square grid.

    Raises:
        ValueError: anything else (e.g. timm's hybrid ``HybridEmbed``, whose CNN stem DART
            would silently drop).
    """
    proj = getattr(old, "proj", None)
    if not isinstance(proj, (nn.Conv2d, nn.Conv3d)):
        raise ValueError(f"{patch_fn} needs a patch embedding with a Conv2d/Conv3d 'proj', got {type(old).__name__}")
    extra = [name for name, m in old.named_children() if name not in ("proj", "norm") and any(True for _ in m.parameters())]
    patch = tuple(old.patch_size)
    if extra or tuple(proj.kernel_size[-2:]) != patch or tuple(proj.stride[-2:]) != patch:
        raise ValueError(f"{patch_fn} can only adopt a plain patch projection (kernel = stride = patch size); "
                         f"{type(old).__name__} has kernel {tuple(proj.kernel_size)}, stride {tuple(proj.stride)}"
                         + (f" and more layers {extra}" if extra else ""))
    grid = tuple(old.grid_size)
    if grid[0] != grid[1]:
        raise ValueError(f"{patch_fn} needs a square patch grid, got {grid}")


def patch_backbone(
    model: nn.Module,
    dart_cls: type[DartModelMixin],
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
    **tokenizer_kwargs: Any,
) -> nn.Module:
    """Turn ``model`` into a ``dart_cls`` model in place, keeping its weights (the steps in the module docstring).

    With a uniform pdf the result computes what ``model`` computed on a ``g·P`` input (the
    grid boxes resample the pixels exactly, the area average over a grid cell is its entry).

    Args:
        model: an instance of ``dart_cls.backbone_cls`` with a ``patch_embed`` whose ``proj``
            is a ``Conv2d`` (or tubelet-1 ``Conv3d``) with kernel = stride = P.
        dart_cls: the family's DART class (a :class:`DartModelMixin` subclass).
        num_tokens: budget N (default :meth:`DartModelMixin.default_num_tokens`).
        scorer: trunk name, dict of :class:`Scorer` kwargs, a ``Scorer``, or ``None`` (uniform).
        img_size: input side the data pipeline should produce (default
            ``dart_cls.img_size_factor`` × the backbone's); recorded in ``pretrained_cfg``.
        alpha, bands, antialias: tokenizer options (:class:`DART`).
        scorer_head, scorer_input_size, scorer_stage, scorer_pretrained,
        trainable_scorer_trunk, learn_contrast: :func:`make_scorer` options (used when
            ``scorer`` is a name).
        score_source: ``"scorer"``, ``"oracle"`` or (video) ``"motion"`` (:class:`DART`): the
            oracle builds no scorer but keeps the grid the scorer would have made
            (``oracle_grid``), so it is the best score map at the learned scorer's resolution
            (docs/method.md §9); ``"motion"`` likewise cuts the frame-difference map alone.
        scorer_cam: the scorer's auxiliary class-activation head (docs/method.md §10):
            ``None`` (default) on for a trunk trained from scratch, off for a pretrained one
            (:func:`scorer_cam_classes`); ``True`` / ``False`` force it.
        **tokenizer_kwargs: further ``dart_cls.tokenizer_cls`` options (``temporal_diff``).

    Returns:
        The same object, now an instance of ``dart_cls`` (or a cached subclass of it and the
        model's own class, :func:`dart_subclass`).

    Raises:
        TypeError: not a ``dart_cls.backbone_cls``.
        ValueError: already DART, a patch embedding that is not a plain projection, a
            non-square grid, or a layout the family refuses (:meth:`DartModelMixin.check_backbone`).
    """
    if not isinstance(model, dart_cls.backbone_cls):
        raise TypeError(f"{dart_cls.patch_fn} expects a {dart_cls.backbone_desc}, got {type(model).__name__}")
    if is_dart(model):
        raise ValueError("model already has a DART tokenizer")
    dart_cls.check_backbone(model)
    old = model.patch_embed
    _check_patch_embed(old, dart_cls.patch_fn)
    in_chans = old.proj.in_channels
    prefix_pos, grid_pos = dart_cls.split_pos_embed(model)
    img_size = dart_cls.img_size_factor * old.img_size[0] if img_size is None else img_size
    scorer, oracle_grid = scorer_and_oracle_grid(
        model, dart_cls.tokenizer_cls, scorer, in_chans=in_chans, scorer_head=scorer_head,
        scorer_input_size=scorer_input_size, scorer_stage=scorer_stage, scorer_pretrained=scorer_pretrained,
        trainable_scorer_trunk=trainable_scorer_trunk, learn_contrast=learn_contrast, score_source=score_source,
        scorer_cam=scorer_cam)
    dart = dart_cls.tokenizer_cls(
        num_tokens=dart_cls.default_num_tokens(model) if num_tokens is None else num_tokens,
        patch_size=old.patch_size[0], in_chans=in_chans, embed_dim=model.embed_dim,
        pos_grid=old.grid_size[0] if grid_pos is not None else 0, bands=bands, alpha=alpha, scorer=scorer,
        img_size=img_size, bias=old.proj.bias is not None, antialias=antialias, score_source=score_source,
        oracle_grid=oracle_grid,
        **dart_cls.tokenizer_kwargs(model), **tokenizer_kwargs,
    )
    adopt_projection(dart, old.proj, old.proj.weight)
    with torch.no_grad():
        if grid_pos is not None:
            dart.pos_embed.copy_(grid_pos)
        for name in dart_cls.moved_parameters:
            getattr(dart, name).copy_(getattr(model, name))
    for name in dart_cls.moved_parameters:
        delattr(model, name)  # now the tokenizer's; a stale copy would be an unused parameter (DDP)
        setattr(model, name, None)
    if isinstance(getattr(old, "norm", None), nn.Module):
        dart.norm = old.norm
    model.patch_embed = dart
    if isinstance(getattr(model, "feature_info", None), list) and "feature_info" in vars(model):
        for info in model.feature_info:  # timm ViT: the patch size; DART's tokens cover more pixels each
            info["reduction"] = dart.feat_ratio()
    model.pos_embed = nn.Parameter(prefix_pos.detach().clone()) if prefix_pos is not None else None
    model.__class__ = dart_subclass(type(model), dart_cls)
    set_input_cfg(model, in_chans, img_size)
    return model


def patch_options(local_vars: dict[str, Any]) -> dict[str, Any]:
    """A ``patch_*`` function's own arguments (its ``locals()``) less ``model``, for :func:`patch_backbone`."""
    return {k: v for k, v in local_vars.items() if k != "model"}


# --------------------------------------------------------------------------- registered models


def refuse_feature_cls(variant: str, kwargs: dict) -> None:
    """Raise for ``features_only=True`` with a feature class other than timm's getter (Vim, VideoMamba).

    Their blocks return hustvl's ``(hidden, residual)`` pair and a block's tokens are the sum,
    so timm's FX (``feature_cls="fx"``) and hook (``"hook"``) feature nets over
    ``feature_info``'s ``layers.{i}`` would return the pair or, silently, the mixer output.
    The getter (the default) calls ``forward_intermediates``, which returns the tokens.

    Raises:
        ValueError: ``features_only`` with another ``feature_cls``.
    """
    from timm.models._features import FeatureGetterNet  # where timm's builder imports it from

    cls = kwargs.get("feature_cls")
    getter = cls is None or (isinstance(cls, str) and cls.lower() == "getter") or (
        isinstance(cls, type) and issubclass(cls, FeatureGetterNet))
    if kwargs.get("features_only") and not getter:
        raise ValueError(f"{variant}: features_only takes feature_cls='getter' (the default: forward_intermediates), "
                         f"got {cls!r}; a Mamba block returns a (hidden, residual) pair, not its tokens, so timm's "
                         "FX / hook feature nets cannot read them")


def refuse_scriptable(variant: str, why: str) -> None:
    """Raise if the model is being built for TorchScript (``create_model(..., scriptable=True)``).

    dartok's DART and Mamba models do not script (``why`` says what stops them); they trace:
    ``torch.export``, ``torch.compile(fullgraph=True)``, FX (README "timm conventions"). An
    error here beats one from deep inside ``torch.jit.script``.

    Raises:
        RuntimeError: timm's ``scriptable`` layer config is on.
    """
    if timm.layers.is_scriptable():
        raise RuntimeError(f"{variant} is not TorchScript-scriptable ({why}); capture it with torch.export.export, "
                           "torch.compile or torch.fx instead, or create it without scriptable=True")


def split_dart_kwargs(kwargs: dict, defaults: dict, pretrained: bool, keys: tuple[str, ...] | None = None) -> dict:
    """Pop the DART options (``keys``, default :data:`_DART_KEYS`) out of a registered DART
    model's ``kwargs`` (the rest go to the backbone), over ``defaults``.

    ``scorer_pretrained`` left at ``None`` follows ``pretrained``.
    """
    keys = _DART_KEYS if keys is None else keys
    dart_kwargs = {**defaults, **{k: kwargs.pop(k) for k in list(kwargs) if k in keys}}
    if dart_kwargs.get("scorer_pretrained") is None:
        dart_kwargs["scorer_pretrained"] = pretrained
    return dart_kwargs


_CAM = _SCORER + "cam."
"""The prefix of the scorer's auxiliary CAM head in a DART model's state dict."""


def _checkpoint_cam_classes(cfg) -> int | None:
    """The CAM head's class count in a checkpoint given as ``state_dict`` or a ``file``: K, 0
    (the checkpoint has none), ``None`` (another source: not read here)."""
    if cfg.state_dict:
        sd = cfg.state_dict
    elif cfg.file and cfg.source != "local-dir" and os.path.isfile(cfg.file):
        sd = timm.models.load_state_dict(cfg.file)
    else:
        return None
    weight = sd.get(_CAM + "weight")
    return int(weight.shape[0]) if weight is not None else 0


def _scorer_from_checkpoint(dart_kwargs: dict, cam_classes: int | None) -> dict:
    """The scorer a DART checkpoint holds: shaped like it, not downloaded.

    ``scorer_cam`` not given: the auxiliary CAM head exists iff the checkpoint has one
    (``cam_classes``: its class count, 0 for none; ``None``: unknown, the defaults decide).
    A pretrained trunk means a frozen trunk and no CAM head otherwise (the defaults of
    :class:`~dartok.scorer.Scorer` and :func:`scorer_cam_classes`); those are fixed here,
    then the trunk is built without its ImageNet weights, which the checkpoint replaces.
    """
    out = dict(dart_kwargs)
    if out.get("scorer_cam") is None and cam_classes is not None:
        out["scorer_cam"] = cam_classes if cam_classes else False
    if out.get("scorer_pretrained"):
        for key in ("trainable_scorer_trunk", "scorer_cam"):
            if out.get(key) is None:
                out[key] = False
        out["scorer_pretrained"] = False
    return out


def _recorded_dart_kwargs(model: nn.Module, dart_kwargs: dict) -> dict:
    """The DART options that rebuild ``model`` (timm's ``_model_args``, which ``save_for_hf`` writes to
    config.json): the given ones, with the scorer's resolved trunk / CAM flags and no download."""
    record = dict(dart_kwargs)
    scorer = getattr(model.patch_embed, "scorer", None)
    if isinstance(scorer, Scorer) and isinstance(record.get("scorer"), str):  # the CAM head's K: num_classes=0 keeps it
        record.update(trainable_scorer_trunk=scorer.trainable_trunk, scorer_cam=scorer.cam_classes or False,
                      scorer_pretrained=False)
    return record


def _fit_cam(state_dict: dict, model: nn.Module) -> dict:
    """The checkpoint's CAM head as timm treats a classifier: dropped when its class count is not the
    model's (another ``num_classes``: the model's freshly initialised head is kept) or the model has
    none (``scorer_cam=False``), with a note."""
    own = model.state_dict()
    cam = [k for k in state_dict if k.startswith(_CAM)]
    unused = [k for k in cam if k not in own]
    other = [k for k in cam if k in own and state_dict[k].shape != own[k].shape]
    if unused:
        _logger.warning("the checkpoint's scorer CAM head is not used: the model has none (scorer_cam=False), so "
                        "its score map lacks the CAM term the checkpoint was trained with")
    if other:
        _logger.info(f"the checkpoint's scorer CAM head has {state_dict[other[0]].shape[0]} classes, the model "
                     f"{own[other[0]].shape[0]}: it starts from its initialisation (as timm's classifier)")
    if not unused and not other:
        return state_dict
    return {**{k: v for k, v in state_dict.items() if k not in unused}, **{k: own[k] for k in other}}


def _fill_from_model(state_dict: dict, model: nn.Module, prefix: str = "patch_embed.scorer.") -> dict:
    """Keys under ``prefix`` the checkpoint lacks keep the model's values (a plain DeiT / Vim
    checkpoint has no scorer), with a warning that says so."""
    own = model.state_dict()
    missing = [k for k in own if k.startswith(prefix) and k not in state_dict]
    if missing:
        _logger.warning(f"the checkpoint has no {prefix.rstrip('.')} ({len(missing)} tensors): they keep their "
                        "initialisation (a plain backbone checkpoint? dartok.load_vit_weights / load_vim_weights "
                        "load one into a model whose scorer is pretrained)")
        state_dict = {**state_dict, **{k: own[k] for k in missing}}
    return state_dict


def create_dart(variant: str, backbone: str, patch_fn, pretrained: bool, defaults: dict, kwargs: dict,
                keys: tuple[str, ...] | None = None, filter_fn=None, feature_cfg: dict | None = None) -> nn.Module:
    """A registered DART model ``variant``: its backbone, patched, built as timm builds its models.

    ``kwargs`` are split (:func:`split_dart_kwargs`): the DART options over ``defaults`` go to
    ``patch_fn``, the rest to ``timm.create_model(backbone)``. timm's ``build_model_with_cfg``
    does the rest under the DART model's own name, so the model gets

    - ``variant``'s own ``pretrained_cfg`` (``architecture=variant``; ``pretrained_cfg`` /
      ``pretrained_cfg_overlay`` apply to it), with ``input_size`` = the DART input side;
    - timm's ``_model_args`` holding the DART options, so ``save_for_hf`` writes a
      config.json that ``create_model("local-dir:...")`` / ``"hf-hub:..."`` rebuilds the same
      model from;
    - ``features_only=True`` (``out_indices``, ``feature_cls``): timm's ``FeatureGetterNet``
      over ``forward_intermediates`` (``feature_cfg``: its defaults, ``out_indices=3`` unless given);
    - ``num_classes=0`` / ``features_only``: the model without its classifier, the same
      scorer included. Its auxiliary CAM head (docs/method.md §10) stays, with the classes it
      had: the checkpoint's, else the cfg's ``num_classes`` (a recorded ``scorer_cam=K``
      first), so the score map and every token are the full model's.

    Weights with ``pretrained=True``: the DART model's own when its cfg names a source
    (``pretrained_cfg_overlay=dict(file=...)``, a ``local-dir:`` / ``hf-hub:`` checkpoint),
    through ``filter_fn`` (a plain backbone checkpoint is mapped; scorer keys it lacks keep
    their initialisation; the scorer's CAM head is built iff the file has one, and one of
    another class count than the model's is dropped as timm drops a classifier) and nothing
    is downloaded; otherwise the backbone's and the
    scorer trunk's pretrained tags, after :func:`~dartok.models._pretrained.check_pretrained_available`
    (no network: one immediate error naming ``variant``).

    A tag of :data:`~dartok.compat.hcplab.HCPLAB_CHECKPOINTS` (``dart_deit_tiny_patch16_224.hcplab_in1k``)
    builds the authors' tokenizer (``compat="hcplab"``, their scorer, their budget) and loads
    their checkpoint (their container, read by :func:`~dartok.compat.hcplab.load_hcplab_checkpoint`,
    keys mapped by :func:`~dartok.compat.hcplab.convert_hcplab_state_dict`), from the hub or
    from ``pretrained_cfg_overlay=dict(file=...)``.

    Requires ``defaults["img_size"]``.

    Raises:
        RuntimeError: pretrained weights that cannot be had (no weights, offline), or
            ``scriptable=True`` (:func:`refuse_scriptable`).
        TypeError / ValueError: as ``patch_fn`` does.
    """
    from timm.models import build_model_with_cfg, get_pretrained_cfg, resolve_pretrained_cfg

    from ..scorer import SCORER_TRUNKS

    refuse_scriptable(variant, "the DART tokenizer returns a NamedTuple and branches on its inputs in Python")
    pretrained_cfg = kwargs.pop("pretrained_cfg", None)
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    cache_dir = kwargs.pop("cache_dir", None)
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg, overlay)
    hcplab = hcplab_checkpoint(variant, cfg.tag)
    if hcplab is not None:  # the authors' checkpoint: their tokenizer and scorer (docs/method.md §4a)
        defaults = {**defaults, "compat": "hcplab", "num_tokens": hcplab.num_tokens, "scorer_pretrained": False,
                    "scorer": {"trunk": hcplab.trunk, "version": hcplab.version}}
        filter_fn = _after_hcplab(filter_fn)
    dart_kwargs = split_dart_kwargs(kwargs, defaults, pretrained, keys)
    own_weights = pretrained and bool(cfg.has_weights or cfg.state_dict)
    if pretrained:
        parts = {f"{variant} checkpoint": cfg} if own_weights else {
            f"backbone {backbone}": get_pretrained_cfg(backbone) or {}}
        scorer = dart_kwargs.get("scorer")
        if not own_weights and dart_kwargs.get("scorer_pretrained") and isinstance(scorer, str):
            spec = SCORER_TRUNKS.get(scorer)
            trunk = f"{spec.model_name}.{spec.pretrained_tag}" if spec else scorer
            parts[f"scorer trunk {trunk}"] = get_pretrained_cfg(trunk) or {}
        from ._pretrained import check_pretrained_available
        check_pretrained_available(variant, parts, cache_dir=cache_dir)
    if own_weights and hcplab is not None and not cfg.state_dict and cfg.source not in ("local-dir", "hf-hub"):
        # their container holds argparse args that timm's weights_only load refuses: read it here
        overlay["state_dict"] = load_hcplab_checkpoint(_hcplab_file(cfg, cache_dir))
        cfg = resolve_pretrained_cfg(variant, pretrained_cfg, overlay)
    ckpt_cam = _checkpoint_cam_classes(cfg) if own_weights else None
    if own_weights:
        dart_kwargs = _scorer_from_checkpoint(dart_kwargs, ckpt_cam)
    overlay["input_size"] = (cfg.input_size[0], dart_kwargs["img_size"], dart_kwargs["img_size"])
    overlay["fixed_input_size"] = False
    headless_classes = _headless_cam_classes(dart_kwargs.get("scorer_cam"), ckpt_cam, cfg.num_classes)
    features_only = bool(kwargs.get("features_only"))

    def build(**backbone_kwargs) -> nn.Module:
        # num_classes=0 / features_only: the model without its classifier, not another model: built with
        # the classes its CAM head had, then without the head (the CAM head, and so the tokens, stay)
        headless = headless_classes and (features_only or backbone_kwargs.get("num_classes") == 0)
        if headless:
            backbone_kwargs = {**backbone_kwargs, "num_classes": headless_classes}
        model = patch_fn(timm.create_model(backbone, pretrained=pretrained and not own_weights, cache_dir=cache_dir,
                                           **backbone_kwargs), **dart_kwargs)
        if headless and not features_only:  # features_only: timm's feature wrapper prunes the head
            model.reset_classifier(0)
        model._traits = {}  # the backbone's (fixed size); timm's builder sets the DART model's
        model._model_args = {**getattr(model, "_model_args", {}), **_recorded_dart_kwargs(model, dart_kwargs)}
        return model

    def load_filter(state_dict: dict, model: nn.Module) -> dict:
        state_dict = filter_fn(state_dict, model) if filter_fn else dict(state_dict)
        return _fill_from_model(_fit_cam(state_dict, model), model)

    model = build_model_with_cfg(build, variant, own_weights, pretrained_cfg=pretrained_cfg,
                                 pretrained_cfg_overlay=overlay, pretrained_filter_fn=load_filter, cache_dir=cache_dir,
                                 feature_cfg=dict(feature_cfg or dict(out_indices=3), feature_cls="getter"), **kwargs)
    if hcplab is not None and isinstance(getattr(model, "pretrained_cfg", None), dict):
        model.pretrained_cfg.pop("state_dict", None)  # loaded; not kept (nor written by save_for_hf)
    return model


def _after_hcplab(filter_fn):
    """``filter_fn`` after :func:`~dartok.compat.hcplab.convert_hcplab_state_dict` (the authors' keys first)."""
    def convert(state_dict: dict, model: nn.Module) -> dict:
        sd = convert_hcplab_state_dict(state_dict, model)
        return filter_fn(sd, model) if filter_fn else sd
    return convert


def _hcplab_file(cfg, cache_dir) -> str:
    """The local path of an authors' checkpoint: the cfg's ``file``, else downloaded from the hub."""
    if cfg.file:
        return str(cfg.file)
    from huggingface_hub import hf_hub_download
    return hf_hub_download(cfg.hf_hub_id, cfg.hf_hub_filename, cache_dir=cache_dir)


def _headless_cam_classes(scorer_cam: bool | int | None, checkpoint: int | None, cfg_classes: int | None) -> int:
    """The class count a registered DART model built without its classifier gives its CAM head
    (0: build it as asked): ``scorer_cam``'s if a count, else the checkpoint's (0: it has none),
    else the cfg's ``num_classes``; 0 with ``scorer_cam=False``."""
    if scorer_cam is False:
        return 0
    if _is_count(scorer_cam):
        return scorer_cam
    if checkpoint is not None:
        return checkpoint
    return cfg_classes if _is_count(cfg_classes) else 0


def _cfg(input_size=(3, 224, 224), **kwargs) -> dict[str, Any]:
    """A timm default cfg for a dartok model (ImageNet normalisation unless overridden)."""
    return {
        "url": "", "num_classes": 1000, "input_size": input_size, "pool_size": None,
        "crop_pct": 0.875, "interpolation": "bicubic", "fixed_input_size": False,
        "mean": timm.data.IMAGENET_DEFAULT_MEAN, "std": timm.data.IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj", "classifier": "head", **kwargs,
    }
