"""Mamba layers in plain PyTorch: RMSNorm, the (bidirectional) Mamba mixer, the block.

Port of the modules of ``mamba_ssm`` 1.1.1 that Vim (hustvl/Vim, ``mamba-1p1p1``) and
VideoMamba (OpenGVLab/VideoMamba) use, with the same parameter names so their checkpoints
load unchanged: :class:`RMSNorm`, :class:`Mamba` (``bimamba_type="none"`` or ``"v2"``, Vim's
bidirectional mixer), :class:`Block` (add → norm → mixer, ``residual_in_fp32``), and the
helpers both backbones build their stacks with (:func:`create_block`, :func:`build_blocks`,
:func:`run_blocks`, :func:`init_mamba_weights`, :func:`segm_init_weights`, and the
:class:`MambaClassifier` base they share around their token embedding). The scan itself
is :func:`dartok.ops.selective_scan.selective_scan`. Formerly the second half of
``dartok.mamba`` (still importable there).
"""
from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .._compat import ensure_torchvision_importable

ensure_torchvision_importable()

from timm.layers import register_notrace_module  # noqa: E402
from timm.models._features import feature_take_indices  # noqa: E402  (where timm's own models import it)

from ..ops.selective_scan import _BACKENDS, _shape, selective_scan, selective_scan_macs  # noqa: E402

__all__ = [
    "Block", "Mamba", "MambaClassifier", "RMSNorm", "build_blocks", "create_block", "final_norm", "init_mamba_weights",
    "run_block", "run_blocks", "segm_init_weights",
]


