"""The DART authors' tokenizer, reproduced on purpose, and their released checkpoints (issue 14 §1).

The only ImageNet-trained DART models are the authors' (HF hub ``yinkx3/DART``). They were
trained with the tokenizer of github HCPLab-SYSU/DART, which departs from dartok's
(docs/method.md §4, the departures table). This module re-states *their* algorithm, from
their code as it stands (``dart/dart.py`` ``DynamicAdaptiveRegionTokenizer.forward``,
``dart/tools.py``, ``dart/spn.py``, ``models_deit.py`` ``DARViT``, ``models_mamba.py``
``DARViM``), so that their weights see the tokens they were trained on. It reproduces their
defects deliberately (docs/method.md §4a):

- the scorer runs on the full input (448) and standardises its scores with one mean and
  std over the whole batch (a prediction depends on the other images in the batch);
- the rows come from quantiles of the row masses, and the row densities that feed the
  column cut are overlap *averages* of grid rows, renormalised;
- the columns are one 1-D quantile cut over all rows laid end to end, so token counts per
  row vary and a token may straddle two rows;
- sampling points sit at the top-left of each sub-cell (``arange(P) / P``) with
  ``align_corners=True``, after an intermediate resample of each row to P pixel rows;
- position embeddings are two 1-D overlap averages (grid rows, then along the strip).

Use it through :class:`dartok.DART` (``compat="hcplab"``) or the timm tags of
:data:`HCPLAB_CHECKPOINTS` (``timm.create_model("dart_deit_tiny_patch16_224.hcplab_in1k",
pretrained=True)``). The default tokenizer is untouched by any of this.

The scorer trunk is torchvision's MobileNetV3 (their trunk, torchvision layout, BatchNorm
eps 1e-3), built without weights: its statistics come from the checkpoint (they drifted in
train mode while the authors trained), not from any ImageNet release.
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import _compat

__all__ = [
    "HCPLAB_CHECKPOINTS", "HCPLAB_HUB_ID", "HCPLAB_SCORERS", "HcplabCheckpoint", "HcplabScorer",
    "convert_hcplab_state_dict", "hcplab_boxes", "hcplab_checkpoint", "hcplab_edges", "hcplab_quantiles",
    "hcplab_pretrained_cfgs", "hcplab_resample_by_edges", "hcplab_resample_by_rows", "hcplab_row_heights",
    "hcplab_sample",
    "hcplab_tokenize", "load_hcplab_checkpoint",
]

HCPLAB_HUB_ID = "yinkx3/DART"
"""The Hugging Face hub repository of the authors' checkpoints."""

_EPS_QUANTILE = 1e-8  # tools.find_quantiles: (p - area before) / (pdf + eps)
_EPS_ROWS = 1e-8  # tools.pdf_to_row_heights: row masses / (sum + eps)
_EPS_STD = 1e-8  # spn.ScorePredNetV1/V2: z / (std + eps)


@dataclass(frozen=True)
class HcplabScorerSpec:
    """Where ``dart/spn.py`` cuts a torchvision MobileNetV3 and how wide its MLP is."""

    cut: int  # features[:cut]
    channels: int  # the cut's output channels
    hidden: int  # MLP hidden width
    out: int  # MLP output width: 1 (v1, a score per location) or channels (v2, a channel gate)


HCPLAB_SCORERS: dict[tuple[str, str], HcplabScorerSpec] = {
    ("mobilenet_v3_small", "v1"): HcplabScorerSpec(11, 96, 96, 1),
    ("mobilenet_v3_small", "v2"): HcplabScorerSpec(13, 576, 96, 576),
    ("mobilenet_v3_large", "v1"): HcplabScorerSpec(15, 160, 160, 1),
    ("mobilenet_v3_large", "v2"): HcplabScorerSpec(17, 960, 96, 960),
}
"""``(trunk, version)`` → cut and MLP widths, as ``MobileNetSmallPred`` / ``MobileNetLargePred``
build them (``ScorePredNet(features, feature_dim, hidden_dim, version)``)."""


@dataclass(frozen=True)
class HcplabCheckpoint:
    """One released checkpoint: file, the dartok model and tag that load it, its tokenizer.

    Attributes:
        file: the file name in :data:`HCPLAB_HUB_ID`.
        trunk, version: the scorer (:data:`HCPLAB_SCORERS`).
        num_tokens: the budget N (from the authors' model name; ``pos_embed`` is 1×197×D
            whatever N is).
        top1: ImageNet-1k top-1 the authors report for it (their README), ``None`` if they
            report none. Not verified here.
    """

    file: str
    trunk: str
    version: str
    num_tokens: int = 196
    top1: float | None = None


