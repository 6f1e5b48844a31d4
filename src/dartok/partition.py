"""Differentiable quantile partition of a 2-D score map into boxes of equal mass.

Pure functions, batched over samples, bands and tokens (no Python loop over any of them).
The method is docs/method.md §2 / paper §3.2 ("tiles on a wall"):

1. the pdf on an ``h×w`` grid of equal cells is a piecewise-constant density on the
   unit square; its y-marginal gives band boundaries at quantiles (paper Eq. 1);
2. each band's x-density is the integral over y of the pdf inside the band, a linear
   combination of grid rows weighted by their fractional overlap with the band;
3. each band is cut at quantiles of its own x-density.

Every box holds exactly ``1/N`` of the (alpha-mixed) mass, boxes tile ``[0,1]²`` with no
overlap, and no box straddles two bands. Boxes come in band-major order (band by band,
top to bottom, left to right inside a band), the scan order Vim expects.

Coordinates: a box is ``(x0, y0, x1, y1)`` in ``[0, 1]``, x along the image width.
"""
from __future__ import annotations

import math

import torch

from ._compat import is_tracing

__all__ = [
    "DEFAULT_ALPHA",
    "PARTITIONS",
    "band_layout",
    "cuts_to_boxes",
    "grid_cuts",
    "grid_shape",
    "interval_overlap",
    "mix_uniform",
    "normalize_pdf",
    "partition_pdf",
    "quantile_1d",
    "quantile_boxes",
    "unmix_uniform",
    "work_dtype",
]

PARTITIONS = ("bands", "grid")
"""Partition modes (docs/method.md §2, §12): ``"bands"``, the paper's irregular partition (every
box holds 1/N of the mass); ``"grid"``, the non-uniform *regular* grid of paper App. C (y-cuts
from the y-marginal, x-cuts from the x-marginal; every row and every column holds an equal share)."""

DEFAULT_ALPHA = 0.1
"""Default weight of the uniform density mixed into the pdf (docs/method.md §2, "Minimum and
maximum box size"). With ``alpha = 0.1`` every box covers at most ``1/(0.1·N)`` of the
image area, i.e. ten times the area of a uniform-grid box."""


