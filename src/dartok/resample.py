"""Resample image regions given as boxes: patches for tokens, area averages for positions, and back.

docs/method.md §5, paper §3.4; :func:`tokens_to_map` takes tokens back to pixels (§11, dense
prediction). Boxes are ``(x0, y0, x1, y1)`` in
``[0, 1]`` (x along the width), as produced by :func:`dartok.partition.quantile_boxes`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._compat import is_tracing
from .partition import cuts_to_boxes, interval_overlap, work_dtype

__all__ = ["antialias_weight", "antialiased_resize", "area_patches", "box_average", "filtered_patches", "grid_boxes",
           "patch_grid", "sample_patches", "summed_area_dtype", "tokens_to_map"]


def patch_grid(boxes: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Sampling points of each box: the centres of its ``P×P`` sub-cells.

    Args:
        boxes: ``B×N×4`` boxes in [0, 1].
        patch_size: P ≥ 1.

    Returns:
        ``B×N×P×P×2`` grid in ``grid_sample``'s normalised coordinates (x, y in [-1, 1],
        ``align_corners=False``): point (i, j) of box n is at
        ``x0 + (j + ½)/P·(x1 − x0)``, ``y0 + (i + ½)/P·(y1 − y0)``. For a box of exactly
        P×P pixels the points fall on pixel centres, so sampling is exact.
    """
    offsets = (torch.arange(patch_size, device=boxes.device, dtype=boxes.dtype) + 0.5) / patch_size
    x0, y0, x1, y1 = boxes.unbind(-1)  # B×N
    # map to [-1, 1] on the B×N×P coordinates, before the P-fold expansion (same values,
    # one pass over the large grid instead of three)
    gx = (x0.unsqueeze(-1) + offsets * (x1 - x0).unsqueeze(-1)) * 2.0 - 1.0  # B×N×P
    gy = (y0.unsqueeze(-1) + offsets * (y1 - y0).unsqueeze(-1)) * 2.0 - 1.0  # B×N×P
    return torch.stack(
        [
            gx.unsqueeze(-2).expand(-1, -1, patch_size, -1),
            gy.unsqueeze(-1).expand(-1, -1, -1, patch_size),
        ],
        dim=-1,
    )


INFERENCE_CHUNK_PIXELS = 16 * 224 * 224
"""Pixels per batch chunk of the tokenizer's per-image inference steps (:func:`batch_chunks`): 16
images of 224² (the scorer's copies, DART-DeiT's sampled patches). Every activation of a chunk then
stays under glibc's 32 MiB mmap threshold, so the default allocator reuses freed heap memory
instead of page-faulting fresh pages on every call (README "Overhead")."""


