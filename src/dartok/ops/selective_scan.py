"""The selective scan of Mamba in plain PyTorch, beside its reference and the CUDA dispatch.

Port of ``mamba_ssm`` 1.1.1's scan (``mamba_ssm.ops.selective_scan_interface``) as Vim
(hustvl/Vim, ``mamba-1p1p1``) and VideoMamba (OpenGVLab/VideoMamba) use it; the modules
built on it (:class:`~dartok.layers.mamba.Mamba`, ``Block``, ``RMSNorm``) live in
:mod:`dartok.layers.mamba`. Formerly the first half of ``dartok.mamba`` (still importable there):

- :func:`selective_scan_ref`: the sequential reference scan (``mamba_ssm.ops.
  selective_scan_interface.selective_scan_ref``), one Python step per time step.
- :func:`selective_scan`: the same function, computed chunk by chunk in closed form (see
  below) with a hand-written backward; dispatches to ``mamba_ssm``'s CUDA kernel
  (``selective_scan_fn``) when that is installed and the tensors are on a GPU.
- :func:`selective_scan_macs`: the multiply-accumulate count of one scan, as the Vim paper
  counts it, for FLOP tables (fvcore cannot see inside the scan).

The recurrence (per batch b, channel d, state n; ``A ≤ 0``, ``Δ > 0`` in Mamba):

    h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t,   y_t = Σ_n C_t h_t + D u_t,   out = y · silu(z)

Chunked closed form. With ``Λ_t = Σ_{k≤t} Δ_k`` the decay from step s to step t is
``exp(A (Λ_t − Λ_s))``, so inside a chunk that starts at step c,

    h_t = E_t · (exp(Δ_c A) h_{c-1} / E_c + Σ_{c≤s≤t} b_s / E_s),   E_t = exp(A (Λ_t − Λ_ref)),

with ``Λ_ref`` the middle of Λ's range over the chunk: one ``cumsum`` over the chunk
instead of one step per token. Every factor is exact as long as ``exp`` stays in range:
the sequence is cut into ``n`` equal chunks of ``T ≤ chunk_size`` steps (zero-padded at the
end, chosen from the data on every call) such that the log-decay inside every chunk spans
at most ``2·budget`` for every (b, d, n), so every exponent is at most ``budget`` (50 in
float32, 500 in float64). The terms ``exp(A(Λ_t − Λ_s)) b_s`` are then products of two
factors of magnitude ≤ ``e^budget``: the rounding error of the sum is that of summing the
exact terms, as in the sequential scan. All chunks are computed at once (one ``exp``, one
``cumsum``); only the states carried from chunk to chunk (``B×D×N`` each) are computed
sequentially. The backward pass runs the same chunked scan backwards in time for the
adjoint state. On CPU this is ~1.5-2.5× the reference's speed forward and ~5-70× for
forward + backward (which the reference leaves to autograd through L steps).

Under graph capture (``torch.export``, ``torch.compile``, ONNX export) the chunk
layout cannot be chosen from the data; :func:`selective_scan` then computes the same scan
in a static form whose exponents never exceed those of the sequential scan
(:func:`selective_scan_static`, the segment-sum form of Mamba-2's SSD).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from .._compat import is_tracing

__all__ = [
    "cuda_kernel_available", "selective_scan", "selective_scan_macs", "selective_scan_ref", "selective_scan_static",
    "use_cuda_kernel",
]

# --------------------------------------------------------------------------- dispatch

_USE_CUDA_KERNEL = True
_CUDA_SCAN: list = []  # [selective_scan_fn or None], filled on first use


def _cuda_selective_scan_fn():
    """``mamba_ssm``'s ``selective_scan_fn`` if it can be imported, else ``None`` (cached)."""
    if not _CUDA_SCAN:
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        except Exception:  # ImportError, or a broken CUDA build raising at import time
            selective_scan_fn = None
        _CUDA_SCAN.append(selective_scan_fn)
    return _CUDA_SCAN[0]


def cuda_kernel_available() -> bool:
    """True if ``mamba_ssm``'s CUDA selective-scan kernel can be imported."""
    return _cuda_selective_scan_fn() is not None


def use_cuda_kernel(enabled: bool) -> bool:
    """Allow (True, the default) or forbid ``backend="auto"`` to use ``mamba_ssm``'s CUDA kernel.

    Returns:
        The previous setting, so a caller can restore it.
    """
    global _USE_CUDA_KERNEL
    previous = _USE_CUDA_KERNEL
    _USE_CUDA_KERNEL = bool(enabled)
    return previous


