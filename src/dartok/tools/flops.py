"""MAC counting with fvcore: totals, per-op and per-part counts, hand-counted tokenizer ops.

fvcore's ``FlopCountAnalysis`` counts one multiply-add as one "flop", so its totals are
MACs, reported by dartok as GMACs like the paper's "GFLOPs". timm's fused attention
(``F.scaled_dot_product_attention``) is invisible to fvcore, so it is switched off while
counting (:func:`unfused_attention`) and the ``q @ kᵀ`` and ``attn @ v`` matmuls are
counted. The tokenizer's own ops fvcore does not know (or counts with a convention we want
stated) are counted by hand, see :data:`HAND_COUNTED_OPS`; every other op fvcore meets
without a handle is listed (``MacReport.unsupported``), none silently.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

from .. import _compat

_compat.ensure_torchvision_importable()

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

__all__ = ["HAND_COUNTED_OPS", "MacReport", "count_macs", "count_params", "unfused_attention"]



def _shape(value) -> list[int] | None:
    from fvcore.nn.jit_handles import get_shape

    return get_shape(value)


def _numel(value) -> int:
    shape = _shape(value)
    return int(math.prod(shape)) if shape else 0


def _ivalue(value):
    try:
        return value.toIValue()
    except Exception:  # pragma: no cover - non-constant argument
        return None


_GRID_SAMPLER_TAPS = {0: 4, 1: 0, 2: 16}  # interpolation_mode: bilinear, nearest, bicubic


def _grid_sampler_macs(inputs, outputs) -> int:
    """Bilinear: 4 MACs per output value per channel (nearest 0, bicubic 16)."""
    mode = _ivalue(inputs[2]) if len(inputs) > 2 else 0
    return _GRID_SAMPLER_TAPS.get(mode if isinstance(mode, int) else 0, 4) * _numel(outputs[0])


def _upsample_bilinear_macs(inputs, outputs) -> int:
    """Plain bilinear resize: 4 MACs per output value per channel (fvcore's own convention)."""
    return 4 * _numel(outputs[0])


def _aa_taps(size_in: int, size_out: int) -> int:
    """Taps of PyTorch's anti-aliased bilinear (triangle) filter along one axis."""
    scale = max(1.0, size_in / max(size_out, 1))
    return min(size_in, math.ceil(2.0 * scale))


def _upsample_bilinear_aa_macs(inputs, outputs) -> int:
    """Anti-aliased bilinear resize, separable: ``C'·(H_in·W_out·t_w + H_out·W_out·t_h)``.

    ``C'`` = batch × channels; ``t = ceil(2·max(1, in/out))`` taps per output along an axis
    (the triangle filter widened by the downsampling factor): the horizontal pass makes
    ``H_in×W_out`` values, the vertical pass ``H_out×W_out``.
    """
    ishape, oshape = _shape(inputs[0]), _shape(outputs[0])
    if not ishape or not oshape:
        return 0
    lead = int(math.prod(ishape[:-2]))
    h_in, w_in = ishape[-2:]
    h_out, w_out = oshape[-2:]
    return lead * (h_in * w_out * _aa_taps(w_in, w_out) + h_out * w_out * _aa_taps(h_in, h_out))


def _cumsum_macs(inputs, outputs) -> int:
    """One add per element."""
    return _numel(outputs[0])


def _scatter_add_macs(inputs, outputs) -> int:
    """``scatter_add(self, dim, index, src)``: one add per element of ``src``."""
    return _numel(inputs[3]) if len(inputs) > 3 else 0


def _baddbmm_macs(inputs, outputs) -> int:
    """``baddbmm(input, b1, b2)``: ``B·n·k·m`` for ``b1: B×n×k``, ``b2: B×k×m`` (the add not counted)."""
    a, b = _shape(inputs[1]), _shape(inputs[2])
    if not a or not b:
        return 0
    return int(math.prod(a)) * b[-1]


def _zero_macs(inputs, outputs) -> int:
    return 0


def _selective_scan_macs(inputs, outputs) -> int:
    """dartok's selective scan (``_SelectiveScanFn(u, delta, A, B, C, D, z, ...)``): u ``B×D×L``,
    A ``D×N``; :func:`dartok.ops.selective_scan.selective_scan_macs` (the Vim paper's count)."""
    from ..ops.selective_scan import selective_scan_macs

    u, a = _shape(inputs[0]), _shape(inputs[2])
    if not u or not a or len(u) != 3 or len(a) != 2:
        return 0
    has_d = len(inputs) > 5 and _shape(inputs[5]) is not None
    has_z = len(inputs) > 6 and _shape(inputs[6]) is not None
    return selective_scan_macs(u[0], u[1], a[1], u[2], with_D=has_d, with_z=has_z)


def _sdpa_macs(inputs, outputs) -> int:
    """``2·B·H·L_q·L_k·d`` (``q·kᵀ`` and ``attn·v``), for fused attention that survives."""
    q, k = _shape(inputs[0]), _shape(inputs[1])
    if not q or not k:
        return 0
    lead = int(math.prod(q[:-2]))
    return 2 * lead * q[-2] * k[-2] * q[-1]


HAND_COUNTED_OPS: dict[str, tuple[Callable, str]] = {
    "prim::PythonOp._SelectiveScanFn": (_selective_scan_macs, "Mamba selective scan: 9·B·L·D·N + 2·B·D·L "
                                        "(the Vim paper's count; dartok.mamba.selective_scan_macs)"),
    "aten::grid_sampler": (_grid_sampler_macs, "bilinear: 4 MACs per output value per channel (the 4 taps "
                           "weighted and summed; the per-point weights shared by the channels are not "
                           "counted); nearest 0, bicubic 16"),
    "aten::grid_sampler_2d": (_grid_sampler_macs, "as aten::grid_sampler"),
    "aten::upsample_bilinear2d": (_upsample_bilinear_macs, "4 MACs per output value per channel (fvcore's "
                                  "convention)"),
    "aten::_upsample_bilinear2d_aa": (_upsample_bilinear_aa_macs, "anti-aliased bilinear, separable: "
                                      "C·(H_in·W_out·t_w + H_out·W_out·t_h), t = ceil(2·max(1, in/out)) "
                                      "taps per axis"),
    "aten::baddbmm": (_baddbmm_macs, "as fvcore's bmm: B·n·k·m (DART's projection, one channel at a time)"),
    "aten::cumsum": (_cumsum_macs, "1 per element (one add)"),
    "aten::scatter_add": (_scatter_add_macs, "1 per scattered element (one add; the warp's interpolation "
                          "matrices are built this way)"),
    "aten::searchsorted": (_zero_macs, "0 (comparisons only)"),
    "aten::scaled_dot_product_attention": (_sdpa_macs, "2·B·H·L_q·L_k·d; only reached if a fused attention "
                                           "is left on"),
}
"""Ops counted by our own handles: ``op → (handle, convention)``. fvcore's built-in handles
count ``linear``/``addmm``/``matmul``/``mm``/``bmm``/``einsum``/convolutions as MACs and
layer/batch norms as a few per element; those are left as they are (the DeiT-Ti total of
1.258 GMACs, the paper's 1.26, includes its layer norms)."""


@contextlib.contextmanager
def unfused_attention(model: nn.Module):
    """Turn timm's fused attention off (globally and on every module), restore on exit.

    timm Attention modules read the global flag at construction into ``.fused_attn``; with
    it on, attention runs in ``F.scaled_dot_product_attention``, which fvcore cannot see.

    Yields:
        The number of modules whose ``fused_attn`` was switched off.
    """
    from timm.layers import config as timm_config

    saved_global = timm_config._USE_FUSED_ATTN
    saved = [(m, m.fused_attn) for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]
    try:
        timm_config.set_fused_attn(False)
        for m, _ in saved:
            m.fused_attn = False
        yield len(saved)
    finally:
        timm_config._USE_FUSED_ATTN = saved_global
        for m, value in saved:
            m.fused_attn = value


def count_params(model: nn.Module) -> tuple[int, int]:
    """``(total, trainable)`` parameter counts (shared parameters counted once)."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


@dataclass
class MacReport:
    """fvcore MAC count of one model on one input.

    Attributes:
        total: MACs per image (multiply-adds; fvcore's "flops").
        by_operator: MACs per op type (fvcore's names: ``linear``, ``matmul``, ``conv``, ...
            and the hand-counted ``aten::`` names stripped of the prefix).
        by_part: MACs of named parts (``tokenizer``, ``scorer``, ``scorer trunk``,
            ``backbone``...).
        tokenizer_by_operator: MACs per op inside the tokenizer without the scorer.
        unsupported: ops fvcore met without a handle (not counted): ``op → occurrences``.
        hand_counted: ops of :data:`HAND_COUNTED_OPS` met in the trace: ``op → MACs``
            (zero-cost ones such as ``searchsorted`` included).
        params, trainable_params: parameter counts.
        unfused_attention_modules: attention modules switched to the unfused path.
    """

    total: int
    by_operator: dict[str, int]
    by_part: dict[str, int]
    tokenizer_by_operator: dict[str, int]
    unsupported: dict[str, int]
    hand_counted: dict[str, int]
    params: int
    trainable_params: int
    unfused_attention_modules: int
    input_shape: list[int] = field(default_factory=list)

    @property
    def gmacs(self) -> float:
        """``total`` in GMACs (1e9)."""
        return self.total / 1e9


def _recording(handle: Callable, op: str, seen: Counter) -> Callable:
    def wrapped(inputs, outputs):
        seen[op] += 1
        return handle(inputs, outputs)

    return wrapped


def _op_key(name: str) -> str:
    return name.split("::", 1)[-1]


def _oracle_input(model: nn.Module, batch_size: int, device: torch.device):
    """For a DART model whose score map comes from the data (``score_source="oracle"``), a
    uniform one for the trace (the oracle's cost is the tokenizer without a scorer); else nothing."""
    import contextlib

    dart = getattr(model, "patch_embed", model)
    if getattr(dart, "score_source", "scorer") != "oracle":
        return contextlib.nullcontext()
    from ..scorer import uniform_pdf

    return dart.given_pdf(uniform_pdf(batch_size, dart.pdf_size(), device=device))


def count_macs(model: nn.Module, input_shape: Sequence[int], batch_size: int = 1) -> MacReport:
    """MACs per image of ``model`` on a ``C×H×W`` input, with fvcore (see module docs).

    The model is traced in eval mode on a random ``batch_size×C×H×W`` input (default one
    image), on its own device, with timm's fused attention off (restored afterwards) and
    the handles of :data:`HAND_COUNTED_OPS`. The result is divided by ``batch_size``. A
    DART model whose score map comes from the data (``score_source="oracle"``) is traced
    with a uniform one: its cost is the tokenizer's without a scorer.

    Args:
        model: any ``nn.Module`` taking one image batch (a DART model, a ViT, a bare
            :class:`~dartok.DART` wrapped to return a tensor...).
        input_shape: ``(C, H, W)``.
        batch_size: images in the traced batch.

    Returns:
        A :class:`MacReport`.
    """
    from fvcore.nn import FlopCountAnalysis

    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, *input_shape, generator=gen).to(device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with unfused_attention(model) as n_unfused, torch.no_grad(), warnings.catch_warnings(), \
                _oracle_input(model, batch_size, device):
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script inside the trace
            fca = FlopCountAnalysis(model, x)
            seen: Counter = Counter()
            fca.set_op_handle(**{op: _recording(h, op, seen) for op, (h, _) in HAND_COUNTED_OPS.items()})
            fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
            total = fca.total()
            by_op = fca.by_operator()
            by_module = fca.by_module()
            unsupported = dict(sorted(fca.unsupported_ops().items()))
            tok_ops: Counter = Counter()
            if "patch_embed" in by_module:
                tok_ops = Counter(fca.by_operator("patch_embed"))
                if "patch_embed.scorer" in by_module:
                    tok_ops.subtract(fca.by_operator("patch_embed.scorer"))
    finally:
        model.train(was_training)
    hand = {_op_key(op): int(by_op.get(_op_key(op), 0)) // batch_size for op in sorted(seen)}
    parts: dict[str, int] = {}
    if "patch_embed" in by_module:
        parts["tokenizer"] = by_module["patch_embed"]
        for key, label in (("patch_embed.scorer", "scorer"), ("patch_embed.scorer.trunk", "scorer trunk"),
                           ("patch_embed.scorer.head", "scorer head")):
            if key in by_module:
                parts[label] = by_module[key]
        if "scorer" in parts:
            parts["tokenizer without scorer"] = parts["tokenizer"] - parts["scorer"]
        parts["backbone"] = total - parts["tokenizer"]
    params, trainable = count_params(model)
    return MacReport(
        total=int(total) // batch_size,
        by_operator={k: int(v) // batch_size for k, v in sorted(by_op.items())},
        by_part={k: int(v) // batch_size for k, v in parts.items()},
        tokenizer_by_operator={k: int(v) // batch_size for k, v in sorted(tok_ops.items()) if v},
        unsupported=unsupported,
        hand_counted=hand,
        params=params,
        trainable_params=trainable,
        unfused_attention_modules=n_unfused,
        input_shape=list(input_shape),
    )
