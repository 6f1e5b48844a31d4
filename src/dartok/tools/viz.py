"""Plot DART partitions: image + score-map (pdf) heat map + box outlines.

Uses matplotlib's Agg backend (no display needed). Figures are written atomically.
"""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from .._io import atomic_path  # noqa: E402

__all__ = [
    "to_display_image", "plot_partition", "save_partition_figure", "plot_video_partition",
    "save_video_partition_figure", "save_png", "visualize",
]


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def to_display_image(image) -> np.ndarray:
    """Convert an image to an ``H×W×3`` float array in [0, 1] for ``imshow``.

    Accepts a ``C×H×W`` tensor/array (C in 1, 3, 4), an ``H×W×C`` array, or ``H×W``.
    Values are min-max rescaled per image, so inputs normalized to [-1, 1], [0, 1] or
    [0, 255] all display correctly. Grayscale is repeated to 3 channels; alpha dropped.
    """
    is_tensor = isinstance(image, torch.Tensor)
    a = _to_numpy(image).astype(np.float64)
    if a.ndim == 3:
        # tensors are C×H×W; arrays are H×W×C unless the first axis is clearly channels
        if is_tensor or (a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4)):
            a = np.transpose(a, (1, 2, 0))
        if a.shape[-1] == 4:
            a = a[..., :3]
        if a.shape[-1] == 1:
            a = a[..., 0]
    elif a.ndim != 2:
        raise ValueError(f"image must have 2 or 3 dimensions, got shape {tuple(a.shape)}")
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.shape[-1] != 3:
        raise ValueError(f"image must have 1, 3 or 4 channels, got shape {tuple(a.shape)}")
    a = np.nan_to_num(a)
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return a.astype(np.float32)


def plot_partition(
    ax,
    image,
    boxes,
    pdf=None,
    *,
    title: str | None = None,
    pdf_alpha: float = 0.45,
    cmap: str = "inferno",
    box_color: str = "cyan",
    linewidth: float = 0.6,
    show_centers: bool = False,
    mask=None,
    true_mask=None,
):
    """Draw one DART partition on a matplotlib axes.

    Args:
        ax: matplotlib axes.
        image: ``C×H×W`` tensor / array or ``H×W×C`` / ``H×W`` array (any value range;
            rescaled min-max for display).
        boxes: ``N×4`` boxes ``(x0, y0, x1, y1)`` in normalized [0, 1] image coordinates
            (x along the width).
        pdf: optional ``h×w`` score map (any resolution); drawn stretched over the whole
            image as a semi-transparent heat map.
        title: optional axes title.
        pdf_alpha, cmap: heat-map opacity and colormap.
        box_color, linewidth: box outline style.
        show_centers: also mark box centers.
        mask: optional ``h×w`` integer label map (a segmentation model's prediction), drawn over
            the image, one colour per class (``tab20``, class k in colour k mod 20), class 0
            (background) left clear.
        true_mask: optional ``h×w`` label map whose non-background outline is drawn (white,
            dashed), to compare the prediction with. Label 255 (ignore) counts as background.

    Returns:
        The axes.
    """
    img = to_display_image(image)
    H, W = img.shape[:2]
    ax.imshow(img, extent=(0, W, H, 0), interpolation="nearest")
    if mask is not None:
        m = _to_numpy(mask).astype(np.int64)
        if m.ndim != 2:
            raise ValueError(f"mask must be h×w, got shape {tuple(m.shape)}")
        shown = np.ma.masked_where((m == 0) | (m == 255), m % 20)
        ax.imshow(shown, extent=(0, W, H, 0), alpha=0.55, cmap="tab20", vmin=0, vmax=19, interpolation="nearest")
    if true_mask is not None:
        t = _to_numpy(true_mask).astype(np.int64)
        fg = ((t != 0) & (t != 255)).astype(float)
        if fg.any() and not fg.all():
            ys, xs = (np.arange(n) + 0.5 for n in fg.shape)
            ax.contour(xs * W / fg.shape[1], ys * H / fg.shape[0], fg, levels=[0.5], colors="white",
                       linewidths=0.8, linestyles="--")
    if pdf is not None:
        p = _to_numpy(pdf).astype(np.float64)
        p = np.squeeze(p)
        if p.ndim != 2:
            raise ValueError(f"pdf must be h×w, got shape {tuple(_to_numpy(pdf).shape)}")
        ax.imshow(p, extent=(0, W, H, 0), alpha=pdf_alpha, cmap=cmap, interpolation="bilinear")
    b = _to_numpy(boxes).astype(np.float64).reshape(-1, 4) if boxes is not None else np.zeros((0, 4))
    for x0, y0, x1, y1 in b:
        ax.add_patch(
            Rectangle((x0 * W, y0 * H), (x1 - x0) * W, (y1 - y0) * H,
                      fill=False, edgecolor=box_color, linewidth=linewidth)
        )
        if show_centers:
            ax.plot([(x0 + x1) * W / 2], [(y0 + y1) * H / 2], ".", color=box_color, markersize=2)
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    return ax