# --------------------------------------------------------------------------- checks

_BACKENDS = ("auto", "torch", "ref", "cuda")


def _shape(t) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def _check_scan_args(u, delta, A, B, C, D, z, delta_bias) -> None:
    """Validate the arguments of a selective scan (shapes as in ``mamba_ssm``).

    Raises:
        ValueError: a tensor of the wrong rank, shape or dtype, naming it and what is allowed.
    """
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            got = f"{_shape(t)} of dtype {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a floating-point tensor, got {got}")
    if u.dim() != 3:
        raise ValueError(f"u must be batch×dim×length (B×D×L), got shape {_shape(u)}")
    batch, dim, length = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta must have u's shape {_shape(u)}, got {_shape(delta)}")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"A must be dim×d_state ({dim}×N), got {_shape(A)}")
    if A.is_complex():
        raise ValueError("complex A is not supported (Vim and VideoMamba use real A)")
    dstate = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.shape != (batch, dstate, length):
            raise ValueError(f"{name} must be input-dependent, batch×d_state×length = ({batch}, {dstate}, {length}), "
                             f"got {_shape(t)}")
    for name, t, shape in (("D", D, (dim,)), ("z", z, tuple(u.shape)), ("delta_bias", delta_bias, (dim,))):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or tuple(t.shape) != shape:
            raise ValueError(f"{name} must be None or a floating-point tensor of shape {shape}, got {_shape(t)}")


def _work_dtype(*tensors) -> torch.dtype:
    """float64 if any input is float64, else float32 (half precision is computed in float32)."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


# --------------------------------------------------------------------------- reference scan

def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Sequential selective scan, one step per token: the reference for :func:`selective_scan`.

    Same semantics as ``mamba_ssm.ops.selective_scan_interface.selective_scan_ref``
    (hustvl/Vim ``mamba-1p1p1``) for real ``A`` and input-dependent ``B``/``C``; autograd
    differentiates it. The math runs in float32 (float64 if an input is float64: mamba_ssm
    always uses float32).

    Args:
        u: ``B×D×L`` input.
        delta: ``B×D×L`` step sizes (before ``delta_bias`` / softplus).
        A: ``D×N`` state matrix (diagonal per channel; negative in Mamba).
        B, C: ``B×N×L`` input-dependent input / output projections.
        D: optional ``D`` skip weights. z: optional ``B×D×L`` gate (``out · silu(z)``).
        delta_bias: optional ``D`` bias added to ``delta``.
        delta_softplus: apply softplus to ``delta + delta_bias``.

    Returns:
        ``B×D×L`` output in ``u``'s dtype.

    Raises:
        ValueError: shapes or dtypes that do not fit (see :func:`selective_scan`).
    """
    _check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    work = _work_dtype(u, delta, A, B, C, D, z, delta_bias)
    dtype_in = u.dtype
    u, delta, A, B, C = (t.to(work) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].to(work)
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, dstate = u.shape[0], A.shape[0], A.shape[1]
    x = A.new_zeros((batch, dim, dstate))
    delta_a = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    delta_b_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    ys = []
    for i in range(u.shape[2]):
        x = delta_a[:, :, i] * x + delta_b_u[:, :, i]
        ys.append(torch.einsum("bdn,bn->bd", x, C[:, :, i]))
    y = torch.stack(ys, dim=2)
    out = y if D is None else y + u * D.to(work)[:, None]
    if z is not None:
        out = out * F.silu(z.to(work))
    return out.to(dtype_in)


# --------------------------------------------------------------------------- chunked scan

_BUDGET = {torch.float32: 50.0, torch.float64: 500.0}
"""Largest exponent |A·(Λ_t − Λ_ref)| inside one chunk, per working dtype (a chunk's
log-decay span is at most twice this): e^50 ≈ 5e21 leaves float32 (max 3e38, smallest
normal 1e-38) a margin of 1e16 for the magnitude of the inputs."""

_BLOCK_ELEMENTS = 1 << 20
"""Target size (elements) of one batch block's ``B×D×N×L`` tensors: the scan runs block by
block over the batch so its working set stays in cache (about 20% faster on CPU at Vim's
sizes than one pass over the whole batch)."""


