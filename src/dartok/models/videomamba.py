"""VideoMamba (Li et al. 2024, OpenGVLab/VideoMamba ``video_sm/models/videomamba.py``) on timm, and its DART version.

After ``import dartok`` these names work with ``timm.create_model``:

- ``videomamba_tiny_patch16_224``: VideoMamba-Ti (embed 192, depth 24, 8 frames by default,
  tubelet size 1).
- ``videomamba_micro_patch8``: a CPU-sized VideoMamba (patch 8, embed 96, depth 6, one
  channel, 48×48 frames, 4 frames, 10 classes).
- ``dart_videomamba_tiny_patch16_224`` (8×224² frames, 196×4 tokens, paper Table 3) and
  ``dart_videomamba_micro_patch8`` (CPU-sized: one channel, 128² frames, ``T/2`` frames'
  worth of tokens): :class:`DartVideoMamba`, built by :func:`patch_videomamba` with the
  video tokenizer :class:`dartok.video_tokenizer.VideoDART` (paper §3.3, §4.4). Their DART
  kwargs: ``num_tokens``, ``img_size`` (frame side the data pipeline should produce),
  ``scorer``, ``scorer_head``, ``scorer_input_size``, ``scorer_stage``,
  ``scorer_pretrained``, ``trainable_scorer_trunk``, ``learn_contrast``, ``alpha``,
  ``bands``, ``antialias``, ``temporal_diff``, ``motion_prior``; everything else (``num_frames``,
  ``num_classes``, ``depth``, ...) goes to :class:`VideoMamba`.

Input ``B×C×T×H×W``. Tokens are frame-major (all patches of frame 0 row by row, then frame
1, ...) after one class token at the head; each patch token gets the spatial ``pos_embed``
entry of its grid cell plus the ``temporal_pos_embedding`` entry of its frame. The
tokenization is the single method :meth:`VideoMamba.embed`, so a video tokenizer (DART on
stacked frames, say) can replace it in a subclass without touching the rest.
"""
from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn as nn

from .. import _compat

_compat.ensure_torchvision_importable()

from timm.layers import (register_notrace_module, resample_abs_pos_embed, resample_patch_embed, to_2tuple,  # noqa: E402
                         trunc_normal_)
from timm.models import build_model_with_cfg, register_model  # noqa: E402
from timm.models._registry import generate_default_cfgs  # noqa: E402

from ..layers.mamba import MambaClassifier, init_mamba_weights, segm_init_weights  # noqa: E402
from .._compat import is_tracing  # noqa: E402
from ..partition import DEFAULT_ALPHA  # noqa: E402
from ..scorer import Scorer  # noqa: E402
from ..video_tokenizer import VideoDART  # noqa: E402
from ._adapter import (_DART_KEYS, ClassTokenDartMixin, _cfg, create_dart, is_dart, patch_backbone,  # noqa: E402
                       patch_options, refuse_feature_cls, refuse_scriptable)
from .vim import VisionMamba, split_cls_pos  # noqa: E402
from .weights import WeightReport, load_fitting  # noqa: E402

register_notrace_module(VideoDART)  # an FX leaf, as DART (dartok.models._adapter)

__all__ = ["VIDEO_INIT_KEYS", "DartVideoMamba", "PatchEmbed3d", "VideoMamba", "inflate_image_state_dict",
           "load_image_weights", "patch_videomamba"]