def batch_chunks(batch: int, pixels_per_item: int) -> int:
    """Items per chunk for a per-item inference step over ``batch`` items of ``pixels_per_item``
    pixels each: :data:`INFERENCE_CHUNK_PIXELS` worth, at least 1 (``batch`` when it all fits).

    Chunking a step that treats every item on its own (eval-mode convolutions, resampling, the
    patch projection) changes no number; it keeps the working set small (fewer page faults under
    the default allocator, warmer caches).
    """
    return max(1, min(batch, INFERENCE_CHUNK_PIXELS // max(1, pixels_per_item)))


def sample_patches(
    images: torch.Tensor, boxes: torch.Tensor, patch_size: int = 16, antialias: bool = False
) -> torch.Tensor:
    """Resample every box of every image to ``P×P`` pixels (bilinear, optionally anti-aliased).

    Paper §3.4, docs/method.md §5. Points are sub-cell centres with ``align_corners=False``
    (not the authors' top-left corners with ``align_corners=True``, which shift the grid by
    half a cell), so with a uniform 14×14 partition of a 224×224 image and P = 16 the
    patches equal the plain 16×16 unfold of the image. Gradients reach both the images and
    the boxes. Points outside the image (none, for boxes in [0, 1]) use border padding.

    Sampling runs in at least float32 whatever the images' dtype (docs/method.md §7): the
    boxes are never rounded to bfloat16/float16 (up to 1.7 px at 448) and CPU bfloat16
    ``grid_sample`` (non-finite values above about 256 px) is never called. The patches
    are cast back to the images' dtype.

    Args:
        images: ``B×C×H×W`` floating tensor.
        boxes: ``B×N×4`` boxes ``(x0, y0, x1, y1)`` in [0, 1].
        patch_size: P ≥ 1, the side of each resampled patch in pixels.
        antialias: low-pass each sub-cell along every axis on which it spans more than one
            pixel, so large background boxes do not alias (docs/method.md §4, §5). Per axis
            the filter is the bilinear point sample where the sub-cell is ≤ 1 px wide along
            that axis, the exact mean over the sub-cell's extent where it is ≥ 2 px, and a
            linear blend in between; the 2-D filter is the product of the two axes' filters
            (:func:`filtered_patches`), so a long thin sub-cell (4 × 0.25 px) is averaged
            along its length and point-sampled across it. Boxes of exactly P×P pixels give
            the same patches either way.

    Returns:
        ``B×N×C×P×P`` patches in the images' dtype (a permuted view of a contiguous
        ``B×C×N×P×P`` tensor; call ``.contiguous()`` if needed).

    Raises:
        ValueError: wrong ranks, batch sizes that differ, non-floating images, or
            patch_size < 1.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be B×C×H×W, got shape {shape}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point, got {images.dtype}")
    if boxes.dim() != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be B×N×4, got shape {tuple(boxes.shape)}")
    if boxes.shape[0] != images.shape[0]:
        raise ValueError(f"images and boxes batch sizes differ: {images.shape[0]} vs {boxes.shape[0]}")
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size must be an integer >= 1, got {patch_size!r}")
    bsz, chans, h, w = images.shape
    num_tokens = boxes.shape[1]
    work = work_dtype(images.dtype)
    x, b = images.to(work), boxes.to(work)
    with torch.autocast(device_type=images.device.type, enabled=False):
        grid = patch_grid(b, patch_size).reshape(bsz, num_tokens * patch_size, patch_size, 2)
        out = _grid_sample_rows(x, grid)
        out = out.view(bsz, chans, num_tokens, patch_size, patch_size)
        if antialias:
            out = _antialias(x, b, patch_size, out)
    return out.to(images.dtype).permute(0, 2, 1, 3, 4)


def _grid_sample_rows(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``F.grid_sample(x, grid)`` (bilinear, border padding, ``align_corners=False``), ``B×C×R×W_g``.

    PyTorch's CPU kernel parallelises over the batch only, so one image's ``R×W_g`` points run
    on one thread. For a single CPU image at inference the grid's rows are split into ``k``
    pieces (the largest divisor of ``R`` up to the thread count) sampled from a stride-0
    ``k×C×H×W`` view of the image, one per thread; every point is computed by the same code,
    so the result is bit-identical (DART-DeiT-Ti at batch 1 on 2 threads: 0.77 → ~0.4 ms).
    Not under autograd, tracing or export: there the plain call runs.
    """
    bsz, rows = grid.shape[0], grid.shape[1]
    split = 1
    # tracing first: dynamo folds it to a constant and never sees get_num_threads (a graph break);
    # a traced graph must not bake in the batch of 1
    if (not is_tracing(x, grid, jit_trace=True) and bsz == 1 and x.device.type == "cpu"
            and not (torch.is_grad_enabled() and (x.requires_grad or grid.requires_grad))):
        threads = torch.get_num_threads()
        split = max(k for k in range(1, min(threads, rows) + 1) if rows % k == 0)
    if split == 1:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = F.grid_sample(x.expand(split, -1, -1, -1), grid.view(split, rows // split, *grid.shape[2:]),
                        mode="bilinear", padding_mode="border", align_corners=False)  # split×C×(R/split)×W_g
    return out.transpose(0, 1).reshape(1, x.shape[1], rows, grid.shape[2])


def _axis_weights(boxes: torch.Tensor, size: tuple[int, int], patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-axis blend weights ``B×N`` of the box filter: 0 at ≤ 1 px per sub-cell, 1 at ≥ 2 px.

    The weights carry a gradient only strictly inside the ramp (1 px, 2 px). At exactly 1 or
    2 px a plain clamp would pass the ramp's gradient while :func:`_antialias` skips the term
    whose weight is 0 there, leaving a spurious gradient proportional to the image values
    (a constant image got non-zero box gradients); this takes the one-sided derivative of
    the saturated side instead.
    """
    h, w = size
    wx = antialias_weight((boxes[..., 2] - boxes[..., 0]) * w / patch_size)
    wy = antialias_weight((boxes[..., 3] - boxes[..., 1]) * h / patch_size)
    return wx, wy


def antialias_weight(pixels: torch.Tensor) -> torch.Tensor:
    """The anti-aliasing blend weight along one axis for sub-cells ``pixels`` px long (any shape).

    0 (bilinear point sample) at ≤ 1 px, 1 (exact mean over the sub-cell) at ≥ 2 px, linear in
    between (docs/method.md §5). The gradient flows only strictly inside the ramp (see
    :func:`_axis_weights`), so a saturated weight passes none.
    """
    raw = pixels - 1.0
    inside = (raw > 0.0) & (raw < 1.0)
    return torch.where(inside, raw, raw.clamp(0.0, 1.0).detach())


def _antialias(x: torch.Tensor, boxes: torch.Tensor, patch_size: int, point: torch.Tensor) -> torch.Tensor:
    """Blend point samples ``B×C×N×P×P`` with box-filtered ones, separably per axis.

    The per-axis filter is ``(1 − w)·point + w·box``; its product over x and y expands to
    four terms, each computed only where some box gives it a non-zero weight (all four under
    graph capture, which cannot branch on values: the same result).
    """
    wx, wy = _axis_weights(boxes, x.shape[-2:], patch_size)
    out = None
    every_term = is_tracing(x)
    for along_x, along_y in ((False, False), (True, False), (False, True), (True, True)):
        weight = (wx if along_x else 1.0 - wx) * (wy if along_y else 1.0 - wy)  # B×N
        if not every_term and not bool((weight > 0).any()):
            continue
        term = point if not (along_x or along_y) else filtered_patches(x, boxes, patch_size, along_x, along_y)
        term = weight.to(point.dtype)[:, None, :, None, None] * term.to(point.dtype)
        out = term if out is None else out + term
    return point if out is None else out


def summed_area_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype of summed-area tables: float64 on every device that has it (CPU, CUDA).

    In float32 a table over a structured 448² image loses about 8e-3 to cancellation
    (docs/method.md §7). Apple's MPS has no float64: there, float32 on the mean-subtracted
    image is the best available.
    """
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def filtered_patches(
    images: torch.Tensor, boxes: torch.Tensor, patch_size: int, along_x: bool = True, along_y: bool = True
) -> torch.Tensor:
    """Each of the ``P×P`` sub-cells of every box, box-filtered along the chosen axes.

    Along a box-filtered axis the value is the exact mean of the image over the sub-cell's
    extent on that axis (the image taken as piecewise constant on its pixels); along the
    other axis it is the bilinear point sample at the sub-cell centre, as
    :func:`sample_patches` takes it. With both axes this is the exact sub-cell mean
    (:func:`area_patches`). The means come from a prefix-sum table along the filtered axes
    (a summed-area table for both), built in :func:`summed_area_dtype` (float64) from the
    mean-subtracted image and interpolated linearly at the sub-cell edges, which is exact
    for a piecewise-constant image and differentiable in the boxes. Inaccurate for
    sub-cells much narrower than a pixel (cancellation), which is why
    :func:`sample_patches` blends it in only where a sub-cell spans more than one pixel.

    Args:
        images: ``B×C×H×W`` floating tensor.
        boxes: ``B×N×4`` boxes in [0, 1].
        patch_size: P ≥ 1.
        along_x, along_y: which axes to box-filter (at least one).

    Returns:
        ``B×C×N×P×P`` values in the images' dtype.

    Raises:
        ValueError: neither axis chosen.
    """
    if not (along_x or along_y):
        raise ValueError("filtered_patches needs along_x or along_y (otherwise it is sample_patches)")
    bsz, chans, h, w = images.shape
    num_tokens = boxes.shape[1]
    work = summed_area_dtype(images.device)
    x = images.to(work)
    mean = x.mean((2, 3), keepdim=True)
    table = x - mean
    if along_x:
        table = F.pad(table.cumsum(3), (1, 0))
    if along_y:
        table = F.pad(table.cumsum(2), (0, 0, 1, 0))
    b = boxes.to(work)
    x0, y0, x1, y1 = b.unbind(-1)

    def axis(lo, hi, n, filtered):
        # positions along one axis in [0, 1] -> grid_sample coordinates (align_corners=False)
        if filtered:  # P+1 sub-cell edges on the (n+1)-long prefix table: index = g·n
            t = torch.arange(patch_size + 1, device=images.device, dtype=work) / patch_size
            g = lo.unsqueeze(-1) + t * (hi - lo).unsqueeze(-1)
            return (2.0 * g * n + 1.0) / (n + 1) - 1.0
        t = (torch.arange(patch_size, device=images.device, dtype=work) + 0.5) / patch_size
        return (lo.unsqueeze(-1) + t * (hi - lo).unsqueeze(-1)) * 2.0 - 1.0  # P centres on the n-long axis

    gx = axis(x0, x1, w, along_x)  # B×N×Kx
    gy = axis(y0, y1, h, along_y)  # B×N×Ky
    kx, ky = gx.shape[-1], gy.shape[-1]
    grid = torch.stack([gx.unsqueeze(-2).expand(-1, -1, ky, -1), gy.unsqueeze(-1).expand(-1, -1, -1, kx)], dim=-1)
    with torch.autocast(device_type=images.device.type, enabled=False):
        c = F.grid_sample(table, grid.reshape(bsz, num_tokens * ky, kx, 2), mode="bilinear",
                          padding_mode="border", align_corners=False)
    c = c.view(bsz, chans, num_tokens, ky, kx)
    if along_x:
        width = ((x1 - x0) * w / patch_size).clamp_min(1e-12)  # px per sub-cell, B×N
        c = (c[..., 1:] - c[..., :-1]) / width[:, None, :, None, None]
    if along_y:
        height = ((y1 - y0) * h / patch_size).clamp_min(1e-12)
        c = (c[..., 1:, :] - c[..., :-1, :]) / height[:, None, :, None, None]
    return (c + mean.unsqueeze(-1)).to(images.dtype)


def area_patches(images: torch.Tensor, boxes: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Exact mean of the image over each of the ``P×P`` sub-cells of every box.

    The image is taken as piecewise constant on its pixels; its integral over
    ``[0, X]×[0, Y]`` is bilinear inside each pixel, so bilinear interpolation of the
    summed-area table (float64 on every device that has it, :func:`summed_area_dtype`) at
    the sub-cell corners gives exact sub-cell sums. :func:`filtered_patches` with both
    axes.

    Args:
        images: ``B×C×H×W``; boxes: ``B×N×4`` in [0, 1]; patch_size: P.

    Returns:
        ``B×C×N×P×P`` sub-cell means, in the images' dtype.
    """
    return filtered_patches(images, boxes, patch_size, along_x=True, along_y=True)


def box_average(grid_values: torch.Tensor, boxes: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Area average of a piecewise-constant ``g_h×g_w×D`` map over each box.

    Used for position embeddings (docs/method.md §5): the learnable map of a ViT's
    ``pos_embed`` (without prefix tokens) is treated as constant on each of its cells;
    a box gets the mean of the map over its area. A box equal to one cell gets that cell's
    value exactly, so a uniform partition reproduces the ViT's position embeddings.
    Differentiable in the map and (almost everywhere) in the boxes.

    Args:
        grid_values: ``B×g_h×g_w×D`` or ``1×g_h×g_w×D`` (broadcast over the batch).
        boxes: ``B×N×4`` boxes in [0, 1].
        eps: boxes thinner than this (in [0, 1] units) are widened to it, so a degenerate
            box gets the value at its location instead of a division by zero.

    Returns:
        ``B×N×D`` averages in the map's dtype. The weights are computed in at least
        float32 (in bfloat16 the ``eps`` vanishes and a box at x = 1 gives NaN).
    """
    if grid_values.dim() != 4:
        raise ValueError(f"grid_values must be B×g_h×g_w×D, got shape {tuple(grid_values.shape)}")
    _, gh, gw, dim = grid_values.shape
    out_dtype = grid_values.dtype
    work = work_dtype(torch.promote_types(out_dtype, boxes.dtype))
    grid_values, boxes = grid_values.to(work), boxes.to(work)
    x0, y0, x1, y1 = boxes.unbind(-1)
    x0, y0 = x0.clamp(max=1.0 - eps), y0.clamp(max=1.0 - eps)
    x1, y1 = torch.maximum(x1, x0 + eps), torch.maximum(y1, y0 + eps)
    wy = interval_overlap(y0, y1, gh)  # B×N×gh
    wx = interval_overlap(x0, x1, gw)  # B×N×gw
    wy = wy / wy.sum(-1, keepdim=True)
    wx = wx / wx.sum(-1, keepdim=True)
    weights = (wy.unsqueeze(-1) * wx.unsqueeze(-2)).flatten(2)  # B×N×(gh·gw)
    values = grid_values.reshape(grid_values.shape[0], gh * gw, dim)
    with torch.autocast(device_type=values.device.type, enabled=False):
        out = weights @ values[0] if values.shape[0] == 1 else torch.bmm(weights, values)
    return out.to(out_dtype)


def _antialias_taps(in_size: int, out_size: int) -> tuple[list[list[int]], list[list[float]]]:
    """Input indices and weights (``out × K``, zero-padded) of PyTorch's anti-aliased bilinear
    resize along one axis (``align_corners=False``; PIL's triangle filter, widened by the
    scale when shrinking), as ``aten::_upsample_bilinear2d_aa`` computes them."""
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    index, weight = [], []
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        size = min(int(center + support + 0.5), in_size) - lo
        w = [max(0.0, 1.0 - abs((j + lo - center + 0.5) * inv)) for j in range(size)]
        total = sum(w)
        index.append(list(range(lo, lo + size)))
        weight.append([v / total for v in w] if total else w)
    width = max(len(row) for row in index)
    index = [row + [row[-1]] * (width - len(row)) for row in index]
    weight = [row + [0.0] * (width - len(row)) for row in weight]
    return index, weight


def antialiased_resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Anti-aliased bilinear resize of ``B×C×H×W`` images to ``size`` (``align_corners=False``).

    ``F.interpolate(..., antialias=True)``; under ONNX export (whose TorchScript-based
    exporter has no ``_upsample_bilinear2d_aa``) the same filter as two separable gathers
    with the kernel's own taps (:func:`_antialias_taps`): equal to float rounding.
    """
    if not torch.onnx.is_in_onnx_export():
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
    out = images
    for dim, (n_in, n_out) in ((2, (images.shape[2], size[0])), (3, (images.shape[3], size[1]))):
        index, weight = _antialias_taps(int(n_in), int(n_out))
        idx = torch.tensor(index, device=images.device)
        w = torch.tensor(weight, dtype=images.dtype, device=images.device)
        taps = out.index_select(dim, idx.flatten())
        if dim == 2:
            out = (taps.view(*out.shape[:2], n_out, -1, out.shape[3]) * w.view(n_out, -1, 1)).sum(3)
        else:
            out = (taps.view(*out.shape[:3], n_out, -1) * w).sum(4)
    return out


def _check_size(size, name: str = "size") -> tuple[int, int]:
    ok = (isinstance(size, (tuple, list)) and len(size) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size))
    if not ok:
        raise ValueError(f"{name} must be (h, w) with two integers >= 1, got {size!r}")
    return int(size[0]), int(size[1])


def tokens_to_map(tokens: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int],
                  num_frames: int | None = None) -> torch.Tensor:
    """Tokens back to pixels: each cell of an ``h×w`` map is the area-weighted average of the tokens covering it.

    The counterpart of :func:`box_average` (which takes a map to boxes; docs/method.md §11).
    Cell ``(i, j)`` is ``[j/w, (j+1)/w] × [i/h, (i+1)/h]`` of the unit square; token n
    covers the fraction ``a_n(i, j)`` of it (the exact overlap of its box with the cell,
    :func:`dartok.partition.interval_overlap`, as :func:`box_average` and
    :func:`dartok.localization.box_coverage` compute it). The cell's value is
    ``Σ_n a_n·t_n / Σ_n a_n``. Partition boxes tile the square, so ``Σ_n a_n = 1`` and the
    cell is the plain area-weighted sum of its tokens; a cell no box touches is 0. Hence:

    - constant tokens give a constant map;
    - a uniform ``R×C`` partition (:func:`grid_boxes`) with ``size = (R, C)`` gives the
      token grid itself (a reshape of the band-major tokens; exact up to float rounding of the
      cell edges, about 1e-7 relative in float32), and with ``size = (kR, kC)`` its
      nearest-neighbour upsampling;
    - the map is linear in the tokens and differentiable in them, and piecewise smooth,
      hence differentiable almost everywhere, in the boxes (kinks where an edge crosses a
      cell edge).

    Args:
        tokens: ``B×N×D`` floating tensor (e.g. per-token class logits of a segmentation head).
        boxes: ``B×N×4`` floating ``(x0, y0, x1, y1)`` in [0, 1] (x along the width), finite,
            ``x0 <= x1``, ``y0 <= y1``; parts outside ``[0, 1]²`` are ignored. For a clip, boxes
            in the stacked-frame layout of :class:`dartok.VideoDART` (frame t in rows
            ``t/T .. (t+1)/T``).
        size: ``(h, w)`` of the map (of one frame for a clip), two ints >= 1; ``h`` is the
            number of rows (e.g. the label mask's height).
        num_frames: ``None`` for images; T >= 1 for a clip: the stacked map of size
            ``(T·h, w)`` is cut into one map per frame.

    Returns:
        ``B×D×h×w`` (images) or ``B×D×T×h×w`` (clips) in the tokens' dtype, computed in at
        least float32 with autocast off (float64 for float64 inputs).

    Raises:
        ValueError: tokens not ``B×N×D`` or not floating, boxes not ``B×N×4`` with the tokens'
            B and N, NaN/Inf or inverted boxes (not checked under graph capture,
            :func:`dartok._compat.is_tracing`), ``size`` not two ints >= 1, ``num_frames`` not
            an int >= 1.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 3 or not tokens.is_floating_point():
        what = (f"{tuple(tokens.shape)} {tokens.dtype}" if isinstance(tokens, torch.Tensor)
                else type(tokens).__name__)
        raise ValueError(f"tokens must be a floating B×N×D tensor, got {what}")
    if (not isinstance(boxes, torch.Tensor) or boxes.dim() != 3 or boxes.shape[-1] != 4
            or tuple(boxes.shape[:2]) != tuple(tokens.shape[:2]) or not boxes.is_floating_point()):
        what = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise ValueError(f"boxes must be a floating B×N×4 tensor with the tokens' B×N = "
                         f"{tuple(tokens.shape[:2])}, got {what}")
    h, w = _check_size(size)
    frames = 1
    if num_frames is not None:
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"num_frames must be None or an integer >= 1, got {num_frames!r}")
        frames = num_frames
    if boxes.numel() and not is_tracing(boxes):  # graph capture cannot branch on values: unchecked there
        if not bool(torch.isfinite(boxes).all()):
            raise ValueError("boxes contain NaN or Inf")
        if bool((boxes[..., 2:] < boxes[..., :2]).any()):
            raise ValueError("boxes must have x0 <= x1 and y0 <= y1")
    bsz, _, dim = tokens.shape
    work = work_dtype(torch.promote_types(tokens.dtype, boxes.dtype))
    b = boxes.to(device=tokens.device, dtype=work).clamp(0.0, 1.0)
    with torch.autocast(device_type=tokens.device.type, enabled=False):
        oy = interval_overlap(b[..., 1], b[..., 3], frames * h)  # B×N×(T·h), in cell units
        ox = interval_overlap(b[..., 0], b[..., 2], w)  # B×N×w
        cover = torch.bmm(oy.transpose(1, 2), ox)  # B×(T·h)×w: Σ_n a_n, 1 where the boxes tile
        # Σ_n t_n·a_n as one batched matmul: (t_n ⊗ oy_n) over n against ox_n
        rows = (tokens.to(work).unsqueeze(-1) * oy.unsqueeze(2)).flatten(2)  # B×N×(D·T·h)
        weighted = torch.bmm(rows.transpose(1, 2), ox).view(bsz, dim, frames * h, w)
        # where no box covers a cell both are 0, and 0 / tiny = 0
        out = weighted / cover.clamp_min(torch.finfo(work).tiny).unsqueeze(1)
    if num_frames is not None:
        out = out.reshape(bsz, dim, frames, h, w)
    return out.to(tokens.dtype)


def grid_boxes(rows: int, cols: int, batch: int = 1, *, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The boxes of a fixed ``rows×cols`` patch grid, band-major (row by row, left to right).

    The partition :func:`dartok.partition.quantile_boxes` makes of a uniform ``rows×cols`` map
    with ``rows`` bands and no mixing, with its edges exactly ``k/rows`` and ``k/cols`` (the
    cell edges :func:`dartok.partition.interval_overlap` uses), so :func:`tokens_to_map` of a
    fixed-grid model's tokens at its grid size is exactly their reshape. The order is a timm
    ViT's patch-token order.

    Returns:
        ``batch×(rows·cols)×4`` boxes ``(x0, y0, x1, y1)`` in [0, 1], ``dtype`` (floating).

    Raises:
        ValueError: ``rows`` or ``cols`` not an integer >= 1, ``batch`` < 0, or ``dtype`` not floating.
    """
    rows, cols = _check_size((rows, cols), "(rows, cols)")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
        raise ValueError(f"batch must be an integer >= 0, got {batch!r}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be floating point, got {dtype}")
    ys = torch.arange(rows + 1, device=device, dtype=dtype) / rows
    xs = torch.arange(cols + 1, device=device, dtype=dtype) / cols
    return cuts_to_boxes(ys[None], xs[None]).expand(batch, -1, -1)
