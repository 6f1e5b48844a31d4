"""VideoMamba (Li et al. 2024, OpenGVLab/VideoMamba ``video_sm/models/videomamba.py``) on timm.

After ``import dartok`` these names work with ``timm.create_model``:

- ``videomamba_tiny_patch16_224``: VideoMamba-Ti (embed 192, depth 24, 8 frames by default,
  tubelet size 1).
- ``videomamba_micro_patch8``: a CPU-sized VideoMamba (patch 8, embed 96, depth 6, one
  channel, 48×48 frames, 4 frames, 10 classes).

Input ``B×C×T×H×W``. Tokens are frame-major (all patches of frame 0 row by row, then frame
1, ...) after one class token at the head; each patch token gets the spatial ``pos_embed``
entry of its grid cell plus the ``temporal_pos_embedding`` entry of its frame. The
tokenization is the single method :meth:`VideoMamba.embed`, so a video tokenizer (DART on
stacked frames, say) can replace it in a subclass without touching the rest.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from . import _compat

_compat.ensure_torchvision_importable()

from timm.layers import DropPath, to_2tuple, trunc_normal_  # noqa: E402
from timm.models import build_model_with_cfg, register_model  # noqa: E402
from timm.models._registry import generate_default_cfgs  # noqa: E402

from .mamba import RMSNorm, build_blocks, init_mamba_weights, run_blocks, segm_init_weights  # noqa: E402
from .models import _cfg  # noqa: E402

__all__ = ["PatchEmbed3d", "VideoMamba"]


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


class VideoMamba(nn.Module):
    """VideoMamba for classification (OpenGVLab ``VisionMamba`` in ``video_sm``), same key names.

    Bidirectional Mamba blocks (:class:`dartok.mamba.Mamba` ``bimamba_type="v2"``, the two
    directions added, not averaged), RMSNorm, float32 residual; class token at index 0.

    Args:
        img_size: frame side (int or ``(H, W)``). patch_size: P. depth, embed_dim, d_state:
            as for Vim. in_chans: channels. num_classes: head outputs (0: no head).
        num_frames: T, the frame count the model takes. kernel_size: tubelet size k
            (T must be a multiple of it); ``temporal_pos_embedding`` has ``T/k`` entries.
        drop_rate: dropout after the position embeddings. drop_path_rate: stochastic depth.
        fc_drop_rate: dropout before the head. ssm_cfg, norm_epsilon, rms_norm,
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
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0.0 else nn.Identity()
        self.layers = build_blocks(depth, embed_dim, drop_path_rate, d_state=d_state, ssm_cfg=ssm_cfg,
                                   norm_epsilon=norm_epsilon, rms_norm=rms_norm, residual_in_fp32=residual_in_fp32,
                                   fused_add_norm=fused_add_norm, bimamba_type="v2" if bimamba else "none",
                                   if_devide_out=False, **factory)
        self.norm_f = (RMSNorm if rms_norm else nn.LayerNorm)(embed_dim, eps=norm_epsilon, **factory)
        self.apply(segm_init_weights)
        trunc_normal_(self.pos_embed, std=0.02)
        self.apply(partial(init_mamba_weights, n_layer=depth, **(initializer_cfg or {})))

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token", "temporal_pos_embedding"}

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New (re-initialised) head with ``num_classes`` outputs (0: identity)."""
        self.num_classes = num_classes
        device = self.norm_f.weight.device
        self.head = nn.Linear(self.embed_dim, num_classes, device=device) if num_classes > 0 else nn.Identity()
        self.head.apply(segm_init_weights)

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
            ValueError: see :meth:`check_video`.
        """
        self.check_video(x)
        x = self.patch_embed(x)  # B×D×T'×g×g
        b, d, t = x.shape[:3]
        x = x.permute(0, 2, 3, 4, 1).reshape(b, t, -1, d)
        x = x + self.pos_embed[:, 1:].unsqueeze(1) + self.temporal_pos_embedding.unsqueeze(2)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
        return self.pos_drop(torch.cat([cls, x.reshape(b, -1, d)], dim=1))

    def cls_position(self, num_tokens: int) -> int:
        """Index of the class token among ``num_tokens`` tokens (0 here)."""
        return 0

    def forward_layers(self, tokens: torch.Tensor) -> torch.Tensor:
        """Mamba blocks and the final add + norm: ``B×L×D`` → ``B×L×D``."""
        return run_blocks(self.layers, tokens, self.norm_f, self.drop_path)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``B×C×T×H×W`` → normed tokens ``B×L×D``."""
        return self.forward_layers(self.embed(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens ``B×L×D`` → logits from the class token."""
        x = x[:, self.cls_position(x.shape[1])]
        return x if pre_logits else self.head(self.head_drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


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
    model = build_model_with_cfg(VideoMamba, variant, pretrained, **{**defaults, **kwargs})
    cfg = dict(model.pretrained_cfg)  # a plain dict: num_frames is no PretrainedCfg field
    cfg.update(input_size=(model.in_chans, *model.patch_embed.img_size), num_frames=model.num_frames,
               num_classes=model.num_classes)
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