@register_notrace_module  # dtype promotion in forward: an FX leaf (timm's get_notrace_modules)
class RMSNorm(nn.Module):
    """Root-mean-square norm ``x / sqrt(mean(x²) + eps) · weight`` over the last dim.

    As ``mamba_ssm.ops.triton.layernorm.RMSNorm``: one parameter ``weight`` (``bias`` is
    ``None``), statistics in float32, output in the input's dtype.

    Shapes: ``(..., hidden_size) → (..., hidden_size)``.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        work = torch.promote_types(x.dtype, torch.float32)
        if torch.onnx.is_in_onnx_export():  # the TorchScript-based ONNX exporter has no rms_norm
            y = x.to(work)
            y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
            return (y * self.weight.to(work)).to(x.dtype)
        return F.rms_norm(x.to(work), (x.shape[-1],), self.weight.to(work), self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class Mamba(nn.Module):
    """Mamba mixer (``mamba_ssm`` 1.1.1 ``Mamba``), with Vim's bidirectional ``bimamba_type="v2"``.

    ``in_proj`` → (x, z); per direction: causal depthwise ``conv1d`` + SiLU on x,
    ``x_proj`` → (dt, B, C), ``dt_proj`` → Δ (bias inside the scan, softplus), selective
    scan gated by ``silu(z)``. ``"v2"`` runs a second, independently parameterised scan
    (``conv1d_b``, ``x_proj_b``, ``dt_proj_b``, ``A_b_log``, ``D_b``) over the reversed
    sequence, flips it back and adds it (halved when ``if_devide_out``, as Vim does;
    VideoMamba adds without halving); then ``out_proj``. This is the computation of
    hustvl's fused ``mamba_inner_fn_no_out_proj`` path, the one Vim trains and evaluates
    with.

    Args:
        d_model: token width. d_state: N. d_conv: conv kernel size. expand: d_inner / d_model.
        dt_rank: rank of Δ's projection (``"auto"`` = ceil(d_model/16)).
        dt_min, dt_max, dt_init, dt_scale, dt_init_floor: Δ initialisation (softplus(dt bias)
            log-uniform in [dt_min, dt_max]).
        conv_bias, bias: biases of ``conv1d`` / of ``in_proj`` and ``out_proj``.
        layer_idx: kept for reference (cache indexing in mamba_ssm).
        bimamba_type: ``"none"`` (one direction) or ``"v2"``.
        if_devide_out: halve the sum of the two directions (hustvl's spelling).
        init_layer_scale: if set, a learnable per-channel output scale ``gamma``.
        scan_backend: ``backend`` of :func:`selective_scan`.

    Shapes: ``forward(B×L×d_model) → B×L×d_model``.

    Raises:
        ValueError: unknown ``bimamba_type`` or ``dt_init``, or a non-positive size.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank="auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        layer_idx: int | None = None,
        device=None,
        dtype=None,
        bimamba_type: str = "none",
        if_devide_out: bool = False,
        init_layer_scale: float | None = None,
        scan_backend: str = "auto",
    ):
        super().__init__()
        if bimamba_type not in ("none", "v2"):
            raise ValueError(f"bimamba_type must be 'none' or 'v2' (Vim/VideoMamba), got {bimamba_type!r}")
        if dt_init not in ("random", "constant"):
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        for name, v in (("d_model", d_model), ("d_state", d_state), ("d_conv", d_conv), ("expand", expand)):
            if v < 1:
                raise ValueError(f"{name} must be ≥ 1, got {v}")
        if scan_backend not in _BACKENDS:
            raise ValueError(f"scan_backend must be one of {_BACKENDS}, got {scan_backend!r}")
        factory = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.layer_idx = layer_idx
        self.bimamba_type = bimamba_type
        self.if_devide_out = if_devide_out
        self.init_layer_scale = init_layer_scale
        self.scan_backend = scan_backend
        if init_layer_scale is not None:
            self.gamma = nn.Parameter(init_layer_scale * torch.ones(d_model, **factory))
        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=bias, **factory)
        self.act = nn.SiLU()
        directions = ("",) if bimamba_type == "none" else ("", "_b")
        for suffix in directions:
            self._init_direction(suffix, conv_bias, dt_init, dt_scale, dt_min, dt_max, dt_init_floor, factory)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

    def _init_direction(self, suffix, conv_bias, dt_init, dt_scale, dt_min, dt_max, dt_init_floor, factory):
        """One direction's ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D`` (+ ``suffix``), mamba_simple's init."""
        d_inner, device = self.d_inner, factory["device"]
        setattr(self, "conv1d" + suffix, nn.Conv1d(d_inner, d_inner, kernel_size=self.d_conv, groups=d_inner,
                                                   padding=self.d_conv - 1, bias=conv_bias, **factory))
        setattr(self, "x_proj" + suffix, nn.Linear(d_inner, self.dt_rank + 2 * self.d_state, bias=False, **factory))
        dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True, **factory)
        std = self.dt_rank ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(dt_proj.weight, std)
        else:
            nn.init.uniform_(dt_proj.weight, -std, std)
        # softplus(bias) log-uniform in [dt_min, dt_max]; inverse softplus: dt + log(-expm1(-dt))
        dt = torch.exp(torch.rand(d_inner, device=device) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        with torch.no_grad():
            dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        dt_proj.bias._no_reinit = True  # the model-level init zeroes every other Linear bias
        setattr(self, "dt_proj" + suffix, dt_proj)
        a_log = torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32, device=device)).repeat(d_inner, 1)
        name_a = "A_log" if not suffix else "A_b_log"
        setattr(self, name_a, nn.Parameter(a_log))  # S4D-real: A = -(1..N), kept in float32
        getattr(self, name_a)._no_weight_decay = True
        setattr(self, "D" + suffix, nn.Parameter(torch.ones(d_inner, device=device)))
        getattr(self, "D" + suffix)._no_weight_decay = True

    def _direction(self, xz: torch.Tensor, suffix: str) -> torch.Tensor:
        """One direction: ``xz`` ``B×2E×L`` → gated scan output ``B×E×L`` (before ``out_proj``)."""
        conv, x_proj, dt_proj = (getattr(self, n + suffix) for n in ("conv1d", "x_proj", "dt_proj"))
        a_log = self.A_log if not suffix else self.A_b_log
        skip = getattr(self, "D" + suffix)
        length = xz.shape[-1]
        x, z = xz.chunk(2, dim=1)
        x = self.act(conv(x)[..., :length])
        x_dbl = F.linear(x.transpose(1, 2), x_proj.weight)  # B×L×(R+2N)
        dt, b, c = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, dt_proj.weight)  # B×L×E, bias applied inside the scan
        return selective_scan(x, dt.transpose(1, 2), -torch.exp(a_log.float()), b.transpose(1, 2),
                              c.transpose(1, 2), skip.float(), z=z, delta_bias=dt_proj.bias.float(),
                              delta_softplus=True, backend=self.scan_backend)

    def scan_macs(self, batch: int, length: int) -> int:
        """MACs of this mixer's selective scans on ``batch`` sequences of ``length`` tokens
        (:func:`selective_scan_macs` per direction): what fvcore cannot see in a forward."""
        directions = 2 if self.bimamba_type == "v2" else 1
        return directions * selective_scan_macs(batch, self.d_inner, self.d_state, length)

    def forward(self, hidden_states: torch.Tensor, inference_params=None) -> torch.Tensor:
        """``B×L×d_model`` → ``B×L×d_model``. ``inference_params`` (step-wise decoding) is not supported."""
        if inference_params is not None:
            raise ValueError("step-wise decoding (inference_params) is not supported by dartok's Mamba")
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(f"hidden_states must be B×L×{self.d_model}, got {_shape(hidden_states)}")
        xz = self.in_proj(hidden_states).transpose(1, 2)  # B×2E×L
        out = self._direction(xz, "")
        if self.bimamba_type == "v2":
            out = out + self._direction(xz.flip(-1), "_b").flip(-1)
            if self.if_devide_out:
                out = out / 2
        out = self.out_proj(out.transpose(1, 2))
        if self.init_layer_scale is not None:
            out = out * self.gamma
        return out