def save_partition_figure(
    path: str | os.PathLike,
    images: Sequence,
    boxes: Sequence,
    pdfs: Sequence | None = None,
    titles: Sequence[str] | None = None,
    ncols: int = 4,
    *,
    panel_size: float = 2.5,
    dpi: int = 150,
    masks: Sequence | None = None,
    true_masks: Sequence | None = None,
    **plot_kwargs,
) -> Path:
    """Save a grid of partitions (one panel per image) as a PNG, atomically.

    Args:
        path: output file (``.png``); parent directories are created. Written to a
            temporary file in the same directory and moved into place with ``os.replace``.
        images: sequence (or batched tensor) of images, see :func:`plot_partition`.
        boxes: sequence (or ``B×N×4`` tensor) of box sets.
        pdfs: optional sequence (or ``B×h×w`` tensor) of score maps.
        titles: optional per-panel titles.
        ncols: number of columns (capped at the number of images).
        panel_size: inches per panel; dpi: resolution.
        masks, true_masks: optional per-image label maps (predicted, true; ``None`` entries
            allowed), see :func:`plot_partition`.
        **plot_kwargs: forwarded to :func:`plot_partition`.

    Returns:
        The output path.
    """
    n = len(images)
    if n == 0:
        raise ValueError("no images to plot")
    if len(boxes) != n:
        raise ValueError(f"got {n} images but {len(boxes)} box sets")
    if pdfs is not None and len(pdfs) != n:
        raise ValueError(f"got {n} images but {len(pdfs)} pdfs")
    if titles is not None and len(titles) != n:
        raise ValueError(f"got {n} images but {len(titles)} titles")
    for what, seq in (("masks", masks), ("true masks", true_masks)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"got {n} images but {len(seq)} {what}")
    ncols = max(1, min(int(ncols), n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols, panel_size * nrows), squeeze=False)
    try:
        for i, ax in enumerate(axes.flat):
            if i >= n:
                ax.axis("off")
                continue
            plot_partition(
                ax, images[i], boxes[i], None if pdfs is None else pdfs[i],
                title=None if titles is None else titles[i], mask=None if masks is None else masks[i],
                true_mask=None if true_masks is None else true_masks[i], **plot_kwargs,
            )
        fig.tight_layout()
        out = save_png(fig, path, dpi)
    finally:
        plt.close(fig)
    return out


