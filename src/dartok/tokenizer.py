"""The DART tokenizer as an ``nn.Module``: scorer → partition → resample → project.

docs/method.md §1. A drop-in for timm's ``PatchEmbed``: same ``proj`` (``Conv2d(C, D, P, P)``, so
a ViT's ``patch_embed.proj`` weights load unchanged), but it returns the tokens together
with their position embeddings, boxes and pdf.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._compat import is_tracing
from .compat.hcplab import HcplabScorer, hcplab_tokenize
from .localization import box_pdf
from .partition import (DEFAULT_ALPHA, PARTITIONS, band_layout, cuts_to_boxes, grid_cuts, grid_shape, mix_uniform,
                        normalize_pdf, partition_pdf, work_dtype)
from .resample import batch_chunks, box_average, sample_patches
from .scorer import PRIORS, Scorer, _Stash, uniform_pdf

__all__ = ["COMPAT_MODES", "DART", "DartOutput", "PRIOR_MODES", "SCORE_SOURCES"]

PRIOR_MODES = ("mix", "teach", "both")
"""What :class:`DART`'s training-free ``prior`` does while its share λ > 0 (docs/method.md §10):
``"mix"`` puts it into the pdf the partition cuts, ``(1 − λ)·pdf + λ·prior``; ``"teach"`` adds
``λ·KL(prior ‖ pdf)`` to the training loss, so the scorer learns it; ``"both"``."""

COMPAT_MODES = ("hcplab",)
"""Other implementations :class:`DART` can reproduce (``compat=``): ``"hcplab"``, the DART
authors' tokenizer, defects included (:mod:`dartok.compat.hcplab`, docs/method.md §4a)."""

SCORE_SOURCES = ("scorer", "oracle", "motion")
"""Where :class:`DART` takes its score map from: its scorer (or uniform without one), the
data's object box (``"oracle"``: :meth:`DART.oracle_pdf`, given per batch; docs/method.md §9),
or, for a clip, the frame-difference map alone (``"motion"``: no scorer,
:func:`dartok.video_tokenizer.motion_pdf`; :class:`~dartok.video_tokenizer.VideoDART` only,
docs/method.md §6)."""


class DartOutput(NamedTuple):
    """What :class:`DART` returns.

    Attributes:
        tokens: ``B×N×D`` projected patches (no position embedding added).
        pos_embed: ``B×N×D`` position embeddings, the area average of the learnable map
            over each box (zeros if the module has no map).
        boxes: ``B×N×4`` boxes ``(x0, y0, x1, y1)`` in [0, 1], band-major.
        pdf: ``B×h×w`` the score map used (after alpha mixing), sums to 1 per sample.
    """

    tokens: torch.Tensor
    pos_embed: torch.Tensor
    boxes: torch.Tensor
    pdf: torch.Tensor


