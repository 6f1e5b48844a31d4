"""Where the object is: an oracle score map from its box, and how much of a partition lands on it.

Pure functions (docs/method.md §9; issue 11 items 1-2). A sample's object is given as ``K``
axis-aligned boxes ``(x0, y0, x1, y1)`` in the score map's [0, 1] coordinates (x along the
width), the pieces of one region: ``K = 1`` for an image's object box; for a clip, the
object's box in every frame moved into the frame-stacked map's coordinates
(:func:`stack_frame_boxes`); a box that wraps around a torus canvas is several pieces.
Pieces of one sample are meant to be disjoint: a cell's coverage is the sum of the pieces'
overlaps with it, clamped to the cell.

- :func:`box_coverage`: the fraction of every score-grid cell the object covers (exact area
  overlap, :func:`dartok.partition.interval_overlap`);
- :func:`box_pdf`: that coverage normalised to sum 1, the **oracle** score map;
- :func:`object_mass`: the share of a pdf's mass inside the object, ``Σ pdf · coverage``;
- :func:`object_tokens`: how many partition boxes have their centre inside the object.
"""
from __future__ import annotations

import torch

from .partition import interval_overlap

__all__ = ["box_coverage", "box_pdf", "object_mass", "object_tokens", "stack_frame_boxes"]


