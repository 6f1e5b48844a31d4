"""The regular-grid warp: DART in front of any backbone that takes an image (paper App. C).

docs/method.md §12. The pdf is cut into a non-uniform *regular* ``R×C`` grid
(:func:`dartok.partition.grid_cuts`: y-cuts from the y-marginal, x-cuts from the x-marginal),
each box is resampled to ``P×P`` pixels and the patches are stitched into an ``R·P × C·P`` image
that goes to the unchanged backbone (a CNN, Swin, ...). Because the grid is separable, the
warped image is ``Wy @ image @ Wxᵀ`` with one interpolation matrix per axis (:func:`warp_matrix`);
the sampling points are the sub-cell centres of :func:`dartok.resample.sample_patches`, so the
stitched image is exactly its patches laid out row by row, anti-aliasing included.

Per axis the warp is the monotone piecewise-linear map ``f`` that sends warped position
``v ∈ [a/R, (a+1)/R]`` linearly onto ``[y_a, y_{a+1}]`` (:func:`warp_positions`). Its inverse is
:func:`dartok.partition.quantile_1d` of the band widths (:func:`unwarp_positions`), so a dense
output of the backbone (a feature map, segmentation logits) maps back to image coordinates exactly
(:func:`unwarp`), as "learning to zoom and unzoom" does.

Pure batched functions plus the module :class:`WarpDART` (a :class:`~dartok.DART` whose partition
is the regular grid and whose "tokens" are the stitched image).
"""
from __future__ import annotations

import math

from typing import Any, NamedTuple

import torch

from ._compat import is_tracing
from .partition import DEFAULT_ALPHA, interval_overlap, quantile_1d, work_dtype
from .resample import antialias_weight
from .scorer import Scorer
from .tokenizer import DART

__all__ = ["WarpDART", "WarpOutput", "cuts_from_boxes", "interpolation_matrix", "unwarp", "unwarp_positions",
           "warp_images", "warp_layout", "warp_matrix", "warp_positions"]


def _check_cuts(cuts: torch.Tensor, name: str) -> None:
    if not isinstance(cuts, torch.Tensor) or cuts.dim() != 2 or cuts.shape[1] < 2:
        shape = tuple(cuts.shape) if isinstance(cuts, torch.Tensor) else type(cuts).__name__
        raise ValueError(f"{name} must be B×(n+1) cuts with n >= 1, got shape {shape}")


