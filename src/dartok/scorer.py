"""Score networks: image → score map → pdf (docs/method.md §3, paper §3.1, §4.3, §5.1).

A scorer is a lightweight pretrained CNN trunk (timm, ``features_only=True``), cut after
a stage, and a small trainable head:

- ``v1`` (DeiT): a 2-layer MLP over channels at each location → one score per location.
- ``v2`` (Vim, VideoMamba): global-average-pooled features → 2-layer MLP → one weight per
  channel; score = Σ_c feature_c · weight_c at each location.

The trunk runs on a downsampled copy of the image (default 224×224) so its cost stays
small, is frozen and kept in eval mode by default (its BatchNorm statistics never move),
and is never re-initialised by the model. The scores of each sample are standardised by
that sample's own mean and std, squashed by a sigmoid and normalised to sum to 1, so one
image's pdf never depends on the other images in its batch (the authors' code uses batch
statistics; docs/method.md §4).

Where the paper cuts its trunks (Table 5: MobileNetV3-Small ``features[:11]`` for DeiT-Ti,
-Large ``[:15]`` for DeiT-S) it feeds them the 448 input, stride 32 → a 14×14 score map.
Here the trunk sees the 224 copy, so the default cut is the last stride-16 stage, which
gives the same 14×14 map for about a quarter of the compute. ``stage`` picks another cut.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._compat import is_tracing
from .partition import work_dtype
from .resample import antialiased_resize, batch_chunks

__all__ = [
    "PRIORS", "SCORE_ACTIVATIONS", "SCORER_TRUNKS", "Scorer", "blur_pdf", "cell_centre_weights", "saliency_pdf", "ScorerHeadV1", "ScorerHeadV2", "edge_pdf", "fold_trunk_batchnorm", "scores_to_pdf",
    "uniform_pdf",
]


@dataclass(frozen=True)
class TrunkSpec:
    """A timm trunk and its pretrained tag (used only when ``pretrained=True``)."""

    model_name: str
    pretrained_tag: str
    stage: int = 3  # index into timm's feature_info; 3 = last stride-16 stage


SCORER_TRUNKS: dict[str, TrunkSpec] = {
    "mobilenetv3_small": TrunkSpec("mobilenetv3_small_100", "lamb_in1k"),
    "mobilenetv3_large": TrunkSpec("mobilenetv3_large_100", "ra_in1k"),
    "mnasnet": TrunkSpec("mnasnet_100", "rmsp_in1k"),
    "efficientnet_b0": TrunkSpec("efficientnet_b0", "ra_in1k"),
}
"""Trunks known by short name (paper Table 4/5). Any other timm model name that supports
``features_only=True`` can be given directly."""


SCORE_ACTIVATIONS = ("sigmoid", "softmax", "box")
"""How standardised scores become densities (:func:`scores_to_pdf`): the paper's sigmoid, or
a softmax over the cells (docs/method.md §3 "Normalisation", §10)."""


def scores_to_pdf(
    scores: torch.Tensor,
    eps: float = 1e-5,
    scale: torch.Tensor | float = 1.0,
    bias: torch.Tensor | float = 0.0,
    activation: str = "sigmoid",
) -> torch.Tensor:
    """Per-sample standardise, squash, normalise to sum 1 (docs/method.md §3 "Normalisation").

    ``"sigmoid"`` (the paper's): ``pdf ∝ sigmoid(scale · z + bias)`` with ``z`` the sample's
    standardised scores. With ``scale = 1, bias = 0`` its contrast is capped: a small
    object's cells (z ≈ 3) get at most ≈ 2× the density of a background at z ≈ 0, so on an
    8×8 map an object of 4 cells can hold at most ≈ 0.13 of the mass. A learned
    ``scale``/``bias`` (see :class:`Scorer`) lifts that cap, slowly.

    ``"softmax"``: ``pdf = softmax(scale · z)`` over the cells (``bias`` cancels). The same
    object cells at z ≈ 3.9 then get ≈ 60× the background's density, ≈ 0.8 of the mass
    (docs/method.md §10).

    ``"box"``: the uniform density on the moment-matched box of ``softmax(scale · z)``
    (:func:`moment_box`), rendered on the cells like the oracle's (:func:`dartok.localization.box_pdf`):
    tokens spread evenly over one box, as the oracle's are. A uniform score map gives the
    whole image (the plain grid); a peaked one a box around its peak.

    Args:
        scores: ``B×h×w`` raw scores (finite).
        eps: added to the variance, so a constant score map gives the uniform pdf.
        scale, bias: affine map of the standardised scores before the activation.
        activation: one of :data:`SCORE_ACTIVATIONS`.

    Returns:
        ``B×h×w`` pdf, each sample sums to 1, every entry > 0 (softmax: ≥ 0, > 0 unless
        ``scale`` is huge). Depends on each sample alone.

    Raises:
        ValueError: an unknown ``activation``.
    """
    flat = scores.flatten(1)
    mean = flat.mean(1, keepdim=True)
    var = flat.var(1, unbiased=False, keepdim=True)
    z = (flat - mean) * torch.rsqrt(var + eps)
    if activation == "softmax":
        return torch.softmax(z * scale, dim=1).view_as(scores)
    if activation == "box":
        from .localization import box_pdf

        p = torch.softmax(z * scale, dim=1).view_as(scores)
        return box_pdf(moment_box(p), tuple(scores.shape[1:]))
    if activation != "sigmoid":
        raise ValueError(f"activation must be one of {SCORE_ACTIVATIONS}, got {activation!r}")
    s = torch.sigmoid(z * scale + bias)
    return (s / s.sum(1, keepdim=True)).view_as(scores)


def moment_box(pdf: torch.Tensor) -> torch.Tensor:
    """The box ``(x0, y0, x1, y1)`` of the uniform density with a pdf's mean and variance per axis.

    Each cell's mass is spread evenly over the cell (docs/method.md §2), so per axis the
    variance is that of the cell centres plus ``1/(12·w²)``; the uniform density on
    ``[μ − √3·σ, μ + √3·σ]`` has the same mean ``μ`` and standard deviation ``σ``. A uniform pdf
    gives exactly ``(0, 0, 1, 1)``. The box is clipped to the unit square, and always has an
    area (half-width ≥ half a cell). Differentiable in the pdf.

    Args:
        pdf: ``B×h×w`` non-negative, each sample summing to 1 (floating).

    Returns:
        ``B×4`` in the pdf's dtype, in ``[0, 1]``, ``x0 < x1``, ``y0 < y1``.
    """
    h, w = pdf.shape[-2:]
    ys = (torch.arange(h, device=pdf.device, dtype=pdf.dtype) + 0.5) / h
    xs = (torch.arange(w, device=pdf.device, dtype=pdf.dtype) + 0.5) / w
    py, px = pdf.sum(2), pdf.sum(1)  # B×h, B×w marginals
    my, mx = (py * ys).sum(1), (px * xs).sum(1)
    vy = (py * (ys - my[:, None]) ** 2).sum(1) + 1.0 / (12 * h * h)
    vx = (px * (xs - mx[:, None]) ** 2).sum(1) + 1.0 / (12 * w * w)
    hy, hx = (3 * vy).sqrt(), (3 * vx).sqrt()
    return torch.stack([(mx - hx).clamp(0, 1), (my - hy).clamp(0, 1), (mx + hx).clamp(0, 1), (my + hy).clamp(0, 1)], 1)


def cell_centre_weights(cells: int, input_size: int, stride: int, dtype=torch.float32) -> torch.Tensor:
    """Linear-interpolation weights that read a trunk's feature map at the score cells' centres (docs/method.md §3).

    A CNN whose convolutions pad symmetrically (odd kernels, ``padding = k // 2``: timm's
    MobileNetV3, MNASNet, EfficientNet, ResNet) puts feature ``i`` of a stride-``S`` map at input
    pixel ``i·S`` (pixel indices, pixel ``p`` covering ``[p, p + 1)``), the *top-left* corner of
    the cell it is taken for, whose centre is pixel ``(i + 0.5)·input_size / cells − 0.5``
    (``i·S + (S − 1)/2`` when ``input_size = cells·S``): read as is, the score map lies
    ``(S − 1)/2`` pixels right of and below what it scores, half a cell (3.5 px at stride 8).
    Row ``i`` of the result interpolates the features at position
    ``u_i = ((i + 0.5)·input_size / cells − 0.5) / S`` (clamped to ``[0, cells − 1]``) between
    features ``floor(u_i)`` and ``floor(u_i) + 1``.

    Args:
        cells: side of the feature / score map (``h`` or ``w``), ≥ 1.
        input_size: side of the image copy the trunk sees, in pixels.
        stride: the trunk's total stride at the cut (``feature_info`` ``reduction``).

    Returns:
        ``cells×cells`` matrix ``M`` (rows sum to 1, ≥ 0): aligned scores are ``M_y · s · M_xᵀ``.
    """
    u = ((torch.arange(cells, dtype=torch.float64) + 0.5) * input_size / cells - 0.5) / stride
    u = u.clamp(0, cells - 1)
    lo = u.floor().long().clamp(max=cells - 1)
    hi = (lo + 1).clamp(max=cells - 1)
    frac = u - lo
    m = torch.zeros(cells, cells, dtype=torch.float64)
    rows = torch.arange(cells)
    m.index_put_((rows, lo), 1 - frac, accumulate=True)
    m.index_put_((rows, hi), frac, accumulate=True)
    return m.to(dtype)


def blur_pdf(pdf: torch.Tensor, k: int) -> torch.Tensor:
    """Spread a pdf over each cell's ``k×k`` neighbourhood and normalise again (:class:`Scorer` ``pdf_blur``).

    A mean filter with stride 1 whose border windows average only the cells inside the map
    (``count_include_pad=False``), then each sample rescaled to sum 1. A uniform pdf stays
    uniform; a one-cell pdf inside the map becomes uniform on its ``k×k`` block. ``k = 1`` returns
    ``pdf`` itself. Differentiable.

    Args:
        pdf: ``B×h×w`` non-negative, each sample summing to 1 (floating).
        k: odd window side ≥ 1.

    Returns:
        ``B×h×w`` in ``pdf``'s dtype, each sample summing to 1.

    Raises:
        ValueError: ``k`` not an odd int ≥ 1.
    """
    if isinstance(k, bool) or int(k) != k or k < 1 or k % 2 == 0:
        raise ValueError(f"the blur window must be an odd int >= 1, got {k!r}")
    if k == 1:
        return pdf
    out = F.avg_pool2d(pdf[:, None], int(k), stride=1, padding=int(k) // 2, count_include_pad=False)[:, 0]
    return out / out.sum((1, 2), keepdim=True)


CAM_POOLS = ("avg", "max", "lse")
"""How the auxiliary classifier pools per-location logits (:class:`Scorer` ``cam_pool``)."""


def cam_pool_logits(cam: torch.Tensor, pool: str = "avg", r: float = 5.0) -> torch.Tensor:
    """Pool per-location class logits ``B×K×h×w`` to ``B×K`` (docs/method.md §10).

    ``"avg"``: the spatial mean (a ``1×1`` conv commutes with global average pooling, so this
    is CAM's linear classifier on pooled features, Zhou et al. 2016). ``"max"``: the spatial
    max (Oquab et al. 2015). ``"lse"``: ``(logsumexp(r·A) − log(h·w)) / r``, which is ``"avg"``
    as ``r → 0`` and ``"max"`` as ``r → ∞``; computed in float32 at least.

    Raises:
        ValueError: an unknown ``pool``.
    """
    if pool == "avg":
        return cam.mean((2, 3))
    flat = cam.flatten(2)
    if pool == "max":
        return flat.amax(2)
    if pool != "lse":
        raise ValueError(f"cam_pool must be one of {CAM_POOLS}, got {pool!r}")
    x = flat.to(work_dtype(flat.dtype))
    return ((torch.logsumexp(r * x, 2) - math.log(x.shape[2])) / r).to(cam.dtype)


def uniform_pdf(batch_size: int, size: tuple[int, int] = (14, 14), device=None, dtype=torch.float32) -> torch.Tensor:
    """``B×h×w`` uniform pdf: the partition it gives is the plain ViT grid."""
    h, w = size
    return torch.full((batch_size, h, w), 1.0 / (h * w), device=device, dtype=dtype)


def edge_pdf(images: torch.Tensor, size: tuple[int, int] = (14, 14)) -> torch.Tensor:
    """A hand-made score map: mean gradient magnitude of the image over each grid cell.

    Useful to look at partitions without a trained scorer (``dartok visualize
    --score-source edges``).

    Args:
        images: ``B×C×H×W`` images (any range).
        size: ``(h, w)`` of the score map.

    Returns:
        ``B×h×w`` pdf (sums to 1 per sample; an image with no edges gives uniform).
    """
    gray = images.float().mean(1, keepdim=True)
    gx = gray[..., :, 1:] - gray[..., :, :-1]
    gy = gray[..., 1:, :] - gray[..., :-1, :]
    mag = F.pad(gx.abs(), (0, 1)) + F.pad(gy.abs(), (0, 0, 0, 1))
    pooled = F.adaptive_avg_pool2d(mag, size).squeeze(1)
    total = pooled.sum((1, 2), keepdim=True)
    return torch.where(total > 0, pooled / total.clamp_min(1e-12), torch.full_like(pooled, 1.0 / (size[0] * size[1])))


def saliency_pdf(images: torch.Tensor, size: tuple[int, int] = (14, 14)) -> torch.Tensor:
    """A training-free saliency prior: how far each cell's mean colour is from the image's.

    Frequency-tuned saliency (Achanta et al. 2009, ``S = ‖I_μ − I_blur‖``) with the blur at
    the cell scale: ``S(i, j) = ‖m(i, j) − μ‖₂`` over channels, ``m`` the cell's mean colour
    (area average) and ``μ`` the image's, then standardised per sample and turned into a pdf
    by a softmax over the cells (:func:`scores_to_pdf`, ``activation="softmax"``). Objects
    that stand out from the dominant colour get the mass. Used by :class:`~dartok.DART`'s
    annealed ``prior`` (docs/method.md §10).

    Args:
        images: ``B×C×H×W`` images (any range; float).
        size: ``(h, w)`` of the map.

    Returns:
        ``B×h×w`` pdf in at least float32, sums to 1 per sample; a flat image gives the
        uniform pdf. No gradient flows to ``images`` (a fixed prior).
    """
    with torch.no_grad(), torch.autocast(device_type=images.device.type, enabled=False):
        x = images.to(work_dtype(images.dtype))
        cells = F.adaptive_avg_pool2d(x, size)  # B×C×h×w
        dist = (cells - x.mean((2, 3), keepdim=True)).square().sum(1).sqrt()
        return scores_to_pdf(dist, activation="softmax")


PRIORS = {"saliency": saliency_pdf, "edges": edge_pdf}
"""Training-free score maps :class:`~dartok.DART` can mix in while its scorer learns
(``prior=``; docs/method.md §10): name → ``fn(images B×C×H×W, size) → pdf B×h×w``."""


class ScorerHeadV1(nn.Module):
    """Head v1 (DeiT): per-location 2-layer MLP, ``B×C×h×w`` → ``B×h×w`` scores."""

    def __init__(self, in_channels: int, hidden: int = 128):
        super().__init__()
        self.fc1 = nn.Conv2d(in_channels, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, 1, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(feats))).squeeze(1)


class ScorerHeadV2(nn.Module):
    """Head v2 (Vim, VideoMamba): GAP → 2-layer MLP → channel weights; Σ_c feature·weight.

    ``B×C×h×w`` → ``B×h×w`` scores. ``extra`` (``B×C×h×w``, e.g. the feature difference
    between consecutive video frames, paper §3.3) is added to the features the weights
    multiply, so static content scores lower than moving content.
    """

    def __init__(self, in_channels: int, hidden: int = 128):
        super().__init__()
        self.fc1 = nn.Linear(in_channels, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, in_channels)

    def forward(self, feats: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        weights = self.fc2(self.act(self.fc1(feats.mean((2, 3)))))  # B×C
        if extra is not None:
            feats = feats + extra
        return torch.einsum("bchw,bc->bhw", feats, weights) / feats.shape[1] ** 0.5


class _Stash:
    """A per-forward value a module keeps for the loss (not state): ``deepcopy`` and pickling
    give an empty one, so a model copied after a training forward (an EMA, say) copies."""

    def __init__(self) -> None:
        self.value = None

    def __deepcopy__(self, memo) -> "_Stash":
        return _Stash()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.value = None


class Scorer(nn.Module):
    """Image → pdf over an ``h×w`` grid (docs/method.md §3).

    Args:
        trunk: a short name from :data:`SCORER_TRUNKS` or any timm model name that
            supports ``features_only=True``.
        head: ``"v1"`` (per-location MLP, DeiT) or ``"v2"`` (channel-gated, Vim).
        stage: timm ``feature_info`` index to cut the trunk after (default: the trunk's
            last stride-16 stage). Later blocks are dropped, not just ignored.
        input_size: side of the square copy of the image the trunk sees (default 224);
            the score map is ``input_size / stride`` per side (14 for the defaults).
        in_chans: image channels.
        hidden: hidden width of the head MLP.
        pretrained: load the trunk's ImageNet weights from timm's pretrained tag
            (needs a network); otherwise the trunk is randomly initialised once, here.
        trainable_trunk: train the trunk too. ``None`` (default) follows docs/method.md §3: a
            pretrained trunk is frozen and kept in eval mode (its BatchNorm statistics never
            move); a trunk without pretrained weights is trained from scratch with the model
            (a frozen random trunk is a poor scorer: on Cluttered Fashion-MNIST, N = 16, it
            cost 12 points of top-1, see README "Accuracy").
        learn_contrast: learn the scale and bias applied to the standardised scores
            before the sigmoid (:func:`scores_to_pdf`), initialised to the identity so the
            scorer starts as the paper's. False keeps the paper's fixed normalisation.
        cam_classes: K > 0 adds the auxiliary class-activation-map head (docs/method.md §10):
            a ``1×1`` conv from the trunk features to K per-location class logits ``A``
            (``B×K×h×w``), whose spatial mean is a classifier trained with the model's
            labels (:meth:`auxiliary_loss`). This gives a trunk trained from scratch a direct
            classification gradient, so it learns to find the object before the tokens
            depend on it. 0 (default) builds no such head.
        cam_score: with ``cam_classes``, add the class-activation map
            ``Σ_k softmax(ā)_k · A_k`` (``ā`` the spatial-mean logits, detached) to the head's
            scores, so the score map follows what the auxiliary classifier looks at.
            False trains the auxiliary head for its gradient only.
        cam_loss_weight: weight of the auxiliary cross-entropy in :meth:`auxiliary_loss` (≥ 0).
        activation: ``"sigmoid"`` (the paper's) or ``"softmax"`` over the cells
            (:func:`scores_to_pdf`; docs/method.md §10).
        cam_pool: how the auxiliary classifier pools its per-location logits ``A`` into
            ``ā``: ``"avg"`` (global average, CAM's), ``"max"`` (global max, Oquab et al.
            2015) or ``"lse"`` (log-sum-exp, ``log mean exp(r·A) / r``, between the two).
            Average pooling asks every location to predict the class; max and LSE pooling
            ask it of the best location only, which peaks the map on the object.
        cam_pool_r: LSE's sharpness ``r`` (> 0; large ``r`` → max, small → average).
        softmax_ramp: ``(start, end)`` in epochs, or ``None`` (default): with the sigmoid
            activation, move the pdf from the sigmoid's to the softmax's of the same scores,
            ``(1 − s)·pdf_sigmoid + s·pdf_softmax`` with ``s`` rising linearly from 0 at
            ``start`` to 1 at ``end`` (the training loop sets :attr:`softmax_share` before
            every step; it is saved with the weights, so evaluation uses the last share).
            The sigmoid keeps the partition near uniform while the map is still noise; the
            softmax then lets a map that has learned where the object is put its mass there.
        pdf_blur: ``k`` (odd, ≥ 1; default 1: none): spread the pdf over each cell's ``k×k``
            neighbourhood (a mean filter, cells outside the map not counted), then normalise
            again. A peaked map (the softmax's) puts its tokens on the object's most telling
            cells; the oracle's box spreads them over the whole object, which is what pays
            (docs/scorer_from_scratch.md). Differentiable; cells stay > 0.
        align_cells: read the score map at the pdf cells' centres (:func:`cell_centre_weights`):
            a trunk's stride-``S`` features sit at the top-left corner of their cells, so the
            map read as is lies ``(S − 1)/2`` input pixels right of and below what it scores
            (half a cell). Linear interpolation of the scores, differentiable. Default False
            (the paper's and every checkpoint before it); :func:`dartok.tools.compare.scratch_scorer`
            turns it on.
        lr_scale: the scorer's learning rate as a multiple of the model's (timm's ``lr_scale``
            on its parameter groups, honoured by timm's schedulers; dartok's optimizer builds
            them, :func:`dartok.train.loop.build_optimization`).

    Attributes:
        fold_batchnorm: with a frozen trunk, or a trainable one in eval mode when no
            gradient is needed, run a cached copy of it whose BatchNorms are folded into the
            preceding convolutions (:func:`fold_trunk_batchnorm`; same features to float
            rounding, about 2× faster on CPU). The trunk itself, its parameters and
            ``state_dict`` are untouched; the copy is rebuilt when a trunk tensor changes
            (an optimizer step, ``load_state_dict``, ``.to()``) or a trunk submodule,
            parameter or buffer is replaced, added or removed (checked in ~40 µs per call
            by a recorded stamp of the tree), and is not used while tracing
            (fvcore counts the trunk as defined) or compiling. Set False to run the trunk
            as is.

    Shapes:
        ``forward(images B×C×H×W) → pdf B×h×w`` (each sample sums to 1, entries > 0).
    """

    fold_batchnorm: bool = True

    def __init__(
        self,
        trunk: str = "mobilenetv3_small",
        head: str = "v1",
        stage: int | None = None,
        input_size: int = 224,
        in_chans: int = 3,
        hidden: int = 128,
        pretrained: bool = False,
        trainable_trunk: bool | None = None,
        learn_contrast: bool = True,
        cam_classes: int = 0,
        cam_score: bool = True,
        cam_loss_weight: float = 1.0,
        activation: str = "sigmoid",
        cam_pool: str = "avg",
        cam_pool_r: float = 5.0,
        softmax_ramp: tuple[float, float] | None = None,
        lr_scale: float = 1.0,
        pdf_blur: int = 1,
        align_cells: bool = False,
    ):
        super().__init__()
        import timm  # after dartok's torchvision shim

        spec = SCORER_TRUNKS.get(trunk, TrunkSpec(trunk, "", 3))
        stage = spec.stage if stage is None else stage
        name = spec.model_name
        if pretrained and spec.pretrained_tag:
            name = f"{name}.{spec.pretrained_tag}"
        if head not in ("v1", "v2"):
            raise ValueError(f"head must be 'v1' or 'v2', got {head!r}")
        if input_size < 16:
            raise ValueError(f"scorer input_size must be >= 16, got {input_size}")
        self.trunk = timm.create_model(
            name, pretrained=pretrained, features_only=True, out_indices=(stage,), in_chans=in_chans
        )
        info = self.trunk.feature_info.get_dicts()[-1]
        _truncate_trunk(self.trunk, info)
        self.trunk_name = spec.model_name
        self.stage = stage
        self.stride = info["reduction"]
        self.channels = info["num_chs"]
        self.input_size = input_size
        self.in_chans = in_chans
        self.head_type = head
        self.head = (ScorerHeadV1 if head == "v1" else ScorerHeadV2)(self.channels, hidden)
        if trainable_trunk is None:
            trainable_trunk = not pretrained
        self.trainable_trunk = bool(trainable_trunk)
        self.trunk.requires_grad_(self.trainable_trunk)
        if not trainable_trunk:
            self.trunk.eval()
        self.learn_contrast = learn_contrast
        if learn_contrast:
            self.score_scale = nn.Parameter(torch.ones(()))
            self.score_bias = nn.Parameter(torch.zeros(()))
        else:
            self.register_buffer("score_scale", torch.ones(()), persistent=False)
            self.register_buffer("score_bias", torch.zeros(()), persistent=False)
        if int(cam_classes) != cam_classes or cam_classes < 0:
            raise ValueError(f"cam_classes must be an int >= 0 (0: no auxiliary head), got {cam_classes!r}")
        if not (cam_loss_weight >= 0 and math.isfinite(cam_loss_weight)):
            raise ValueError(f"cam_loss_weight must be a finite number >= 0, got {cam_loss_weight!r}")
        if activation not in SCORE_ACTIVATIONS:
            raise ValueError(f"activation must be one of {SCORE_ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        if cam_pool not in CAM_POOLS:
            raise ValueError(f"cam_pool must be one of {CAM_POOLS}, got {cam_pool!r}")
        if not (cam_pool_r > 0 and math.isfinite(cam_pool_r)):
            raise ValueError(f"cam_pool_r must be a finite number > 0, got {cam_pool_r!r}")
        self.cam_pool = cam_pool
        self.cam_pool_r = float(cam_pool_r)
        if softmax_ramp is not None:
            start, end = (float(v) for v in softmax_ramp)
            if not (0 <= start < end and math.isfinite(end)):
                raise ValueError(f"softmax_ramp must be (start, end) epochs with 0 <= start < end, got {softmax_ramp!r}")
            if activation != "sigmoid":
                raise ValueError("softmax_ramp moves the sigmoid's pdf to the softmax's: it needs activation='sigmoid'")
            softmax_ramp = (start, end)
        self.softmax_ramp = softmax_ramp
        if not (lr_scale > 0 and math.isfinite(lr_scale)):
            raise ValueError(f"lr_scale must be a finite number > 0, got {lr_scale!r}")
        self.lr_scale = float(lr_scale)
        if isinstance(pdf_blur, bool) or int(pdf_blur) != pdf_blur or pdf_blur < 1 or pdf_blur % 2 == 0:
            raise ValueError(f"pdf_blur must be an odd int >= 1 (1: none), got {pdf_blur!r}")
        self.pdf_blur = int(pdf_blur)
        if not isinstance(align_cells, bool):
            raise ValueError(f"align_cells must be True or False, got {align_cells!r}")
        self.align_cells = align_cells
        if align_cells:  # the h×h interpolation matrix (a square map: grid_size), moved with the module
            self.register_buffer("cell_centres", cell_centre_weights(self.grid_size[0], input_size, self.stride),
                                 persistent=False)
        self.register_buffer("softmax_share", torch.zeros(()), persistent=softmax_ramp is not None)
        self.cam_classes = int(cam_classes)
        self.cam_score = bool(cam_score)
        self.cam_loss_weight = float(cam_loss_weight)
        self.cam = nn.Conv2d(self.channels, self.cam_classes, 1) if self.cam_classes else None
        self._cam_stash = _Stash()

    def reset_cam(self, cam_classes: int) -> None:
        """A new, freshly initialised auxiliary CAM head with ``cam_classes`` classes (0: none).

        What the model's ``reset_classifier(k)`` does to this scorer for ``k > 0``: the
        auxiliary classifier learns the same classes as the model's (docs/method.md §10).
        On the old head's device and dtype (the trunk's when there was none).

        Raises:
            ValueError: ``cam_classes`` not an int >= 0.
        """
        if isinstance(cam_classes, bool) or int(cam_classes) != cam_classes or cam_classes < 0:
            raise ValueError(f"cam_classes must be an int >= 0 (0: no auxiliary head), got {cam_classes!r}")
        like = self.cam.weight if self.cam is not None else next(self.head.parameters())
        self.cam_classes = int(cam_classes)
        self.cam = (nn.Conv2d(self.channels, self.cam_classes, 1).to(device=like.device, dtype=like.dtype)
                    if self.cam_classes else None)
        self._cam_logits = None

    @property
    def _cam_logits(self) -> torch.Tensor | None:
        """The ``B×K`` auxiliary logits of the last training forward (kept out of copies and pickles)."""
        return self._cam_stash.value

    @_cam_logits.setter
    def _cam_logits(self, value: torch.Tensor | None) -> None:
        self._cam_stash.value = value

    @property
    def grid_size(self) -> tuple[int, int]:
        """``(h, w)`` of the score map."""
        side = -(-self.input_size // self.stride)
        return side, side

    def train(self, mode: bool = True):
        """Like ``nn.Module.train``, but a frozen trunk always stays in eval mode."""
        super().train(mode)
        if not self.trainable_trunk:
            self.trunk.eval()
        return self

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """The ``input_size``-square copy the trunk sees (anti-aliased bilinear; as is if it already fits).

        Resized in at least float32 and returned in the images' dtype: anti-aliased
        bilinear resizing has no bfloat16/float16 kernel on CPU, and the copy is small.
        """
        if images.shape[-2:] == (self.input_size, self.input_size):
            return images
        with torch.autocast(device_type=images.device.type, enabled=False):
            small = antialiased_resize(images.to(work_dtype(images.dtype)), (self.input_size, self.input_size))
        return small.to(images.dtype)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Trunk features ``B×C'×h×w`` of the downsampled image copy.

        The trunk runs on a channels-last copy: MobileNet-style trunks (depthwise
        convolutions) run 1.3-2× faster that way on CPU (oneDNN), same result to float
        rounding. Without gradients through the trunk (inference, a frozen trunk), resize and
        trunk run over chunks of the batch (:func:`dartok.resample.batch_chunks`: 16 copies of
        224², same numbers): a large batch's copies and activations then never exceed glibc's
        mmap threshold, which cost DART-DeiT-Ti ~70 000 page faults (~280 MiB zeroed) per batch
        of 64 with the default allocator.
        """
        if self._trunk_needs_grad() or is_tracing(images):
            return self.trunk_features(self.resize(images))
        chunk = batch_chunks(images.shape[0], self.input_size * self.input_size)
        if chunk >= images.shape[0]:
            return self.trunk_features(self.resize(images))
        return torch.cat([self.trunk_features(self.resize(part)) for part in images.split(chunk)])

    def _trunk_needs_grad(self) -> bool:
        """Whether :meth:`trunk_features` runs the trunk with autograd (a trainable trunk that is
        training or asked for gradients); otherwise it is batch-independent and gradient-free."""
        return bool(self.trainable_trunk and (self.trunk.training or torch.is_grad_enabled()))

    def trunk_features(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk features of an already resized copy (see :meth:`features`)."""
        x = x.contiguous(memory_format=torch.channels_last)
        if self._trunk_needs_grad():
            return self.trunk(x)[-1]
        with torch.no_grad():  # frozen trunk, or a trainable one in eval mode with no gradient wanted
            return self._inference_trunk()(x)[-1]

    def _inference_trunk(self) -> nn.Module:
        """The frozen trunk to run: its cached BatchNorm-folded copy where that applies."""
        if self.trunk.training or not self.fold_batchnorm or is_tracing(jit_trace=True):
            return self.trunk
        cached = self.__dict__.get("_folded_trunk")  # a plain attribute: not a submodule, not in state_dict
        if cached is None or not cached[0].unchanged(self.trunk):
            stamp = _TreeStamp(self.trunk)  # before folding: the fold's probe runs leave the tree as it is
            cached = (stamp, fold_trunk_batchnorm(self.trunk, self.input_size, self.in_chans))
            self.__dict__["_folded_trunk"] = cached
        return cached[1] if cached[1] is not None else self.trunk

    def pdf_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Head + per-sample normalisation: trunk features ``B×C'×h×w`` → pdf ``B×h×w``."""
        return self.pdf_from_scores(self.scores_from_features(feats))

    def scores_from_features(self, feats: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """Raw head scores ``B×h×w`` (before normalisation) for trunk features ``B×C'×h×w``.

        ``extra`` (``B×C'×h×w``, e.g. the feature difference between consecutive video
        frames, paper §3.3 / §4.4) goes to head v2's ``extra`` input (added to the features
        its channel gate multiplies; the gate itself comes from ``feats`` alone); head v1
        scores ``feats + extra``.

        Raises:
            ValueError: ``extra`` of a different shape than ``feats``.
        """
        if extra is None:
            scores = self.head(feats)
        elif extra.shape != feats.shape:
            raise ValueError(f"extra must have the features' shape {tuple(feats.shape)}, got {tuple(extra.shape)}")
        elif isinstance(self.head, ScorerHeadV2):
            scores = self.head(feats, extra=extra)
        else:
            scores = self.head(feats + extra)
        cam = self._cam_map(feats) if self.cam is not None else None
        if cam is not None:
            scores = scores + cam
        return self.align(scores) if self.align_cells else scores

    def align(self, scores: torch.Tensor) -> torch.Tensor:
        """``B×h×w`` trunk-grid scores read at the pdf cells' centres (:func:`cell_centre_weights`)."""
        m = self.cell_centres.to(scores.dtype)
        return m @ scores @ m.T

    def _cam_map(self, feats: torch.Tensor) -> torch.Tensor | None:
        """The class-activation map ``B×h×w`` added to the head's scores, ``None`` with ``cam_score=False``;
        stores the auxiliary classifier's logits for :meth:`auxiliary_loss` either way."""
        # The CAM A = W·f + b (the 1×1 conv, K×C) is never built as B×K×h×w: its spatial mean is
        # W·mean(f) + b (the conv commutes with the mean), and Σ_k s_k·A_k = (sᵀW)·f + sᵀb. Same
        # numbers and gradients to float rounding, at ~1/(h·w) of the K·C·h·w multiply-adds.
        # Max / LSE pooling (cam_pool) need the map itself.
        weight, bias = self.cam.weight.flatten(1), self.cam.bias  # K×C, K
        logits = self.cam_logits(feats)
        if self.training and torch.is_grad_enabled():
            self._cam_logits = logits
        if not self.cam_score:
            return None
        s = torch.softmax(logits.detach().to(work_dtype(logits.dtype)), dim=1).to(logits.dtype)  # B×K
        cam = torch.einsum("bchw,bc->bhw", feats, s @ weight.to(s.dtype))  # Σ_k s_k·(W·f)_k
        if bias is not None:
            cam = cam + (s @ bias.to(s.dtype)[:, None])[:, :, None]  # B×1×1 (a matrix product: fvcore counts it)
        return cam

    def cam_logits(self, feats: torch.Tensor) -> torch.Tensor:
        """The auxiliary classifier's ``B×K`` logits for trunk features ``B×C'×h×w`` (its pooled CAM).

        ``cam_pool="avg"``: ``W·mean(f) + b`` (the ``1×1`` conv commutes with the mean, so the
        ``B×K×h×w`` map is never built); ``"max"`` / ``"lse"``: :func:`cam_pool_logits` of the map.

        Raises:
            RuntimeError: a scorer without a CAM head (``cam_classes=0``).
        """
        if self.cam is None:
            raise RuntimeError("this scorer has no CAM head (cam_classes=0)")
        if self.cam_pool == "avg":
            return F.linear(feats.mean((2, 3)), self.cam.weight.flatten(1), self.cam.bias)  # GAP then linear
        return cam_pool_logits(self.cam(feats), self.cam_pool, self.cam_pool_r)

    def auxiliary_loss(self, targets: torch.Tensor) -> torch.Tensor | None:
        """The auxiliary classifier's loss for the last training forward, or ``None``.

        ``cam_loss_weight · cross_entropy(ā, targets)`` with ``ā`` the ``B×K`` spatial-mean
        class-activation logits of the last forward in training mode with gradients on
        (docs/method.md §10). Each call consumes them, so a forward is counted once.

        Args:
            targets: ``B`` class indices (int64, in ``[0, K)``) or ``B×K`` class
                probabilities, the labels of that forward's images.

        Returns:
            A scalar float32 tensor, or ``None`` without a CAM head or a stored forward.

        Raises:
            ValueError: ``targets`` whose batch size differs from the forward's.
        """
        logits, self._cam_logits = self._cam_logits, None
        if logits is None:
            return None
        if targets.shape[0] != logits.shape[0]:
            raise ValueError(f"targets hold {targets.shape[0]} samples, the scorer's last forward {logits.shape[0]}")
        return self.cam_loss_weight * F.cross_entropy(logits.float(), targets)

    def pdf_from_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """Per-sample normalisation (:func:`scores_to_pdf`, with this scorer's contrast) of ``B×h×w`` scores.

        The grid may be anything (e.g. the ``(T·h)×w`` stack of a clip's per-frame score
        maps): each sample is standardised over all its cells together.
        """
        scores = scores.to(work_dtype(scores.dtype))
        pdf = scores_to_pdf(scores, scale=self.score_scale, bias=self.score_bias, activation=self.activation)
        if self.softmax_ramp is not None:
            share = self.softmax_share.to(pdf.dtype)
            soft = scores_to_pdf(scores, scale=self.score_scale, activation="softmax")
            pdf = (1 - share) * pdf + share * soft
        return blur_pdf(pdf, self.pdf_blur)

    def set_progress(self, epochs: float) -> None:
        """Set :attr:`softmax_share` for training progress ``epochs`` (fractional) from ``softmax_ramp``."""
        if self.softmax_ramp is not None:
            start, end = self.softmax_ramp
            self.softmax_share.fill_(min(1.0, max(0.0, (epochs - start) / (end - start))))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pdf_from_features(self.features(images))


class _TreeStamp:
    """What a module tree held when it was taken, checked again in ~40 µs (a ``parameters()`` walk: ~250).

    Records the tree's root, every module's child, parameter and buffer slots (name → object)
    and each tensor's storage address and version counter. :meth:`unchanged` is False once
    any of them differs: a submodule, parameter or buffer replaced, added or removed, a tensor
    written in place (an optimizer step, ``load_state_dict``: the version counter moves) or
    given new storage (``.to()``, ``.float()``: the address moves). The stamp keeps the
    recorded tensors alive, so no other tensor can take over their addresses meanwhile.
    """

    __slots__ = ("root", "dicts", "sizes", "owners", "names", "values", "tensors", "ptrs", "versions")

    def __init__(self, root: nn.Module):
        self.root = root
        self.dicts = [slot for m in root.modules() for slot in (m._modules, m._parameters, m._buffers)]
        self.sizes = [len(slot) for slot in self.dicts]
        entries = [(slot, name, value) for slot in self.dicts for name, value in slot.items()]
        self.owners, self.names, self.values = (list(col) for col in zip(*entries)) if entries else ([], [], [])
        self.tensors = [value for value in self.values if isinstance(value, torch.Tensor)]
        self.ptrs = [t.data_ptr() for t in self.tensors]
        self.versions = [t._version for t in self.tensors]

    def unchanged(self, root: nn.Module) -> bool:
        """Whether ``root`` is the recorded tree with the same modules, tensors, storage and versions."""
        return (root is self.root
                and list(map(len, self.dicts)) == self.sizes
                and all(map(operator.is_, map(dict.get, self.owners, self.names), self.values))
                and [t._version for t in self.tensors] == self.versions
                and [t.data_ptr() for t in self.tensors] == self.ptrs)


class _ActOnly(nn.Module):
    """What is left of a norm+activation layer (timm ``BatchNormAct2d``) once its norm is folded."""

    def __init__(self, norm_act: nn.Module):
        super().__init__()
        self.drop = getattr(norm_act, "drop", None) or nn.Identity()
        self.act = getattr(norm_act, "act", None) or nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(x))


def fold_trunk_batchnorm(trunk: nn.Module, input_size: int = 224, in_chans: int = 3) -> nn.Module | None:
    """An eval-mode copy of ``trunk`` with each BatchNorm folded into the conv feeding it.

    The pairs are found by running the copy once on a ``1×C×s×s`` input with hooks: a
    ``BatchNorm2d`` (timm's ``BatchNormAct2d`` included) whose input is the output of a
    ``Conv2d``, each called once, with running statistics. The conv gets the folded weight
    and bias (``w·γ/√(σ²+ε)``, ``(b − μ)·γ/√(σ²+ε) + β``) and the norm is replaced by its
    activation (or ``Identity``). The copy is then checked against ``trunk`` on a random
    input; if it differs beyond float rounding (a conv output used elsewhere too, say),
    ``None`` is returned and the caller keeps the trunk as is.

    Args:
        trunk: the frozen trunk (left untouched).
        input_size, in_chans: shape of the probe input.

    Returns:
        The folded copy (no gradients, eval mode), or ``None``.
    """
    import copy

    with torch.inference_mode(False), torch.no_grad():
        ref_param = next(trunk.parameters(), None)
        if ref_param is None:
            return None
        device, dtype = ref_param.device, ref_param.dtype
        folded = copy.deepcopy(trunk).eval().requires_grad_(False)
        gen = torch.Generator().manual_seed(0)
        probe = torch.randn(1, in_chans, input_size, input_size, generator=gen)
        probe = probe.to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        produced: dict[int, tuple[str, torch.Tensor]] = {}  # outputs kept alive: ids stay unique
        calls: dict[str, int] = {}
        pairs: list[tuple[str, str]] = []
        hooks = []

        def on_conv(name):
            def hook(module, inputs, output):
                calls[name] = calls.get(name, 0) + 1
                produced[id(output)] = (name, output)
            return hook

        def on_norm(name):
            def hook(module, inputs, output):
                calls[name] = calls.get(name, 0) + 1
                src = produced.get(id(inputs[0])) if inputs else None
                if src is not None and src[1] is inputs[0]:
                    pairs.append((src[0], name))
            return hook

        for name, module in folded.named_modules():
            if isinstance(module, nn.Conv2d):
                hooks.append(module.register_forward_hook(on_conv(name)))
            elif isinstance(module, nn.BatchNorm2d):
                hooks.append(module.register_forward_hook(on_norm(name)))
        try:
            folded(probe)
        finally:
            for h in hooks:
                h.remove()
        modules = dict(folded.named_modules())
        for conv_name, norm_name in pairs:
            conv, norm = modules[conv_name], modules[norm_name]
            if calls[conv_name] != 1 or calls[norm_name] != 1 or norm.running_var is None:
                continue
            var, mean = norm.running_var.float(), norm.running_mean.float()
            gamma = norm.weight.float() if norm.weight is not None else torch.ones_like(var)
            beta = norm.bias.float() if norm.bias is not None else torch.zeros_like(var)
            scale = gamma * torch.rsqrt(var + norm.eps)
            bias = conv.bias.float() if conv.bias is not None else torch.zeros_like(var)
            conv.weight = nn.Parameter((conv.weight.float() * scale.view(-1, 1, 1, 1)).to(dtype), requires_grad=False)
            conv.bias = nn.Parameter(((bias - mean) * scale + beta).to(dtype), requires_grad=False)
            parent, _, leaf = norm_name.rpartition(".")
            rest = _ActOnly(norm) if hasattr(norm, "act") else nn.Identity()
            setattr(modules[parent] if parent else folded, leaf, rest)
        if not pairs:
            return None
        for module in folded.modules():  # the trunk runs channels-last: stored so, no weight copy per call
            if isinstance(module, nn.Conv2d) and module.weight.dim() == 4:
                module.weight = nn.Parameter(module.weight.detach().contiguous(memory_format=torch.channels_last),
                                             requires_grad=False)
        probe = torch.randn(2, in_chans, input_size, input_size, generator=gen)
        probe = probe.to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        was_training = trunk.training
        trunk.eval()
        try:
            ref, got = trunk(probe)[-1], folded(probe)[-1]
        finally:
            trunk.train(was_training)
        tol = (1e-4 if dtype in (torch.float32, torch.float64) else 3e-2) * (1.0 + float(ref.abs().max()))
        if ref.shape != got.shape or not bool(((ref - got).abs() <= tol).all()):
            return None
        return folded


def _truncate_trunk(trunk: nn.Module, info: dict) -> None:
    """Drop the blocks after the feature stage ``info`` (timm runs them all otherwise)."""
    module = info.get("module", "")
    if module.startswith("blocks.") and hasattr(trunk, "blocks"):
        keep = int(module.split(".")[1]) + 1
        trunk.blocks = trunk.blocks[:keep]
