"""Resample image regions given as boxes: patches for tokens, area averages for positions.

SPEC §1 "resample" and "position", paper §3.4. Boxes are ``(x0, y0, x1, y1)`` in
``[0, 1]`` (x along the width), as produced by :func:`dartok.partition.quantile_boxes`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .partition import interval_overlap

__all__ = ["box_average", "patch_grid", "sample_patches"]


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
    gx = x0.unsqueeze(-1) + offsets * (x1 - x0).unsqueeze(-1)  # B×N×P
    gy = y0.unsqueeze(-1) + offsets * (y1 - y0).unsqueeze(-1)  # B×N×P
    grid = torch.stack(
        [
            gx.unsqueeze(-2).expand(-1, -1, patch_size, -1),
            gy.unsqueeze(-1).expand(-1, -1, -1, patch_size),
        ],
        dim=-1,
    )
    return grid * 2.0 - 1.0


def sample_patches(images: torch.Tensor, boxes: torch.Tensor, patch_size: int = 16) -> torch.Tensor:
    """Bilinearly resample every box of every image to ``P×P`` pixels.

    Paper §3.4. Points are sub-cell centres with ``align_corners=False`` (not the
    authors' top-left corners with ``align_corners=True``, which shift the grid by half a
    cell), so with a uniform 14×14 partition of a 224×224 image and P = 16 the patches
    equal the plain 16×16 unfold of the image. Gradients reach both the images and the
    boxes. Points outside the image (none, for boxes in [0, 1]) use border padding.

    Args:
        images: ``B×C×H×W`` floating tensor.
        boxes: ``B×N×4`` boxes ``(x0, y0, x1, y1)`` in [0, 1].
        patch_size: P ≥ 1, the side of each resampled patch in pixels.

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
    return out.view(bsz, chans, num_tokens, patch_size, patch_size).permute(0, 2, 1, 3, 4)


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