class PatchEmbed3d(nn.Module):
    """OpenGVLab's video ``PatchEmbed``: ``Conv3d`` with kernel = stride = ``(kernel_size, P, P)``.

    Shapes: ``forward(B×C×T×H×W) → B×D×(T/k)×(H/P)×(W/P)``.
    """

    def __init__(self, img_size=224, patch_size=16, kernel_size: int = 1, in_chans: int = 3, embed_dim: int = 768,
                 device=None, dtype=None):
        super().__init__()
        self.img_size = to_2tuple(img_size)
        self.patch_size = to_2tuple(patch_size)
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.tubelet_size = kernel_size
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=(kernel_size, *self.patch_size),
                              stride=(kernel_size, *self.patch_size), device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class VideoMamba(MambaClassifier):
    """VideoMamba for classification (OpenGVLab ``VisionMamba`` in ``video_sm``), same key names.

    Bidirectional Mamba blocks (:class:`dartok.mamba.Mamba` ``bimamba_type="v2"``, the two
    directions added, not averaged), RMSNorm, float32 residual; class token at index 0.

    Args:
        img_size: frame side (int or ``(H, W)``). patch_size: P. depth, embed_dim, d_state:
            as for Vim. in_chans: channels. num_classes: head outputs (0: no head).
        num_frames: T, the frame count the model takes. kernel_size: tubelet size k
            (T must be a multiple of it); ``temporal_pos_embedding`` has ``T/k`` entries.
        drop_rate: dropout after the position embeddings. drop_path_rate: stochastic depth.
        fc_drop_rate: dropout before the head. global_pool: ``"token"`` (the class token,
            default), ``"avg"`` (mean of the other tokens) or ``""`` (none).
        ssm_cfg, norm_epsilon, rms_norm,
        residual_in_fp32, fused_add_norm, initializer_cfg: as for
            :class:`dartok.vim.VisionMamba`. bimamba: bidirectional mixer (True) or not.

    Initialisation follows OpenGVLab: ``segm_init_weights`` on every module (which also
    sets the mixers' Δ bias to 0, i.e. Δ = softplus(0) ≈ 0.69 at the start, unlike plain
    Mamba's log-uniform [0.001, 0.1]), ``pos_embed`` trunc-normal(0.02), ``cls_token`` and
    ``temporal_pos_embedding`` zero, then mamba's ``_init_weights``.

    Shapes:
        ``forward(B×C×T×H×W) → B×num_classes``; ``embed → B×(1+T/k·g²)×D``.

    Raises:
        ValueError: bad sizes at construction; in forward a video that is not
            ``B×C×T×H×W`` with the model's C, T, H, W.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        depth: int = 24,
        embed_dim: int = 192,
        d_state: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        num_frames: int = 8,
        kernel_size: int = 1,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        fc_drop_rate: float = 0.0,
        ssm_cfg: dict | None = None,
        norm_epsilon: float = 1e-5,
        rms_norm: bool = True,
        residual_in_fp32: bool = True,
        fused_add_norm: bool = True,
        bimamba: bool = True,
        initializer_cfg: dict | None = None,
        global_pool: str = "token",
        device=None,
        dtype=None,
    ):
        super().__init__()
        if num_frames < 1 or kernel_size < 1 or num_frames % kernel_size:
            raise ValueError(f"num_frames must be a positive multiple of kernel_size, got {num_frames}, {kernel_size}")
        if depth < 1 or embed_dim < 1:
            raise ValueError(f"depth and embed_dim must be ≥ 1, got depth={depth}, embed_dim={embed_dim}")
        factory = {"device": device, "dtype": dtype}
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_frames = num_frames
        self.kernel_size = kernel_size
        self.patch_size = patch_size
        self.depth = depth
        self.d_model = self.num_features = self.embed_dim = embed_dim
        self.residual_in_fp32 = residual_in_fp32
        self.fused_add_norm = fused_add_norm
        self.num_prefix_tokens = 1

        self.patch_embed = PatchEmbed3d(img_size, patch_size, kernel_size, in_chans, embed_dim, **factory)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim, **factory))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim, **factory))
        self.temporal_pos_embedding = nn.Parameter(torch.zeros(1, num_frames // kernel_size, embed_dim, **factory))
        self.pos_drop = nn.Dropout(p=drop_rate)
        self.head_drop = nn.Dropout(fc_drop_rate) if fc_drop_rate > 0 else nn.Identity()
        self.head = nn.Linear(embed_dim, num_classes, **factory) if num_classes > 0 else nn.Identity()
        self._init_stack(depth, embed_dim, drop_path_rate, d_state=d_state, ssm_cfg=ssm_cfg, norm_epsilon=norm_epsilon,
                         rms_norm=rms_norm, residual_in_fp32=residual_in_fp32, fused_add_norm=fused_add_norm,
                         bimamba_type="v2" if bimamba else "none", if_devide_out=False, **factory)
        self.global_pool = self._check_global_pool(global_pool)
        self.apply(segm_init_weights)
        trunc_normal_(self.pos_embed, std=0.02)
        self.apply(partial(init_mamba_weights, n_layer=depth, **(initializer_cfg or {})))

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token", "temporal_pos_embedding"}

    def check_video(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``B×C×T×H×W`` with the model's C, T (num_frames), H, W."""
        if not isinstance(x, torch.Tensor) or x.dim() != 5:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"video must be B×C×T×H×W (rank 5), got {shape}")
        _, c, t, h, w = x.shape
        if c != self.in_chans:
            raise ValueError(f"video has {c} channels, the model expects in_chans={self.in_chans}")
        if t != self.num_frames:
            raise ValueError(f"video has {t} frames, the model takes num_frames={self.num_frames}")
        if (h, w) != tuple(self.patch_embed.img_size):
            raise ValueError(f"frames are {(h, w)}, the model takes {tuple(self.patch_embed.img_size)}")

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Video ``B×C×T×H×W`` → tokens ``B×(1+T'·g²)×D``, class token first, position added.

        Frame-major: token ``1 + t·g² + i·g + j`` is patch ``(i, j)`` of (tubelet) frame t,
        with ``pos_embed[1 + i·g + j] + temporal_pos_embedding[t]``; the class token gets
        ``pos_embed[0]``. Override this (and only this) to change the tokenizer.

        Raises:
            ValueError: see :meth:`check_video` (not checked under graph capture).
        """
        if not is_tracing(x):
            self.check_video(x)
        x = self.patch_embed(x)  # B×D×T'×g×g
        b, d, t = x.shape[0], x.shape[1], x.shape[2]
        x = x.permute(0, 2, 3, 4, 1).reshape(b, t, -1, d)
        x = x + self.pos_embed[:, 1:].unsqueeze(1) + self.temporal_pos_embedding.unsqueeze(2)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
        return self.pos_drop(torch.cat([cls, x.reshape(b, -1, d)], dim=1))

    def cls_position(self, num_patches: int) -> int:
        """Index of the class token among ``num_patches + 1`` tokens (0 here, at the head)."""
        return 0



# --------------------------------------------------------------------------- registry

default_cfgs = generate_default_cfgs({
    "videomamba_tiny_patch16_224": _cfg(fixed_input_size=True),
    "videomamba_micro_patch8": _cfg(input_size=(1, 48, 48), fixed_input_size=True, num_classes=10,
                                    mean=(0.5,), std=(0.5,)),
})

MICRO_VIDEOMAMBA_ARGS = dict(patch_size=8, embed_dim=96, depth=6, d_state=8, in_chans=1, num_classes=10,
                             num_frames=4, img_size=48)
"""The CPU-sized VideoMamba of ``videomamba_micro_patch8`` (``d_state=8`` as ``vim_micro_patch8``)."""


def _create_videomamba(variant: str, pretrained: bool, defaults: dict, kwargs: dict) -> VideoMamba:
    refuse_scriptable(variant, "the Mamba mixer's selective scan is a torch.autograd.Function")
    refuse_feature_cls(variant, kwargs)
    model = build_model_with_cfg(VideoMamba, variant, pretrained, feature_cfg=dict(out_indices=3, feature_cls="getter"),
                                 **{**defaults, **kwargs})
    if not isinstance(model, VideoMamba):  # features_only: timm's FeatureGetterNet around it
        return model
    # num_frames is no PretrainedCfg field (a saved config.json would not load); it is model.num_frames
    # and a model argument (timm's _model_args, which save_for_hf writes)
    model._model_args = {**getattr(model, "_model_args", {}), "num_frames": model.num_frames}
    cfg = dict(model.pretrained_cfg)
    cfg.update(input_size=(model.in_chans, *model.patch_embed.img_size), num_classes=model.num_classes)
    model.pretrained_cfg = model.default_cfg = cfg
    return model


@register_model
def videomamba_tiny_patch16_224(pretrained: bool = False, **kwargs) -> VideoMamba:
    """VideoMamba-Ti (embed 192, depth 24), 8 frames of 224² by default (paper Table 3 / SSv2)."""
    return _create_videomamba("videomamba_tiny_patch16_224", pretrained,
                              dict(patch_size=16, embed_dim=192, depth=24, num_frames=8), kwargs)


@register_model
def videomamba_micro_patch8(pretrained: bool = False, **kwargs) -> VideoMamba:
    """CPU-sized VideoMamba: 4 frames of 48×48, one channel, 4·36 + 1 tokens, 10 classes."""
    return _create_videomamba("videomamba_micro_patch8", pretrained, MICRO_VIDEOMAMBA_ARGS, kwargs)


# --------------------------------------------------------------------------- VideoMamba + DART


class DartVideoMamba(ClassTokenDartMixin, VideoMamba):
    """A :class:`VideoMamba` whose tokenizer is a :class:`~dartok.video_tokenizer.VideoDART` (built by
    :func:`patch_videomamba`; paper §4.4).

    ``embed`` (VideoMamba's single tokenization method) becomes: VideoDART tokens + their
    area-averaged spatio-temporal position embeddings, frame-major, with the class token
    (plus its own ``pos_embed`` entry, ``1×1×D``) at the head. The spatial grid of
    ``pos_embed`` lives in ``patch_embed.pos_embed`` and ``temporal_pos_embedding`` in
    ``patch_embed.temporal_pos_embedding``. Frames of any size work; the frame count must
    be the model's ``num_frames``.

    Shapes: ``forward(B×C×T×H×W) → B×num_classes``; ``embed → B×(1+N)×D``.
    """

    backbone_cls = VideoMamba
    backbone_desc = "dartok VideoMamba"
    patch_fn = "patch_videomamba"
    tokenizer_cls = VideoDART
    img_size_factor = 1  # VideoMamba's SSv2 protocol decodes 224² frames; the paper keeps them
    moved_parameters = ("temporal_pos_embedding",)

    def check_video(self, x: torch.Tensor) -> None:
        """Rank, channels and frame count only: DART takes frames of any size."""
        self.patch_embed._check_video(x)

    @classmethod
    def check_backbone(cls, model: VideoMamba) -> None:
        """Raise ``ValueError`` for a tubelet size other than 1 (VideoDART's tokens each lie in one frame)."""
        if model.patch_embed.tubelet_size != 1:
            raise ValueError(f"patch_videomamba needs tubelet size 1 (one frame per token), "
                             f"got {model.patch_embed.tubelet_size}")

    @classmethod
    def split_pos_embed(cls, model: VideoMamba) -> tuple[torch.Tensor, torch.Tensor]:
        """The class token's entry (index 0) stays, the ``g²`` spatial entries are the grid."""
        return model.pos_embed.data[:, :1], model.pos_embed.data[:, 1:]

    @classmethod
    def default_num_tokens(cls, model: VideoMamba) -> int:
        """``T/2`` frames' worth of the grid, ``g²·T // 2`` (196·4 for T = 8, paper Table 3)."""
        return max(1, model.patch_embed.num_patches * model.num_frames // 2)

    @classmethod
    def tokenizer_kwargs(cls, model: VideoMamba) -> dict:
        """``num_frames``: the clip length the tokenizer takes."""
        return {"num_frames": model.num_frames}



def patch_videomamba(
    model: VideoMamba,
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
    temporal_diff: str = "abs",
    scorer_cam: bool | None = None,
    motion_prior: float = 0.0,
) -> VideoMamba:
    """Turn a :class:`VideoMamba` into a DART VideoMamba in place, keeping its weights.

    The VideoMamba call of :func:`dartok.models.patch_backbone`; the signature mirrors
    :func:`dartok.patch_timm` plus ``temporal_diff`` (scorer head default ``"v2"``).
    Like :func:`dartok.patch_timm` for video (paper §3.3, §4.4): the tubelet-1 ``Conv3d``
    patch projection (``D×C×1×P×P``) becomes :class:`VideoDART`'s ``Conv2d`` (``D×C×P×P``,
    same numbers), the grid part of ``pos_embed`` becomes its spatial ``g×g×D`` map and
    ``temporal_pos_embedding`` its ``T×D`` temporal one; the class token and its position
    entry stay on the model. With a uniform pdf (``scorer=None``) and ``N = T·g²`` the
    patched model computes exactly what the original computed (the default bands are then
    ``T·g``, one g×g grid per frame; see :func:`video_bands`).

    Args:
        model: a :class:`VideoMamba` with tubelet size 1 and a square patch grid.
        num_tokens: budget N per clip (default: ``T/2`` frames' worth, ``g²·T // 2``, e.g.
            196·4 for T = 8 as in the paper's Table 3); any N ≥ 1.
        scorer: trunk name, dict of :class:`~dartok.scorer.Scorer` kwargs, a ``Scorer``, or
            ``None`` (uniform pdf). VideoMamba uses head ``"v2"`` (paper §4.4, docs/method.md §3).
        img_size: the frame side the data pipeline should produce (default: the model's
            own frame side, 224 for VideoMamba-Ti: VideoMamba's SSv2 protocol decodes 224²
            frames and the paper does not say it raised that for video); recorded in
            ``pretrained_cfg["input_size"]``. DART accepts any frame size.
        alpha, bands, antialias, temporal_diff, motion_prior: :class:`VideoDART` options.
        scorer_head, scorer_input_size, scorer_stage, scorer_pretrained,
        trainable_scorer_trunk, learn_contrast: used when ``scorer`` is a name.
        score_source: ``"scorer"``, ``"oracle"`` (the data's object box) or ``"motion"`` (the
            motion map alone, no scorer; :func:`~dartok.models.patch_backbone`).
        scorer_cam: accepted for symmetry with the image families; a video scorer has no
            auxiliary CAM head (a clip's label is not every frame's, docs/method.md §10), so
            ``None`` / ``False`` build none and ``True`` is an error.

    Returns:
        The same object, now a :class:`DartVideoMamba`.

    Raises:
        TypeError: not a :class:`VideoMamba`.
        ValueError: already DART, a tubelet size other than 1, a non-square grid, or
            ``scorer_cam=True``.
    """
    return patch_backbone(model, DartVideoMamba, **patch_options(locals()))


_DART_VIDEOMAMBA_KEYS = (*_DART_KEYS, "temporal_diff", "motion_prior")


def _create_dart_videomamba(variant: str, base: str, pretrained: bool, defaults: dict, kwargs: dict) -> VideoMamba:
    refuse_feature_cls(variant, kwargs)
    return create_dart(variant, base, patch_videomamba, pretrained, defaults, kwargs, _DART_VIDEOMAMBA_KEYS)


default_cfgs.update(generate_default_cfgs({
    "dart_videomamba_tiny_patch16_224": _cfg(input_size=(3, 224, 224)),
    "dart_videomamba_micro_patch8": _cfg(input_size=(1, 128, 128), num_classes=10, mean=(0.5,), std=(0.5,)),
}))


@register_model
def dart_videomamba_tiny_patch16_224(pretrained: bool = False, **kwargs) -> VideoMamba:
    """VideoMamba-Ti + DART: 8 frames of 224², 196×4 tokens, MobileNetV3-Small scorer with head v2
    on a 224 copy of each frame (paper Table 3: 63.7 SSv2 top-1 at 5.11 GFLOPs)."""
    return _create_dart_videomamba("dart_videomamba_tiny_patch16_224", "videomamba_tiny_patch16_224", pretrained,
                                   {"img_size": 224, "scorer": "mobilenetv3_small", "scorer_head": "v2",
                                    "scorer_input_size": 224, "scorer_pretrained": None}, kwargs)


@register_model
def dart_videomamba_micro_patch8(pretrained: bool = False, **kwargs) -> VideoMamba:
    """``videomamba_micro_patch8`` + DART for CPU runs: 128² frames in, scorer (head v2) on a
    128 copy of each frame, budget ``T/2`` frames' worth of the 6×6 grid (72 for T = 4), anti-aliased
    boxes as ``dart_vit_micro_patch8``."""
    return _create_dart_videomamba("dart_videomamba_micro_patch8", "videomamba_micro_patch8", pretrained,
                                   {"img_size": 128, "scorer": "mobilenetv3_small", "scorer_head": "v2",
                                    "scorer_input_size": 128, "scorer_pretrained": None, "antialias": True}, kwargs)


# --------------------------------------------------------------------------- image weights → video

VIDEO_INIT_KEYS = ("temporal_pos_embedding", "patch_embed.temporal_pos_embedding")
"""What inflation leaves at the video model's initialisation (zeros, as OpenGVLab starts from ImageNet)."""


def _image_source(image) -> tuple[dict[str, torch.Tensor], bool | None, bool | None]:
    """``(state dict, middle class token?, directions averaged?)`` of an image Vim given as a
    module (the flags read off it) or as a state dict (flags ``None``: the caller's defaults)."""
    if isinstance(image, nn.Module):
        if not isinstance(image, VisionMamba):
            raise ValueError(f"inflation takes a (DART) Vision Mamba image model, got {type(image).__name__}")
        middle = bool(image.if_cls_token and image.use_middle_cls_token)
        return dict(image.state_dict()), middle, bool(image.layers[0].mixer.if_devide_out)
    sd = dict(image)
    if "model" in sd and isinstance(sd["model"], dict):  # hustvl's / DeiT's released wrapper
        sd = dict(sd["model"])
    return sd, None, None


def inflate_image_state_dict(
    image,
    video_model: VideoMamba,
    *,
    middle_cls_token: bool = True,
    divide_out: bool = True,
    center: bool = True,
    notes: list[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Map an image Vim's weights onto a (DART) VideoMamba's keys and shapes (OpenGVLab's
    ``inflate_weight`` + ``load_state_dict``, which start VideoMamba from ImageNet weights).

    Works for the four pairings of plain / DART image (``vim_*``, ``dart_vim_*``) and plain /
    DART video (``videomamba_*``, ``dart_videomamba_*``):

    - patch projection: a plain video model's ``Conv3d`` (``D×C×k×P×P``) gets the image's
      ``Conv2d`` (``D×C×P×P``) in its time slot: for tubelet ``k = 1`` that is the same
      numbers, so each frame's patch tokens are what the image model computed; for
      ``k > 1``, ``center`` puts it in the middle slot ``k // 2`` (zeros elsewhere), else
      it is repeated and divided by k (OpenGVLab's two options). VideoDART keeps a
      ``Conv2d``: copied. A different patch size is resampled (timm's ``resample_patch_embed``).
    - position: the image's class-token entry (at index ``N // 2`` of hustvl's ``pos_embed``
      with ``middle_cls_token``, else 0; DART keeps it in ``pos_embed``) becomes the video
      model's class entry (index 0, where VideoMamba puts its class token); the ``g×g`` grid
      becomes the spatial grid (plain: ``pos_embed[1:]``, DART: ``patch_embed.pos_embed``),
      resampled (bicubic) if the video model's grid differs.
      ``temporal_pos_embedding`` is not in the result: it stays at the video model's init
      (zeros), so every frame starts with the image model's positions.
    - Mamba layers, ``norm_f``, ``cls_token``, ``head``: copied. Vim averages its two scan
      directions (hustvl's ``if_devide_out``, ``divide_out``), VideoMamba adds them; each
      ``out_proj.weight`` is scaled by the ratio (halved) so every block computes what it
      computed in the image model.
    - the DART scorer (``patch_embed.scorer.*``): copied when both are DART with a scorer,
      dropped with a note when the video model has none (plain, or the oracle), absent
      (left at init) when the image model had none. The image scorer's auxiliary CAM head
      (``patch_embed.scorer.cam.*``, docs/method.md §10) is dropped with a note: a video
      scorer has none.

    Where the two models compute the same thing: a plain image Vim with its class token at
    the head (``use_middle_cls_token=False``) and a plain VideoMamba of one frame give the
    same logits (``tests/test_inflate.py``). With the middle class token and T frames they
    differ (another sequence), but each frame's patch tokens are the image's.

    Args:
        image: an image model (:class:`~dartok.models.vim.VisionMamba` or its DART version;
            ``middle_cls_token`` and ``divide_out`` are then read off it) or its state dict
            (a ``{"model": state_dict}`` wrapper is unwrapped).
        video_model: the :class:`VideoMamba` (or :class:`DartVideoMamba`) to fit.
        middle_cls_token, divide_out: the image model's layout when ``image`` is a state
            dict (the defaults are hustvl's and dartok's Vim).
        center: how a tubelet ``k > 1`` is inflated (above).
        notes: a list the mapping steps are described into (one line each).

    Returns:
        A state dict in the video model's layout (without the keys left at init).

    Raises:
        ValueError: not an image Vim state dict (no ``layers.*``, a ``temporal_pos_embedding``
            already, a patch projection that is not 4-D), a position embedding that is not
            a square grid plus a class entry, an image model without a class token, or a
            ``video_model`` that is not a VideoMamba.
    """
    if not isinstance(video_model, VideoMamba):
        raise ValueError(f"inflation fits a VideoMamba, got {type(video_model).__name__}")
    sd, middle, halves = _image_source(image)
    middle = middle_cls_token if middle is None else middle
    halves = divide_out if halves is None else halves
    notes = [] if notes is None else notes
    if any(k.endswith("temporal_pos_embedding") for k in sd):
        raise ValueError("these weights are a video model's already (they hold a temporal_pos_embedding): "
                         "load them directly, without inflation")
    if not any(k.startswith("layers.") for k in sd):
        raise ValueError("not a Vision Mamba state dict (no 'layers.*' keys): inflation maps (DART) Vim weights")
    w = sd.get("patch_embed.proj.weight")
    if w is None or w.dim() != 4:
        raise ValueError(f"the image patch projection must be a Conv2d weight D×C×P×P, got "
                         f"{None if w is None else tuple(w.shape)}")
    if "cls_token" not in sd:
        raise ValueError("the image model has no class token; VideoMamba classifies from one (cls_token)")

    # position: class entry + grid, in the image's layout
    if "patch_embed.pos_embed" in sd:  # DART image: grid in the tokenizer, class entry on the model
        grid, cls_pos = sd.pop("patch_embed.pos_embed"), sd.pop("pos_embed", None)
    else:
        pos = sd.pop("pos_embed", None)
        if pos is None:
            raise ValueError("the image model has no absolute position embedding (pos_embed)")
        n = pos.shape[1] - 1
        if math.isqrt(n) ** 2 != n:
            raise ValueError(f"pos_embed of length {pos.shape[1]} is not a square grid plus one class entry")
        cls_pos, grid = split_cls_pos(pos, n // 2 if middle else 0)
    if cls_pos is None:
        raise ValueError("the image model has no class-token position entry")

    dart = is_dart(video_model)
    tok = video_model.patch_embed
    g_src = math.isqrt(grid.shape[1])
    if g_src * g_src != grid.shape[1]:
        raise ValueError(f"the image position grid has {grid.shape[1]} entries, not a square")
    g_dst = (tok.pos_grid if tok.pos_embed is not None else None) if dart else tok.grid_size[0]
    if g_dst is not None and g_dst != g_src:
        grid = resample_abs_pos_embed(grid, new_size=[g_dst, g_dst], old_size=[g_src, g_src], num_prefix_tokens=0)
        notes.append(f"position grid resampled {g_src}x{g_src} -> {g_dst}x{g_dst} (bicubic)")
    if dart:
        if g_dst is not None:
            sd["patch_embed.pos_embed"] = grid
        sd["pos_embed"] = cls_pos
    else:
        sd["pos_embed"] = torch.cat([cls_pos, grid], dim=1)
    if middle:
        notes.append("class token moved from the middle of the sequence (Vim) to its head (VideoMamba)")

    # patch projection
    own = tok.proj.weight
    if tuple(w.shape[-2:]) != tuple(own.shape[-2:]):
        w = resample_patch_embed(w, list(own.shape[-2:]))
        notes.append(f"patch projection resampled to {tuple(own.shape[-2:])}")
    if own.dim() == 5:
        k = own.shape[2]
        if k == 1:
            w = w.unsqueeze(2)
        elif center:
            w3 = w.new_zeros(*w.shape[:2], k, *w.shape[2:])
            w3[:, :, k // 2] = w
            w = w3
        else:
            w = w.unsqueeze(2).repeat(1, 1, k, 1, 1) / k
        notes.append(f"patch projection Conv2d -> Conv3d (tubelet {k}"
                     + (", centre slot" if k > 1 and center else ", repeated / k" if k > 1 else "") + ")")
    sd["patch_embed.proj.weight"] = w

    # the two scan directions: averaged in Vim, added in VideoMamba
    scaled = 0
    for i, layer in enumerate(video_model.layers):
        key = f"layers.{i}.mixer.out_proj.weight"
        ratio = (0.5 if halves else 1.0) / (0.5 if layer.mixer.if_devide_out else 1.0)
        if key in sd and ratio != 1.0 and layer.mixer.bimamba_type == "v2":
            sd[key] = sd[key] * ratio
            scaled += 1
    if scaled:
        notes.append(f"out_proj of {scaled} blocks scaled: the image model averaged its two scan directions, "
                     "the video model adds them")

    # the scorer
    has_scorer = any(k.startswith("patch_embed.scorer.") for k in video_model.state_dict())
    dropped = [k for k in sd if k.startswith("patch_embed.scorer.")] if not has_scorer else []
    for k in dropped:
        sd.pop(k)
    if dropped:
        notes.append(f"scorer dropped ({len(dropped)} tensors): the video model has none")
    # the image scorer's auxiliary CAM head (docs/method.md §10): a video scorer has none
    video_keys = set(video_model.state_dict())
    cam = [k for k in sd if k.startswith("patch_embed.scorer.cam.") and k not in video_keys]
    for k in cam:
        sd.pop(k)
    if cam:
        notes.append("the image scorer's auxiliary CAM head dropped: a video scorer has none (docs/method.md §10)")
    return sd


def load_image_weights(video_model: VideoMamba, image, *, middle_cls_token: bool = True, divide_out: bool = True,
                       center: bool = True, source: str = "image weights") -> WeightReport:
    """Inflate an image Vim's weights into ``video_model`` in place (:func:`inflate_image_state_dict`).

    Left at the video model's initialisation, and listed in the report: ``temporal_pos_embedding``
    (zeros), the scorer when the image model had none, the head when the class counts
    differ (dropped with a note).

    Returns:
        A :class:`dartok.models.weights.WeightReport` (loaded / missing / unused keys, notes).

    Raises:
        ValueError: what :func:`inflate_image_state_dict` raises, and any other key or shape
            the models do not share (another ``embed_dim``, ``depth``, ``in_chans``...), by name.
    """
    notes: list[str] = []
    sd = inflate_image_state_dict(image, video_model, middle_cls_token=middle_cls_token, divide_out=divide_out,
                                  center=center, notes=notes)
    return load_fitting(video_model, sd, may_miss=(*VIDEO_INIT_KEYS, "patch_embed.scorer"), notes=notes,
                        source=source)