@register_notrace_module  # an FX leaf: dtype promotion and the scan's data-dependent chunking inside
class Block(nn.Module):
    """Vim / VideoMamba block: add → norm → mixer, returning ``(mixer output, residual)``.

    ``residual ← residual + drop_path(hidden_states)`` (``residual ← hidden_states`` in the
    first block), ``hidden_states ← mixer(norm(residual))``. This is what hustvl's
    ``fused_add_norm`` kernel computes, in PyTorch; with ``residual_in_fp32`` the residual
    stream is kept in at least float32 (float64 stays float64).

    Args:
        dim: token width. mixer_cls: ``callable(dim) → nn.Module`` (e.g. a
            ``functools.partial`` of :class:`Mamba`). norm_cls: ``callable(dim)`` (e.g.
            :class:`RMSNorm`). fused_add_norm: accepted for hustvl compatibility; the
            computation is the same either way. residual_in_fp32: see above.
            drop_path: stochastic depth rate on the mixer output entering the residual.

    Shapes: ``forward(B×L×D, None | B×L×D) → (B×L×D, B×L×D)``.
    """

    def __init__(self, dim: int, mixer_cls, norm_cls=nn.LayerNorm, fused_add_norm: bool = False,
                 residual_in_fp32: bool = False, drop_path: float = 0.0):
        super().__init__()
        from timm.layers import DropPath

        self.residual_in_fp32 = residual_in_fp32
        self.fused_add_norm = fused_add_norm
        self.mixer = mixer_cls(dim)
        self.norm = norm_cls(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor | None = None, inference_params=None):
        residual = hidden_states if residual is None else residual + self.drop_path(hidden_states)
        hidden_states = self.norm(residual.to(dtype=self.norm.weight.dtype))
        if self.residual_in_fp32:  # at least float32 (hustvl casts to float32, also from float64)
            residual = residual.to(torch.promote_types(residual.dtype, torch.float32))
        if inference_params is not None:
            return self.mixer(hidden_states, inference_params=inference_params), residual
        return self.mixer(hidden_states), residual


def create_block(d_model: int, d_state: int = 16, ssm_cfg: dict | None = None, norm_epsilon: float = 1e-5,
                 drop_path: float = 0.0, rms_norm: bool = True, residual_in_fp32: bool = True,
                 fused_add_norm: bool = True, layer_idx: int | None = None, bimamba_type: str = "v2",
                 if_devide_out: bool = True, init_layer_scale: float | None = None, device=None, dtype=None) -> Block:
    """A :class:`Block` with a :class:`Mamba` mixer and RMSNorm/LayerNorm (hustvl ``create_block``)."""
    factory = {"device": device, "dtype": dtype}
    mixer_cls = partial(Mamba, d_state=d_state, layer_idx=layer_idx, bimamba_type=bimamba_type,
                        if_devide_out=if_devide_out, init_layer_scale=init_layer_scale, **(ssm_cfg or {}), **factory)
    norm_cls = partial(RMSNorm if rms_norm else nn.LayerNorm, eps=norm_epsilon, **factory)
    block = Block(d_model, mixer_cls, norm_cls=norm_cls, fused_add_norm=fused_add_norm,
                  residual_in_fp32=residual_in_fp32, drop_path=drop_path)
    block.layer_idx = layer_idx
    return block