def warp_positions(cuts: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The warp along one axis: warped positions ``v`` → image positions, both in [0, 1].

    ``f(v) = y_a + (v·R − a)·(y_{a+1} − y_a)`` for ``v`` in band ``a = ⌊v·R⌋`` (clamped to R − 1):
    monotone, piecewise linear, differentiable in the cuts and in ``v``.

    Args:
        cuts: ``B×(R+1)`` non-decreasing cuts ``y_0 = 0 … y_R = 1`` (:func:`dartok.partition.grid_cuts`).
        v: ``B×m`` or ``m`` positions in [0, 1] (a 1-D ``v`` is shared by the batch).

    Returns:
        ``B×m`` positions in [0, 1], in the cuts' dtype (at least float32).
    """
    _check_cuts(cuts, "cuts")
    rows = cuts.shape[1] - 1
    v = v.to(cuts.dtype).expand(cuts.shape[0], -1) if v.dim() == 1 else v.to(cuts.dtype)
    scaled = v * rows
    a = scaled.detach().floor().clamp(0, rows - 1).long()
    lo, hi = torch.gather(cuts, 1, a), torch.gather(cuts, 1, a + 1)
    return lo + (scaled - a.to(cuts.dtype)) * (hi - lo)


def unwarp_positions(cuts: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`warp_positions`: image positions ``u`` → warped positions, in [0, 1].

    ``f`` is the inverse CDF of the density with mass ``y_{a+1} − y_a`` on the a-th of R equal
    cells of the warped axis, so its inverse is :func:`dartok.partition.quantile_1d` of the band
    widths at ``u``: ``f(f⁻¹(u)) = u`` to float rounding (a position inside a zero-width band
    resolves to its left end).

    Args:
        cuts: ``B×(R+1)`` cuts as in :func:`warp_positions`.
        u: ``B×m`` or ``m`` positions in [0, 1].

    Returns:
        ``B×m`` warped positions in [0, 1], in the cuts' dtype.
    """
    _check_cuts(cuts, "cuts")
    u = u.to(cuts.dtype).expand(cuts.shape[0], -1) if u.dim() == 1 else u.to(cuts.dtype)
    return quantile_1d(cuts.diff(dim=1), u.contiguous())


def interpolation_matrix(positions: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear interpolation along one axis as a matrix: ``B×m`` positions → ``B×m×size`` weights.

    Row k samples the axis at ``positions[k]`` (in [0, 1]) as ``F.grid_sample`` /
    ``F.interpolate`` do with ``align_corners=False`` and border padding: pixel coordinate
    ``p = positions·size − ½`` clamped to ``[0, size − 1]``, weights ``1 − t`` and ``t`` on pixels
    ``⌊p⌋`` and ``⌊p⌋ + 1`` (``t = p − ⌊p⌋``). Differentiable in the positions (the one-sided
    derivative on pixel centres; zero where the clamp is active). Rows sum to 1.
    """
    p = (positions * size - 0.5).clamp(0.0, size - 1)
    i0 = p.detach().floor()
    t = p - i0
    i0 = i0.long()
    i1 = (i0 + 1).clamp(max=size - 1)
    weights = positions.new_zeros(*positions.shape, size)
    weights = weights.scatter_add(-1, i0.unsqueeze(-1), (1.0 - t).unsqueeze(-1))
    return weights.scatter_add(-1, i1.unsqueeze(-1), t.unsqueeze(-1))


def warp_matrix(cuts: torch.Tensor, size: int, patch_size: int, antialias: bool = False) -> torch.Tensor:
    """The interpolation matrix ``B×(R·P)×size`` of the warp along one axis.

    Output pixel ``a·P + i`` samples the centre of sub-cell i of band a,
    ``y_a + (i + ½)/P·(y_{a+1} − y_a)`` (= :func:`warp_positions` at the warped pixel centre; the
    points of :func:`dartok.resample.patch_grid`). With ``antialias`` each row is blended, as
    :func:`dartok.resample.sample_patches` blends, with the exact mean of the axis (taken as
    piecewise constant on its pixels) over the sub-cell: weight
    :func:`~dartok.resample.antialias_weight` of the sub-cell's length in pixels (0 at ≤ 1 px,
    1 at ≥ 2 px). Differentiable in the cuts.

    Args:
        cuts: ``B×(R+1)`` cuts in [0, 1].
        size: pixels along the axis (H or W) ≥ 1.
        patch_size: P ≥ 1, output pixels per band.
        antialias: blend in the sub-cell mean where sub-cells span more than one pixel.

    Returns:
        ``B×(R·P)×size`` weights, rows summing to 1, in the cuts' dtype.
    """
    _check_cuts(cuts, "cuts")
    rows = cuts.shape[1] - 1
    m = rows * patch_size
    centres = (torch.arange(m, device=cuts.device, dtype=cuts.dtype) + 0.5) / m
    matrix = interpolation_matrix(warp_positions(cuts, centres), size)
    if not antialias:
        return matrix
    width = cuts.diff(dim=1) / patch_size  # B×R, one sub-cell's length in [0, 1] units
    blend = antialias_weight(width * size).repeat_interleave(patch_size, dim=1).unsqueeze(-1)  # B×m×1
    if not is_tracing(blend) and not bool((blend > 0).any()):  # a graph capture cannot branch on values
        return matrix
    edges = (torch.arange(m + 1, device=cuts.device, dtype=cuts.dtype)) / m
    e = warp_positions(cuts, edges)  # B×(m+1): the sub-cell edges
    lo, hi = e[:, :-1], e[:, 1:]
    lo = torch.minimum(lo, hi)  # rounding
    mean = interval_overlap(lo, hi, size) / ((hi - lo) * size).clamp_min(1e-12).unsqueeze(-1)
    return (1.0 - blend) * matrix + blend * mean


def _check_images(images: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be B×C×H×W, got shape {shape}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point, got {images.dtype}")
    _check_cuts(ys, "ys")
    _check_cuts(xs, "xs")
    if not ys.shape[0] == xs.shape[0] == images.shape[0]:
        raise ValueError(f"batch sizes differ: images {images.shape[0]}, ys {ys.shape[0]}, xs {xs.shape[0]}")


def _separable(images: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor) -> torch.Tensor:
    """``wy @ images @ wxᵀ`` per sample and channel: ``B×C×H×W`` → ``B×C×m_y×m_x``, in the weights' dtype.

    Two ``bmm`` calls with the channels folded into the other side: along x first on the image as
    it lies in memory (``B×(C·H)×W``, a view), then along y on the smaller result
    (``B×H×(C·m_x)``); no weight matrix is copied per channel. Their MAC count (fvcore) is
    ``C·(H·W·m_x + m_y·H·m_x)``.
    """
    bsz, chans, h, w = images.shape
    x = images.to(wy.dtype).reshape(bsz, chans * h, w)
    cols = torch.bmm(x, wx.transpose(1, 2))  # B×(C·H)×m_x
    mx = wx.shape[1]
    cols = cols.view(bsz, chans, h, mx).permute(0, 2, 1, 3).reshape(bsz, h, chans * mx)
    out = torch.bmm(wy, cols)  # B×m_y×(C·m_x)
    return out.view(bsz, wy.shape[1], chans, mx).permute(0, 2, 1, 3)


def warp_images(images: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, patch_size: int,
                antialias: bool = False) -> torch.Tensor:
    """The warped image: every box of the ``R×C`` grid resampled to ``P×P`` and stitched, ``B×C×(R·P)×(C·P)``.

    ``warp_matrix(ys, H) @ image @ warp_matrix(xs, W)ᵀ``, computed in at least float32 with
    autocast off and cast back to the images' dtype (docs/method.md §7). Block ``(a, b)`` of the
    result equals :func:`dartok.resample.sample_patches` of box ``(x_b, y_a, x_{b+1}, y_{a+1})``
    (with the same ``antialias``). With uniform cuts ``a/R``, ``b/C`` and no anti-aliasing it is
    ``F.interpolate(images, (R·P, C·P), mode="bilinear", align_corners=False)``. Gradients reach
    the images and the cuts.

    Args:
        images: ``B×C×H×W`` floating tensor.
        ys, xs: ``B×(R+1)`` and ``B×(C+1)`` cuts in [0, 1] (:func:`dartok.partition.grid_cuts`).
        patch_size: P ≥ 1.
        antialias: see :func:`warp_matrix`.

    Returns:
        ``B×C×(R·P)×(C·P)`` in the images' dtype.

    Raises:
        ValueError: wrong ranks, batch sizes that differ, non-floating images, patch_size < 1.
    """
    _check_images(images, ys, xs)
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size must be an integer >= 1, got {patch_size!r}")
    work = torch.promote_types(work_dtype(images.dtype), torch.promote_types(ys.dtype, xs.dtype))
    work = work_dtype(work)
    with torch.autocast(device_type=images.device.type, enabled=False):
        wy = warp_matrix(ys.to(work), images.shape[-2], patch_size, antialias)
        wx = warp_matrix(xs.to(work), images.shape[-1], patch_size, antialias)
        out = _separable(images, wy, wx)
    return out.to(images.dtype)


def unwarp(maps: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Map a dense output of the warped image back to image coordinates: ``B×K×h×w`` → ``B×K×H×W``.

    ``maps`` covers the warped image (a feature map of any stride, logits, the warped image
    itself), its cells centred at ``(k + ½)/h`` of the warped axis. Output pixel ``(i, j)`` of the
    ``H×W`` image is centred at image position ``((j + ½)/W, (i + ½)/H)``; its warped position is
    :func:`unwarp_positions` (the exact inverse of the warp), where ``maps`` is sampled bilinearly
    (``align_corners=False``, border). Separable like the warp: ``Vy @ maps @ Vxᵀ``, in at least
    float32, cast back to the maps' dtype; differentiable in the maps and the cuts.

    Args:
        maps: ``B×K×h×w`` floating tensor on the warped image's grid.
        ys, xs: the cuts the image was warped with.
        size: ``(H, W)`` of the output (e.g. the input image's).

    Returns:
        ``B×K×H×W``.

    Raises:
        ValueError: wrong ranks, batch sizes that differ, a bad size.
    """
    _check_images(maps, ys, xs)
    ok = isinstance(size, (tuple, list)) and len(size) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)
    if not ok:
        raise ValueError(f"size must be (H, W) with two integers >= 1, got {size!r}")
    work = work_dtype(torch.promote_types(work_dtype(maps.dtype), torch.promote_types(ys.dtype, xs.dtype)))
    with torch.autocast(device_type=maps.device.type, enabled=False):
        mats = []
        for cuts, n_out, n_in in ((ys, size[0], maps.shape[-2]), (xs, size[1], maps.shape[-1])):
            centres = (torch.arange(n_out, device=maps.device, dtype=work) + 0.5) / n_out
            mats.append(interpolation_matrix(unwarp_positions(cuts.to(work), centres), n_in))
        out = _separable(maps, *mats)
    return out.to(maps.dtype)