HCPLAB_CHECKPOINTS: dict[str, HcplabCheckpoint] = {
    "dart_deit_tiny_patch16_224.hcplab_in1k": HcplabCheckpoint("darvit-tiny.pth", "mobilenet_v3_small", "v1",
                                                                196, 73.8),
    "dart_deit_tiny_patch16_224.hcplab_v2_in1k": HcplabCheckpoint("darvit-tiny-v2.pth", "mobilenet_v3_small", "v2"),
    "dart_deit_tiny_patch16_224.hcplab_121p_in1k": HcplabCheckpoint("darvit-tiny-ft121p.pth", "mobilenet_v3_small",
                                                                     "v1", 121, 71.8),
    "dart_deit_small_patch16_224.hcplab_in1k": HcplabCheckpoint("darvit-sm.pth", "mobilenet_v3_large", "v1",
                                                                 196, 80.6),
    "dart_deit_small_patch16_224.hcplab_144p_in1k": HcplabCheckpoint("darvit-sm-ft144p.pth", "mobilenet_v3_large",
                                                                      "v1", 144),
    "dart_deit_small_patch16_224.hcplab_288p_in1k": HcplabCheckpoint("darvit-sm-ft288p.pth", "mobilenet_v3_large",
                                                                      "v1", 288),
    "dart_deit_small_patch16_224.hcplab_392p_in1k": HcplabCheckpoint("darvit-sm-ft392p.pth", "mobilenet_v3_large",
                                                                      "v1", 392, 81.8),
    "dart_vim_tiny_patch16_224.hcplab_in1k": HcplabCheckpoint("darvim-tiny.pth", "mobilenet_v3_small", "v2",
                                                               196, 77.2),
    "dart_vim_tiny_patch16_224.hcplab_392p_in1k": HcplabCheckpoint("darvim-tiny-ft2seq.pth", "mobilenet_v3_small",
                                                                    "v2", 392, 78.9),
    "dart_vim_small_patch16_224.hcplab_in1k": HcplabCheckpoint("darvim-sm.pth", "mobilenet_v3_large", "v2",
                                                                196, 81.5),
    "dart_vim_small_patch16_224.hcplab_392p_in1k": HcplabCheckpoint("darvim-sm-ft2seq.pth", "mobilenet_v3_large",
                                                                     "v2", 392, 82.2),
}
"""``"model.tag"`` → the authors' checkpoint it loads (timm pretrained tags, hub :data:`HCPLAB_HUB_ID`).

``darvit-tiny-ft121p`` and the ``-ft2seq`` / ``-ft{144,288,392}p`` files are the authors'
fine-tunes at other budgets (``ft2seq``: N = 2·196 = 392). ``darmt-L6.pth`` (RMT) is not
provided: dartok has no RMT backbone."""


def hcplab_checkpoint(variant: str, tag: str | None) -> HcplabCheckpoint | None:
    """The :data:`HCPLAB_CHECKPOINTS` entry of ``variant.tag`` (``None`` for any other tag)."""
    return HCPLAB_CHECKPOINTS.get(f"{variant}.{tag}") if tag else None


def hcplab_pretrained_cfgs(variant: str, **cfg: Any) -> dict[str, dict[str, Any]]:
    """timm default cfgs (``"variant.tag"`` → cfg) of ``variant``'s :data:`HCPLAB_CHECKPOINTS`, ``cfg`` added."""
    return {name: dict(cfg, hf_hub_id=HCPLAB_HUB_ID, hf_hub_filename=ck.file, license="apache-2.0",
                       notes=(f"the DART authors' checkpoint {ck.file} (HCPLab-SYSU/DART), their tokenizer "
                              f"(compat='hcplab'), N = {ck.num_tokens}"
                              + (f"; they report {ck.top1} top-1 (not verified by dartok)" if ck.top1 else ""),))
            for name, ck in HCPLAB_CHECKPOINTS.items() if name.split(".", 1)[0] == variant}


# --------------------------------------------------------------------------- scorer