def save_png(fig, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Write a matplotlib figure as a PNG to ``path`` atomically (:func:`dartok._io.atomic_path`).

    The parent folder is created. If rendering fails, ``path`` keeps its old content and
    no temporary file is left behind.

    Returns:
        ``path`` as a ``Path``.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return out


# --------------------------------------------------------------------------- video


def plot_video_partition(
    axes,
    video,
    boxes,
    pdf=None,
    *,
    title: str | None = None,
    pdf_alpha: float = 0.45,
    cmap: str = "inferno",
    box_color: str = "cyan",
    linewidth: float = 0.6,
    show_centers: bool = False,
):
    """Draw one clip's stacked-frame DART partition, one frame per axes (paper §3.3, Fig. 5).

    Args:
        axes: sequence of T matplotlib axes, one per frame (e.g. a row of subplots).
        video: one clip ``C×T×H×W`` (tensor or array, any value range; rescaled min-max
            over the whole clip, so frames keep their relative brightness).
        boxes: ``N×4`` boxes in the tall image's [0, 1] coordinates, as
            :class:`dartok.video_tokenizer.VideoDART` returns them. Each frame shows every box that
            overlaps it (by more than 1e-4 of the box's height), clipped to the frame (a
            box straddling two frames appears, cut, in both); the title gives the frame's
            token count (tokens counted in the frame of their box centre,
            :func:`dartok.video_tokenizer.frame_token_counts`).
        pdf: optional score map over the tall image, ``(T·h)×w`` (or ``T×h×w``); drawn over
            each frame with one colour scale for the whole clip, so frames holding more
            mass look brighter.
        title: optional text for the clip, drawn beside its first frame.
        pdf_alpha, cmap, box_color, linewidth, show_centers: as :func:`plot_partition`.

    Returns:
        The axes.

    Raises:
        ValueError: video not ``C×T×H×W``, boxes not ``N×4``, a number of axes other than
            T, or a pdf that is not 2-D / 3-D.
    """
    from ..video_tokenizer import frame_boxes, frame_token_counts  # lazy: keeps viz light to import

    clip = video.detach().float().cpu() if isinstance(video, torch.Tensor) else torch.as_tensor(np.asarray(video))
    if clip.dim() != 4:
        raise ValueError(f"video must be one clip C×T×H×W, got shape {tuple(clip.shape)}")
    chans, num_frames, height, width = clip.shape
    axes = list(np.asarray(axes, dtype=object).reshape(-1))
    if len(axes) != num_frames:
        raise ValueError(f"need one axes per frame: got {len(axes)} axes for {num_frames} frames")
    b = torch.as_tensor(_to_numpy(boxes), dtype=torch.float64)
    if b.dim() != 2 or b.shape[-1] != 4:
        raise ValueError(f"boxes must be N×4 (one clip), got shape {tuple(b.shape)}")
    clipped, share = frame_boxes(b.unsqueeze(0), num_frames)
    counts = frame_token_counts(b.unsqueeze(0), num_frames)[0].tolist()
    tall = to_display_image(clip.reshape(chans, num_frames * height, width))  # (T·H)×W×3, one scale
    p = None
    if pdf is not None:
        p = _to_numpy(pdf).astype(np.float64)
        if p.ndim == 3:
            p = p.reshape(-1, p.shape[-1])
        if p.ndim != 2:
            raise ValueError(f"pdf must be (T·h)×w or T×h×w, got shape {tuple(_to_numpy(pdf).shape)}")
    for t, ax in enumerate(axes):
        ax.imshow(tall[t * height:(t + 1) * height], extent=(0, width, height, 0), interpolation="nearest")
        if p is not None:
            # the whole tall map, shifted so frame t's rows land on this axes; the axes clip the rest
            ax.imshow(p, extent=(0, width, (num_frames - t) * height, -t * height), alpha=pdf_alpha, cmap=cmap,
                      interpolation="bilinear", vmin=0.0, vmax=float(p.max()) if p.size else 1.0)
        for n in torch.nonzero(share[0, :, t] > 1e-4).flatten().tolist():  # not float-rounding slivers
            x0, y0, x1, y1 = clipped[0, n, t].tolist()
            ax.add_patch(Rectangle((x0 * width, y0 * height), (x1 - x0) * width, (y1 - y0) * height,
                                   fill=False, edgecolor=box_color, linewidth=linewidth))
            if show_centers:
                cy = (b[n, 1] + b[n, 3]).item() / 2 * num_frames - t
                if 0 <= cy < 1:
                    ax.plot([(x0 + x1) * width / 2], [cy * height], ".", color=box_color, markersize=2)
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"t={t}: {counts[t]} tok", fontsize=7)
    if title:  # once per clip, beside its first frame (per-frame titles would overlap)
        axes[0].set_ylabel(title, fontsize=7)
    return axes


