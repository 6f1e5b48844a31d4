"""DART for video: one token budget shared by all frames of a clip (paper §3.3, §4.4).

The T frames of a ``B×C×T×H×W`` clip (VideoMamba's layout) are stacked vertically into
one tall ``B×C×(T·H)×W`` image, frame 0 on top, and that image is partitioned by the
ordinary 2-D DART partition (docs/method.md §2) with ONE budget N: frames whose content carries
more score mass get more tokens, static or empty frames fewer (paper §3.3, Fig. 5).

Scores: the scorer trunk runs on every frame (``B·T×C'×h×w`` features); the feature
difference between consecutive frames is added to the features the head scores (paper
§4.4; :func:`temporal_difference`), so content that moves scores higher than content that
stays put. The T per-frame score maps are stacked into one ``(T·h)×w`` map and normalised
per sample over the whole clip (docs/method.md §3), so frames compete for the mass.

Position embeddings: the spatial ``g×g×D`` map, tiled once per frame, plus the frame's
temporal embedding form a tall ``(T·g)×g×D`` map; each token gets the exact area average
of that map over its box (:func:`dartok.resample.box_average`), so a box straddling two
frames gets the area-weighted mixture of both frames' embeddings.

Boxes are returned in the tall image's [0, 1] coordinates; :func:`token_frames`,
:func:`frame_token_counts` and :func:`frame_boxes` map them back to frames.

This is the tokenizer half of the old ``dartok.video`` (still importable there); the
VideoMamba model with it is :class:`dartok.models.videomamba.DartVideoMamba`.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._compat import is_tracing
from .localization import stack_frame_boxes
from .partition import DEFAULT_ALPHA, band_layout, normalize_pdf
from .resample import box_average
from .scorer import Scorer, uniform_pdf
from .tokenizer import DART, DartOutput

__all__ = [
    "TEMPORAL_DIFF_MODES",
    "VideoDART",
    "frame_boxes",
    "frame_token_counts",
    "motion_pdf",
    "stack_frames",
    "temporal_difference",
    "token_frames",
    "unstack_frames",
    "video_bands",
]

TEMPORAL_DIFF_MODES = ("abs", "signed", "none")
"""How the frame-difference term of the video scorer is formed (:func:`temporal_difference`)."""


# --------------------------------------------------------------------------- frame helpers


def _check_num_frames(num_frames) -> int:
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be an integer >= 1, got {num_frames!r}")
    return num_frames


def _check_boxes(boxes: torch.Tensor) -> None:
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 3 or boxes.shape[-1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise ValueError(f"boxes must be a B×N×4 tensor (x0, y0, x1, y1), got {shape}")


def stack_frames(video: torch.Tensor) -> torch.Tensor:
    """``B×C×T×H×W`` clip → ``B×C×(T·H)×W`` tall image, frame 0 on top (paper §3.3).

    A view when the clip is contiguous (VideoMamba's layout stores T before H already).

    Raises:
        ValueError: not a rank-5 tensor.
    """
    if not isinstance(video, torch.Tensor) or video.dim() != 5:
        shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise ValueError(f"video must be a B×C×T×H×W tensor, got {shape}")
    b, c, t, h, w = video.shape
    return video.reshape(b, c, t * h, w)


def unstack_frames(tall: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Inverse of :func:`stack_frames`: ``B×C×(T·H)×W`` → ``B×C×T×H×W``.

    Raises:
        ValueError: not rank 4, or a height not divisible by ``num_frames``.
    """
    num_frames = _check_num_frames(num_frames)
    if not isinstance(tall, torch.Tensor) or tall.dim() != 4 or tall.shape[2] % num_frames:
        shape = tuple(tall.shape) if isinstance(tall, torch.Tensor) else type(tall).__name__
        raise ValueError(f"tall image must be B×C×(T·H)×W with T = {num_frames} dividing the height, got {shape}")
    b, c, th, w = tall.shape
    return tall.reshape(b, c, num_frames, th // num_frames, w)


def video_bands(num_tokens: int, num_frames: int) -> int:
    """Default number of bands R for a budget N on a clip of T square frames.

    ``R = T·r`` with ``r = max(1, round(√(N/T)))`` bands per frame's worth of mass,
    clamped to N. Two properties follow:

    - boxes are about square under a uniform pdf (the tall image has aspect ``T:1``; the
      image rule ``round(√N)`` of docs/method.md §2 would give boxes T times taller than wide);
    - T divides R, and each group of r consecutive bands holds ``⌊(t+1)N/T⌋ − ⌊tN/T⌋``
      tokens. When T also divides N, the band boundaries include the mass fractions
      ``t/T``: if every frame holds the same mass (a static clip) they fall exactly on the
      frame boundaries, each frame gets exactly ``N/T`` tokens and no box straddles two
      frames. When T does not divide N a frame's share ``N/T`` is fractional, so one band
      per frame boundary straddles it.

    When ``N = T·g²`` this is ``T·g``: a uniform pdf then gives every frame the g×g ViT grid.

    Raises:
        ValueError: N < 1 or T < 1.
    """
    band_layout(num_tokens)  # validates num_tokens
    num_frames = _check_num_frames(num_frames)
    per_frame = max(1, round(math.sqrt(num_tokens / num_frames)))
    return min(num_tokens, num_frames * per_frame)


def token_frames(boxes: torch.Tensor, num_frames: int) -> torch.Tensor:
    """The frame each token belongs to, by its box centre: ``B×N`` int64 in ``[0, T)``.

    Frame t occupies ``y ∈ [t/T, (t+1)/T)`` of the tall image; a box straddling two
    frames is assigned to the one holding its centre.

    Raises:
        ValueError: boxes not ``B×N×4`` or T < 1.
    """
    _check_boxes(boxes)
    num_frames = _check_num_frames(num_frames)
    cy = (boxes[..., 1] + boxes[..., 3]) * 0.5
    return torch.floor(cy.detach() * num_frames).long().clamp_(0, num_frames - 1)


def frame_token_counts(boxes: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Tokens per frame, ``B×T`` int64, counting each token in the frame of its box centre.

    Each row sums to N. With the stacked partition the counts follow each frame's share of
    the score mass (every token holds ``1/N`` of it): a frame holding mass m gets about
    ``m·N`` tokens, exactly when band boundaries fall on frame boundaries (e.g. a static
    clip with T dividing both N and the number of bands, see :func:`video_bands`).

    Args:
        boxes: ``B×N×4`` boxes in the tall image's [0, 1] coordinates.
        num_frames: T ≥ 1.

    Raises:
        ValueError: boxes not ``B×N×4`` or T < 1.
    """
    idx = token_frames(boxes, num_frames)
    counts = torch.zeros(idx.shape[0], num_frames, dtype=torch.long, device=idx.device)
    return counts.scatter_add_(1, idx, torch.ones_like(idx))


def frame_boxes(boxes: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each box clipped to each frame, in that frame's own [0, 1] coordinates.

    Args:
        boxes: ``B×N×4`` boxes in the tall image's [0, 1] coordinates.
        num_frames: T ≥ 1.

    Returns:
        ``(clipped, share)``: ``clipped`` is ``B×N×T×4``, box n intersected with frame t
        and expressed in frame t's coordinates (``y' = y·T − t``; x unchanged); ``share``
        is ``B×N×T``, the fraction of the box's height inside frame t (in [0, 1], summing
        to 1 over t; 0 where the box misses the frame, whose clipped box is then empty).

    Raises:
        ValueError: boxes not ``B×N×4`` or T < 1.
    """
    _check_boxes(boxes)
    num_frames = _check_num_frames(num_frames)
    t = torch.arange(num_frames, device=boxes.device, dtype=boxes.dtype)
    y0 = (boxes[..., 1:2] * num_frames - t).clamp(0.0, 1.0)  # B×N×T
    y1 = (boxes[..., 3:4] * num_frames - t).clamp(0.0, 1.0)
    x0 = boxes[..., 0:1].expand_as(y0)
    x1 = boxes[..., 2:3].expand_as(y0)
    height = ((boxes[..., 3:4] - boxes[..., 1:2]) * num_frames).clamp_min(1e-12)
    share = (y1 - y0) / height
    return torch.stack([x0, y0, x1, y1], dim=-1), share


def temporal_difference(feats: torch.Tensor, mode: str = "abs") -> torch.Tensor | None:
    """The frame-difference term of the video scorer (paper §3.3, §4.4).

    ``d_t = f_t − f_{t−1}`` for t ≥ 1 (the change that frame t brings), and for the first
    frame, which has no predecessor, ``d_0 = f_0 − f_1``: its difference to its only
    neighbour, so that in a clip in uniform motion frame 0 is not singled out as static
    (a zero there would hand frame 0 fewer tokens in every moving clip). A single-frame
    clip gets ``d = 0``.

    Args:
        feats: ``B×T×C×h×w`` per-frame trunk features.
        mode: ``"abs"`` (default): ``|d_t|``, the magnitude of change, which raises the
            score (for a positive channel gate) wherever anything moved, so changing
            frames draw tokens from static ones; ``"signed"``: ``d_t`` as the paper words it
            (for content that only moves, a frame's signed differences roughly cancel over
            the frame, so they shift mass within a frame rather than between frames until
            the gate learns otherwise); ``"none"``: no difference term (returns ``None``).

    Returns:
        ``B×T×C×h×w`` tensor (or ``None`` for ``"none"``).

    Raises:
        ValueError: unknown mode or feats not rank 5.
    """
    if mode not in TEMPORAL_DIFF_MODES:
        raise ValueError(f"temporal_diff must be one of {TEMPORAL_DIFF_MODES}, got {mode!r}")
    if feats.dim() != 5:
        raise ValueError(f"feats must be B×T×C×h×w, got shape {tuple(feats.shape)}")
    if mode == "none":
        return None
    if feats.shape[1] == 1:
        return torch.zeros_like(feats)
    diff = feats[:, 1:] - feats[:, :-1]  # d_1 .. d_{T-1}
    diff = torch.cat([-diff[:, :1], diff], dim=1)  # d_0 = f_0 − f_1
    return diff.abs() if mode == "abs" else diff


def motion_pdf(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A training-free motion map of a clip: where its pixels change, as a pdf over the stacked cells.

    ``m_t = mean_c |x_t − x_{t−1}|`` for t ≥ 1 and ``m_0 = mean_c |x_0 − x_1|`` (frame 0 takes its
    difference to its only neighbour, as :func:`temporal_difference` does), averaged over each
    of the ``h×w`` cells of every frame (:func:`torch.nn.functional.adaptive_avg_pool2d`: the
    exact cell means when ``H``, ``W`` are multiples of ``h``, ``w``), stacked frame 0 on top and
    normalised over the whole clip. Content that moves draws mass from content that stays, both
    where it is and where it was; a clip in which nothing changes (or a one-frame clip) gives the
    uniform pdf. It is the pixel-level counterpart of the paper's feature difference (§3.3, §4.4):
    it needs no training, which a scorer learning from scratch does (docs/method.md §10).

    Args:
        video: ``B×C×T×H×W`` clip, floating point.
        size: ``(h, w)`` cells per frame (the scorer's grid).

    Returns:
        ``B×(T·h)×w`` in the clip's dtype, ≥ 0, each sample summing to 1.

    Raises:
        ValueError: a clip that is not a floating rank-5 tensor, or a bad ``size``.
    """
    if not isinstance(video, torch.Tensor) or video.dim() != 5 or not video.is_floating_point():
        shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise ValueError(f"video must be a floating B×C×T×H×W tensor, got {shape}")
    if (len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size)
            or size[0] > video.shape[-2] or size[1] > video.shape[-1]):
        raise ValueError(f"size must be (h, w), ints in [1, frame side], got {size!r} for frames {tuple(video.shape[-2:])}")
    b, t = video.shape[0], video.shape[2]
    if t < 2:
        return uniform_pdf(b, (t * size[0], size[1]), device=video.device, dtype=video.dtype)
    diff = temporal_difference(video.transpose(1, 2), "abs").mean(2)  # B×T×H×W, m_0 = |x_0 − x_1|
    cells = F.adaptive_avg_pool2d(diff, size).reshape(b, t * size[0], size[1])  # frame t in rows t·h..(t+1)·h
    return normalize_pdf(cells).to(video.dtype)  # a clip with no change: uniform


# --------------------------------------------------------------------------- the tokenizer


class VideoDART(DART):
    """DART for clips: frames stacked into one tall image, one budget N for the clip.

    A :class:`~dartok.tokenizer.DART` (same ``proj`` conv, partition, resampling and
    outputs) whose input is a ``B×C×T×H×W`` clip. Paper §3.3 (stacked partition) and §4.4
    (frame-difference scorer); see the module docstring for the pipeline.

    Args:
        num_tokens: N ≥ 1, tokens per clip (any integer; the paper's SSv2 setting is
            ``196×4`` for T = 8, half of VideoMamba's ``196×8``).
        num_frames: T ≥ 1, frames per clip; inputs must have exactly T frames.
        patch_size, in_chans, embed_dim, alpha, img_size (the per-frame side), bias,
            norm_layer, antialias, check_inputs: as for :class:`DART`.
        pos_grid: side g of the spatial ``g×g×D`` position map (0: no position
            embeddings, spatial or temporal).
        bands: number of bands R of the tall image (``None`` → :func:`video_bands`:
            ``T·round(√(N/T))``, square boxes for square frames, band boundaries on frame
            boundaries for a static clip, ``T·g`` when ``N = T·g²``).
        scorer: a :class:`~dartok.scorer.Scorer` (head ``"v2"`` as in the paper; ``"v1"``
            works too), a dict of its kwargs, or ``None`` (uniform pdf over the clip).
        temporal_diff: ``"abs"`` (default), ``"signed"`` or ``"none"``; the frame-difference
            term added to the scorer's features (:func:`temporal_difference`).
        motion_prior: share β in [0, 1] of the training-free :func:`motion_pdf` in the scorer's
            pdf, ``(1 − β)·scorer pdf + β·motion pdf`` (before ``alpha``); 0 (default) is the
            paper's. It stays at β (it is not annealed): the scorer learns alongside it through
            its ``1 − β`` share. Used with a scorer only (a uniform or given pdf is left alone).
        score_source: ``"scorer"`` (default), ``"oracle"`` (:class:`DART`) or ``"motion"``: no
            scorer, the pdf is :func:`motion_pdf` alone on the score grid (``oracle_grid``; the
            factories pass the grid the scorer would have made). Its boxes are those of
            ``motion_prior=1`` with a scorer, without the scorer's cost (docs/method.md §6).

    Attributes:
        pos_embed: ``1×g²×D`` spatial map (as in :class:`DART`).
        temporal_pos_embedding: ``1×T×D`` per-frame embedding (zeros at init, as
            VideoMamba's), added to every cell of its frame in the tall map.

    Shapes:
        ``forward(video B×C×T×H×W, pdf=None | B×(T·h)×w | B×T×h×w) → DartOutput`` with
        tokens/pos_embed ``B×N×D``, boxes ``B×N×4`` in the tall image's [0, 1] coordinates
        (band-major, i.e. frame-major: tokens of frame 0 first), pdf ``B×(T·h)×w`` (sums to
        1 over the whole clip).

    Raises:
        ValueError: at construction for a bad budget/layout/alpha/num_frames/temporal_diff,
            or a scorer that is not a :class:`Scorer`; in forward for a clip that is not rank
            5, has a frame count other than ``num_frames``, the wrong channel count, NaN/Inf
            values, or a bad pdf.
    """

    supports_cam = False  # a clip's label is not every frame's: no auxiliary CAM head (docs/method.md §10)
    supports_motion = True  # score_source="motion": the frame-difference map alone


    def __init__(
        self,
        num_tokens: int = 196 * 4,
        num_frames: int = 8,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 192,
        pos_grid: int = 14,
        bands: int | None = None,
        alpha: float = DEFAULT_ALPHA,
        scorer: Scorer | dict | None = None,
        img_size: int = 224,
        bias: bool = True,
        norm_layer: type[nn.Module] | None = None,
        antialias: bool = False,
        check_inputs: bool = True,
        temporal_diff: str = "abs",
        score_source: str = "scorer",
        oracle_grid: tuple[int, int] | None = None,
        motion_prior: float = 0.0,
    ):
        num_frames = _check_num_frames(num_frames)
        if isinstance(motion_prior, bool) or not isinstance(motion_prior, (int, float)) or not 0 <= motion_prior <= 1:
            raise ValueError(f"motion_prior must be a number in [0, 1] (the motion map's share of the pdf), "
                             f"got {motion_prior!r}")
        if score_source == "motion" and motion_prior:
            raise ValueError(f"motion_prior mixes the motion map into a scorer's pdf; score_source='motion' "
                             f"uses the motion map alone: leave motion_prior at 0, got {motion_prior!r}")
        bands_option = bands
        if bands is None:
            bands = video_bands(num_tokens, num_frames)
        if temporal_diff not in TEMPORAL_DIFF_MODES:
            raise ValueError(f"temporal_diff must be one of {TEMPORAL_DIFF_MODES}, got {temporal_diff!r}")
        super().__init__(
            num_tokens=num_tokens, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
            pos_grid=pos_grid, bands=bands, alpha=alpha, scorer=scorer, img_size=img_size, bias=bias,
            norm_layer=norm_layer, antialias=antialias, check_inputs=check_inputs,
            score_source=score_source, oracle_grid=oracle_grid,
        )
        if self.scorer is not None and not isinstance(self.scorer, Scorer):
            raise ValueError(
                f"VideoDART needs a dartok Scorer (per-frame features + clip-wide normalisation), "
                f"got {type(self.scorer).__name__}"
            )
        self.num_frames = num_frames
        self._bands_option = bands_option
        self.temporal_diff = temporal_diff
        self.motion_prior = float(motion_prior)
        if pos_grid:
            self.temporal_pos_embedding = nn.Parameter(torch.zeros(1, num_frames, embed_dim))
        else:
            self.register_parameter("temporal_pos_embedding", None)

    def _default_bands(self, num_tokens: int) -> int | None:
        """The bands given at construction, else :func:`video_bands` of the new budget."""
        return video_bands(num_tokens, self.num_frames) if self._bands_option is None else self._bands_option

    def extra_repr(self) -> str:
        motion = f", motion_prior={self.motion_prior}" if self.motion_prior else ""
        return f"num_frames={self.num_frames}, temporal_diff={self.temporal_diff!r}{motion}, " + super().extra_repr()

    def feat_ratio(self, as_scalar: bool = True):
        """Nominal frame pixels per token side: ``img_size / √(N/T)`` (a clip's N tokens share T frames)."""
        ratio = self.img_size[0] / math.sqrt(self.num_tokens / self.num_frames)
        return ratio if as_scalar else (ratio, ratio)

    def _check_video(self, video: torch.Tensor) -> None:
        """Raise ``ValueError`` for a clip that is not ``B×C×T×H×W`` with this C and T, or not
        finite; skipped under graph capture, as :meth:`DART._check_images`."""
        if is_tracing(video):
            return
        if not isinstance(video, torch.Tensor) or video.dim() != 5:
            shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
            raise ValueError(f"video must be a B×C×T×H×W tensor (VideoMamba's layout), got {shape}")
        if video.shape[2] != self.num_frames:
            raise ValueError(
                f"video has {video.shape[2]} frames (dim 2 of B×C×T×H×W), this VideoDART expects "
                f"num_frames={self.num_frames}"
            )
        if video.shape[1] != self.in_chans:
            raise ValueError(f"video has {video.shape[1]} channels (dim 1 of B×C×T×H×W), "
                             f"this VideoDART expects in_chans={self.in_chans}")
        self._check_images(stack_frames(video))  # dtype, size, NaN/Inf

    def score_grid(self) -> tuple[int, int]:
        """``(h, w)`` of one frame's score map (the pdf is ``(T·h)×w``): the scorer's, else
        ``oracle_grid``, else the position grid (``round(√(N/T))`` without one)."""
        if self.scorer is not None:
            return self.scorer.grid_size
        if self.oracle_grid is not None:
            return self.oracle_grid
        side = self.pos_grid or max(1, round(math.sqrt(self.num_tokens / self.num_frames)))
        return side, side

    def object_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """Per-frame object boxes ``B×T×4`` / ``B×T×K×4`` → ``B×(T·K)×4`` in the stacked clip's
        coordinates (:func:`dartok.localization.stack_frame_boxes`).

        Raises:
            ValueError: bad boxes, or T not ``num_frames``.
        """
        if isinstance(boxes, torch.Tensor) and boxes.dim() in (3, 4) and boxes.shape[1] != self.num_frames:
            raise ValueError(f"frame boxes must have T = num_frames = {self.num_frames} (dim 1), got {tuple(boxes.shape)}")
        return stack_frame_boxes(boxes)

    def pdf_size(self) -> tuple[int, int]:
        """``(T·h, w)``: the clip's stacked score map."""
        h, w = self.score_grid()
        return self.num_frames * h, w

    def frame_features(self, video: torch.Tensor) -> torch.Tensor:
        """Per-frame trunk features ``B×T×C'×h×w`` (the scorer's resized copy of each frame)."""
        b, c, t, h, w = video.shape
        frames = video.transpose(1, 2).reshape(b * t, c, h, w)
        feats = self.scorer.features(frames)
        return feats.reshape(b, t, *feats.shape[1:])

    def score(self, video: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """The clip's pdf ``B×(T·h)×w``: per-frame scores with the frame-difference term,
        stacked, normalised per sample over the whole clip (docs/method.md §3), with the
        ``motion_prior`` share of :func:`motion_pdf` mixed in. :func:`motion_pdf` alone on
        :meth:`score_grid` with ``score_source="motion"``; uniform without a scorer otherwise.
        """
        b, t = video.shape[0], video.shape[2]
        if self.score_source == "motion":
            return motion_pdf(video, self.score_grid())
        if self.scorer is None:
            h, w = self.score_grid()
            return uniform_pdf(b, (t * h, w), device=video.device)
        feats = self.frame_features(video)  # B×T×C'×h×w
        diff = temporal_difference(feats, self.temporal_diff)
        flat = feats.flatten(0, 1)
        scores = self.scorer.scores_from_features(flat, None if diff is None else diff.flatten(0, 1))
        scores = scores.reshape(b, t * scores.shape[-2], scores.shape[-1])  # frame t in rows t·h..(t+1)·h
        pdf = self.scorer.pdf_from_scores(scores)
        if self.motion_prior > 0:
            motion = motion_pdf(video, tuple(self.scorer.grid_size)).to(pdf.dtype)
            pdf = (1.0 - self.motion_prior) * pdf + self.motion_prior * motion
        return pdf

    def pos_map(self) -> torch.Tensor | None:
        """The tall ``1×(T·g)×g×D`` position map: spatial map tiled per frame + temporal embedding."""
        if self.pos_embed is None:
            return None
        g, t, d = self.pos_grid, self.num_frames, self.embed_dim
        tall = self.pos_embed.view(1, 1, g, g, d) + self.temporal_pos_embedding.view(1, t, 1, 1, d)
        return tall.reshape(1, t * g, g, d)

    def position_embeddings(self, boxes: torch.Tensor) -> torch.Tensor:
        """``B×N×D`` exact area averages of the tall map (:meth:`pos_map`) over ``boxes``."""
        tall = self.pos_map()
        if tall is None:
            return boxes.new_zeros(boxes.shape[0], boxes.shape[1], self.embed_dim)
        return box_average(tall, boxes)

    def _clip_pdf(self, pdf: torch.Tensor, batch: int) -> torch.Tensor:
        if isinstance(pdf, torch.Tensor) and pdf.dim() == 4:
            if pdf.shape[1] != self.num_frames:
                raise ValueError(
                    f"a B×T×h×w pdf must have T = num_frames = {self.num_frames}, got {tuple(pdf.shape)}")
            pdf = pdf.reshape(pdf.shape[0], -1, pdf.shape[-1])
        if not isinstance(pdf, torch.Tensor) or pdf.dim() != 3 or pdf.shape[0] != batch:
            shape = tuple(pdf.shape) if isinstance(pdf, torch.Tensor) else type(pdf).__name__
            raise ValueError(f"pdf must be B×(T·h)×w or B×T×h×w with B = {batch} (the clip batch), got {shape}")
        return pdf

    def forward(self, video: torch.Tensor, pdf: torch.Tensor | None = None) -> DartOutput:  # type: ignore[override]
        """Tokenize a clip: ``B×C×T×H×W`` → :class:`DartOutput` (see the class docstring).

        ``pdf``, if given, replaces the scorer: ``B×(T·h)×w`` over the tall image or
        ``B×T×h×w`` per frame (stacked; normalised over the whole clip, not per frame).
        """
        if self.check_inputs:
            self._check_video(video)
        pdf = self._pdf_or_given(pdf)
        scored = pdf is None
        pdf = self.score(video) if scored else self._clip_pdf(pdf, video.shape[0])
        return self._tokenize(stack_frames(video), pdf, scored=scored)  # _check_video checked the frames

    def frame_token_counts(self, boxes: torch.Tensor) -> torch.Tensor:
        """``B×T`` tokens per frame for this tokenizer's T (:func:`frame_token_counts`)."""
        return frame_token_counts(boxes, self.num_frames)

    def token_frames(self, boxes: torch.Tensor) -> torch.Tensor:
        """``B×N`` frame index of each token (:func:`token_frames`)."""
        return token_frames(boxes, self.num_frames)

    def frame_boxes(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes clipped to each frame, in frame coordinates (:func:`frame_boxes`)."""
        return frame_boxes(boxes, self.num_frames)