def band_layout(num_tokens: int, bands: int | None = None) -> tuple[int, ...]:
    """Number of tokens in each band for a token budget (docs/method.md §2 "Budgets").

    Args:
        num_tokens: N ≥ 1, the total number of boxes.
        bands: R, the number of bands (rows). ``None`` → ``round(√N)``. 1 ≤ R ≤ N.

    Returns:
        Tuple of R ints ``C_a`` summing to N and differing by at most one, spread evenly
        (``C_a = ⌊(a+1)N/R⌋ − ⌊aN/R⌋``). N = R·C gives the plain R×C grid; e.g. 392 with
        R = 20 gives 12 bands of 20 and 8 of 19.

    Raises:
        ValueError: N < 1, R < 1 or R > N, or non-integer arguments.
    """
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
        raise ValueError(f"num_tokens must be an integer >= 1, got {num_tokens!r}")
    if bands is None:
        bands = max(1, round(math.sqrt(num_tokens)))
    if isinstance(bands, bool) or not isinstance(bands, int) or not 1 <= bands <= num_tokens:
        raise ValueError(
            f"bands must be an integer in [1, num_tokens={num_tokens}], got {bands!r} "
            "(a band holds at least one token)"
        )
    return tuple((a + 1) * num_tokens // bands - a * num_tokens // bands for a in range(bands))


def _layout_indices(counts: tuple[int, ...]) -> tuple[list[int], int]:
    """Flat indices of the valid (band, column) slots in an ``R × max(C_a)`` array (microseconds:
    not cached, so ``torch.compile`` traces it without a cache wrapper to distrust)."""
    cmax = max(counts)
    idx = [a * cmax + k for a, c in enumerate(counts) for k in range(c)]
    return idx, cmax


def interval_overlap(lo: torch.Tensor, hi: torch.Tensor, n: int) -> torch.Tensor:
    """Length of overlap of intervals ``[lo, hi]`` with the n equal cells of ``[0, 1]``.

    Args:
        lo, hi: tensors of the same shape ``(...)``, values in [0, 1], ``lo <= hi``.
        n: number of cells; cell i is ``[i/n, (i+1)/n]``.

    Returns:
        ``(..., n)`` tensor, the overlap of each interval with each cell, in units of
        the cell width (so each entry is in [0, 1] and a row sums to ``n·(hi − lo)``).
        Piecewise linear, hence differentiable almost everywhere in ``lo`` and ``hi``.
    """
    edges = torch.arange(n + 1, device=lo.device, dtype=lo.dtype) / n
    left = torch.maximum(lo.unsqueeze(-1), edges[:-1])
    right = torch.minimum(hi.unsqueeze(-1), edges[1:])
    return (right - left).clamp_min(0) * n


def quantile_1d(pdf: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Positions of given cumulative masses under a piecewise-constant density (paper Eq. 1).

    The density is ``pdf[..., i]`` on cell ``[i/n, (i+1)/n]`` (mass per cell, not per unit
    length), its CDF is piecewise linear with knots ``C_k = Σ_{i<k} pdf_i``. For each
    target ``q`` the cell k with ``C_k ≤ q < C_{k+1}`` is found with ``searchsorted`` (no
    gradient; a knot count under graph capture, which ONNX can express) and
    ``x = (k + (q − C_k)/pdf_k)/n``; ``C_k`` and ``pdf_k`` (and q) carry the gradient.

    Args:
        pdf: ``(..., n)`` non-negative masses (need not sum to 1).
        q: ``(..., m)`` target cumulative masses in ``[0, Σ pdf]``, same leading dims.

    Returns:
        ``(..., m)`` positions in [0, 1]. Targets that fall on a run of zero-mass cells
        resolve to the left end of the next cell with mass.

    The in-cell offset ``t = (q − C_k)/p_k`` is clamped to [0, 1] in value only: its
    gradient passes straight through. Rounding puts ``t`` a few ulps outside [0, 1]
    whenever a quantile falls exactly on a cell edge (every uniform or near-uniform pdf,
    which is where a scorer starts); a plain clamp would give that cut a zero gradient
    (docs/method.md §7).
    """
    n = pdf.shape[-1]
    cdf = torch.cumsum(pdf, dim=-1)  # C_{k+1}, (..., n)
    with torch.no_grad():
        if is_tracing(cdf):  # ONNX has no searchsorted: count the knots at or below q (the same
            # for the sorted cdf, a cumsum of non-negative masses; n and the targets are few)
            k = (cdf.detach().unsqueeze(-2) <= q.detach().unsqueeze(-1)).sum(-1)
        else:
            k = torch.searchsorted(cdf.detach().contiguous(), q.detach().contiguous(), right=True)
        k = k.clamp_(max=n - 1)
    p_k = torch.gather(pdf, -1, k)
    c_k = torch.gather(cdf, -1, k) - p_k  # C_k = C_{k+1} − p_k
    safe = p_k > 0
    t = torch.where(safe, (q - c_k) / torch.where(safe, p_k, torch.ones_like(p_k)), torch.zeros_like(p_k))
    t = t + (t.clamp(0.0, 1.0) - t).detach()  # clamped value, straight-through gradient
    return (k.to(pdf.dtype) + t) / n


def normalize_pdf(pdf: torch.Tensor) -> torch.Tensor:
    """Validate a score map and scale each sample to sum to 1, in at least float32.

    The pdf is promoted to at least float32 first (a float16 or bfloat16 map whose sum
    exceeds the format's range, or whose rounding would move the cuts, is normalised
    exactly), and each sample is divided by its maximum before it is summed, so no finite
    pdf overflows (a float32 map near 3e37 sums to ``inf`` otherwise).

    Args:
        pdf: ``B×h×w`` finite, non-negative scores (any real dtype; integers are taken
            as float32).

    Returns:
        ``B×h×w`` pdf summing to 1 per sample, dtype ``promote(pdf.dtype, float32)``. A
        sample whose scores are all zero becomes the uniform pdf (documented behaviour, so
        a blank score map gives the ViT grid).

    Raises:
        ValueError: wrong rank, empty grid, non-finite or negative values (the last two
            not checked under graph capture, :func:`dartok._compat.is_tracing`).
    """
    if not isinstance(pdf, torch.Tensor) or pdf.dim() != 3:
        shape = tuple(pdf.shape) if isinstance(pdf, torch.Tensor) else type(pdf).__name__
        raise ValueError(f"pdf must be a B×h×w tensor, got shape {shape}")
    if pdf.shape[1] < 1 or pdf.shape[2] < 1:
        raise ValueError(f"pdf grid must be at least 1×1, got {tuple(pdf.shape[1:])}")
    pdf = pdf.to(work_dtype(pdf.dtype))
    # one host sync on the valid path (this runs on every forward); diagnose only on failure.
    # A graph capture (torch.export, torch.compile) cannot branch on values: unchecked there.
    if not is_tracing(pdf) and not bool((torch.isfinite(pdf) & (pdf >= 0)).all()):
        if not bool(torch.isfinite(pdf).all()):
            raise ValueError("pdf contains NaN or Inf values; scores must be finite")
        raise ValueError(f"pdf must be non-negative, got minimum {pdf.min().item():.4g}")
    peak = pdf.amax(dim=(1, 2), keepdim=True)
    zero = peak == 0
    scaled = pdf / torch.where(zero, torch.ones_like(peak), peak)  # entries in [0, 1]: the sum cannot overflow
    total = scaled.sum(dim=(1, 2), keepdim=True)
    uniform = torch.full_like(pdf, 1.0 / (pdf.shape[1] * pdf.shape[2]))
    return torch.where(zero, uniform, scaled / torch.where(zero, torch.ones_like(total), total))


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the partition computes in: ``dtype`` promoted to at least float32.

    float16 / bfloat16 → float32, float64 stays float64, integer and bool → float32.
    """
    if not dtype.is_floating_point:
        return torch.float32
    return torch.promote_types(dtype, torch.float32)


def mix_uniform(pdf: torch.Tensor, alpha: float) -> torch.Tensor:
    """``(1 − α)·pdf + α/(h·w)``: bound the zoom of the partition (docs/method.md §2).

    Args:
        pdf: ``B×h×w`` pdf summing to 1 per sample.
        alpha: in [0, 1). Every cell keeps at least ``α/(h·w)`` of the mass, so no box is
            larger than ``1/(α·N)`` of the image area.

    Raises:
        ValueError: alpha outside [0, 1).
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be a float in [0, 1), got {alpha!r}")
    if alpha == 0:
        return pdf
    return (1.0 - alpha) * pdf + alpha / (pdf.shape[-1] * pdf.shape[-2])


def unmix_uniform(pdf: torch.Tensor, alpha: float) -> torch.Tensor:
    """The inverse of :func:`mix_uniform`: ``(pdf − α/(h·w)) / (1 − α)``, the score map before mixing.

    Exact up to float rounding (entries that rounding takes below 0 are clamped to 0).

    Args:
        pdf: ``B×h×w``, a :func:`mix_uniform` output (e.g. :attr:`dartok.DartOutput.pdf`).
        alpha: the α it was mixed with, in [0, 1).

    Raises:
        ValueError: alpha outside [0, 1).
    """
    mix_uniform(pdf[:0], alpha)  # validates alpha
    if alpha == 0:
        return pdf
    return ((pdf - alpha / (pdf.shape[-1] * pdf.shape[-2])) / (1.0 - alpha)).clamp_min(0.0)


def _marginal_cuts(mass: torch.Tensor, counts: tuple[int, ...]) -> torch.Tensor:
    """Cuts ``B×(R+1)`` of a marginal ``B×n`` into ``len(counts)`` pieces holding ``counts[a]/Σ counts``
    of its mass each (:func:`quantile_1d` at the cumulative fractions), outer edges exactly 0 and 1."""
    bsz = mass.shape[0]
    cum = torch.tensor([0, *counts], dtype=mass.dtype, device=mass.device).cumsum(0) / sum(counts)
    inner = quantile_1d(mass, (cum[1:-1] * mass.sum(1, keepdim=True)).expand(bsz, -1).contiguous()
                        if len(counts) > 1 else mass[:, :0])
    zeros = mass.new_zeros(bsz, 1)
    return torch.cat([zeros, inner, zeros + 1.0], dim=1)


def grid_shape(num_tokens: int, bands: int | None = None) -> tuple[int, int]:
    """``(rows, cols)`` of the regular grid for a budget: ``bands`` rows (``None``: ``round(√N)``) of ``N / rows``.

    Raises:
        ValueError: N < 1, rows outside [1, N] (:func:`band_layout`), or rows not dividing N (a
            regular grid has the same number of boxes in every row).
    """
    counts = band_layout(num_tokens, bands)
    if len(set(counts)) != 1:
        raise ValueError(f"a regular grid needs bands dividing num_tokens; {num_tokens} tokens in {len(counts)} "
                         f"rows is uneven (pass bands= with a divisor of {num_tokens}, or partition='bands')")
    return len(counts), counts[0]


def grid_cuts(pdf: torch.Tensor, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The cuts of the non-uniform regular grid (paper App. C, docs/method.md §12).

    The y-cuts are the equal-mass quantiles of the y-marginal ``Σ_j pdf(i, j)``, the x-cuts
    those of the x-marginal ``Σ_i pdf(i, j)`` (:func:`quantile_1d`, so differentiable in the pdf
    as the band boundaries of :func:`quantile_boxes` are). Every row of the grid holds ``1/rows``
    of the mass and every column ``1/cols``; a single box does not in general hold ``1/(rows·cols)``
    (that is what the irregular partition adds).

    Args:
        pdf: ``B×h×w`` pdf summing to 1 per sample (validated and mixed, as :meth:`dartok.DART.density`
            makes it), computed in at least float32 (:func:`work_dtype`) with autocast off.
        rows, cols: R ≥ 1 and C ≥ 1.

    Returns:
        ``(ys, xs)``: ``B×(R+1)`` and ``B×(C+1)`` non-decreasing cuts in [0, 1], first 0 and last 1
        exactly.

    Raises:
        ValueError: rows or cols not an integer ≥ 1.
    """
    for name, v in (("rows", rows), ("cols", cols)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    with torch.autocast(device_type=pdf.device.type, enabled=False):
        pdf = pdf.to(work_dtype(pdf.dtype))
        return _marginal_cuts(pdf.sum(dim=2), (1,) * rows), _marginal_cuts(pdf.sum(dim=1), (1,) * cols)


def cuts_to_boxes(ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """The ``R×C`` boxes ``B×(R·C)×4`` of cuts ``ys`` ``B×(R+1)`` and ``xs`` ``B×(C+1)``, row-major
    (the band-major order of :func:`quantile_boxes`: row by row, left to right)."""
    rows, cols = ys.shape[1] - 1, xs.shape[1] - 1
    y0 = ys[:, :-1, None].expand(-1, -1, cols)
    y1 = ys[:, 1:, None].expand(-1, -1, cols)
    x0 = xs[:, None, :-1].expand(-1, rows, -1)
    x1 = xs[:, None, 1:].expand(-1, rows, -1)
    return torch.stack([x0, y0, x1, y1], dim=-1).reshape(ys.shape[0], rows * cols, 4)


def _partition(pdf: torch.Tensor, counts: tuple[int, ...]) -> torch.Tensor:
    """Core of :func:`quantile_boxes` on a validated pdf (``B×h×w``, sums to 1)."""
    bsz, h, w = pdf.shape
    num_bands = len(counts)
    device, dtype = pdf.device, pdf.dtype

    # 1. band boundaries: y-quantiles at cumulative token fractions Σ_{b<a} C_b / N.
    ys = _marginal_cuts(pdf.sum(dim=2), counts)  # B×(R+1)
    y0, y1 = ys[:, :-1], ys[:, 1:]

    # 2. band x-densities: rows weighted by their fractional overlap with each band.
    row_weight = interval_overlap(y0, y1, h)  # B×R×h
    band_pdf = torch.bmm(row_weight, pdf)  # B×R×w
    band_mass = band_pdf.sum(-1, keepdim=True)  # B×R×1

    # 3. x-cuts per band at k/C_a of the band's own mass, padded to max(C_a).
    idx, cmax = _layout_indices(counts)
    c = torch.tensor(counts, dtype=dtype, device=device).unsqueeze(-1)  # R×1
    k = torch.arange(cmax + 1, dtype=dtype, device=device)  # cmax+1
    frac = (k / c).clamp(max=1.0)  # R×(cmax+1)
    xs = quantile_1d(band_pdf, frac * band_mass)  # B×R×(cmax+1)
    # exact outer edges; column C_a of band a is its right edge 1
    last = k >= c
    xs = torch.where(last, torch.ones_like(xs), xs)
    xs = torch.cat([torch.zeros_like(xs[..., :1]), xs[..., 1:]], dim=-1)

    boxes = torch.stack(
        [
            xs[..., :-1],
            y0.unsqueeze(-1).expand(-1, -1, cmax),
            xs[..., 1:],
            y1.unsqueeze(-1).expand(-1, -1, cmax),
        ],
        dim=-1,
    ).reshape(bsz, num_bands * cmax, 4)
    if len(idx) != boxes.shape[1]:
        boxes = boxes[:, torch.tensor(idx, device=device)]
    return boxes


def partition_pdf(pdf: torch.Tensor, counts: tuple[int, ...]) -> torch.Tensor:
    """Boxes for an already validated, normalised (and alpha-mixed) pdf and a band layout.

    The step :class:`dartok.DART` and :func:`quantile_boxes` share. Computes in at least
    float32 (:func:`work_dtype`) with autocast off, whatever the pdf's dtype or the
    surrounding autocast context: in bfloat16 the boxes would be about 3 px off at 224 and
    token masses 20% off (docs/method.md §7).

    Args:
        pdf: ``B×h×w`` pdf summing to 1 per sample.
        counts: tokens per band, as :func:`band_layout` returns.

    Returns:
        ``B×N×4`` boxes, dtype ``work_dtype(pdf.dtype)``.
    """
    with torch.autocast(device_type=pdf.device.type, enabled=False):
        return _partition(pdf.to(work_dtype(pdf.dtype)), tuple(counts))


def quantile_boxes(
    pdf: torch.Tensor,
    num_tokens: int,
    bands: int | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> torch.Tensor:
    """Cut the unit square into ``num_tokens`` boxes of equal mass under a score map.

    Paper §3.2 (Eq. 1), docs/method.md §2. Differentiable almost everywhere with respect
    to ``pdf`` (the cell indices come from ``searchsorted``; the boundaries are piecewise
    linear in the masses).

    Args:
        pdf: ``B×h×w`` non-negative scores on an ``h×w`` grid over the image (any h, w,
            any real dtype); normalised per sample here. An all-zero sample is treated as
            uniform.
        num_tokens: N ≥ 1 (any integer, primes included).
        bands: number of bands R (``None`` → ``round(√N)``); see :func:`band_layout`.
        alpha: weight in [0, 1) of the uniform density mixed in (:func:`mix_uniform`).

    Returns:
        boxes ``B×N×4`` as ``(x0, y0, x1, y1)`` in [0, 1], band-major order, computed and
        returned in at least float32 (float64 for a float64 pdf), also for a float16 /
        bfloat16 pdf and under autocast. Each box holds mass ``1/N`` of the alpha-mixed
        pdf; the boxes tile ``[0,1]²`` without overlap. A uniform pdf with N = R·C gives
        the regular R×C grid.

    Raises:
        ValueError: bad pdf (rank, NaN/Inf, negative), N < 1, R outside [1, N], alpha
            outside [0, 1).
    """
    counts = band_layout(num_tokens, bands)
    return partition_pdf(mix_uniform(normalize_pdf(pdf), alpha), counts)
