"""Resample image regions given as boxes: patches for tokens, area averages for positions.

SPEC §1 "resample" and "position", paper §3.4. Boxes are ``(x0, y0, x1, y1)`` in
``[0, 1]`` (x along the width), as produced by :func:`dartok.partition.quantile_boxes`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .partition import interval_overlap

__all__ = ["area_patches", "box_average", "patch_grid", "sample_patches"]


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


def sample_patches(
    images: torch.Tensor, boxes: torch.Tensor, patch_size: int = 16, antialias: bool = False
) -> torch.Tensor:
    """Resample every box of every image to ``P×P`` pixels (bilinear, optionally anti-aliased).

    Paper §3.4. Points are sub-cell centres with ``align_corners=False`` (not the
    authors' top-left corners with ``align_corners=True``, which shift the grid by half a
    cell), so with a uniform 14×14 partition of a 224×224 image and P = 16 the patches
    equal the plain 16×16 unfold of the image. Gradients reach both the images and the
    boxes. Points outside the image (none, for boxes in [0, 1]) use border padding.

    Args:
        images: ``B×C×H×W`` floating tensor.
        boxes: ``B×N×4`` boxes ``(x0, y0, x1, y1)`` in [0, 1].
        patch_size: P ≥ 1, the side of each resampled patch in pixels.
        antialias: for boxes whose sub-cells cover more than one pixel, use the exact
            mean of the image over each sub-cell (:func:`area_patches`) instead of a point
            sample, so large background boxes do not alias (SPEC §4). Blended by sub-cell
            area: point sample at ≤ 1 px², area mean at ≥ 2 px², linear in between.
            Boxes of exactly P×P pixels give the same patches either way.

    Returns:
        ``B×N×C×P×P`` patches (a permuted view; call ``.contiguous()`` if needed).

    Raises:
        ValueError: wrong ranks, batch sizes that differ, or patch_size < 1.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be B×C×H×W, got shape {tuple(images.shape)}")
    if boxes.dim() != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be B×N×4, got shape {tuple(boxes.shape)}")
    if boxes.shape[0] != images.shape[0]:
        raise ValueError(f"images and boxes batch sizes differ: {images.shape[0]} vs {boxes.shape[0]}")
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size must be an integer >= 1, got {patch_size!r}")
    bsz, chans = images.shape[:2]
    num_tokens = boxes.shape[1]
    grid = patch_grid(boxes.to(images.dtype), patch_size)
    grid = grid.reshape(bsz, num_tokens * patch_size, patch_size, 2)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = out.view(bsz, chans, num_tokens, patch_size, patch_size)
    if antialias:
        h, w = images.shape[-2:]
        cell_area = ((boxes[..., 2] - boxes[..., 0]) * w) * ((boxes[..., 3] - boxes[..., 1]) * h) / patch_size**2
        weight = (cell_area - 1.0).clamp(0.0, 1.0).to(out.dtype)[:, None, :, None, None]  # B×1×N×1×1
        out = out + weight * (area_patches(images, boxes, patch_size) - out)
    return out.permute(0, 2, 1, 3, 4)


def area_patches(images: torch.Tensor, boxes: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Exact mean of the image over each of the ``P×P`` sub-cells of every box.

    The image is taken as piecewise constant on its pixels; its integral over
    ``[0, X]×[0, Y]`` is bilinear inside each pixel, so bilinear interpolation of the
    summed-area table at the sub-cell corners gives exact sub-cell sums (4 corner
    lookups, differentiable in the boxes). The table is built in float64 on CPU and in
    float32 from the mean-subtracted image elsewhere. Inaccurate for sub-cells much
    smaller than a pixel (cancellation), which is why :func:`sample_patches` blends it
    in only for sub-cells larger than a pixel.

    Args:
        images: ``B×C×H×W``; boxes: ``B×N×4`` in [0, 1]; patch_size: P.

    Returns:
        ``B×C×N×P×P`` sub-cell means, in the images' dtype.
    """
    bsz, chans, h, w = images.shape
    num_tokens = boxes.shape[1]
    work = torch.float64 if images.device.type == "cpu" else torch.float32
    x = images.to(work)
    mean = x.mean((2, 3), keepdim=True)
    sat = F.pad((x - mean).cumsum(2).cumsum(3), (1, 0, 1, 0))  # B×C×(H+1)×(W+1)
    b = boxes.to(work)
    t = torch.arange(patch_size + 1, device=images.device, dtype=work) / patch_size
    x0, y0, x1, y1 = b.unbind(-1)
    gx = x0.unsqueeze(-1) + t * (x1 - x0).unsqueeze(-1)  # B×N×(P+1)
    gy = y0.unsqueeze(-1) + t * (y1 - y0).unsqueeze(-1)
    k = patch_size + 1
    grid = torch.stack([gx.unsqueeze(-2).expand(-1, -1, k, -1), gy.unsqueeze(-1).expand(-1, -1, -1, k)], dim=-1)
    grid = (grid * 2.0 - 1.0).reshape(bsz, num_tokens * k, k, 2)
    corners = F.grid_sample(sat, grid, mode="bilinear", padding_mode="border", align_corners=True)
    c = corners.view(bsz, chans, num_tokens, k, k)
    sums = c[..., 1:, 1:] - c[..., :-1, 1:] - c[..., 1:, :-1] + c[..., :-1, :-1]
    area = ((x1 - x0) * w * (y1 - y0) * h / patch_size**2).clamp_min(1e-12)  # B×N, px² per sub-cell
    return (sums / area[:, None, :, None, None] + mean.unsqueeze(-1)).to(images.dtype)


def box_average(grid_values: torch.Tensor, boxes: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Area average of a piecewise-constant ``g_h×g_w×D`` map over each box.

    Used for position embeddings (SPEC §1 "position"): the learnable map of a ViT's
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
        ``B×N×D`` averages.
    """
    if grid_values.dim() != 4:
        raise ValueError(f"grid_values must be B×g_h×g_w×D, got shape {tuple(grid_values.shape)}")
    _, gh, gw, dim = grid_values.shape
    boxes = boxes.to(grid_values.dtype)
    x0, y0, x1, y1 = boxes.unbind(-1)
    x0, y0 = x0.clamp(max=1.0 - eps), y0.clamp(max=1.0 - eps)
    x1, y1 = torch.maximum(x1, x0 + eps), torch.maximum(y1, y0 + eps)
    wy = interval_overlap(y0, y1, gh)  # B×N×gh
    wx = interval_overlap(x0, x1, gw)  # B×N×gw
    wy = wy / wy.sum(-1, keepdim=True)
    wx = wx / wx.sum(-1, keepdim=True)
    weights = (wy.unsqueeze(-1) * wx.unsqueeze(-2)).flatten(2)  # B×N×(gh·gw)
    values = grid_values.reshape(grid_values.shape[0], gh * gw, dim)
    if values.shape[0] == 1:
        return weights @ values[0]
    return torch.bmm(weights, values)