def _chunk_layout(dt: torch.Tensor, A: torch.Tensor, chunk_size: int) -> tuple[int, int]:
    """``(n, T)``: the fewest equal chunks of ``T ≤ chunk_size`` steps (``n·T ≥ L``) keeping exponents in range.

    ``rate_k = max_{b,d,n} |Δ_k A|`` bounds the log-decay of step k. Chunk
    ``[jT, (j+1)T)`` spans ``Σ_{jT<k<(j+1)T} rate_k`` (its first step's decay multiplies only
    the state carried in); every span must stay within ``2·budget``. ``T = 1`` always
    qualifies, so this terminates; the sequence is padded to ``n·T`` steps.

    Raises:
        ValueError: ``dt`` or ``A`` hold NaN or Inf.
    """
    length = dt.shape[-1]
    rate = (dt.abs().amax(0) * A.abs().amax(1, keepdim=True)).amax(0).double()  # L
    if not bool(torch.isfinite(rate).all()):
        raise ValueError("selective scan: delta (after bias/softplus) or A contains NaN or Inf")
    limit = 2 * _BUDGET[dt.dtype]
    for size in range(min(chunk_size, length), 1, -1):
        n = -(-length // size)
        windows = F.pad(rate, (0, n * size - length)).view(n, size)
        if float(windows[:, 1:].sum(1).max()) <= limit:
            return n, size
    return length, 1


def _linear_scan(dt: torch.Tensor, A: torch.Tensor, b: torch.Tensor, layout: tuple[int, int],
                 out: torch.Tensor | None = None, scratch: torch.Tensor | None = None) -> torch.Tensor:
    """All states of ``h_t = exp(dt_t·A) h_{t-1} + b_t`` (``h_{-1} = 0``) in ``n`` equal chunks of ``T`` steps.

    Inside chunk j: ``h_t = E_t · (Q_j + Σ_{jT≤s≤t} b_s / E_s)`` with
    ``E_t = exp(A (Λ_t − Λ_ref))``, ``Λ = cumsum(dt)``, ``Λ_ref`` the middle of Λ's range over
    the chunk (every exponent is at most half the chunk's span, see :func:`_chunk_layout`),
    and ``Q_j = exp(dt_{jT} A) h_{jT−1} / E_{jT}`` the state carried in. All chunks run at
    once (one ``exp``, one ``cumsum`` over a ``…×n×T`` view); only the carried states
    ``h_{jT−1}`` (``B×D×N`` each) are computed chunk after chunk. Time is the last,
    contiguous dimension: PyTorch's CPU ``cumsum`` is 10× faster there than along an outer
    dimension.

    Args:
        dt: ``B×D×L`` step sizes with ``L = n·T``; A: ``D×N``.
        b: ``B×D×N×L`` contiguous inputs, **overwritten** (used as scratch).
        layout: ``(n, T)`` from :func:`_chunk_layout`.
        out: optional contiguous ``B×D×N×L`` tensor to write ``h`` into.
        scratch: optional contiguous ``B×D×N×L`` buffer for ``E`` (overwritten).

    Returns:
        ``B×D×N×L`` states ``h`` (``out`` if given).
    """
    n, size = layout
    batch, dim, dstate, _ = b.shape
    lam = torch.cumsum(dt, dim=-1).view(batch, dim, 1, n, size)
    ref = (lam.amax(-1, keepdim=True) + lam.amin(-1, keepdim=True)) / 2
    e = None if scratch is None else scratch.view(batch, dim, dstate, n, size)
    e = torch.mul(lam - ref, A.view(1, dim, dstate, 1, 1), out=e).exp_()  # E, B×D×N×n×T
    h = torch.empty_like(b) if out is None else out
    p = torch.cumsum(b.view_as(e).div_(e), dim=-1, out=h.view_as(e))
    if n > 1:  # carry the states across chunks: small B×D×N×n tensors, one chunk at a time
        decay_in = torch.exp(dt.view(batch, dim, 1, n, size)[..., 0] * A.unsqueeze(-1))  # exp(Δ_{jT} A)
        e_first, e_last, p_last = e[..., 0], e[..., -1], p[..., -1]
        carry = torch.zeros_like(p_last)
        for j in range(1, n):
            state = e_last[..., j - 1] * (p_last[..., j - 1] + carry[..., j - 1])  # h at the end of chunk j−1
            carry[..., j] = decay_in[..., j] * state / e_first[..., j]
        p += carry.unsqueeze(-1)
    p.mul_(e)
    return h


def _outer(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` ``B×D×L`` ⊗ ``w`` ``B×N×L`` → ``B×D×N×L`` (``x_bdl · w_bnl``), into ``out`` if given."""
    return torch.mul(x.unsqueeze(2), w.unsqueeze(1), out=out)


def _scan_forward(dt, x, A, B, C, layout, h, bufs):
    """States (written into ``h``, ``B×D×N×L``) and ``Σ_n C·h`` (``B×D×L``) of one batch block.

    ``bufs``: two scratch buffers shaped like ``h``.
    """
    buf = _outer(x, B, out=bufs[0])
    _linear_scan(dt, A, buf, layout, out=h, scratch=bufs[1])
    return torch.mul(h, C.unsqueeze(1), out=buf).sum(2)


def _scan_backward(dt, x, u, A, B, C, h, dy, layout, bufs):
    """Gradients of ``Σ dy·(Σ_n C·h)`` for one batch block: ``(du, dΔ, dA, dB, dC)``.

    ``du`` and ``dΔ`` are the parts through ``h`` only (not the ``D·u`` skip or softplus).
    ``bufs``: three scratch buffers shaped like ``h``.
    """
    buf, scratch, g_rev = bufs
    dC = torch.mul(h, dy.unsqueeze(2), out=buf).sum(1)  # Σ_d dy·h, B×N×L
    # adjoint g_t = dL/dh_t = C_t dy_t + exp(Δ_{t+1}A) g_{t+1}: the same scan backwards in time
    # (the same chunk layout fits: reversed, chunk j's span is the forward chunk n−1−j's)
    dt_rev = torch.cat([torch.zeros_like(dt[..., :1]), dt.flip(-1)[..., :-1]], dim=-1)
    _linear_scan(dt_rev, A, _outer(dy.flip(-1), C.flip(-1), out=buf), layout, out=g_rev, scratch=scratch)
    g = g_rev.flip(-1)
    g_b = torch.mul(g, B.unsqueeze(1), out=buf).sum(2)  # Σ_n g·B, B×D×L
    dB = torch.mul(g, x.unsqueeze(2), out=buf).sum(1)  # Σ_d g·Δu, B×N×L
    # ρ_t = dL/d(log a_t) = g_t · exp(Δ_t A) h_{t-1} (as a product: h_t − Δ_t B_t u_t would
    # cancel where the decay is strong)
    rho = buf
    torch.mul(dt[..., 1:].unsqueeze(2), A.unsqueeze(-1), out=rho[..., 1:]).exp_().mul_(h[..., :-1]).mul_(g[..., 1:])
    rho[..., 0] = 0
    dA = torch.matmul(rho, dt.unsqueeze(-1)).sum(0).squeeze(-1)  # Σ_{b,l} ρ·Δ, D×N
    ddt = torch.matmul(A.unsqueeze(1), rho).squeeze(2) + g_b * u  # Σ_n ρ·A + u·Σ_n g·B
    return g_b * dt, ddt, dA, dB, dC


def _batch_blocks(h: torch.Tensor, buffers: int) -> tuple[list[slice], list[torch.Tensor]]:
    """Batch slices of about :data:`_BLOCK_ELEMENTS` elements each, and ``buffers`` scratch
    tensors of one block's shape, allocated once and reused by every block."""
    batch = h.shape[0]
    rows = min(batch, max(1, _BLOCK_ELEMENTS // max(h[0].numel(), 1)))
    work = [h.new_empty(rows, *h.shape[1:]) for _ in range(buffers)]
    return [slice(i, min(i + rows, batch)) for i in range(0, batch, rows)], work


def _pad_time(t: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad the last (time) dimension to ``length`` (no copy if it already fits)."""
    return t if t.shape[-1] == length else F.pad(t, (0, length - t.shape[-1]))


class _SelectiveScanFn(torch.autograd.Function):
    """Chunked selective scan with an analytic backward (adjoint scan run backwards in time).

    Works in the ``B×D×N×L`` layout, batch block by batch block, with in-place ops and
    reused buffers (on CPU a fresh 30 MB tensor costs 2-4× an in-place pass over it). The
    sequence is zero-padded to ``n·T`` steps (padded steps have Δ = 0 and no input, so they
    change nothing). Saves the inputs and the states ``h`` (``B×D×N×n·T``, working dtype).
    """

    @staticmethod
    def _prepare(u, delta, A, B, C, delta_bias, delta_softplus, work):
        """Working-dtype ``u``, ``Δ`` (bias, softplus), ``x = Δ·u``, ``A``, ``B``, ``C``."""
        # time-contiguous copies: the B×D×N×L products below inherit this layout, and CPU
        # cumsum / exp are several times slower on a strided time axis
        u, dt, A, B, C = (t.to(work).contiguous() for t in (u, delta, A, B, C))
        if delta_bias is not None:
            dt = dt + delta_bias.to(work).unsqueeze(-1)
        if delta_softplus:
            dt = F.softplus(dt)
        return u, dt, dt * u, A, B, C

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size):
        work = _work_dtype(u, delta, A, B, C, D, z, delta_bias)
        batch, dim, length = u.shape
        uw, dt, x, Aw, Bw, Cw = _SelectiveScanFn._prepare(u, delta, A, B, C, delta_bias, delta_softplus, work)
        layout = _chunk_layout(dt, Aw, chunk_size)
        padded = layout[0] * layout[1]
        uw, dt, x, Bw, Cw = (_pad_time(t, padded) for t in (uw, dt, x, Bw, Cw))
        h = uw.new_empty(batch, dim, A.shape[1], padded)
        y = torch.empty_like(uw)
        blocks, bufs = _batch_blocks(h, 2)
        for sl in blocks:
            rows = sl.stop - sl.start
            y[sl] = _scan_forward(dt[sl], x[sl], Aw, Bw[sl], Cw[sl], layout, h[sl], [w[:rows] for w in bufs])
        y = y[..., :length]
        if D is not None:
            y = y + uw[..., :length] * D.to(work).unsqueeze(-1)
        out = y if z is None else y * F.silu(z.to(work))
        ctx.delta_softplus = delta_softplus
        ctx.layout = layout
        ctx.work = work
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, h, y if z is not None else None)
        return out.to(u.dtype)

    @staticmethod
    def backward(ctx, dout):
        u, delta, A, B, C, D, z, delta_bias, h, y = ctx.saved_tensors
        work, layout = ctx.work, ctx.layout
        length, padded = u.shape[-1], h.shape[-1]
        uw, dt, x, Aw, Bw, Cw = (
            _pad_time(t, padded) if t.dim() == 3 else t
            for t in _SelectiveScanFn._prepare(u, delta, A, B, C, delta_bias, ctx.delta_softplus, work))
        dy = dout.to(work)
        dz = None
        if z is not None:
            zw = z.to(work)
            sig = torch.sigmoid(zw)
            dz = dy * y * sig * (1 + zw * (1 - sig))
            dy = dy * zw * sig
        dy_p = _pad_time(dy.contiguous(), padded)
        du, ddt = torch.empty_like(uw), torch.empty_like(uw)
        dB, dC = torch.empty_like(Bw), torch.empty_like(Cw)
        dA = torch.zeros_like(Aw)
        blocks, bufs = _batch_blocks(h, 3)
        for sl in blocks:
            rows = sl.stop - sl.start
            du[sl], ddt[sl], dA_block, dB[sl], dC[sl] = _scan_backward(
                dt[sl], x[sl], uw[sl], Aw, Bw[sl], Cw[sl], h[sl], dy_p[sl], layout, [w[:rows] for w in bufs])
            dA += dA_block
        du, ddt, dB, dC, uw = (t[..., :length] for t in (du, ddt, dB, dC, uw))
        dD = None
        if D is not None:
            dD = (dy * uw).sum((0, 2))
            du = du + dy * D.to(work).unsqueeze(-1)
        if ctx.delta_softplus:
            pre = delta.to(work)
            if delta_bias is not None:
                pre = pre + delta_bias.to(work).unsqueeze(-1)
            ddt = ddt * torch.sigmoid(pre)
        ddelta_bias = ddt.sum((0, 2)) if delta_bias is not None else None

        def back(grad, like):
            return None if grad is None or like is None else grad.to(like.dtype)

        return (back(du, u), back(ddt, delta), back(dA, A), back(dB, B), back(dC, C), back(dD, D),
                back(dz, z), back(ddelta_bias, delta_bias), None, None)


_STATIC_CHUNK = 8
"""Chunk length T of :func:`selective_scan_static`: its decay tensor is ``B×D×N×L×T``, its
chunk-level one ``B×D×N×(L/T)²`` (8: the fastest for Vim's L = 197 on CPU)."""


def _tril_mask(size: int, device) -> torch.Tensor:
    return torch.ones(size, size, dtype=torch.bool, device=device).tril()


def _segment_decay(log_decay: torch.Tensor) -> torch.Tensor:
    """``exp(Σ_{s<m≤t} a_m)`` for ``t ≥ s`` and 0 above the diagonal: ``(..., T) → (..., T, T)``.

    From the inclusive cumulative sum ``c``: ``exp(c_t − c_s)``, masked *before* the ``exp`` so
    no entry above the diagonal can overflow (or give NaN gradients).
    """
    cum = torch.cumsum(log_decay, dim=-1)
    seg = cum.unsqueeze(-1) - cum.unsqueeze(-2)  # (..., t, s); in place below: one large tensor
    mask = _tril_mask(log_decay.shape[-1], log_decay.device)
    return seg.masked_fill_(~mask, float("-inf")).exp_()


def selective_scan_static(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          chunk_size: int = _STATIC_CHUNK):
    """The selective scan with a layout fixed by the shapes alone: what graph capture records.

    :func:`selective_scan` chooses its chunks from the data (:func:`_chunk_layout`), which
    ``torch.export`` and ``torch.compile(fullgraph=True)`` cannot follow. This form (the
    segment sums of Mamba-2's SSD, for Mamba-1's per-state ``A``) needs no such choice:
    the sequence is cut into chunks of ``T = min(chunk_size, L)`` steps; inside a chunk
    ``h_t = Σ_{s≤t} exp(Σ_{s<m≤t} Δ_m A) Δ_s B_s u_s`` is one masked ``T×T`` product, and the
    states carried from chunk to chunk are one masked product over the chunks. Every
    exponent is a sum of ``Δ·A`` terms the sequential scan multiplies too (≤ 0 for Mamba's
    ``A < 0``, ``Δ > 0``), so nothing overflows where the sequential scan does not. Plain
    differentiable tensor ops: autograd gives the backward.

    Cost: memory ``B×D×N×L×T`` (vs ``B×D×N×L`` for the eager scan), so it is used only
    under graph capture (:func:`dartok._compat.is_tracing`).

    Args and returns as :func:`selective_scan_ref`; ``chunk_size`` is T (≥ 1).

    Raises:
        ValueError: shapes or dtypes that do not fit, or ``chunk_size < 1``.
    """
    _check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer ≥ 1, got {chunk_size!r}")
    work = _work_dtype(u, delta, A, B, C, D, z, delta_bias)
    dtype_in = u.dtype
    u, dt, A, B, C = (t.to(work) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        dt = dt + delta_bias.to(work).unsqueeze(-1)
    if delta_softplus:
        dt = F.softplus(dt)
    batch, dim, length = u.shape
    dstate = A.shape[1]
    size = min(chunk_size, length)
    n = (length + size - 1) // size  # not -(-length // size): ONNX's Div truncates a traced negative floor division
    padded = n * size
    # padded steps: Δ = 0 (no decay, no input); they come after every real step
    dt_p, x_p, B_p, C_p = (_pad_time(t, padded) for t in (dt, dt * u, B, C))
    log_decay = (dt_p.unsqueeze(2) * A.view(1, dim, dstate, 1)).view(batch, dim, dstate, n, size)
    inputs = (x_p.unsqueeze(2) * B_p.unsqueeze(1)).view(batch, dim, dstate, n, size)  # Δ_s B_s u_s
    local = torch.einsum("...ts,...s->...t", _segment_decay(log_decay), inputs)  # states from inside the chunk
    # state at the end of each chunk, all chunks at once: S_j = Σ_{k≤j} exp(Σ_{k<m≤j} total_m) local_k,end
    ends = torch.einsum("...jk,...k->...j", _segment_decay(log_decay.sum(-1)), local[..., -1])  # B×D×N×n
    carried = torch.cat([torch.zeros_like(ends[..., :1]), ends[..., :-1]], dim=-1)  # the state entering chunk j
    h = local + torch.exp(torch.cumsum(log_decay, dim=-1)) * carried.unsqueeze(-1)
    y = (h * C_p.view(batch, 1, dstate, n, size)).sum(2).reshape(batch, dim, padded)[..., :length]
    if D is not None:
        y = y + u * D.to(work).unsqueeze(-1)
    if z is not None:
        y = y * F.silu(z.to(work))
    return y.to(dtype_in)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   backend: str = "auto", chunk_size: int = 64):
    """Selective scan (Mamba S6), same signature and result as :func:`selective_scan_ref`.

    The PyTorch path computes the scan chunk by chunk in closed form (module docstring),
    vectorised inside a chunk and sequential only across chunks, with a hand-written
    backward; it runs on any device. It matches :func:`selective_scan_ref` to float
    rounding in values and gradients for any real ``A`` and ``delta``, provided the true
    result is finite.

    Args:
        u, delta, A, B, C, D, z, delta_bias, delta_softplus: as in :func:`selective_scan_ref`
            (``u``, ``delta``, ``z``: ``B×D×L``; ``A``: ``D×N``; ``B``, ``C``: ``B×N×L``;
            ``D``, ``delta_bias``: ``D``).
        backend: ``"auto"`` (``mamba_ssm``'s CUDA kernel when it is installed, the tensors
            are on a GPU and :func:`use_cuda_kernel` allows it; else ``"torch"``),
            ``"torch"`` (chunked), ``"ref"`` (sequential reference), ``"cuda"`` (the kernel).
        chunk_size: longest chunk in steps for ``"torch"`` (≥ 1). Chunks are shorter where the
            decay inside a chunk would leave the float range (module docstring). Under graph
            capture ``"torch"`` runs :func:`selective_scan_static` (chunks of 16 steps).

    Returns:
        ``B×D×L`` output in ``u``'s dtype.

    Raises:
        ValueError: bad shapes/dtypes, an unknown backend, ``chunk_size < 1``, or NaN/Inf in
            ``delta``/``A`` (``"torch"``).
        RuntimeError: ``backend="cuda"`` without ``mamba_ssm`` or with CPU tensors.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer ≥ 1, got {chunk_size!r}")
    _check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    if backend == "auto":
        backend = "cuda" if (_USE_CUDA_KERNEL and u.is_cuda and cuda_kernel_available()) else "torch"
    if backend == "ref":
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if backend == "cuda":
        fn = _cuda_selective_scan_fn()
        if fn is None or not u.is_cuda:
            raise RuntimeError("backend='cuda' needs mamba_ssm installed and CUDA tensors "
                               f"(mamba_ssm importable: {fn is not None}, device: {u.device})")
        return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if is_tracing(u):  # the chunk layout below is chosen from the data
        return selective_scan_static(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return _SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), chunk_size)


def selective_scan_macs(batch: int, d_inner: int, d_state: int, length: int,
                        with_D: bool = True, with_z: bool = True) -> int:
    """Multiply-accumulates of one selective scan, counted as the Vim paper counts them.

    ``9·B·L·D·N`` for the scan itself (discretisation ``exp(ΔA)`` and ``ΔBu``, the
    recurrence and the ``C`` readout; the count Tri Dao gives in state-spaces/mamba issue
    #110 and VMamba's ``flops_selective_scan_fn`` uses), plus ``B·D·L`` for the ``D·u`` skip
    and ``B·D·L`` for the ``silu(z)`` gate.

    With fvcore's count of ``patch_embed``, ``in_proj``, ``out_proj`` and ``head`` (the
    ops it sees outside ``mamba_ssm``'s fused kernel) plus this count for the two scans of
    every layer, Vim-Ti at 224 is 1.60 GMACs and Vim-S 5.30, the numbers in the Vim and
    DART papers. Our PyTorch mixer also shows fvcore ``conv1d``, ``x_proj`` and
    ``dt_proj`` (+0.20 G for Vim-Ti), which the papers' counts leave out. VideoMamba's
    reported 1.08 G for VideoMamba-Ti at 224 counts no scan at all.

    Args:
        batch, d_inner, d_state, length: B, D (``expand·d_model``), N, L; all ≥ 0.
        with_D, with_z: count the skip and the gate.

    Returns:
        The count (an int).

    Raises:
        ValueError: a negative size.
    """
    for name, v in (("batch", batch), ("d_inner", d_inner), ("d_state", d_state), ("length", length)):
        if not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be a non-negative int, got {v!r}")
    return batch * length * d_inner * (9 * d_state + int(with_D) + int(with_z))