class _MLP(nn.Module):
    """``Linear → GELU → Linear`` in a ``net`` Sequential: the keys of their ``tools.MLP``."""

    def __init__(self, in_features: int, hidden: int, out_features: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _torchvision_features(trunk: str, cut: int) -> nn.Sequential:
    """torchvision's ``mobilenet_v3_{small,large}(weights=None).features[:cut]`` (BatchNorm eps 1e-3)."""
    _compat.ensure_torchvision_importable()
    import torchvision.models as tvm

    if trunk not in ("mobilenet_v3_small", "mobilenet_v3_large"):
        raise ValueError(f"trunk must be 'mobilenet_v3_small' or 'mobilenet_v3_large', got {trunk!r}")
    return getattr(tvm, trunk)(weights=None).features[:cut]


class HcplabScorer(nn.Module):
    """The authors' score network (``dart/spn.py`` ``ScorePredNetV1`` / ``V2``), for ``DART(compat="hcplab")``.

    ``trunk`` is torchvision's MobileNetV3 cut as they cut it (:data:`HCPLAB_SCORERS`), built
    without weights (a checkpoint supplies them and its BatchNorm statistics), frozen and
    always in eval mode. ``mlp`` is their ``MLP`` (keys ``mlp.net.0`` / ``mlp.net.2``).

    - ``v1``: a score per trunk location ``s = MLP(f)``;
    - ``v2``: a channel gate ``g = sigmoid(MLP(mean_xy f))``, ``s = Σ_c f_c g_c``.

    Then ``s`` is resized to ``grid`` (bilinear, ``align_corners=False``), standardised with
    one mean and one (unbiased) std over the **whole batch**, squashed (v1:
    ``sigmoid(z) + 0.1``; v2: ``sigmoid(2z)``) and each sample divided by its sum.

    Args:
        trunk: ``"mobilenet_v3_small"`` or ``"mobilenet_v3_large"``.
        version: ``"v1"`` (their DeiT models but ``darvit-tiny-v2``) or ``"v2"`` (Vim).
        grid: side of the score map (their 14).

    Shapes:
        ``forward(images B×3×H×W) → pdf B×grid×grid`` (float32 at least, sums to 1 per
        sample; depends on the whole batch). Their models feed it the 448 input.

    Raises:
        ValueError: an unknown trunk / version.
    """

    def __init__(self, trunk: str = "mobilenet_v3_small", version: str = "v1", grid: int = 14):
        super().__init__()
        spec = HCPLAB_SCORERS.get((trunk, version))
        if spec is None:
            raise ValueError(f"(trunk, version) must be one of {sorted(HCPLAB_SCORERS)}, got {(trunk, version)!r}")
        self.trunk_name, self.version, self.spec = trunk, version, spec
        self.grid_size = (grid, grid)
        self.trunk = _torchvision_features(trunk, spec.cut)
        self.trunk.requires_grad_(False)
        self.trunk.eval()
        self.mlp = _MLP(spec.channels, spec.hidden, spec.out)

    def extra_repr(self) -> str:
        return f"trunk={self.trunk_name}[:{self.spec.cut}], version={self.version}, grid={self.grid_size}"

    def train(self, mode: bool = True) -> "HcplabScorer":
        """Train the MLP; the trunk stays in eval mode (the checkpoint's statistics)."""
        super().train(mode)
        self.trunk.eval()
        return self

    def auxiliary_loss(self, targets: torch.Tensor) -> None:
        """No auxiliary loss (:meth:`dartok.DART.auxiliary_loss` asks every scorer)."""
        return None

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """Raw scores ``B×1×grid×grid`` before the batch standardisation (float32 at least)."""
        with torch.no_grad():
            f = self.trunk(images)
        f = f.float() if f.dtype in (torch.float16, torch.bfloat16) else f
        if self.version == "v1":
            s = self.mlp(f.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # B×1×h×w
        else:
            b, c, h, w = f.shape
            flat = f.flatten(2).transpose(1, 2)  # B×hw×C
            gate = torch.sigmoid(self.mlp(flat.mean(1, keepdim=True)))  # B×1×C
            s = (flat * gate).sum(-1).view(b, 1, h, w)
        return F.interpolate(s, size=self.grid_size, mode="bilinear", align_corners=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        s = self.scores(images)
        z = s - s.mean()
        z = z / (z.std() + _EPS_STD)  # one mean and std over the batch tensor, as theirs
        p = torch.sigmoid(z) + 0.1 if self.version == "v1" else torch.sigmoid(2 * z)
        p = p.flatten(1)
        return (p / p.sum(-1, keepdim=True)).view(p.shape[0], *self.grid_size)


# --------------------------------------------------------------------------- partition and sampling

def hcplab_quantiles(p: torch.Tensor, pdf: torch.Tensor) -> torch.Tensor:
    """Inverse CDF of a piecewise-constant density on cells ``[j, j+1)`` (their ``find_quantiles``).

    For each level ``p_k``: ``j`` = the first cell whose cumulative mass reaches it (the last
    cell if none does), then ``j + (p_k − mass before j) / (pdf_j + 1e-8)``.

    Args:
        p: ``K`` levels in [0, 1]. pdf: ``B×L`` non-negative masses (summing to about 1).

    Returns:
        ``B×K`` positions in cell units, in [0, L].
    """
    cum = pdf.cumsum(1)
    levels = p.to(pdf.dtype).unsqueeze(0).expand(pdf.shape[0], -1).contiguous()
    j = torch.searchsorted(cum, levels, side="left").clamp_max(pdf.shape[1] - 1)
    before = torch.where(j > 0, cum.gather(1, (j - 1).clamp_min(0)), torch.zeros_like(levels))
    return j.to(pdf.dtype) + (levels - before) / (pdf.gather(1, j) + _EPS_QUANTILE)


def _levels(n: int, like: torch.Tensor) -> torch.Tensor:
    """The n − 1 inner levels ``k / n`` as their ``linspace(0, 1, n + 1)[1:-1]``."""
    return torch.linspace(0, 1, n + 1, device=like.device, dtype=like.dtype)[1:-1]


def hcplab_row_heights(pdf: torch.Tensor, rows: int) -> torch.Tensor:
    """Row heights in grid-row units (their ``pdf_to_row_heights`` before its pixel scale).

    Each grid row's mass (``B×g×g`` summed over columns, divided by its total + 1e-8) is cut
    at the ``rows − 1`` levels ``k / rows`` (:func:`hcplab_quantiles`).

    Args:
        pdf: ``B×g×g``. rows: R ≥ 1.

    Returns:
        ``B×R`` heights summing to about g.
    """
    row_mass = pdf.sum(-1)
    row_mass = row_mass / (row_mass.sum(-1, keepdim=True) + _EPS_ROWS)
    g = row_mass.shape[1]
    ends = row_mass.new_full((row_mass.shape[0], 1), float(g))
    cuts = torch.cat([torch.zeros_like(ends), hcplab_quantiles(_levels(rows, row_mass), row_mass), ends], 1)
    return cuts.diff(dim=1)


def hcplab_resample_by_rows(cells: torch.Tensor, heights: torch.Tensor) -> torch.Tensor:
    """Average grid rows into new rows by overlap (their ``resample_tokens_by_heights``).

    New row i spans ``[Σ_{<i} h, Σ_{≤i} h)`` in grid-row units (negative heights count as 0);
    it takes the overlap-weighted *mean* of the old rows ``[j, j+1)``, column by column.

    Args:
        cells: ``B×g×w×D`` (a grid of values: pdf with D = 1, position embeddings).
        heights: ``B×R``.

    Returns:
        ``B×(R·w)×D``, row-major.
    """
    h = heights.clamp_min(0)
    ends = h.cumsum(1)
    starts = ends - h
    old = torch.arange(cells.shape[1], device=h.device, dtype=h.dtype)
    overlap = (torch.minimum(ends[..., None], old + 1) - torch.maximum(starts[..., None], old)).clamp_min(0)
    weight = overlap / overlap.sum(-1, keepdim=True).clamp_min(1e-6)  # B×R×g
    out = torch.einsum("brg,bgwd->brwd", weight.to(cells.dtype), cells)
    return out.reshape(out.shape[0], -1, out.shape[-1])


def hcplab_edges(strip_pdf: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """The N + 1 token edges along the strip, in cell units (their ``get_edges_from_pdf``).

    Args:
        strip_pdf: ``B×L`` (the row-averaged pdf of all rows end to end, normalised).
        num_tokens: N ≥ 1.

    Returns:
        ``B×(N+1)`` from 0 to L.
    """
    length = strip_pdf.shape[1]
    ends = strip_pdf.new_full((strip_pdf.shape[0], 1), float(length))
    cuts = torch.cat([torch.zeros_like(ends), hcplab_quantiles(_levels(num_tokens, strip_pdf), strip_pdf), ends], 1)
    return cuts / length * length  # their rescale, kept for its rounding


def hcplab_resample_by_edges(values: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Overlap-weighted means of strip cells ``[j, j+1)`` over each token's span (their
    ``resample_tokens_by_edges``; the edges are first scaled by L / their maximum over the batch).

    Args:
        values: ``B×L×D``. edges: ``B×(N+1)``.

    Returns:
        ``B×N×D``.
    """
    length = values.shape[1]
    edges = edges / edges.max() * length
    old = torch.arange(length, device=edges.device, dtype=edges.dtype)
    lo, hi = edges[:, :-1, None], edges[:, 1:, None]
    overlap = (torch.minimum(hi, old + 1) - torch.maximum(lo, old)).clamp_min(0)
    weight = overlap / (overlap.sum(-1, keepdim=True) + 1e-12)
    return torch.bmm(weight.to(values.dtype), values)


def hcplab_sample(images: torch.Tensor, heights: torch.Tensor, edges: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Their two-stage sampling (``resample_image_by_heights``, then ``dynamic_image_patch_sample``).

    1. Row r (pixels ``[t_r, t_r + h_r)``) is resampled to P pixel rows at
       ``y = t_r + h_r·i/P`` (``i = 0..P−1``; pixel-index coordinates, i.e.
       ``align_corners=True``, clamped to the image: ``padding_mode="border"``), every pixel
       column kept; the R rows are laid side by side into a ``P × (R·W)`` strip.
    2. Token k takes the strip span ``[e_k, e_{k+1})`` at ``x = e_k + (e_{k+1} − e_k)·j/P``
       (``j = 0..P−1``), linear in x (``align_corners=True``; beyond the strip's last pixel the
       value fades to 0: ``padding_mode="zeros"``). Spans cross row ends freely.

    Implemented with gathers and linear blends (no ``grid_sample``).

    Args:
        images: ``B×C×H×W`` float. heights: ``B×R`` row heights in pixels (sum H).
        edges: ``B×(N+1)`` token edges in strip pixels (0 … R·W). patch_size: P.

    Returns:
        ``B×N×C×P×P`` in the dtype of ``edges``.
    """
    b, c, hgt, wid = images.shape
    p = patch_size
    x = images.to(edges.dtype)
    frac = torch.arange(p, device=edges.device, dtype=edges.dtype) / p
    # 1. rows → strip
    tops = heights.cumsum(1) - heights
    ys = (tops[..., None] + heights[..., None] * frac).clamp(0, hgt - 1).flatten(1)  # B×(R·P)
    y0 = ys.floor().clamp_max(max(hgt - 2, 0))
    wy = (ys - y0)[:, None, :, None]
    y0 = y0.long()
    y1 = (y0 + 1).clamp_max(hgt - 1)
    take = lambda idx: x.gather(2, idx[:, None, :, None].expand(b, c, idx.shape[1], wid))  # noqa: E731
    rows = take(y0) * (1 - wy) + take(y1) * wy  # B×C×(R·P)×W
    r = heights.shape[1]
    strip = rows.view(b, c, r, p, wid).permute(0, 1, 3, 2, 4).reshape(b, c, p, r * wid)
    # 2. strip → tokens
    length = r * wid
    xs = (edges[:, :-1, None] + (edges[:, 1:, None] - edges[:, :-1, None]) * frac).flatten(1)  # B×(N·P)
    x0 = xs.floor()
    wx = (xs - x0)[:, None, None, :]
    x0 = x0.long()

    def at(idx: torch.Tensor) -> torch.Tensor:
        inside = ((idx >= 0) & (idx < length))[:, None, None, :]
        got = strip.gather(3, idx.clamp(0, length - 1)[:, None, None, :].expand(b, c, p, idx.shape[1]))
        return got * inside

    out = at(x0) * (1 - wx) + at(x0 + 1) * wx  # B×C×P×(N·P)
    n = edges.shape[1] - 1
    return out.view(b, c, p, n, p).permute(0, 3, 1, 2, 4)


def hcplab_boxes(heights: torch.Tensor, edges: torch.Tensor, grid: int) -> torch.Tensor:
    """Approximate boxes ``B×N×4`` ``(x0, y0, x1, y1)`` in [0, 1] for compat tokens.

    A compat token is a span of the strip and may cover the end of one row and the start of
    the next; its box is the part in the row that holds the span's middle (so the boxes of
    straddling tokens leave the other part uncovered). For drawing and ``tokens_to_map``.

    Args:
        heights: ``B×R`` in grid-row units (sum about ``grid``). edges: ``B×(N+1)`` in cell
            units along the strip (0 … R·grid). grid: g, cells per row.
    """
    r = heights.shape[1]
    mid = (edges[:, :-1] + edges[:, 1:]) / 2
    row = (mid / grid).floor().clamp(0, r - 1).long()
    x0 = ((edges[:, :-1] - row * grid) / grid).clamp(0, 1)
    x1 = ((edges[:, 1:] - row * grid) / grid).clamp(0, 1)
    ends = heights.clamp_min(0).cumsum(1)
    total = ends[:, -1:].clamp_min(1e-12)
    y1 = ends.gather(1, row) / total
    y0 = (ends - heights.clamp_min(0)).gather(1, row) / total
    return torch.stack([x0, y0, x1, y1], -1)


def hcplab_tokenize(images: torch.Tensor, pdf: torch.Tensor, pos_grid: torch.Tensor | None, num_tokens: int,
                    rows: int, patch_size: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Their ``DynamicAdaptiveRegionTokenizer.forward`` after the scorer: partition, patches, positions.

    Steps (their names): row heights from the row masses (``pdf_to_row_heights``); the pdf
    and the position grid averaged into the new rows (``resample_tokens_by_heights``) and the
    pdf renormalised; N + 1 edges cut over all rows end to end (``get_edges_from_pdf``); the
    positions averaged over each token's span (``resample_tokens_by_edges``); the patches
    sampled (:func:`hcplab_sample`), heights scaled to pixels by ``H / g``, edges by
    ``H·R / L`` (their ``x.size(2)``: the input must be square, as their code asserts 448×448).

    Args:
        images: ``B×C×H×W`` float, H = W.
        pdf: ``B×g×g`` summing to 1 per sample (float32 at least).
        pos_grid: ``1×g²×D`` position-embedding grid, or ``None``.
        num_tokens: N. rows: R (their ``target_h = round(√N)``). patch_size: P.

    Returns:
        ``(patches B×N×C×P×P, pos B×N×D or None, boxes B×N×4)`` in ``pdf``'s dtype
        (positions in ``pos_grid``'s).

    Raises:
        ValueError: a non-square image or pdf.
    """
    b, _, hgt, wid = images.shape
    if hgt != wid:
        raise ValueError(f"compat='hcplab' takes square images (their code asserts 448×448), got {hgt}×{wid}")
    g = pdf.shape[-1]
    if pdf.shape[-2] != g:
        raise ValueError(f"compat='hcplab' needs a square score map, got {tuple(pdf.shape[-2:])}")
    heights = hcplab_row_heights(pdf, rows)  # B×R, grid-row units
    strip_pdf = hcplab_resample_by_rows(pdf.unsqueeze(-1), heights).squeeze(-1)
    strip_pdf = strip_pdf / strip_pdf.sum(-1, keepdim=True)
    edges = hcplab_edges(strip_pdf, num_tokens)  # B×(N+1), cell units along the strip
    pos = None
    if pos_grid is not None:
        grid = pos_grid.expand(b, -1, -1).reshape(b, g, g, -1)
        pos = hcplab_resample_by_edges(hcplab_resample_by_rows(grid, heights.to(grid.dtype)), edges.to(grid.dtype))
    edges_px = edges * hgt * rows / strip_pdf.shape[1]  # their new_edges * x.size(2) * R / L
    patches = hcplab_sample(images, heights * (hgt / g), edges_px, patch_size)
    return patches, pos, hcplab_boxes(heights, edges, g)


# --------------------------------------------------------------------------- checkpoints

def load_hcplab_checkpoint(path: str | os.PathLike, use_ema: bool = False) -> dict[str, torch.Tensor]:
    """Read one of the authors' ``.pth`` files: their ``"model"`` state dict (``"model_ema"`` with ``use_ema``).

    Their container (``main.py``) is ``{"model", "model_ema", "optimizer", "lr_scheduler",
    "epoch", "scaler", "args"}``; it is read with ``torch.load(weights_only=True)``, with
    ``argparse.Namespace`` (their ``args``) allowed. A bare state dict is returned as is.
    Their own evaluation (``main.py --eval``) reports both; ``"model"`` is what their
    ``--resume`` / ``--finetune`` load first.

    Raises:
        FileNotFoundError: no such file. ValueError: not a state dict or such a container,
            or ``use_ema`` without a ``"model_ema"`` entry.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - pickle errors of every kind: one message
            raise ValueError(f"{path} cannot be read as a PyTorch checkpoint with weights_only=True ({e})") from None
    return _unwrap(obj, use_ema, str(path))


def _unwrap(obj: Any, use_ema: bool, source: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source}: expected a state dict or a checkpoint dict, got {type(obj).__name__}")
    key = "model_ema" if use_ema else "model"
    if use_ema and not isinstance(obj.get("model_ema"), Mapping):
        raise ValueError(f"{source} has no 'model_ema' state dict")
    if isinstance(obj.get(key), Mapping):
        obj = obj[key]
    return dict(obj)


_SCORER_PREFIX = "patch_embed.spn.spn.spn."


def convert_hcplab_state_dict(state_dict: Mapping[str, Any], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map one of the authors' state dicts (``DARViT`` / ``DARViM``) onto a compat DART model.

    - ``patch_embed.spn.spn.spn.features.<i>.*`` → ``patch_embed.scorer.trunk.<i>.*`` (the
      torchvision layout, unchanged, BatchNorm statistics included);
    - ``patch_embed.spn.spn.spn.mlp.net.{0,2}.*`` → ``patch_embed.scorer.mlp.net.{0,2}.*``;
    - ``pos_embed`` (``1×(1+g²)×D``, always 197 long: their N lives in the model name) →
      the class entry ``pos_embed`` (``1×1×D``: index 0 for DeiT, the model's ``cls_position``
      for Vim, g²//2 = (1+g²)//2 = 98: their middle class token) and the grid ``patch_embed.pos_embed`` (``1×g²×D``);
    - everything else (``cls_token``, ``patch_embed.proj``, ``blocks`` / ``layers``, ``norm`` /
      ``norm_f``, ``head``) keeps its name: timm's ViT and dartok's Vim use theirs.

    Accepts their container (``{"model": ..., ...}``: the ``"model"`` entry). Also usable as
    timm's ``pretrained_filter_fn``.

    Args:
        state_dict: their keys. model: a DART ViT / Vim built with ``compat="hcplab"``.

    Returns:
        A state dict in ``model``'s keys.

    Raises:
        ValueError: ``model`` is not a compat DART model, or a ``pos_embed`` whose length is
            not 1 + the model's grid.
    """
    dart = getattr(model, "patch_embed", None)
    if getattr(dart, "compat", None) != "hcplab":
        raise ValueError("convert_hcplab_state_dict needs a DART model built with compat='hcplab' "
                         "(e.g. timm.create_model('dart_deit_tiny_patch16_224.hcplab_in1k'))")
    sd = _unwrap(state_dict, False, "state_dict")
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.startswith(_SCORER_PREFIX + "features."):
            out["patch_embed.scorer.trunk." + key[len(_SCORER_PREFIX + "features."):]] = value
        elif key.startswith(_SCORER_PREFIX + "mlp."):
            out["patch_embed.scorer." + key[len(_SCORER_PREFIX):]] = value
        else:
            out[key] = value
    pos = out.pop("pos_embed", None)
    if pos is not None and "patch_embed.pos_embed" not in out:
        g2 = dart.pos_grid ** 2
        if pos.dim() != 3 or pos.shape[1] != g2 + 1:
            raise ValueError(f"pos_embed must be 1×{g2 + 1}×D (one class entry + the {dart.pos_grid}×"
                             f"{dart.pos_grid} grid), got {tuple(pos.shape)}")
        # DeiT: first; Vim (dartok's cls_position, N // 2): their middle class token, L // 2 of 197
        cls = model.cls_position(g2) if callable(getattr(model, "cls_position", None)) else 0
        if cls is None:
            raise ValueError("convert_hcplab_state_dict: the model has no class token; the authors' models all do")
        out["pos_embed"] = pos[:, cls:cls + 1]
        out["patch_embed.pos_embed"] = torch.cat([pos[:, :cls], pos[:, cls + 1:]], 1)
    elif pos is not None:
        out["pos_embed"] = pos
    return out