def save_video_partition_figure(
    path: str | os.PathLike,
    videos,
    boxes,
    pdfs=None,
    titles: Sequence[str] | None = None,
    *,
    panel_size: float = 1.6,
    dpi: int = 150,
    **plot_kwargs,
) -> Path:
    """Save clips' stacked-frame partitions as a PNG (one row per clip, frames side by side), atomically.

    Args:
        path: output ``.png``; parent directories are created; written to a temporary file
            in the same directory and moved into place with ``os.replace``.
        videos: one clip ``C×T×H×W`` or a batch ``B×C×T×H×W`` (tensor or array).
        boxes: ``N×4`` (one clip) or ``B×N×4`` boxes in the tall image's [0, 1] coordinates.
        pdfs: optional ``(T·h)×w`` / ``B×(T·h)×w`` score maps (``T×h×w`` per clip also works).
        titles: optional per-clip titles (prefixed to each frame's title).
        panel_size: inches per frame panel; dpi: resolution.
        **plot_kwargs: forwarded to :func:`plot_video_partition`.

    Returns:
        The output path.

    Raises:
        ValueError: shapes that do not fit (see :func:`plot_video_partition`), or counts of
            boxes / pdfs / titles that differ from the number of clips.
    """
    v = videos.detach().float().cpu() if isinstance(videos, torch.Tensor) else torch.as_tensor(np.asarray(videos))
    b = boxes.detach().cpu() if isinstance(boxes, torch.Tensor) else torch.as_tensor(np.asarray(boxes))
    if v.dim() == 4:
        v, b = v.unsqueeze(0), b.unsqueeze(0)
        pdfs = None if pdfs is None else [pdfs]
    if v.dim() != 5:
        raise ValueError(f"videos must be C×T×H×W or B×C×T×H×W, got shape {tuple(v.shape)}")
    n, num_frames = v.shape[0], v.shape[2]
    if n == 0:
        raise ValueError("no clips to plot")
    if b.dim() != 3 or b.shape[0] != n:
        raise ValueError(f"boxes must be B×N×4 with B = {n} clips, got shape {tuple(b.shape)}")
    if pdfs is not None and len(pdfs) != n:
        raise ValueError(f"got {n} clips but {len(pdfs)} pdfs")
    if titles is not None and len(titles) != n:
        raise ValueError(f"got {n} clips but {len(titles)} titles")
    fig, axes = plt.subplots(n, num_frames, figsize=(panel_size * num_frames, panel_size * n), squeeze=False)
    try:
        for i in range(n):
            plot_video_partition(axes[i], v[i], b[i], None if pdfs is None else pdfs[i],
                                 title=None if titles is None else titles[i], **plot_kwargs)
        fig.tight_layout()
        out = save_png(fig, path, dpi)
    finally:
        plt.close(fig)
    return out


# --------------------------------------------------------------------------- figures of checkpoints / score maps

SCORE_SOURCES = ("uniform", "edges")
"""Score maps :func:`visualize` can draw without a trained model."""