def _object_boxes(boxes: torch.Tensor, name: str = "boxes") -> torch.Tensor:
    """``B×4`` → ``B×1×4``, ``B×K×4`` as is; checks shape, dtype, finiteness and order."""
    if not isinstance(boxes, torch.Tensor) or boxes.dim() not in (2, 3) or boxes.shape[-1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise ValueError(f"{name} must be a B×4 or B×K×4 tensor of (x0, y0, x1, y1), got {shape}")
    if not boxes.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {boxes.dtype}")
    if boxes.dim() == 2:
        boxes = boxes.unsqueeze(1)
    if boxes.numel():
        if not bool(torch.isfinite(boxes).all()):
            raise ValueError(f"{name} contain NaN or Inf")
        if bool((boxes[..., 2:] < boxes[..., :2]).any()):
            raise ValueError(f"{name} must have x0 <= x1 and y0 <= y1")
    return boxes


def box_coverage(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The fraction of each cell of an ``h×w`` grid on ``[0, 1]²`` that the object covers.

    Args:
        boxes: ``B×4`` or ``B×K×4`` floating ``(x0, y0, x1, y1)``, ``x0 <= x1``, ``y0 <= y1``;
            the parts outside ``[0, 1]²`` are ignored. ``K`` pieces of one object (disjoint).
        size: ``(h, w)``, both ≥ 1; cell ``(i, j)`` is ``[j/w, (j+1)/w] × [i/h, (i+1)/h]``.

    Returns:
        ``B×h×w`` in the boxes' dtype, entries in [0, 1]: ``Σ_k oy_k(i)·ox_k(j)`` clamped to 1,
        with ``oy``/``ox`` the interval overlaps in cell units. Summed over the grid and
        divided by ``h·w`` it is the object's area inside the unit square (pieces disjoint).
        Piecewise bilinear in the coordinates.

    Raises:
        ValueError: a bad shape, dtype, NaN/Inf, ``x0 > x1`` / ``y0 > y1``, or ``size`` not two ints ≥ 1.
    """
    boxes = _object_boxes(boxes)
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)):
        raise ValueError(f"size must be (h, w) with two integers >= 1, got {size!r}")
    h, w = size
    b = boxes.clamp(0.0, 1.0)
    oy = interval_overlap(b[..., 1], b[..., 3], h)  # B×K×h
    ox = interval_overlap(b[..., 0], b[..., 2], w)  # B×K×w
    return torch.einsum("bki,bkj->bij", oy, ox).clamp(max=1.0)


def box_pdf(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The oracle score map: :func:`box_coverage` normalised to sum 1 per sample.

    The density it describes is uniform on the cells the object touches, weighted by how
    much of each it covers; when the object's edges lie on cell edges it is exactly the
    object's indicator, normalised (object mass 1, :func:`object_mass`).

    Args:
        boxes: ``B×4`` or ``B×K×4`` as in :func:`box_coverage`.
        size: ``(h, w)`` of the score grid (a clip's: ``(T·h, w)``, boxes from :func:`stack_frame_boxes`).

    Returns:
        ``B×h×w`` in the boxes' dtype, ≥ 0, each sample summing to 1.

    Raises:
        ValueError: as :func:`box_coverage`, or an object with no area inside ``[0, 1]²``.
    """
    cover = box_coverage(boxes, size)
    total = cover.sum((1, 2), keepdim=True)
    if cover.numel() and not bool((total > 0).all()):
        raise ValueError("an object box has no area inside [0, 1]²; the oracle score map needs one")
    return cover / total


def object_mass(pdf: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """The share of a score map's mass inside the object: ``Σ_ij pdf(i, j) · coverage(i, j)``.

    A pdf's cell holds its mass spread evenly over the cell (the density the partition cuts,
    docs/method.md §2), so this is exactly the mass inside the object's region.

    Args:
        pdf: ``B×h×w`` non-negative, summing to 1 per sample (e.g. :meth:`dartok.DART.density`'s,
            or its value before mixing, :func:`dartok.partition.unmix_uniform`).
        boxes: ``B×4`` or ``B×K×4`` in the pdf's coordinates (:func:`box_coverage`).

    Returns:
        ``B`` in the promoted dtype of ``pdf`` and ``boxes``, in [0, 1]. For
        :func:`box_pdf` it is ``Σ c² / Σ c`` (c the coverage): 1 when the box lies on cell
        edges, below 1 by the partly covered cells otherwise. After mixing with the uniform
        density, ``(1 − α)·m + α·area``.

    Raises:
        ValueError: ``pdf`` not ``B×h×w`` with the boxes' B, or bad boxes.
    """
    if not isinstance(pdf, torch.Tensor) or pdf.dim() != 3:
        shape = tuple(pdf.shape) if isinstance(pdf, torch.Tensor) else type(pdf).__name__
        raise ValueError(f"pdf must be B×h×w, got {shape}")
    boxes = _object_boxes(boxes)
    if boxes.shape[0] != pdf.shape[0]:
        raise ValueError(f"pdf has {pdf.shape[0]} samples, boxes {boxes.shape[0]}")
    dtype = torch.promote_types(pdf.dtype, boxes.dtype)
    cover = box_coverage(boxes.to(device=pdf.device, dtype=dtype), tuple(pdf.shape[1:]))
    return (pdf.to(dtype) * cover).sum((1, 2))


def object_tokens(token_boxes: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """How many partition boxes have their centre inside the object (edges included).

    Args:
        token_boxes: ``B×N×4`` ``(x0, y0, x1, y1)``, the partition (:attr:`dartok.DartOutput.boxes`).
        boxes: ``B×4`` or ``B×K×4`` object boxes in the same coordinates (a centre in any piece counts once).

    Returns:
        ``B`` int64 counts in ``[0, N]``.

    Raises:
        ValueError: ``token_boxes`` not ``B×N×4`` with the boxes' B, or bad boxes.
    """
    if not isinstance(token_boxes, torch.Tensor) or token_boxes.dim() != 3 or token_boxes.shape[-1] != 4:
        shape = tuple(token_boxes.shape) if isinstance(token_boxes, torch.Tensor) else type(token_boxes).__name__
        raise ValueError(f"token_boxes must be B×N×4, got {shape}")
    boxes = _object_boxes(boxes)
    if boxes.shape[0] != token_boxes.shape[0]:
        raise ValueError(f"token_boxes have {token_boxes.shape[0]} samples, boxes {boxes.shape[0]}")
    boxes = boxes.to(device=token_boxes.device, dtype=torch.promote_types(token_boxes.dtype, boxes.dtype))
    cx = ((token_boxes[..., 0] + token_boxes[..., 2]) * 0.5)[:, :, None]  # B×N×1
    cy = ((token_boxes[..., 1] + token_boxes[..., 3]) * 0.5)[:, :, None]
    b = boxes[:, None]  # B×1×K×4
    inside = (cx >= b[..., 0]) & (cx <= b[..., 2]) & (cy >= b[..., 1]) & (cy <= b[..., 3])  # B×N×K
    return inside.any(-1).sum(-1)


def stack_frame_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """Per-frame object boxes → boxes in the frame-stacked clip's coordinates (frame t in rows t/T..(t+1)/T).

    The layout :class:`dartok.VideoDART` partitions (frames stacked vertically, frame 0 on top).

    Args:
        boxes: ``B×T×4`` (one box per frame) or ``B×T×K×4`` (K pieces per frame), floating,
            frame coordinates in [0, 1].

    Returns:
        ``B×(T·K)×4``: x unchanged, ``y → (t + y)/T``.

    Raises:
        ValueError: a tensor of another rank, last dim not 4, or not floating point.
    """
    if (not isinstance(boxes, torch.Tensor) or boxes.dim() not in (3, 4) or boxes.shape[-1] != 4
            or not boxes.is_floating_point()):
        shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise ValueError(f"frame boxes must be a floating B×T×4 or B×T×K×4 tensor, got {shape}")
    if boxes.dim() == 3:
        boxes = boxes.unsqueeze(2)
    t = boxes.shape[1]
    offset = torch.arange(t, device=boxes.device, dtype=boxes.dtype).view(1, t, 1)
    y0 = (boxes[..., 1] + offset) / t
    y1 = (boxes[..., 3] + offset) / t
    out = torch.stack([boxes[..., 0], y0, boxes[..., 2], y1], dim=-1)
    return out.flatten(1, 2)