def init_mamba_weights(module: nn.Module, n_layer: int, initializer_range: float = 0.02,
                       rescale_prenorm_residual: bool = True, n_residuals_per_layer: int = 1) -> None:
    """mamba_ssm's ``_init_weights`` (used by Vim and VideoMamba via ``model.apply``).

    Zeroes every ``Linear`` bias not marked ``_no_reinit`` (the Δ bias is), and re-draws
    each ``out_proj.weight`` with kaiming-uniform scaled by ``1/sqrt(n_residuals_per_layer ·
    n_layer)`` (GPT-2's scaled init).
    """
    if isinstance(module, nn.Linear):
        if module.bias is not None and not getattr(module.bias, "_no_reinit", False):
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=initializer_range)
    if rescale_prenorm_residual:
        for name, p in module.named_parameters():
            if name in ("out_proj.weight", "fc2.weight"):
                nn.init.kaiming_uniform_(p, a=math.sqrt(5))
                with torch.no_grad():
                    p /= math.sqrt(n_residuals_per_layer * n_layer)


def segm_init_weights(m: nn.Module) -> None:
    """hustvl / OpenGVLab ``segm_init_weights``: Linear trunc-normal(0.02) + zero bias, Conv2d
    LeCun normal (Vim's patch embedding), LayerNorm/GroupNorm/BatchNorm2d weight 1, bias 0."""
    from timm.layers import lecun_normal_, trunc_normal_

    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        lecun_normal_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)):
        nn.init.zeros_(m.bias)
        nn.init.ones_(m.weight)


def build_blocks(depth: int, embed_dim: int, drop_path_rate: float = 0.0, **block_kwargs) -> nn.ModuleList:
    """``depth`` blocks from :func:`create_block` with Vim's stochastic-depth schedule.

    Block i gets ``[0, *linspace(0, drop_path_rate, depth)][i]`` (hustvl and OpenGVLab
    shift the schedule by one, so the last rate is never used).
    """
    rates = [0.0] + torch.linspace(0, drop_path_rate, depth).tolist()
    return nn.ModuleList([create_block(embed_dim, layer_idx=i, drop_path=rates[i], **block_kwargs)
                          for i in range(depth)])