def load_image_file(path: str | os.PathLike, chans: int) -> torch.Tensor:
    """Read an image file as a float tensor ``C×H×W`` in [0, 1] with ``chans`` (1 or 3) channels.

    16-bit / integer / float grayscale images are rescaled min-max to 8 bits first.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not an image PIL can read.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I", "F"):
                arr = np.asarray(im, dtype=np.float32)
                arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-12)
                im = Image.fromarray((arr * 255).astype(np.uint8))
            im = im.convert("L" if chans == 1 else "RGB")
            a = np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {str(path)!r}: {e}") from None
    t = torch.from_numpy(a.copy())
    return t[None] if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def _image_file_channels(paths: Sequence[Path]) -> int:
    """3 if any of the files is a colour image, else 1."""
    from PIL import Image

    for p in paths:
        try:
            with Image.open(p) as im:
                if im.mode not in ("L", "1", "I", "I;16", "F", "LA"):
                    return 3
        except OSError:
            pass
    return 1


def _item_name(ds, i: int) -> str | None:
    """The file name of item ``i`` of an ImageFolder (or of a subset of one), else ``None``."""
    while isinstance(ds, torch.utils.data.Subset):
        ds, i = ds.dataset, ds.indices[i]
    samples = getattr(ds, "samples", None)
    return Path(samples[i][0]).name if samples is not None and -len(samples) <= i < len(samples) else None


def _class_name(class_names, k: int) -> str:
    return class_names[k] if class_names and k < len(class_names) else str(k)


def _mask_classes(class_names, mask: torch.Tensor, k: int = 2) -> str:
    """The ``k`` largest non-background classes of a label mask, by area (``background`` if none)."""
    labels = mask[(mask != 0) & (mask != 255)].long()
    if not labels.numel():
        return _class_name(class_names, 0) if class_names else "background"
    counts = torch.bincount(labels)
    top = [int(c) for c in counts.argsort(descending=True)[:k] if counts[c] > 0]
    return ", ".join(_class_name(class_names, c) for c in top)


def visualize(
    output: str | os.PathLike = "partition.png",
    *,
    checkpoint: str | os.PathLike | None = None,
    score_source: str | None = None,
    num_tokens: int | None = None,
    pdf_size: int = 14,
    alpha: float | None = None,
    data: str | None = None,
    data_root: str | None = None,
    canvas_size: int | None = None,
    data_seed: int | None = None,
    split: str = "test",
    indices: Sequence[int] | None = None,
    images: Sequence[str | os.PathLike] | None = None,
    ncols: int = 4,
    device: str | None = None,
) -> tuple[Path, int]:
    """Draw partitions (score map + boxes) of dataset samples or image files into one PNG.

    What ``dartok visualize`` does. Either a trained model (``checkpoint``: its tokenizer's
    boxes and pdf, its prediction in each title; a fixed-grid model shows its patch grid)
    or a hand-made score map (``score_source``: ``"uniform"`` or ``"edges"``, the
    gradient-magnitude map :func:`dartok.scorer.edge_pdf` on a ``pdf_size²`` grid) cut
    into ``num_tokens`` boxes by :func:`dartok.partition.quantile_boxes` (alpha: DART's
    default unless given); with a checkpoint, ``num_tokens`` draws a DART model at that budget
    instead of its trained one (:func:`dartok.models.set_num_tokens`). Inputs are image files (``images``) or samples of a local
    dataset (``indices``, default the first 8; dataset options default to the
    checkpoint's, else ``cluttered_fmnist``). Clips ``C×T×H×W`` of a DART video model are
    drawn one row of frames per clip. A segmentation checkpoint's panels show its predicted mask
    (one colour per class) over the image with its boxes, the true mask's outline dashed, and the
    classes of both in the title. With a checkpoint, images are prepared as its evaluation
    data were (:func:`dartok.tools.predict.input_transform`) and titles name its classes; for a
    checkpoint trained on an ImageFolder the default samples are 8 images of its validation
    split drawn across the classes (seeded).

    Returns:
        ``(path, number of images drawn)``.

    Raises:
        ValueError: options that do not fit together (both or neither of checkpoint /
            score_source, a missing ``num_tokens``, images and indices together...), an
            output that is not ``.png``, indices out of range, an unreadable image file.
        FileNotFoundError: a missing checkpoint or image file.
    """
    from ..data import FASHION_MNIST_CLASSES, DataConfig, build_dataset, dataset_info, list_datasets
    from ..data.folder import load_image, stratified_indices
    from ..data.transforms import model_input_size, prepare_images
    from .predict import input_transform
    from ..models import is_dart
    from ..train.checkpoint import checkpoint_classes, model_from_checkpoint
    from ..train.distributed import select_device

    output = Path(output)
    if (checkpoint is None) == (score_source is None):
        raise ValueError("give exactly one of --checkpoint or --score-source")
    if score_source is not None:
        if score_source not in SCORE_SOURCES:
            raise ValueError(f"--score-source must be 'uniform' or 'edges', got {score_source!r}")
        if num_tokens is None or num_tokens < 1:
            raise ValueError("--score-source needs --num-tokens N (N >= 1)")
        if pdf_size < 1:
            raise ValueError(f"--pdf-size must be >= 1, got {pdf_size}")
    if split not in ("test", "train"):
        raise ValueError(f"--split must be 'test' or 'train', got {split!r}")
    if images and indices:
        raise ValueError("give either --image or --indices, not both")
    if ncols < 1:
        raise ValueError(f"--ncols must be >= 1, got {ncols}")
    if output.suffix.lower() != ".png":
        raise ValueError(f"output must be a .png file, got {str(output)!r}")

    dev = select_device(device)
    model = config = None
    class_names = None
    if checkpoint is not None:
        model, config = model_from_checkpoint(checkpoint, device=dev, num_tokens=num_tokens)
        in_size = model_input_size(model)
        chans = in_size[0]
        dd = config.get("data") or {}
        class_names = checkpoint_classes(config)
        to_input = input_transform(model, config)  # what the model's evaluation saw

    # an oracle model (score_source="oracle") cuts the dataset's object box: items carry it
    oracle = model is not None and is_dart(model) and model.patch_embed.score_source == "oracle"
    # ---- inputs: (image C×H×W normalised like the training data, label or None, name, box or None) ----
    items: list[tuple[torch.Tensor, int | None, str, torch.Tensor | None]] = []
    true_masks: dict[int, torch.Tensor] = {}  # item -> its label mask (segmentation data)
    if images and oracle:
        raise ValueError("an oracle model (score_source='oracle') draws dataset items (--indices), whose "
                         "object boxes give its score map, not image files")
    if images:
        paths = [Path(p) for p in images]
        if checkpoint is not None:
            for p in paths:
                if not p.is_file():
                    raise FileNotFoundError(f"image file {str(p)!r} does not exist")
                items.append((to_input(load_image(p)), None, p.name, None))
        else:
            chans_img = _image_file_channels(paths)
            for p in paths:
                items.append((load_image_file(p, chans_img), None, p.name, None))
    else:
        if checkpoint is not None:
            dcfg = DataConfig.from_checkpoint(config, data=data, data_root=data_root, canvas_size=canvas_size,
                                              data_seed=data_seed)
        else:
            dcfg = DataConfig(data=data or "cluttered_fmnist", data_root=data_root, canvas_size=canvas_size,
                              data_seed=data_seed or 0)
        pil = not dataset_info(dcfg.data).tensors
        if pil and checkpoint is None:  # PIL images need a model's transform first
            ready = [n for n in list_datasets() if dataset_info(n).tensors]
            raise ValueError(f"--indices without --checkpoint works with {', '.join(ready)}; use --image for "
                             f"other pictures")
        if pil:  # an ImageFolder / timm dataset: the model's evaluation transform, its class map
            same = dcfg.data == dd.get("name")
            ds = build_dataset(dcfg, split, transform=to_input, classes=class_names if same else None)
        else:
            ds = build_dataset(dcfg, split, boxes=oracle)
        if class_names is None:
            class_names = list(getattr(ds, "classes", None) or FASHION_MNIST_CLASSES)
        if indices is not None:
            idx = list(indices)
        elif pil and getattr(ds, "targets", None) is not None:  # a few of every class, not the first class only
            idx = stratified_indices(ds.targets, 8, dcfg.data_seed)
        else:
            idx = list(range(min(8, len(ds))))
        bad = [i for i in idx if not -len(ds) <= i < len(ds)]
        if bad:
            raise ValueError(f"--indices {bad} out of range for {dcfg.data}/{split} of {len(ds)} samples")
        for i in idx:
            x, y = ds[i]
            box = y["box"] if oracle else None
            if isinstance(y, Mapping):
                y = y.get("mask", y.get("label"))
            if isinstance(y, torch.Tensor) and y.dim() == 2:  # a label mask (segmentation data)
                true_masks[len(items)] = y
                y = None
            items.append((x, None if y is None else int(y), _item_name(ds, i) or f"{dcfg.data}[{i}]", box))

    # ---- partitions ----
    from ..partition import quantile_boxes
    from ..resample import grid_boxes
    from ..scorer import edge_pdf, uniform_pdf

    imgs, boxes, pdfs, titles, masks = [], [], [], [], []
    with torch.no_grad():
        for k, (x, y, name, box) in enumerate(items):
            mask = None
            if checkpoint is not None:
                xb = prepare_images(x[None].to(dev), in_size)
                given = model.patch_embed.oracle_pdf(box[None].to(dev)) if oracle else None
                with model.patch_embed.given_pdf(given) if is_dart(model) else contextlib.nullcontext():
                    logits = model(xb)
                    o = model.patch_embed(xb) if is_dart(model) else None
                logits = logits[0] if isinstance(logits, (tuple, list)) else logits
                if o is not None:
                    b, pdf = o.boxes[0].cpu(), o.pdf[0].float().cpu()
                elif x.ndim == 4:
                    raise ValueError("clips can be drawn for DART video models only (a fixed-grid model has no "
                                     "partition to show)")
                else:  # fixed grid: its patch grid, the partition of a uniform pdf
                    gh, gw = (int(v) for v in getattr(getattr(model, "patch_embed", None), "grid_size", (1, 1)))
                    b, pdf = grid_boxes(gh, gw)[0], None
                if logits.dim() == 4:  # segmentation: the predicted mask, the classes it holds
                    mask = logits.argmax(1)[0].cpu()
                    pdf = None  # the mask is drawn instead of the score map
                    title = f"{name}\npred {_mask_classes(class_names, mask)}"
                    if k in true_masks:
                        title += f" | true {_mask_classes(class_names, true_masks[k])}"
                else:
                    pred = int(logits.argmax(1)[0])
                    title = f"{name}\npred {_class_name(class_names, pred)}"
                    if y is not None:
                        title += f" | true {_class_name(class_names, y)}"
            else:
                xb = x[None].to(dev)
                if score_source == "uniform":
                    score = uniform_pdf(1, (pdf_size, pdf_size), device=dev)
                else:
                    score = edge_pdf(xb, (pdf_size, pdf_size))
                kw = {} if alpha is None else {"alpha": alpha}
                b = quantile_boxes(score, num_tokens, **kw)[0].cpu()
                # the heat map is drawn min-max scaled, so the alpha-mixed map looks the same
                pdf = None if score_source == "uniform" else score[0].float().cpu()
                title = f"{name}\n{score_source}, N={num_tokens}"
                if y is not None and class_names:
                    title += f" | {class_names[y]}"
            imgs.append(x)
            boxes.append(b)
            pdfs.append(pdf)
            titles.append(title)
            masks.append(mask)
    if imgs and imgs[0].ndim == 4:  # clips C×T×H×W: one row of frames per clip
        path = save_video_partition_figure(output, torch.stack(imgs), torch.stack(boxes), torch.stack(pdfs),
                                           titles=titles)
    else:
        seg = {}
        if any(m is not None for m in masks):  # a segmentation model's masks, and the true ones
            seg = dict(masks=masks, true_masks=[true_masks.get(k) for k in range(len(imgs))])
        path = save_partition_figure(output, imgs, boxes, pdfs, titles=titles, ncols=ncols, **seg)
    return path, len(imgs)