class DART(nn.Module):
    """Differentiable Dynamic Adaptive Region Tokenizer (paper §3, docs/method.md §1).

    Args:
        num_tokens: N ≥ 1, tokens per image (any integer).
        patch_size: P, side in pixels each box is resampled to (16 in the paper).
        in_chans: image channels C.
        embed_dim: token width D.
        pos_grid: side g of the learnable ``g×g×D`` position-embedding map (a ViT's own
            grid, 14 for 224/16); 0 disables position embeddings.
        bands: number of bands R (``None`` → ``round(√N)``).
        alpha: uniform mixing weight in [0, 1) (:func:`dartok.partition.mix_uniform`).
        scorer: a :class:`~dartok.scorer.Scorer`, a dict of its keyword arguments, or
            ``None`` (no learned scores: the pdf is uniform unless one is passed to
            ``forward``).
        img_size: nominal input side (only reported, e.g. for FLOP counts and data
            config); any input size works.
        bias: whether ``proj`` has a bias.
        norm_layer: optional norm applied to the tokens, as in ``PatchEmbed``.
        antialias: anti-alias boxes larger than P×P pixels with exact sub-cell means
            (:func:`dartok.resample.sample_patches`); off by default, as in the paper.
        check_inputs: validate images (rank, channels, finite values) on every eager call
            (graph captures skip the checks: ``torch.export``, ``torch.compile``, FX).
        score_source: ``"scorer"`` (default: the scorer's map, uniform without one) or
            ``"oracle"``: no scorer; every call needs a pdf, passed as ``pdf=`` or set for
            the calls inside :meth:`given_pdf` (e.g. :meth:`oracle_pdf` of the true object
            boxes, which the training loop passes for datasets that provide them);
            ``"motion"``: no scorer, the clip's frame-difference map (tokenizers with
            ``supports_motion``: :class:`~dartok.video_tokenizer.VideoDART`).
        oracle_grid: ``(h, w)`` of the score grid without a scorer (the oracle's, the motion
            map's; default: the position grid, else ``round(√N)`` per side; the model
            factories pass the grid the scorer would have made).
        prior: ``None`` or a training-free score map of :data:`dartok.scorer.PRIORS`
            (``"saliency"``, ``"edges"``) mixed into the scorer's pdf as
            ``(1 − λ)·pdf + λ·prior`` with ``λ = prior_weight`` (a plain float attribute, 0
            at construction; training anneals it from 1 to 0 over ``prior_epochs``,
            docs/method.md §10). Only for score maps this module computes itself.
        prior_mode: one of :data:`PRIOR_MODES`: the prior is mixed into the pdf
            (``"mix"``), taught to the scorer through an auxiliary loss (``"teach"``,
            :meth:`auxiliary_loss`), or ``"both"``.
        partition: one of :data:`dartok.partition.PARTITIONS`: ``"bands"`` (default, the
            paper's irregular partition, every box 1/N of the mass) or ``"grid"``, the
            non-uniform regular ``bands × N/bands`` grid of paper App. C
            (:func:`dartok.partition.grid_cuts`; ``bands`` must divide N; docs/method.md §12).
        compat: ``None`` (default: dartok's tokenizer) or ``"hcplab"``: the DART authors'
            tokenizer, reproduced *with its defects, on purpose*, for their released weights
            (:mod:`dartok.compat.hcplab`, docs/method.md §4a): batch-standardised scores from
            an :class:`~dartok.compat.hcplab.HcplabScorer` (``scorer`` a dict of its kwargs,
            one, or ``None`` for a uniform pdf), rows from row quantiles, one column cut over
            all rows end to end (tokens may straddle rows), sub-cell top-left sampling,
            position embeddings by two 1-D overlap averages. ``bands`` must be ``None`` or
            ``round(√N)`` (theirs), ``pos_grid`` the score grid's side; ``alpha``, ``prior``,
            ``antialias``, ``partition="grid"`` and the oracle do not apply. Square inputs
            only. The boxes it returns are approximate (:func:`~dartok.compat.hcplab.hcplab_boxes`).

    Shapes:
        ``forward(images B×C×H×W, pdf=None | B×h×w) → DartOutput``.

    Raises:
        ValueError: at construction for an impossible budget/layout or alpha, or options
            ``compat`` does not take; in forward
            for images of the wrong rank or channel count, NaN/Inf pixels, or a bad pdf;
            ``score_source="oracle"`` with a scorer, or called without a pdf;
            ``score_source="motion"`` with a scorer or on a tokenizer of still images.
    """

    supports_cam = True
    """The scorer's auxiliary CAM head applies: one image, one label (docs/method.md §10)."""
    supports_motion = False
    """``score_source="motion"`` applies: it needs frames (:class:`~dartok.video_tokenizer.VideoDART`)."""

    def __init__(
        self,
        num_tokens: int = 196,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        pos_grid: int = 14,
        bands: int | None = None,
        alpha: float = DEFAULT_ALPHA,
        scorer: Scorer | dict | None = None,
        img_size: int = 448,
        bias: bool = True,
        norm_layer: type[nn.Module] | None = None,
        antialias: bool = False,
        check_inputs: bool = True,
        score_source: str = "scorer",
        oracle_grid: tuple[int, int] | None = None,
        prior: str | None = None,
        prior_mode: str = "both",
        partition: str = "bands",
        compat: str | None = None,
    ):
        super().__init__()
        if compat is not None:
            scorer = self._check_compat(compat, num_tokens, bands, alpha, scorer, pos_grid, antialias,
                                        score_source, prior, partition)
        self.compat = compat
        if partition not in PARTITIONS:
            raise ValueError(f"partition must be one of {PARTITIONS}, got {partition!r}")
        self.partition_mode = partition
        if prior is not None and prior not in PRIORS:
            raise ValueError(f"prior must be None or one of {sorted(PRIORS)}, got {prior!r}")
        if prior_mode not in PRIOR_MODES:
            raise ValueError(f"prior_mode must be one of {PRIOR_MODES}, got {prior_mode!r}")
        self.prior = prior
        self.prior_mode = prior_mode
        self.prior_weight = 0.0
        self._prior_stash = _Stash()
        if score_source not in SCORE_SOURCES:
            raise ValueError(f"score_source must be one of {SCORE_SOURCES}, got {score_source!r}")
        if score_source == "oracle" and scorer is not None:
            raise ValueError("score_source='oracle' takes its score map from the data; pass scorer=None")
        if score_source == "motion" and not self.supports_motion:
            raise ValueError(f"score_source='motion' (the frame-difference map) needs a clip: VideoDART, not "
                             f"{type(self).__name__}; choose from 'scorer', 'oracle'")
        if score_source == "motion" and scorer is not None:
            raise ValueError("score_source='motion' takes its score map from the frames; pass scorer=None")
        if oracle_grid is not None:
            ok = (isinstance(oracle_grid, (tuple, list)) and len(oracle_grid) == 2
                  and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in oracle_grid))
            if not ok:
                raise ValueError(f"oracle_grid must be (h, w) with two integers >= 1, got {oracle_grid!r}")
            oracle_grid = (int(oracle_grid[0]), int(oracle_grid[1]))
        self.score_source = score_source
        self.oracle_grid = oracle_grid
        self._given_pdf: torch.Tensor | None = None
        self._bands_option = bands  # None: every budget takes its own default layout (set_num_tokens)
        self.counts = self._layout(num_tokens, bands)
        mix_uniform(torch.ones(1, 1, 1), alpha)  # validates alpha
        if isinstance(patch_size, (tuple, list)):
            if patch_size[0] != patch_size[1]:
                raise ValueError(f"patch_size must be square, got {tuple(patch_size)}")
            patch_size = patch_size[0]
        self.num_tokens = num_tokens
        self.num_patches = num_tokens  # timm PatchEmbed compatibility
        self.bands = len(self.counts)
        self.patch_size = (patch_size, patch_size)
        self.img_size = (img_size, img_size)
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.alpha = 0.0 if compat else float(alpha)
        self.check_inputs = check_inputs
        self.antialias = antialias
        self.flatten = True
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()
        self.pos_grid = pos_grid
        if pos_grid:
            self.pos_embed = nn.Parameter(torch.zeros(1, pos_grid * pos_grid, embed_dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:
            self.register_parameter("pos_embed", None)
        if isinstance(scorer, dict):
            scorer = Scorer(in_chans=in_chans, **scorer)
        self.scorer = scorer

    def _layout(self, num_tokens: int, bands: int | None) -> tuple[int, ...]:
        """Tokens per band for budget ``num_tokens`` (:func:`~dartok.partition.band_layout`; the
        ``"grid"`` partition also checks every row holds the same count). Raises ``ValueError``."""
        counts = band_layout(num_tokens, bands)
        if self.partition_mode == "grid":
            grid_shape(num_tokens, len(counts))  # validates: every row the same count
        return counts

    def set_num_tokens(self, num_tokens: int, bands: int | None = None) -> None:
        """Change the token budget N in place, without retraining (the elastic budget; README
        "Elastic token budget").

        Nothing learned depends on N: the scorer's map, the ``g×g`` position map (each token
        takes its area average over its box) and ``proj`` are the same for every budget, so
        only the band layout changes, and the module then computes exactly what one built
        with ``num_tokens`` and the same weights computes. ``bands`` ``None`` keeps the rule
        the module was built with: the ``bands`` given at construction, else the default
        for N (``round(√N)``; a clip: :func:`~dartok.video_tokenizer.video_bands`).

        Args:
            num_tokens: the new N, an integer ≥ 1 (``partition="grid"``: one that the rows
                divide evenly).
            bands: R for the new budget, 1 ≤ R ≤ N (``None``: as above).

        Raises:
            ValueError: N not an integer ≥ 1, R outside [1, N], or (``partition="grid"``) a
                layout with uneven rows; the module is left unchanged.
        """
        if self.compat and bands is not None and bands != max(1, round(math.sqrt(num_tokens))):
            raise ValueError(f"compat='hcplab' cuts round(√N) rows (their target_h); got bands={bands}")
        counts = self._layout(num_tokens, self._default_bands(num_tokens) if bands is None else bands)
        self.counts = counts
        self.num_tokens = self.num_patches = num_tokens
        self.bands = len(counts)

    def _default_bands(self, num_tokens: int) -> int | None:
        """R for budget ``num_tokens`` when :meth:`set_num_tokens` is given none (``None``: ``round(√N)``)."""
        return self._bands_option

    def _dartok_step(self, step: str) -> None:
        """Raise ``NotImplementedError`` for a dartok step on a compat tokenizer (whose steps are theirs)."""
        if self.compat:
            raise NotImplementedError(f"DART.{step} is dartok's step; compat={self.compat!r} runs the authors' "
                                      "tokenizer as a whole (forward, dartok.compat.hcplab.hcplab_tokenize)")

    @staticmethod
    def _check_compat(compat, num_tokens, bands, alpha, scorer, pos_grid, antialias, score_source, prior,
                      partition) -> HcplabScorer | None:
        """Validate the options of ``compat="hcplab"``; return its scorer (a dict built into one)."""
        if compat not in COMPAT_MODES:
            raise ValueError(f"compat must be None or one of {COMPAT_MODES}, got {compat!r}")
        rows = max(1, round(math.sqrt(num_tokens))) if isinstance(num_tokens, int) else None
        if bands is not None and bands != rows:
            raise ValueError(f"compat='hcplab' cuts round(√N) = {rows} rows (their target_h); got bands={bands}")
        if alpha not in (0, DEFAULT_ALPHA):
            raise ValueError(f"compat='hcplab' has no uniform mix (their v1 scorer's +0.1 floor plays that part); "
                             f"leave alpha at its default, got {alpha}")
        unsupported = [name for name, bad in (("antialias=True", antialias), ("score_source='oracle'",
                       score_source != "scorer"), ("prior", prior is not None), ("partition='grid'",
                       partition != "bands")) if bad]
        if unsupported:
            raise ValueError(f"compat='hcplab' reproduces the authors' tokenizer only; it does not take "
                             f"{', '.join(unsupported)}")
        if isinstance(scorer, dict):
            scorer = HcplabScorer(**scorer)
        if scorer is not None and not isinstance(scorer, HcplabScorer):
            raise ValueError(f"compat='hcplab' needs an HcplabScorer (or a dict of its kwargs, or None), "
                             f"got {type(scorer).__name__}")
        grid = scorer.grid_size[0] if scorer is not None else pos_grid
        if not pos_grid or grid != pos_grid:
            raise ValueError(f"compat='hcplab' needs position embeddings on the score grid ({grid}×{grid}), "
                             f"got pos_grid={pos_grid}")
        return scorer

    @property
    def grid_size(self) -> tuple[int, int]:
        """Nominal ``(rows, cols)`` of the token layout: ``(R, max C_a)``."""
        return self.bands, max(self.counts)

    def feat_ratio(self, as_scalar: bool = True):
        """timm ``PatchEmbed`` compatibility: nominal input pixels per token side."""
        ratio = self.img_size[0] / math.sqrt(self.num_tokens)
        return ratio if as_scalar else (ratio, ratio)

    def extra_repr(self) -> str:
        if self.compat:
            return f"num_tokens={self.num_tokens}, rows={self.bands}, pos_grid={self.pos_grid}, compat={self.compat}"
        return (f"num_tokens={self.num_tokens}, bands={self.bands}, alpha={self.alpha}, "
                f"pos_grid={self.pos_grid}, antialias={self.antialias}"
                + (f", partition={self.partition_mode}" if self.partition_mode != "bands" else "")
                + (f", score_source={self.score_source}, score_grid={self.score_grid()}"
                   if self.score_source != "scorer" else ""))

    def _check_images(self, images: torch.Tensor) -> None:
        """Raise ``ValueError`` for images that are not finite floating ``B×C×H×W`` with this C.

        Skipped under graph capture (``torch.export``, ``torch.compile``, FX, ONNX export;
        :func:`dartok._compat.is_tracing`): the value check is data-dependent.
        """
        if is_tracing(images):
            return
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a B×C×H×W tensor, got {shape}")
        if images.shape[1] != self.in_chans:
            raise ValueError(f"images have {images.shape[1]} channels, this DART expects in_chans={self.in_chans}")
        if not images.is_floating_point():
            raise ValueError(f"images must be floating point, got {images.dtype}")
        if images.shape[-1] < 2 or images.shape[-2] < 2:
            raise ValueError(f"images must be at least 2×2 pixels, got {tuple(images.shape[-2:])}")
        # one min/max pass (NaN propagates into both, ±Inf shows in one): ~30× cheaper on CPU
        # than materialising isfinite(images) for a 64×3×448×448 batch
        if images.numel() and not bool(torch.isfinite(torch.stack(torch.aminmax(images))).all()):
            raise ValueError("images contain NaN or Inf values")

    def score_grid(self) -> tuple[int, int]:
        """``(h, w)`` of the score map: the scorer's grid, else ``oracle_grid``, else ``g×g`` with g
        the position grid (``round(√N)`` without one)."""
        if self.scorer is not None:
            return tuple(self.scorer.grid_size)
        if self.oracle_grid is not None:
            return self.oracle_grid
        side = self.pos_grid or round(math.sqrt(self.num_tokens))
        return side, side

    def pdf_size(self) -> tuple[int, int]:
        """``(h, w)`` of the pdf the partition cuts: :meth:`score_grid` (a clip's: ``(T·h, w)``)."""
        return self.score_grid()

    def object_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """A dataset's object boxes in the score map's coordinates (images: as given, ``B×4`` or ``B×K×4``)."""
        return boxes

    def oracle_pdf(self, boxes: torch.Tensor) -> torch.Tensor:
        """The oracle score map ``B×h×w`` (:meth:`pdf_size`) of the true object boxes
        (:func:`dartok.localization.box_pdf` of :meth:`object_boxes`), float32 at least.

        Raises:
            ValueError: bad boxes (:func:`~dartok.localization.box_pdf`).
        """
        if isinstance(boxes, torch.Tensor) and boxes.is_floating_point():
            boxes = boxes.to(work_dtype(boxes.dtype))
        return box_pdf(self.object_boxes(boxes), self.pdf_size())

    @contextlib.contextmanager
    def given_pdf(self, pdf: torch.Tensor | None) -> Iterator[None]:
        """Within the block, calls without ``pdf=`` use ``pdf`` (``None``: no change), as if passed.

        How a backbone's ``forward``, which takes images only, gets a score map from the data
        (the oracle). Not re-entrant across threads.
        """
        previous, self._given_pdf = self._given_pdf, pdf
        try:
            yield
        finally:
            self._given_pdf = previous

    def _pdf_or_given(self, pdf: torch.Tensor | None) -> torch.Tensor | None:
        """``pdf``, else the one of :meth:`given_pdf`; an oracle tokenizer with neither raises ``ValueError``."""
        if pdf is None:
            pdf = self._given_pdf
        if pdf is None and self.score_source == "oracle":
            raise ValueError("this DART takes its score map from the data (score_source='oracle'): pass pdf=, "
                             "or train / evaluate on a dataset that provides object boxes (return_box=True)")
        return pdf

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """The raw score map ``B×h×w`` for ``images``: the scorer's pdf, or uniform without one.

        The uniform map has :meth:`score_grid`'s size. Not yet validated or alpha-mixed:
        :meth:`density` does that.
        """
        if self.scorer is None:
            return uniform_pdf(images.shape[0], self.score_grid(), device=images.device)
        return self.scorer(images)

    def density(self, images: torch.Tensor, pdf: torch.Tensor | None = None, *, scored: bool = False) -> torch.Tensor:
        """Step 1 (paper §3.1–3.2): the pdf the partition cuts, ``B×h×w``.

        With ``pdf=None`` the map comes from :meth:`score`; otherwise ``pdf`` (``B×h×w``,
        any non-negative real dtype) replaces the scorer. Either way it is promoted to at
        least float32 (float64 if the images or the pdf are float64) *before* it is
        validated and normalised per sample, mixed with the ``prior`` (its share
        ``prior_weight``, scorer maps only), then mixed with the uniform density
        (``alpha``). A scorer whose output is NaN or Inf (a diverged head, say) is an
        error, with ``check_inputs`` on or off: its boxes would come out finite and
        meaningless (docs/method.md §7). ``scored=True`` says a given ``pdf`` came from the
        scorer (as :class:`~dartok.video_tokenizer.VideoDART` computes it), so its errors
        name the scorer too.

        Returns:
            ``B×h×w`` pdf summing to 1 per sample, entries ≥ ``alpha/(h·w)``.

        Raises:
            ValueError: a pdf of the wrong shape for this batch, NaN/Inf or negative
                values (given or from the scorer).
        """
        self._dartok_step("density")
        prior_on = False
        if pdf is None:
            pdf, scored = self.score(images), True
            prior_on = self.prior is not None and self.prior_weight > 0
        elif not isinstance(pdf, torch.Tensor) or pdf.dim() != 3 or pdf.shape[0] != images.shape[0]:
            shape = tuple(pdf.shape) if isinstance(pdf, torch.Tensor) else type(pdf).__name__
            raise ValueError(f"pdf must be B×h×w with B = {images.shape[0]} (the image batch), got {shape}")
        work = torch.promote_types(work_dtype(pdf.dtype), work_dtype(images.dtype))
        pdf = pdf.to(device=images.device, dtype=work)
        try:
            pdf = normalize_pdf(pdf)
        except ValueError as e:
            if not scored:
                raise
            raise ValueError(f"the scorer's score map is invalid ({e}); the scorer has diverged or its input "
                             "is bad") from None
        if prior_on:
            prior = PRIORS[self.prior](images, tuple(pdf.shape[-2:])).to(pdf.dtype)
            if self.prior_mode in ("teach", "both") and self.training and torch.is_grad_enabled() and self.scorer is not None:
                # the prior teaches the scorer: λ·KL(prior ‖ scorer pdf), summed over cells, mean over the batch
                kl = F.kl_div(pdf.clamp_min(1e-12).log(), prior, reduction="batchmean")
                self._prior_stash.value = self.prior_weight * kl
            if self.prior_mode in ("mix", "both"):
                pdf = (1.0 - self.prior_weight) * pdf + self.prior_weight * prior
        return mix_uniform(pdf, self.alpha)

    def auxiliary_loss(self, targets: torch.Tensor) -> torch.Tensor | None:
        """The tokenizer's auxiliary training losses for its last training forward, or ``None``.

        The sum of the scorer's (:meth:`dartok.scorer.Scorer.auxiliary_loss`, the CAM head)
        and the prior's teaching term ``λ·KL(prior ‖ pdf)`` (``prior_mode`` "teach" or "both", λ =
        ``prior_weight``; docs/method.md §10). Each call consumes them.

        Args:
            targets: the labels of that forward (``B`` class indices or ``B×K`` probabilities).

        Returns:
            A scalar float32 tensor, or ``None`` when there is no such term.
        """
        parts = [self._prior_stash.value]
        self._prior_stash.value = None
        if self.scorer is not None:
            parts.append(self.scorer.auxiliary_loss(targets))
        parts = [p.float() for p in parts if p is not None]
        return sum(parts) if parts else None

    def partition(self, pdf: torch.Tensor) -> torch.Tensor:
        """Step 2 (paper §3.2): boxes ``B×N×4`` for a pdf from :meth:`density`, computed in at
        least float32 even under autocast (:func:`dartok.partition.partition_pdf`; the regular
        grid of ``partition="grid"``: :func:`dartok.partition.grid_cuts`, row-major)."""
        self._dartok_step("partition")
        if self.partition_mode == "grid":
            return cuts_to_boxes(*grid_cuts(pdf, self.bands, self.counts[0]))
        return partition_pdf(pdf, self.counts)

    def sample(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Step 3 (paper §3.4): ``B×N×C×P×P`` patches in the images' dtype, sampled in at least
        float32 from the unrounded boxes (:func:`dartok.resample.sample_patches`)."""
        self._dartok_step("sample")
        return sample_patches(images, boxes, self.patch_size[0], antialias=self.antialias)

    def position_embeddings(self, boxes: torch.Tensor) -> torch.Tensor:
        """``B×N×D`` area averages of the position-embedding map over ``boxes``."""
        self._dartok_step("position_embeddings")
        if self.pos_embed is None:
            return boxes.new_zeros(boxes.shape[0], boxes.shape[1], self.embed_dim)
        g = self.pos_grid
        return box_average(self.pos_embed.view(1, g, g, self.embed_dim), boxes)

    def project(self, patches: torch.Tensor) -> torch.Tensor:
        """``B×N×C×P×P`` patches → ``B×N×D`` tokens with the ``proj`` conv weights.

        Patches as :func:`~dartok.resample.sample_patches` returns them (a ``B×N×C×P×P``
        view of a contiguous ``B×C×N×P×P`` tensor) are projected one channel at a time with
        ``baddbmm``, without the copy a flattening ``reshape`` of the view would make;
        other layouts go through one ``linear``. Same result to float rounding.
        """
        bsz, n, chans = patches.shape[:3]
        weight = self.proj.weight
        by_channel = patches.transpose(1, 2)  # B×C×N×P×P
        if chans > 1 and by_channel.is_contiguous():
            per_chan = weight.reshape(weight.shape[0], chans, -1)  # D×C×P²
            x = by_channel.reshape(bsz, chans, n, -1)  # B×C×N×P², a view
            if self.proj.bias is not None:
                tokens = self.proj.bias.expand(bsz, n, -1)
            else:
                tokens = x.new_zeros(bsz, n, weight.shape[0])
            for c in range(chans):
                tokens = torch.baddbmm(tokens, x[:, c], per_chan[:, c].t().expand(bsz, -1, -1))
        else:
            tokens = F.linear(patches.reshape(bsz, n, -1), weight.flatten(1), self.proj.bias)
        return self.norm(tokens)

    def forward(self, images: torch.Tensor, pdf: torch.Tensor | None = None) -> DartOutput:
        """Tokenize ``B×C×H×W`` images: :meth:`density` → :meth:`partition` → :meth:`sample` →
        :meth:`project`, and :meth:`position_embeddings` of the boxes (docs/method.md §1)."""
        if self.check_inputs:
            self._check_images(images)
        return self._tokenize(images, self._pdf_or_given(pdf))

    def _tokenize(self, images: torch.Tensor, pdf: torch.Tensor | None, scored: bool = False) -> DartOutput:
        """:meth:`forward` after its input check (``scored``: see :meth:`density`)."""
        if self.compat:
            return self._tokenize_hcplab(images, pdf)
        pdf = self.density(images, pdf, scored=scored)
        boxes = self.partition(pdf)
        chunk = batch_chunks(images.shape[0], self.num_tokens * self.patch_size[0] ** 2)
        if torch.is_grad_enabled() or chunk >= images.shape[0] or is_tracing(images):
            tokens = self.project(self.sample(images, boxes))
        else:  # inference: sample and project a chunk of the batch at a time (the same numbers; the
            # B×N×C×P×P patches, 37 MiB for DART-DeiT at batch 64, are never allocated whole)
            tokens = torch.cat([self.project(self.sample(x, b))
                                for x, b in zip(images.split(chunk), boxes.split(chunk))])
        pos = self.position_embeddings(boxes).to(tokens.dtype)
        return DartOutput(tokens, pos, boxes, pdf)

    def _tokenize_hcplab(self, images: torch.Tensor, pdf: torch.Tensor | None) -> DartOutput:
        """``compat="hcplab"``: the authors' tokenizer (:func:`dartok.compat.hcplab.hcplab_tokenize`)."""
        work = work_dtype(images.dtype)
        if pdf is None:  # the scorer's pdf (their score / score.sum) as it is
            pdf = self.score(images)
            pdf = pdf.to(torch.promote_types(work, work_dtype(pdf.dtype)))
        elif not isinstance(pdf, torch.Tensor) or pdf.dim() != 3 or pdf.shape[0] != images.shape[0]:
            shape = tuple(pdf.shape) if isinstance(pdf, torch.Tensor) else type(pdf).__name__
            raise ValueError(f"pdf must be B×h×w with B = {images.shape[0]} (the image batch), got {shape}")
        else:
            pdf = normalize_pdf(pdf.to(device=images.device, dtype=torch.promote_types(work, work_dtype(pdf.dtype))))
        if tuple(pdf.shape[-2:]) != (self.pos_grid, self.pos_grid):
            raise ValueError(f"compat='hcplab' needs a {self.pos_grid}×{self.pos_grid} score map, "
                             f"got {tuple(pdf.shape[-2:])}")
        with torch.autocast(device_type=images.device.type, enabled=False):
            patches, pos, boxes = hcplab_tokenize(images.to(pdf.dtype), pdf, self.pos_embed, self.num_tokens,
                                                  self.bands, self.patch_size[0])
        tokens = self.project(patches.to(images.dtype))
        return DartOutput(tokens, pos.to(tokens.dtype), boxes, pdf)