def run_block(layer: nn.Module, hidden: torch.Tensor, residual: torch.Tensor | None,
              grad_checkpointing: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One :class:`Block`, under activation checkpointing if asked (not while scripting)."""
    if grad_checkpointing and not torch.jit.is_scripting():
        return checkpoint(layer, hidden, residual, use_reentrant=False)
    return layer(hidden, residual)


def final_norm(hidden: torch.Tensor, residual: torch.Tensor | None, norm_f: nn.Module,
               drop_path: nn.Module) -> torch.Tensor:
    """The final add + norm after the last block: ``norm_f(residual + drop_path(hidden))``."""
    residual = hidden if residual is None else residual + drop_path(hidden)
    weight = getattr(norm_f, "weight", None)  # a pruned model's norm_f is an Identity
    return norm_f(residual if weight is None else residual.to(dtype=weight.dtype))


def run_blocks(layers: nn.ModuleList, tokens: torch.Tensor, norm_f: nn.Module, drop_path: nn.Module,
               grad_checkpointing: bool = False) -> torch.Tensor:
    """Blocks, then the final add + norm of Vim / VideoMamba: ``B×L×D`` → normed ``B×L×D``."""
    hidden, residual = tokens, None
    for layer in layers:
        hidden, residual = run_block(layer, hidden, residual, grad_checkpointing)
    return final_norm(hidden, residual, norm_f, drop_path)


class MambaClassifier(nn.Module):
    """What Vim and VideoMamba share around their token embedding (hustvl / OpenGVLab layout).

    The block stack (``drop_path``, ``layers``, ``norm_f``: :meth:`_init_stack`), the final
    add + norm (:meth:`forward_layers`), pooling and the classifier head (``global_pool``,
    ``head``: :meth:`forward_head`, :meth:`get_classifier`, :meth:`reset_classifier`),
    ``forward(x) = forward_head(forward_layers(embed(x)))``, and timm's model conventions:
    ``feature_info`` (one entry per block), :meth:`forward_intermediates` (so
    ``features_only=True`` works), :meth:`prune_intermediate_layers`,
    :meth:`set_grad_checkpointing`, :meth:`group_matcher` (layer-wise LR decay),
    ``num_features`` / ``head_hidden_size``.

    A subclass sets ``embed_dim``, ``head`` and ``global_pool`` (one of its
    ``global_pool_types``), calls :meth:`_init_stack` where its reference creates the stack
    (so the parameters keep their order), and defines ``embed`` (input → ``B×L×D`` tokens)
    and ``cls_position(num_patches)`` (index of the class token, ``None`` without one).
    """

    global_pool_types: tuple[str, ...] = ("token", "avg", "")
    """``"token"``: the class token's output; ``"avg"``: the mean of the other tokens; ``""``: no
    pooling (``forward_head`` keeps ``B×L×D``)."""

    def _init_stack(self, depth: int, embed_dim: int, drop_path_rate: float, *, norm_epsilon: float,
                    rms_norm: bool, device=None, dtype=None, **block_kwargs) -> None:
        """``drop_path``, ``depth`` blocks (:func:`build_blocks` with ``block_kwargs``) and ``norm_f``."""
        from timm.layers import DropPath

        factory = {"device": device, "dtype": dtype}
        self.grad_checkpointing = False
        self.head_hidden_size = embed_dim
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0.0 else nn.Identity()
        self.layers = build_blocks(depth, embed_dim, drop_path_rate, norm_epsilon=norm_epsilon, rms_norm=rms_norm,
                                   **block_kwargs, **factory)
        self.norm_f = (RMSNorm if rms_norm else nn.LayerNorm)(embed_dim, eps=norm_epsilon, **factory)

    def _check_global_pool(self, global_pool: str) -> str:
        """``global_pool`` if this model supports it, else ``ValueError`` naming the allowed values."""
        if global_pool not in self.global_pool_types:
            raise ValueError(f"global_pool must be one of {self.global_pool_types}, got {global_pool!r}")
        if global_pool == "token" and self.cls_position(1) is None:
            raise ValueError("global_pool='token' needs a class token (if_cls_token=True)")
        return global_pool

    @property
    def feature_info(self) -> list[dict]:
        """timm's ``feature_info``: one entry per block (``layers.{i}``, ``embed_dim`` channels,
        reduction = the tokenizer's nominal input pixels per token side)."""
        embed = self.patch_embed
        ratio = embed.feat_ratio() if hasattr(embed, "feat_ratio") else embed.patch_size[0]
        return [dict(module=f"layers.{i}", num_chs=self.embed_dim, reduction=ratio) for i in range(len(self.layers))]

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for timm's layer-wise LR decay (``param_groups_layer_decay``):
        the embedding (tokenizer, class token, position embeddings) as the stem, one group per block."""
        return dict(stem=r"^cls_token|^pos_embed|^temporal_pos_embedding|^patch_embed",
                    blocks=[(r"^layers\.(\d+)", None), (r"^norm_f", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass (``torch.utils.checkpoint``) to save memory."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New (re-initialised) head with ``num_classes`` outputs (0: identity); ``global_pool``
        (one of :attr:`global_pool_types`) replaces the pooling if given.

        Raises:
            ValueError: an unsupported ``global_pool``.
        """
        if global_pool is not None:
            self.global_pool = self._check_global_pool(global_pool)
        self.num_classes = num_classes
        device = self.norm_f.weight.device if hasattr(self.norm_f, "weight") else None
        self.head = nn.Linear(self.embed_dim, num_classes, device=device) if num_classes > 0 else nn.Identity()
        self.head.apply(segm_init_weights)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``B×L×D`` → ``B×D`` by ``global_pool`` (``B×L×D`` unchanged for ``""``)."""
        cls = self.cls_position(x.shape[1] - 1)
        if self.global_pool == "token":
            return x[:, cls]
        if self.global_pool == "avg":
            if cls is None:
                return x.mean(dim=1)
            return (x.sum(dim=1) - x[:, cls]) / (x.shape[1] - 1)
        if self.global_pool == "last":
            return x[:, -1]
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens ``B×L×D`` → logits ``B×num_classes`` (pooled features with ``pre_logits``)."""
        x = self.head_drop(self.pool(x))
        return x if pre_logits else self.head(x)

    def forward_layers(self, tokens: torch.Tensor) -> torch.Tensor:
        """Mamba blocks and the final add + norm: ``B×L×D`` → ``B×L×D``."""
        return run_blocks(self.layers, tokens, self.norm_f, self.drop_path, self.grad_checkpointing)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Input → normed tokens ``B×L×D`` (:meth:`embed`, then :meth:`forward_layers`)."""
        return self.forward_layers(self.embed(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Input → logits ``B×num_classes``."""
        return self.forward_head(self.forward_features(x))

    # ------------------------------------------------------------------ intermediates

    def embed_with_boxes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`embed` and the tokens' boxes ``B×N×4`` (``None`` for a fixed grid; DART: its boxes)."""
        return self.embed(x), None

    def feature_map(self, tokens: torch.Tensor, boxes: torch.Tensor | None) -> torch.Tensor:
        """Patch tokens ``B×N×D`` (class token removed) → ``B×D×h×w``.

        A fixed grid is reshaped row-major (a video's frames stacked vertically: ``h = T'·g``);
        DART models rasterise their boxes instead (:func:`dartok.models.tokens_to_feature_map`).
        """
        cols = self.patch_embed.grid_size[1]
        return tokens.reshape(tokens.shape[0], -1, cols, tokens.shape[-1]).permute(0, 3, 1, 2).contiguous()

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        return_prefix_tokens: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's ``forward_intermediates``: the output of chosen blocks, and the final features.

        A block's output is the residual stream after it (``residual + hidden``: what the
        next block adds to; stochastic depth not applied), normed with ``norm_f`` if
        ``norm``. The class token is split off (returned beside each map with
        ``return_prefix_tokens``); the patch tokens come as ``NLC`` (``B×N×D``) or ``NCHW``
        (:meth:`feature_map`).

        Args:
            x: the model's input (``B×C×H×W``, a video ``B×C×T×H×W``).
            indices: blocks to take: the last n (int), the given ones (list; negative from
                the end), or all (``None``).
            norm: apply ``norm_f`` to the intermediates.
            stop_early: stop after the last block taken (the final features are then that
                block's, normed).
            output_fmt: ``"NCHW"`` or ``"NLC"``.
            intermediates_only: return only the list of intermediates.
            return_prefix_tokens: return ``(map, class token B×1×D)`` pairs.

        Returns:
            ``(final features B×L×D, intermediates)``, or the intermediates alone.

        Raises:
            ValueError: ``output_fmt`` other than NCHW / NLC; an index out of range
                (``AssertionError`` from timm's ``feature_take_indices``).
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        tokens, boxes = self.embed_with_boxes(x)
        layers = self.layers if torch.jit.is_scripting() or not stop_early else self.layers[:max_index + 1]
        hidden, residual = tokens, None
        intermediates = []
        for i, layer in enumerate(layers):
            hidden, residual = run_block(layer, hidden, residual, self.grad_checkpointing)
            if i in take_indices:
                stream = residual + hidden
                intermediates.append(final_norm(stream, None, self.norm_f, self.drop_path) if norm else stream)
        cls = self.cls_position(tokens.shape[1] - 1)
        prefix = [y[:, cls:cls + 1] for y in intermediates] if cls is not None else None
        if cls is not None:
            intermediates = [torch.cat([y[:, :cls], y[:, cls + 1:]], dim=1) for y in intermediates]
        if output_fmt == "NCHW":
            intermediates = [self.feature_map(y, boxes) for y in intermediates]
        if return_prefix_tokens and prefix is not None:
            intermediates = list(zip(intermediates, prefix))
        if intermediates_only:
            return intermediates
        return final_norm(hidden, residual, self.norm_f, self.drop_path), intermediates

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the blocks after the last of ``indices`` (and ``norm_f`` / the head if asked).

        Returns:
            The absolute indices kept (what ``forward_intermediates`` takes afterwards).
        """
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        self.layers = self.layers[:max_index + 1]
        if prune_norm:
            self.norm_f = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices
