"""Video datasets for dartok: a motion benchmark from Fashion-MNIST, and clips from disk.

* :class:`MovingClutteredFashionMNIST`: short clips whose label depends on motion, so no
  single frame can answer (each frame's distribution is the same for every label). Built
  from real Fashion-MNIST items (``dartok.data.load_fashion_mnist``), like
  :class:`dartok.data.ClutteredFashionMNIST`. A video tokenizer that spends its tokens on
  what moves should beat one that spreads them over static clutter.
* :class:`VideoFolderDataset`: clips listed in an annotation file (SSv2 / VideoMamba
  style), stored as video files (read with PyAV) or folders of frame images, sampled as
  VideoMamba samples SSv2 frames (:func:`segment_indices`).

Both return ``(clip, label)`` with ``clip`` a float32 ``C×T×H×W`` tensor (VideoMamba's
layout; a batch is ``B×C×T×H×W``) and ``label`` an int. :func:`create_video_dataset` builds
either by name.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .fashion_mnist import (
    _ITEM_SIDE,
    _SPLIT_ID,
    FASHION_MNIST_CLASSES,
    _check_channels,
    _check_num_samples,
    _check_scene,
    _check_split,
    _FashionMNISTBase,
    _local_split,
    _resize,
)
from .registry import create_dataset, dataset_info, list_datasets, register_dataset

__all__ = [
    "DIRECTIONS",
    "MovingClutteredFashionMNIST",
    "VIDEO_EXTENSIONS",
    "FRAME_EXTENSIONS",
    "VideoFolderDataset",
    "create_video_dataset",
    "read_annotations",
    "segment_indices",
]

DIRECTIONS: dict[int, tuple[tuple[str, int, int], ...]] = {
    4: (("right", 1, 0), ("left", -1, 0), ("down", 0, 1), ("up", 0, -1)),
    8: (("right", 1, 0), ("left", -1, 0), ("down", 0, 1), ("up", 0, -1),
        ("down-right", 1, 1), ("down-left", -1, 1), ("up-right", 1, -1), ("up-left", -1, -1)),
}
"""Motion directions ``(name, dx, dy)`` (image coordinates: y grows downwards) for 4 or 8 directions."""

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".gif")
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _check_int(name: str, value, lo: int) -> int:
    """``value`` as an int >= lo, else a ValueError naming ``name``."""
    try:
        ok = not isinstance(value, bool) and int(value) == value and value >= lo
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------
# Moving cluttered Fashion-MNIST
# --------------------------------------------------------------------------------------------


class MovingClutteredFashionMNIST(_FashionMNISTBase):
    """Clips of Fashion-MNIST items moving over static clutter; the label is about the motion.

    Every clip has T frames on an ``S×S`` black canvas with ``num_clutter`` static pieces of
    other garments (as :class:`dartok.data.ClutteredFashionMNIST`: ``c×c`` crops resized to
    ``clutter_size·S``, pasted with ``max``). Items move with an integer velocity of
    ``speed`` pixels per frame along a direction on a torus: they wrap around the canvas
    edges (what leaves on the right comes back on the left). Two tasks:

    * ``"direction"`` (default; ``K = num_directions`` classes, :data:`DIRECTIONS`): one
      item (split item ``i % len(split)``) moves; the label is its direction. The item's
      starting position is uniform over the canvas, and on a torus every later position is
      then uniform too, whatever the direction; clutter, item and speed are drawn
      independently of the label. Hence **the distribution of every single frame is the
      same for all labels**: one frame carries no information about the label (chance is
      1/K), while two frames give it away. Frame 0 of a clip does not depend on its label
      at all (:meth:`render` with another ``label`` changes the later frames only).
    * ``"which_moves"`` (10 classes): two items of different classes, both placed uniformly
      on the torus; one moves (split item ``i % len(split)``), the other stays; the label is
      the moving item's class. The two items are drawn the same way (the static one
      uniformly among the items of the other classes; Fashion-MNIST's classes are
      balanced), so in any single frame they are exchangeable: a one-frame model can
      narrow the label to two classes but do no better than 1/2 between them. Rendering
      the clip with the other item's class as ``label`` makes that item move instead,
      frame 0 unchanged.

    Both are meant to be learnable by a small model in a few CPU epochs (64×64, T = 8, 4
    or 10 classes, two frames suffice); that has not been measured yet.

    Generation is lazy and deterministic: with ``rng = np.random.default_rng([seed, i,
    split_id])`` (split_id 0 train, 1 test) a clip depends only on ``(seed, i, split)`` and
    the constructor's arguments, not on access order or worker. Draw order: moving item
    side and start, speed; (``"which_moves"``: its direction, the static item, its side and
    position); clutter. The ``"direction"`` labels come from a separate stream
    ``default_rng([seed, split_id, 1])`` (label i is its i-th draw), so ``targets`` needs no
    rendering.

    Args:
        split: ``"train"`` (Fashion-MNIST train items) or ``"test"`` (``t10k`` items).
        root: Fashion-MNIST directory (``None``: ``/usr/share/datasets/fashion-mnist/``).
        num_frames: T ≥ 2 (motion needs two frames).
        canvas_size: S in pixels; the smallest item must be ≥ 8 px.
        num_samples: ``None`` for the split size, else indices ``0 .. num_samples-1``.
        seed: generation seed, an int ≥ 0.
        channels: 1, or 3 to repeat the gray channel.
        task: ``"direction"`` or ``"which_moves"``.
        object_scale: ``(lo, hi)`` item side as a fraction of S, ``0 < lo <= hi <= 1``.
        speed: ``(lo, hi)`` integer pixels per frame along each moving axis, ``1 <= lo <= hi``
            (uniform, inclusive).
        num_directions: 4 or 8 (:data:`DIRECTIONS`).
        num_clutter: static clutter pieces, ≥ 0.
        clutter_size: clutter side as a fraction of S, in (0, 1]; ≥ 2 px when used.
        normalize: ``True``: ``(x/255 − 0.5)/0.5`` in [-1, 1]; ``False`` (default): [0, 1].
        transform: optional callable applied to the ``C×T×S×S`` tensor.
        return_box: items carry the moving item's box in every frame as part of the target (below).

    ``__getitem__(i)`` returns ``(clip, label)``: float32 ``(channels, T, S, S)`` and an int;
    with ``return_box``, ``(clip, {"label": label, "box": float32 (T, 4, 4)})``: the moving
    item's box in each frame (:meth:`object_boxes`, first item) cut at the canvas edges into
    its four torus pieces (:func:`torus_pieces`; pieces that do not wrap are empty), for the
    oracle score source and the localisation metric (:mod:`dartok.localization`).
    Attributes: ``targets`` / ``labels`` (int64 array), ``classes`` (direction names or the
    10 garment names), ``num_frames``.

    Raises:
        ValueError: bad split, task, sizes, scales, speed, num_directions, channels,
            num_samples or seed; a split too small for the task; corrupt files.
        FileNotFoundError: Fashion-MNIST files missing (see ``dartok.data.load_fashion_mnist``).
    """

    MIN_OBJECT_PX = 8
    TASKS = ("direction", "which_moves")

    def __init__(
        self,
        split: str = "train",
        root: str | os.PathLike | None = None,
        num_frames: int = 8,
        canvas_size: int = 64,
        num_samples: Optional[int] = None,
        seed: int = 0,
        channels: int = 1,
        task: str = "direction",
        *,
        object_scale: Sequence[float] = (0.25, 0.4),
        speed: Sequence[int] = (2, 4),
        num_directions: int = 4,
        num_clutter: int = 6,
        clutter_size: float = 0.12,
        normalize: bool = False,
        transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        return_box: bool = False,
    ) -> None:
        _check_split(split)
        _check_channels(channels)
        _check_num_samples(num_samples)
        self.return_box = bool(return_box)
        if task not in self.TASKS:
            raise ValueError(f"task must be one of {self.TASKS}, got {task!r}")
        num_frames = _check_int("num_frames", num_frames, 2)
        canvas_size, (lo, hi), num_clutter, clutter_size = _check_scene(
            canvas_size, object_scale, num_clutter, clutter_size, self.MIN_OBJECT_PX)
        try:
            vlo, vhi = (int(v) for v in speed)
        except (TypeError, ValueError):
            raise ValueError(f"speed must be a pair of ints (lo, hi), got {speed!r}") from None
        if not 1 <= vlo <= vhi or tuple(speed) != (vlo, vhi):
            raise ValueError(f"speed must be integers 1 <= lo <= hi (pixels per frame), got {speed!r}")
        if num_directions not in DIRECTIONS:
            raise ValueError(f"num_directions must be one of {sorted(DIRECTIONS)}, got {num_directions!r}")
        seed = _check_int("seed", seed, 0)

        self._init_split(split, root)
        n_split = len(self._images)
        n = n_split if num_samples is None else int(num_samples)
        if n > 0 and n_split < 2:
            raise ValueError(f"Fashion-MNIST {split!r} split in {self.root} needs at least 2 items "
                             "(clutter and the second item differ from the clip's item)")
        if n > 0 and task == "which_moves" and len(np.unique(self._split_labels)) < 2:
            raise ValueError("task 'which_moves' needs a split with at least 2 classes")

        self.num_frames = num_frames
        self.canvas_size = canvas_size
        self.object_scale = (lo, hi)
        self.speed = (vlo, vhi)
        self.num_directions = int(num_directions)
        self.directions = DIRECTIONS[self.num_directions]
        self.num_clutter = num_clutter
        self.clutter_size = clutter_size
        self.clutter_px = round(clutter_size * canvas_size)
        self.clutter_crop = int(np.clip(round(_ITEM_SIDE * clutter_size / ((lo + hi) / 2)), 2, _ITEM_SIDE))
        self.num_samples = n
        self.seed = seed
        self.channels = channels
        self.task = task
        self.normalize = bool(normalize)
        self.transform = transform
        self._split_id = _SPLIT_ID[split]
        if task == "direction":
            self.classes = [name for name, _, _ in self.directions]
            self.targets = np.random.default_rng([seed, self._split_id, 1]).integers(
                0, self.num_directions, size=n).astype(np.int64)
        else:
            self.classes = list(FASHION_MNIST_CLASSES)
            self.targets = self._split_labels[np.arange(n) % max(n_split, 1)] if n else np.zeros(0, np.int64)
        self.labels = self.targets

    # -- generation -------------------------------------------------------------------------

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, i, self._split_id])

    def _side(self, rng: np.random.Generator) -> int:
        lo, hi = self.object_scale
        return min(max(round((lo + (hi - lo) * rng.random()) * self.canvas_size), 1), self.canvas_size)

    def _plan(self, i: int, label: Optional[int] = None) -> dict[str, Any]:
        """All draws of clip i: items (split index, side, start x/y, velocity) and clutter."""
        images, split_labels = self._arrays()
        n_split = len(images)
        S = self.canvas_size
        rng = self._rng(i)
        obj = i % n_split
        s = self._side(rng)
        x, y = (int(v) for v in rng.integers(0, S, size=2))
        speed = int(rng.integers(self.speed[0], self.speed[1] + 1))
        items = [{"item": obj, "side": s, "x": x, "y": y}]
        if self.task == "direction":
            d = int(self.targets[i]) if label is None else self._check_label(label)
            _, dx, dy = self.directions[d]
            items[0]["v"] = (dx * speed, dy * speed)
            moving = 0
        else:
            _, dx, dy = self.directions[int(rng.integers(self.num_directions))]
            j = obj
            while int(split_labels[j]) == int(split_labels[obj]):
                j = int(rng.integers(0, n_split))
            s2 = self._side(rng)
            x2, y2 = (int(v) for v in rng.integers(0, S, size=2))
            items.append({"item": j, "side": s2, "x": x2, "y": y2})
            moving = 0
            if label is not None:
                classes = [int(split_labels[it["item"]]) for it in items]
                if label not in classes:
                    raise ValueError(f"clip {i} shows classes {classes}; label must be one of them, got {label!r}")
                moving = classes.index(label)
            for k, it in enumerate(items):
                it["v"] = (dx * speed, dy * speed) if k == moving else (0, 0)
        clutter = None
        if self.num_clutter:
            k = self.num_clutter
            picks = rng.integers(0, n_split - 1, size=k)
            picks += picks >= obj  # uniform over the items other than the clip's item
            cx, cy = rng.integers(0, _ITEM_SIDE - self.clutter_crop + 1, size=(2, k))
            px, py = rng.integers(0, S - self.clutter_px + 1, size=(2, k))
            clutter = (picks, cx, cy, px, py)
        return {"items": items, "moving": moving, "clutter": clutter}

    def _check_label(self, label) -> int:
        if isinstance(label, bool) or int(label) != label or not 0 <= label < len(self.classes):
            raise ValueError(f"label must be an int in [0, {len(self.classes)}), got {label!r}")
        return int(label)

    def object_boxes(self, i: int) -> np.ndarray:
        """Where clip i's items are in each frame: ``(T, K, 4)`` float ``(x0, y0, x1, y1)``.

        Fractions of the canvas with ``0 <= x0, y0 < 1`` and ``x1 = x0 + side/S`` (likewise
        y): ``x1 > 1`` means the item wraps around the right edge onto the left (pixel
        columns ``x0·S .. x1·S − 1`` modulo S hold it). K = 1 (``"direction"``) or 2
        (``"which_moves"``: the moving item first, then the static one). Computed from the
        same draws as ``__getitem__``.

        Raises:
            IndexError: ``i`` out of range.
        """
        i = self._check_index(i)
        plan = self._plan(i)
        items = plan["items"]
        if self.task == "which_moves" and plan["moving"] != 0:
            items = items[::-1]
        S = self.canvas_size
        out = np.zeros((self.num_frames, len(items), 4))
        for t in range(self.num_frames):
            for k, it in enumerate(items):
                x0 = (it["x"] + t * it["v"][0]) % S
                y0 = (it["y"] + t * it["v"][1]) % S
                out[t, k] = (x0 / S, y0 / S, (x0 + it["side"]) / S, (y0 + it["side"]) / S)
        return out

    def render(self, i: int, label: Optional[int] = None) -> np.ndarray:
        """Clip i before normalisation: float32 ``(T, S, S)`` in 0..255 (0 = background).

        Args:
            i: index.
            label: render the clip as if its label were ``label``, every other draw
                unchanged (``"direction"``: any direction index; ``"which_moves"``: the
                class of one of the clip's two items, which then is the one that moves).
                Frame 0 is the same for every label. ``None``: the clip's own label.

        Raises:
            IndexError: ``i`` out of range.
            ValueError: a label the clip cannot take.
        """
        i = self._check_index(i)
        images, _ = self._arrays()
        plan = self._plan(i, label)
        S, T = self.canvas_size, self.num_frames
        background = np.zeros((S, S), dtype=np.float32)
        if plan["clutter"] is not None:
            picks, cx, cy, px, py = plan["clutter"]
            c, p = self.clutter_crop, self.clutter_px
            ar = np.arange(c)
            crops = images[picks[:, None, None], (cy[:, None] + ar)[:, :, None], (cx[:, None] + ar)[:, None, :]]
            pieces = _resize(crops.astype(np.float32), p)
            for j in range(len(picks)):
                region = background[py[j]:py[j] + p, px[j]:px[j] + p]
                np.maximum(region, pieces[j], out=region)
        frames = np.repeat(background[None], T, axis=0)
        for it in plan["items"]:
            layer = np.zeros((S, S), dtype=np.float32)
            s = it["side"]
            layer[:s, :s] = _resize(images[it["item"]].astype(np.float32), s)
            for t in range(T):
                shift = ((it["y"] + t * it["v"][1]) % S, (it["x"] + t * it["v"][0]) % S)
                np.maximum(frames[t], np.roll(layer, shift, axis=(0, 1)), out=frames[t])
        np.clip(frames, 0.0, 255.0, out=frames)
        return frames

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        i = self._check_index(i)
        frames = self.render(i)
        if self.normalize:
            frames *= np.float32(2.0 / 255.0)
            frames -= np.float32(1.0)
        else:
            frames *= np.float32(1.0 / 255.0)
        clip = torch.from_numpy(frames).unsqueeze(0)  # 1×T×S×S
        if self.channels == 3:
            clip = clip.expand(3, -1, -1, -1).contiguous()
        if self.transform is not None:
            clip = self.transform(clip)
        if self.return_box:
            box = torch.from_numpy(torus_pieces(self.object_boxes(i)[:, 0])).float()
            return clip, {"label": int(self.targets[i]), "box": box}
        return clip, int(self.targets[i])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(split={self.split}, n={len(self)}, task={self.task}, T={self.num_frames}, "
                f"canvas_size={self.canvas_size}, speed={self.speed}, num_clutter={self.num_clutter}, "
                f"seed={self.seed})")


# --------------------------------------------------------------------------------------------
# Clips from disk
# --------------------------------------------------------------------------------------------


def segment_indices(num_video_frames: int, num_frames: int, train: bool,
                    generator: torch.Generator | None = None) -> list[int]:
    """Frame indices of a clip, sampled as VideoMamba samples SSv2 (TSN-style segments).

    The video's ``L`` frames are cut into T segments of ``seg = max(0, (L − 1)/T)``
    frames; segment i spans ``[round(seg·i), round(seg·(i+1))]``. Training takes a random
    index in each segment (inclusive bounds, ``torch.randint`` with ``generator``, or
    torch's global generator, which DataLoader seeds per worker); evaluation takes
    ``round(seg·i) + int(seg/2)``, the segment's middle. Indices are clamped to ``L − 1``,
    so a video shorter than T repeats frames.

    Args:
        num_video_frames: L ≥ 1.
        num_frames: T ≥ 1.
        train: random (True) or middle (False) index per segment.
        generator: optional torch generator for the training draws.

    Returns:
        T non-decreasing ints in ``[0, L)``.

    Raises:
        ValueError: L < 1 or T < 1.
    """
    num_video_frames = _check_int("num_video_frames", num_video_frames, 1)
    num_frames = _check_int("num_frames", num_frames, 1)
    seg = max(0.0, (num_video_frames - 1) / num_frames)
    last = num_video_frames - 1
    out = []
    for i in range(num_frames):
        start, end = int(np.round(seg * i)), int(np.round(seg * (i + 1)))
        if train:
            idx = int(torch.randint(start, end + 1, (1,), generator=generator))
        else:
            idx = start + int(seg / 2)
        out.append(min(idx, last))
    return out


def _load_classes(classes) -> dict[str, int]:
    """``classes`` (names, name→index mapping, or a .json/.txt file of either) → name→index."""
    if isinstance(classes, (str, os.PathLike)):
        path = os.fspath(classes)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"classes file {path!r} does not exist")
        with open(path, encoding="utf-8") as f:
            if path.lower().endswith(".json"):
                try:
                    classes = json.load(f)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: not valid JSON ({e})") from e
            else:
                classes = [line.strip() for line in f if line.strip()]
    if isinstance(classes, Mapping):
        try:
            mapping = {str(k): int(v) for k, v in classes.items()}
        except (TypeError, ValueError):
            raise ValueError("a classes mapping must map names to integer indices (SSv2 labels.json)") from None
    elif isinstance(classes, Sequence):
        mapping = {str(name): k for k, name in enumerate(classes)}
        if len(mapping) != len(classes):
            raise ValueError("classes contains duplicate names")
    else:
        raise ValueError(
            f"classes must be a list of names, a name→index mapping or a file, got {type(classes).__name__}")
    if mapping and (min(mapping.values()) < 0 or len(set(mapping.values())) != len(mapping)):
        raise ValueError("class indices must be distinct integers >= 0")
    return mapping


def read_annotations(path: str | os.PathLike, classes=None) -> tuple[list[str], list[int], list[str]]:
    """Read a clip list: one ``path,label`` (or ``path label``) row per clip.

    Format (SSv2 / VideoMAE / VideoMamba style):

    * comma-separated CSV if the first data line holds a comma, else whitespace-separated
      (VideoMamba's ``path label`` lists; paths with spaces need the CSV form);
    * an optional header row naming the columns: it must contain ``path`` and ``label``
      (any case), which pick the columns; other columns are ignored. Without a header the
      first column is the path and the LAST is the label (so VideoMAE's rawframe lists
      ``path total_frames label`` work too);
    * blank lines and lines starting with ``#`` are skipped;
    * a label is an integer class index, or a class name. Names are mapped through
      ``classes``; without ``classes`` the names found, sorted, become the classes.

    Args:
        path: the annotation file.
        classes: optional class list (names in index order), name→index mapping (SSv2's
            ``labels.json``), or a ``.json`` / ``.txt`` (one name per line) file of either.

    Returns:
        ``(paths, labels, class_names)``; ``class_names[k]`` is class k's name (``str(k)``
        when only indices are known).

    Raises:
        FileNotFoundError: the file (or the classes file) is missing.
        ValueError: empty file, a row with fewer than two fields (with its line number), a
            header without ``path``/``label``, an unknown class name, a negative or
            out-of-range index, or names mixed with indices without ``classes``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file {path!r} does not exist")
    with open(path, encoding="utf-8", newline="") as f:
        lines = [(n, line) for n, line in enumerate(f, 1) if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ValueError(f"{path}: no clips listed (expected rows 'path,label')")
    use_csv = "," in lines[0][1]
    rows = []
    for n, line in lines:
        fields = next(csv.reader([line])) if use_csv else line.split()
        rows.append((n, [x.strip() for x in fields]))
    path_col, label_col = 0, -1
    head = [x.lower() for x in rows[0][1]]
    if "path" in head or "label" in head:
        if "path" not in head or "label" not in head:
            raise ValueError(f"{path}: header row {rows[0][1]} must name both a 'path' and a 'label' column")
        path_col, label_col = head.index("path"), head.index("label")
        rows = rows[1:]
        if not rows:
            raise ValueError(f"{path}: header only, no clips listed")
    paths, raw = [], []
    for n, fields in rows:
        if len(fields) < 2 or len(fields) <= max(path_col, label_col) or not fields[path_col]:
            raise ValueError(f"{path}:{n}: expected 'path,label', got {fields!r}")
        paths.append(fields[path_col])
        raw.append(fields[label_col])
    is_int = [r.lstrip("-").isdigit() for r in raw]
    mapping = _load_classes(classes) if classes is not None else None
    if mapping is None:
        if all(is_int):
            num = max(int(r) for r in raw) + 1
            mapping = {str(k): k for k in range(num)}
        elif any(is_int):
            raise ValueError(f"{path}: labels mix class indices and names; pass classes= to map the names")
        else:
            mapping = {name: k for k, name in enumerate(sorted(set(raw)))}
    num_classes = max(mapping.values()) + 1 if mapping else 0
    labels = []
    for (n, _), r, numeric in zip(rows, raw, is_int):
        if numeric and r not in mapping:
            k = int(r)
            if not 0 <= k < num_classes:
                raise ValueError(f"{path}:{n}: label {k} outside [0, {num_classes})")
        elif r in mapping:
            k = mapping[r]
        else:
            raise ValueError(f"{path}:{n}: unknown class name {r!r} (not in the {num_classes} classes)")
        labels.append(k)
    names = [str(k) for k in range(num_classes)]
    for name, k in mapping.items():
        names[k] = name
    return paths, labels, names


class VideoFolderDataset(Dataset):
    """Clips listed in an annotation file, stored as video files or folders of frames.

    Each listed path (relative to ``root``, or absolute) is either a video file (decoded
    with PyAV, the first video stream) or a directory of frame images (sorted by file
    name; ``.png``, ``.jpg``, ...). T frames are picked with :func:`segment_indices`
    (random per segment when ``train``, the segment middles otherwise), converted to gray
    (``channels=1``) or RGB, optionally resized, and returned as a float32 ``C×T×H×W``
    tensor in [0, 1]. The annotation format is :func:`read_annotations`'s.

    Args:
        root: directory the listed paths are relative to.
        annotations_csv: the clip list (absolute, or relative to ``root``).
        num_frames: T ≥ 1.
        train: training sampling (random index per segment) or evaluation (middles).
        frame_size: ``None`` (keep the frames' size; all of a clip's frames must share it),
            an int S (→ S×S) or ``(H, W)``; resized with antialiased bilinear interpolation.
        channels: 1 (gray) or 3 (RGB).
        transform: optional callable applied to the ``C×T×H×W`` tensor.
        classes: optional class names / mapping / file (see :func:`read_annotations`).
        check_files: check at construction that every listed clip exists.

    Attributes: ``samples`` (list of ``(path, label)``), ``targets`` / ``labels`` (int64
    array), ``classes`` (names), ``num_frames``.

    Raises:
        FileNotFoundError: missing annotation file or clips (the first few are named).
        ValueError: bad annotations, arguments, or (when loading) an unreadable / empty
            video, an empty frame folder, or frames of different sizes.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        annotations_csv: str | os.PathLike,
        num_frames: int = 8,
        train: bool = False,
        frame_size: int | Sequence[int] | None = None,
        channels: int = 3,
        transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        classes=None,
        check_files: bool = True,
    ) -> None:
        _check_channels(channels)
        self.num_frames = _check_int("num_frames", num_frames, 1)
        if frame_size is not None:
            size = (frame_size, frame_size) if isinstance(frame_size, int) else tuple(frame_size)
            if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size):
                raise ValueError(f"frame_size must be None, an int >= 1 or a pair (H, W) of them, got {frame_size!r}")
            frame_size = size
        self.root = os.path.abspath(os.fspath(root))
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"video dataset root {self.root!r} is not a directory")
        ann = os.fspath(annotations_csv)
        if not os.path.isabs(ann) and not os.path.exists(ann):
            ann = os.path.join(self.root, ann)
        paths, labels, self.classes = read_annotations(ann, classes)
        full = [p if os.path.isabs(p) else os.path.join(self.root, p) for p in paths]
        if check_files:
            missing = [p for p in full if not os.path.exists(p)]
            if missing:
                raise FileNotFoundError(f"{len(missing)} clip(s) listed in {ann} do not exist, e.g. {missing[:3]}")
        self.annotations = ann
        self.samples = list(zip(full, labels))
        self.targets = np.asarray(labels, dtype=np.int64)
        self.labels = self.targets
        self.train = bool(train)
        self.frame_size = frame_size
        self.channels = channels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def _read_video(self, path: str) -> list[np.ndarray]:
        import av  # deferred: only video-file datasets need PyAV

        fmt = "gray" if self.channels == 1 else "rgb24"
        try:
            with av.open(path) as container:
                if not container.streams.video:
                    raise ValueError(f"{path}: no video stream")
                decoded = list(container.decode(video=0))
                if not decoded:
                    raise ValueError(f"{path}: video has no frames")
                idx = segment_indices(len(decoded), self.num_frames, self.train)
                arrays = {k: decoded[k].to_ndarray(format=fmt) for k in sorted(set(idx))}
        except av.FFmpegError as e:
            raise ValueError(f"{path}: cannot decode video ({e})") from e
        return [arrays[k] for k in idx]

    def _read_frames(self, folder: str) -> list[np.ndarray]:
        from PIL import Image

        names = sorted(n for n in os.listdir(folder) if n.lower().endswith(FRAME_EXTENSIONS))
        if not names:
            raise ValueError(f"{folder}: frame folder holds no images ({', '.join(FRAME_EXTENSIONS)})")
        idx = segment_indices(len(names), self.num_frames, self.train)
        mode = "L" if self.channels == 1 else "RGB"
        cache: dict[int, np.ndarray] = {}
        for k in set(idx):
            try:
                with Image.open(os.path.join(folder, names[k])) as im:
                    cache[k] = np.asarray(im.convert(mode))
            except OSError as e:
                raise ValueError(f"{os.path.join(folder, names[k])}: cannot read image ({e})") from e
        return [cache[k] for k in idx]

    def load_clip(self, path: str) -> torch.Tensor:
        """Read and sample one clip: float32 ``C×T×H×W`` in [0, 1] (before ``transform``).

        Raises:
            FileNotFoundError: the path does not exist.
            ValueError: unreadable video / images, no frames, or frames of different sizes.
        """
        if os.path.isdir(path):
            frames = self._read_frames(path)
        elif os.path.isfile(path):
            frames = self._read_video(path)
        else:
            raise FileNotFoundError(f"clip {path!r} does not exist")
        shapes = {f.shape[:2] for f in frames}
        if len(shapes) != 1:
            raise ValueError(f"{path}: frames of different sizes {sorted(shapes)}; pass frame_size= to resize them")
        arr = np.stack([f if f.ndim == 3 else f[..., None] for f in frames])  # T×H×W×C uint8
        clip = torch.from_numpy(arr).permute(3, 0, 1, 2).float().div_(255.0)  # C×T×H×W
        if self.frame_size is not None and tuple(clip.shape[-2:]) != self.frame_size:
            clip = F.interpolate(clip.transpose(0, 1), size=self.frame_size, mode="bilinear",
                                 align_corners=False, antialias=True).clamp_(0.0, 1.0).transpose(0, 1)
        return clip.contiguous()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for dataset of length {n}")
        path, label = self.samples[i]
        clip = self.load_clip(path)
        if self.transform is not None:
            clip = self.transform(clip)
        return clip, int(label)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={self.root!r}, n={len(self)}, T={self.num_frames}, train={self.train}, "
                f"frame_size={self.frame_size}, channels={self.channels})")


# --------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------

def torus_pieces(boxes: np.ndarray) -> np.ndarray:
    """Boxes on a torus canvas (``x1``/``y1`` up to 2, past 1 = wrapped) → their 4 pieces inside [0, 1]².

    Args:
        boxes: ``(..., 4)`` ``(x0, y0, x1, y1)`` with ``0 <= x0 <= x1 <= x0 + 1`` (y likewise),
            as :meth:`MovingClutteredFashionMNIST.object_boxes` gives them.

    Returns:
        ``(..., 4, 4)`` float64: pieces ``[x0, min(x1, 1)]`` and ``[0, x1 − 1]`` in x times the
        same in y; a piece that does not wrap is empty (zero width or height, no area).
    """
    b = np.asarray(boxes, dtype=np.float64)
    xs = [(b[..., 0], np.minimum(b[..., 2], 1.0)), (np.zeros_like(b[..., 0]), np.maximum(b[..., 2] - 1.0, 0.0))]
    ys = [(b[..., 1], np.minimum(b[..., 3], 1.0)), (np.zeros_like(b[..., 1]), np.maximum(b[..., 3] - 1.0, 0.0))]
    pieces = [np.stack([x0, y0, np.maximum(x1, x0), np.maximum(y1, y0)], -1) for y0, y1 in ys for x0, x1 in xs]
    return np.stack(pieces, axis=-2)


def _moving_factory(root: str | os.PathLike | None, split: str, **kwargs: Any) -> Dataset:
    """:class:`MovingClutteredFashionMNIST` for a split name (timm synonyms such as ``val`` mapped)."""
    return MovingClutteredFashionMNIST(split=_local_split(split), root=root, **kwargs)


def _folder_factory(root: str | os.PathLike | None, split: str, **kwargs: Any) -> Dataset:
    """:class:`VideoFolderDataset` over ``root``; the clip list is ``annotations_csv=`` if given, else
    ``<root>/<split>.csv`` or ``<root>/<split>.txt``; training sampling for ``train``/``training``."""
    if root is None:
        raise ValueError("video folder datasets need a root directory (--data-root)")
    split_key = split.split("[")[0].strip().lower()
    kwargs.setdefault("train", split_key in ("train", "training"))
    if "annotations_csv" not in kwargs:
        tried = [os.path.join(os.fspath(root), f"{split_key}{ext}") for ext in (".csv", ".txt")]
        found = [p for p in tried if os.path.isfile(p)]
        if not found:
            raise FileNotFoundError(f"no annotation file for split {split!r}: tried {tried}; pass annotations_csv=")
        kwargs["annotations_csv"] = found[0]
    return VideoFolderDataset(root, **kwargs)


for _name in ("moving_fmnist", "moving_cluttered_fmnist"):
    register_dataset(_name, _moving_factory, video=True, in_chans=1, canvas=True, sized=True, boxes=True,
                     description="Moving Cluttered Fashion-MNIST: the label is the motion")
for _name in ("video_folder", "ssv2"):
    register_dataset(_name, _folder_factory, video=True, in_chans=3,
                     description="clips listed in an annotation file (video files or frame folders)")
del _name


def create_video_dataset(name: str, root: str | os.PathLike | None, split: str, **kwargs: Any) -> Dataset:
    """Create a registered video dataset by name (:func:`dartok.data.create_dataset` restricted to
    ``video=True`` names); items are ``(C×T×H×W float tensor, int)``.

    * ``"moving_fmnist"`` / ``"moving_cluttered_fmnist"``: :class:`MovingClutteredFashionMNIST`
      (``root`` = Fashion-MNIST directory or ``None``; split ``train`` / ``test``, timm
      synonyms such as ``val`` mapped to ``test``). kwargs: its constructor's.
    * ``"video_folder"`` / ``"ssv2"``: :class:`VideoFolderDataset` over ``root``; the clip list
      is ``annotations_csv=`` if given, else ``<root>/<split>.csv`` or ``<root>/<split>.txt``;
      training sampling when the split is ``train``/``training`` (override with ``train=``).

    kwargs that only concern timm (``is_training``, ``batch_size``, ...) are ignored;
    ``None`` values are dropped.

    Raises:
        ValueError: unknown name (the message lists the valid ones), unknown split, no root
            for a folder dataset.
        FileNotFoundError: missing data / annotation file.
        TypeError: a kwarg the dataset does not accept.
    """
    try:
        video = dataset_info(name).video
    except ValueError:
        video = False
    if not video:
        raise ValueError(f"unknown video dataset {name!r}; expected one of {list_datasets(video=True)}")
    return create_dataset(name, root, split, **kwargs)