def cuts_from_boxes(boxes: torch.Tensor, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The cuts ``(ys B×(R+1), xs B×(C+1))`` of a row-major regular grid of boxes ``B×(R·C)×4``
    (:func:`dartok.partition.cuts_to_boxes`' inverse; slicing only, so gradients pass).

    Raises:
        ValueError: boxes that are not ``B×(rows·cols)×4``.
    """
    if boxes.dim() != 3 or boxes.shape[1:] != (rows * cols, 4):
        raise ValueError(f"boxes must be B×{rows * cols}×4 for a {rows}×{cols} grid, got {tuple(boxes.shape)}")
    grid = boxes.view(boxes.shape[0], rows, cols, 4)
    ys = torch.cat([grid[:, :, 0, 1], grid[:, -1:, 0, 3]], dim=1)
    xs = torch.cat([grid[:, 0, :, 0], grid[:, 0, -1:, 2]], dim=1)
    return ys, xs


def _size_pair(size: Any, name: str) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    ok = isinstance(pair, (tuple, list)) and len(pair) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair)
    if not ok:
        raise ValueError(f"{name} must be an integer >= 1 or (height, width), got {size!r}")
    return int(pair[0]), int(pair[1])


def warp_layout(warp_size: int | tuple[int, int], num_tokens: int | None = None,
                patch_size: int | None = None) -> tuple[int, int, int]:
    """``(rows, cols, P)`` of a warp whose output is ``warp_size`` = ``(R·P, C·P)``.

    With ``num_tokens`` N (the box count R·C): ``P = √(H·W/N)``, which must be an integer dividing
    H and W (64 boxes on a 64×64 warp: 8×8 boxes of 8 px; on 224×224: 8×8 of 28 px). Without it:
    ``P = patch_size`` (default 16), ``R = H/P``, ``C = W/P``. Both given: they must agree.

    Raises:
        ValueError: a size, budget or patch size that does not tile the warp with square patches
            (the message says which values would).
    """
    h, w = _size_pair(warp_size, "warp_size")
    if patch_size is not None and (isinstance(patch_size, bool) or not isinstance(patch_size, int)
                                   or patch_size < 1):
        raise ValueError(f"patch_size must be an integer >= 1, got {patch_size!r}")
    if num_tokens is not None:
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
            raise ValueError(f"num_tokens must be an integer >= 1, got {num_tokens!r}")
        side = math.isqrt(h * w // num_tokens) if h * w >= num_tokens else 0
        if side < 1 or side * side * num_tokens != h * w or h % side or w % side:
            raise ValueError(f"num_tokens={num_tokens} boxes do not tile a {h}×{w} warp with square patches; "
                             f"use ({h}/P)·({w}/P) boxes for a patch size P dividing both sides, or pass "
                             f"patch_size instead")
        if patch_size is not None and patch_size != side:
            raise ValueError(f"num_tokens={num_tokens} on a {h}×{w} warp means patches of {side} px, "
                             f"not patch_size={patch_size}")
        return h // side, w // side, side
    p = 16 if patch_size is None else patch_size
    if h % p or w % p:
        raise ValueError(f"patch_size {p} does not divide the {h}×{w} warp; pick a divisor of both sides")
    return h // p, w // p, p


class WarpOutput(NamedTuple):
    """What :class:`WarpDART` returns.

    Attributes:
        image: ``B×C×(R·P)×(C·P)`` the warped image, in the input's dtype.
        boxes: ``B×(R·C)×4`` the grid's boxes ``(x0, y0, x1, y1)`` in [0, 1], row-major.
        pdf: ``B×h×w`` the score map used (after alpha mixing), sums to 1 per sample.
        ys: ``B×(R+1)`` the row cuts; xs: ``B×(C+1)`` the column cuts (for :func:`unwarp`).
    """

    image: torch.Tensor
    boxes: torch.Tensor
    pdf: torch.Tensor
    ys: torch.Tensor
    xs: torch.Tensor


class WarpDART(DART):
    """DART's regular-grid warp as a module: image → warped image for an unchanged backbone (paper App. C).

    A :class:`~dartok.DART` (same scorer, density, α mixing, oracle and prior; docs/method.md
    §2-§3, §9-§10) whose partition is the non-uniform regular ``rows × cols`` grid
    (``partition="grid"``) and whose :meth:`sample` step stitches the resampled boxes into one
    image (:func:`warp_images`); it has no projection and no position embeddings (``proj`` is
    ``None``). docs/method.md §12.

    Args:
        grid: ``(rows, cols)`` = (R, C), each ≥ 1.
        patch_size: P ≥ 1; the warped image is ``R·P × C·P``.
        in_chans, alpha, scorer, img_size, antialias, check_inputs, score_source, oracle_grid,
        prior, prior_mode: as :class:`~dartok.DART` (``img_size``: the input side recorded for
            the data pipeline; any input size works).

    Shapes:
        ``forward(images B×C×H×W, pdf=None | B×h×w) → WarpOutput`` with ``image`` ``B×C×(R·P)×(C·P)``.

    Raises:
        ValueError: a bad grid or patch size, and whatever :class:`~dartok.DART` raises.
    """

    supports_cam = True

    def __init__(
        self,
        grid: tuple[int, int] = (8, 8),
        patch_size: int = 8,
        in_chans: int = 3,
        alpha: float = DEFAULT_ALPHA,
        scorer: Scorer | dict | None = None,
        img_size: int = 128,
        antialias: bool = False,
        check_inputs: bool = True,
        score_source: str = "scorer",
        oracle_grid: tuple[int, int] | None = None,
        prior: str | None = None,
        prior_mode: str = "both",
    ):
        ok = isinstance(grid, (tuple, list)) and len(grid) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in grid)
        if not ok:
            raise ValueError(f"grid must be (rows, cols) with two integers >= 1, got {grid!r}")
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"patch_size must be an integer >= 1, got {patch_size!r}")
        rows, cols = int(grid[0]), int(grid[1])
        super().__init__(num_tokens=rows * cols, patch_size=patch_size, in_chans=in_chans, embed_dim=1, pos_grid=0,
                         bands=rows, alpha=alpha, scorer=scorer, img_size=img_size, bias=False, antialias=antialias,
                         check_inputs=check_inputs, score_source=score_source, oracle_grid=oracle_grid, prior=prior,
                         prior_mode=prior_mode, partition="grid")
        self.proj = None  # no projection: the warped image goes to the backbone
        self.grid = (rows, cols)

    @property
    def out_size(self) -> tuple[int, int]:
        """``(R·P, C·P)``: the warped image's height and width."""
        return self.grid[0] * self.patch_size[0], self.grid[1] * self.patch_size[0]

    @property
    def grid_size(self) -> tuple[int, int]:
        """``(rows, cols)`` of the grid."""
        return self.grid

    def extra_repr(self) -> str:
        return f"grid={self.grid}, patch_size={self.patch_size[0]}, out_size={self.out_size}, " + super().extra_repr()

    def score_grid(self) -> tuple[int, int]:
        """The scorer's grid, else ``oracle_grid``, else the warp's own ``rows × cols``."""
        if self.scorer is None and self.oracle_grid is None:
            return self.grid
        return super().score_grid()

    def set_num_tokens(self, num_tokens: int, bands: int | None = None) -> None:
        """Change the box count N = R·C in place, keeping the warped image's size ``R·P × C·P`` (what
        the backbone sees) and every weight: N boxes of ``P' = √(R·P·C·P / N)`` px, as a warp built
        with this budget (:func:`warp_layout`).

        Raises:
            ValueError: ``bands`` given (the rows follow from N), or an N whose square boxes do not
                tile the warped image (the message lists the N that do); the warp is left unchanged.
        """
        if bands is not None:
            raise ValueError("the warp's rows follow from num_tokens and its output size; bands is an option of "
                             "the token tokenizer")
        h, w = self.out_size
        try:
            rows, cols, p = warp_layout((h, w), num_tokens)
        except ValueError:
            sides = [s for s in range(1, math.gcd(h, w) + 1) if h % s == 0 and w % s == 0]
            allowed = sorted((h // s) * (w // s) for s in sides)
            raise ValueError(f"num_tokens must tile the {h}×{w} warped image with square boxes: one of "
                             f"{allowed}, got {num_tokens!r}") from None
        self.counts = self._layout(rows * cols, rows)
        self.num_tokens = self.num_patches = rows * cols
        self.bands, self.grid, self.patch_size = rows, (rows, cols), (p, p)

    def cuts(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ys, xs)`` of :meth:`partition`'s boxes (:func:`cuts_from_boxes`)."""
        return cuts_from_boxes(boxes, *self.grid)

    def sample(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Step 3: the warped image ``B×C×(R·P)×(C·P)`` (:func:`warp_images` of the boxes' cuts)."""
        return warp_images(images, *self.cuts(boxes), self.patch_size[0], antialias=self.antialias)

    def project(self, patches: torch.Tensor) -> torch.Tensor:
        """No projection (the warp's output is an image): returns its input."""
        return patches

    def unwarp(self, maps: torch.Tensor, out: WarpOutput, size: tuple[int, int]) -> torch.Tensor:
        """:func:`unwarp` of ``maps`` (``B×K×h×w`` on the warped image) with ``out``'s cuts, to ``size``."""
        return unwarp(maps, out.ys, out.xs, size)

    def _tokenize(self, images: torch.Tensor, pdf: torch.Tensor | None, scored: bool = False) -> WarpOutput:
        pdf = self.density(images, pdf, scored=scored)
        boxes = self.partition(pdf)
        ys, xs = self.cuts(boxes)
        image = warp_images(images, ys, xs, self.patch_size[0], antialias=self.antialias)
        return WarpOutput(image, boxes, pdf, ys, xs)

    def forward(self, images: torch.Tensor, pdf: torch.Tensor | None = None) -> WarpOutput:  # type: ignore[override]
        """Warp ``B×C×H×W`` images: :meth:`density` → :meth:`partition` (regular grid) → :meth:`sample`."""
        return super().forward(images, pdf)
