"""Datasets for dartok: Fashion-MNIST, a cluttered Fashion-MNIST benchmark, and timm pass-through.

Real data only, no downloads. Fashion-MNIST comes from the Debian package
``dataset-fashion-mnist`` (``sudo apt-get install dataset-fashion-mnist``), which installs
the four IDX files under ``/usr/share/datasets/fashion-mnist/``; any other directory holding
the same files (gzipped or not) can be given as ``root`` (``--data-root`` on the CLI).

:class:`ClutteredFashionMNIST` is the benchmark DART is meant for: a small object on a large,
mostly empty canvas plus distracting clutter, in the spirit of Cluttered MNIST (Jaderberg et
al. 2015, "Spatial Transformer Networks") and Megapixel MNIST (Ilse et al. 2018; Katharopoulos
& Fleuret 2019). A tokenizer that spends its tokens on the object should beat a uniform grid.

:class:`ClutteredFashionMNISTSegmentation` is the same scenes with a label per pixel (the
object's class + 1 on its pixels, 0 elsewhere), for dense prediction.

All three are registered (``"cluttered_fmnist"``, ``"cluttered_fmnist_seg"``, ``"fashion_mnist"``) in
:mod:`dartok.data.registry`, whose :func:`create_dataset` builds them, and everything else
(ImageFolder trees, ``torch/...``, ``hfds/...``, ``wds/...``) through :func:`timm.data.create_dataset`.
"""
from __future__ import annotations

import functools
import gzip
import os
import zlib
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .registry import create_dataset, register_dataset

__all__ = [
    "DEFAULT_FASHION_MNIST_ROOT",
    "FASHION_MNIST_CLASSES",
    "ClutteredFashionMNIST",
    "ClutteredFashionMNISTSegmentation",
    "FashionMNISTDataset",
    "create_dataset",
    "load_fashion_mnist",
    "read_idx",
]

DEFAULT_FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist/"

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_SPLIT_ID = {"train": 0, "test": 1}
_ITEM_SIDE = 28

# IDX type codes -> big-endian numpy dtypes (http://yann.lecun.com/exdb/mnist/, "IDX file format").
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


# --------------------------------------------------------------------------------------------
# IDX files and Fashion-MNIST
# --------------------------------------------------------------------------------------------


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST / Fashion-MNIST container format), gzipped or raw.

    Gzip is detected from the file's magic bytes (``1f 8b``), not from its name, so both
    ``foo-idx3-ubyte.gz`` and ``foo-idx3-ubyte`` work.

    Layout: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions ``d`` (>= 1), ``d`` big-endian uint32
    sizes, then the data, big-endian, C order.

    Args:
        path: path of the file.

    Returns:
        A writable array of shape ``(n0, ..., n{d-1})`` in native byte order, with the dtype
        the type code names (``uint8`` for Fashion-MNIST).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not valid IDX (bad magic, unknown type code, zero dimensions,
            header or data truncated, trailing bytes, or a corrupt gzip stream); the message
            names the file.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
            raise ValueError(f"{path}: corrupt or truncated gzip stream ({e})") from e
    if len(raw) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(raw)} bytes, header needs 4)")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"{path}: not an IDX file (magic starts with {raw[0]:#04x} {raw[1]:#04x}, expected 0x00 0x00)"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code {code:#04x} (known: 0x08 0x09 0x0b 0x0c 0x0d 0x0e)")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dims need {header_len})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=object)) * dtype.itemsize
    got = len(raw) - header_len
    if got != expected:
        kind = "truncated" if got < expected else "has trailing bytes"
        raise ValueError(
            f"{path}: IDX data {kind}: shape {dims} of {dtype.name} needs {expected} bytes, file has {got}"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _find_idx(root: str, stem: str) -> str | None:
    for name in (stem + ".gz", stem):
        p = os.path.join(root, name)
        if os.path.isfile(p):
            return p
    return None


def _missing_message(root: str, split: str, stem: str) -> str:
    gz = os.path.join(root, stem + ".gz")
    return (
        f"Fashion-MNIST {split!r} split not found: missing {gz} (or un-gzipped {os.path.join(root, stem)}). "
        f"Install the Debian package dataset-fashion-mnist (`sudo apt-get install dataset-fashion-mnist`), "
        f"which puts the files in {DEFAULT_FASHION_MNIST_ROOT}, or pass --data-root pointing at a directory "
        f"that holds train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
        f"and t10k-labels-idx1-ubyte.gz."
    )


@functools.lru_cache(maxsize=8)
def _load_fashion_mnist_cached(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = _SPLIT_PREFIX[split]
    paths = []
    for stem in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
        p = _find_idx(root, stem)
        if p is None:
            raise FileNotFoundError(_missing_message(root, split, stem))
        paths.append(p)
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (_ITEM_SIDE, _ITEM_SIDE):
        raise ValueError(f"{paths[0]}: expected uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{paths[1]}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}")
    if len(labels) != len(images):
        raise ValueError(f"{paths[0]} has {len(images)} images but {paths[1]} has {len(labels)} labels")
    if len(labels) and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"{paths[1]}: label {int(labels.max())} out of range 0..9")
    labels = labels.astype(np.int64)
    images.flags.writeable = False  # shared through the cache
    labels.flags.writeable = False
    return images, labels


def _check_split(split: str) -> str:
    if split not in _SPLIT_PREFIX:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; expected 'train' or 'test'")
    return split


def load_fashion_mnist(split: str, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load one Fashion-MNIST split from IDX files.

    Results are cached per ``(absolute root, split)`` in this process, so repeated calls
    (one per dataset object, per worker) read the files once.

    Args:
        split: ``"train"`` (60000 items, ``train-*`` files) or ``"test"`` (10000 items,
            ``t10k-*`` files).
        root: directory holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``;
            ``None`` means :data:`DEFAULT_FASHION_MNIST_ROOT` (``/usr/share/datasets/fashion-mnist/``).

    Returns:
        ``(images, labels)``: ``images`` uint8 ``(N, 28, 28)`` in 0..255 (0 = background),
        ``labels`` int64 ``(N,)`` in 0..9 (see :data:`FASHION_MNIST_CLASSES`). Both are
        read-only (shared by the cache); copy them before writing.

    Raises:
        ValueError: unknown split, or a corrupt / inconsistent file.
        FileNotFoundError: a file is missing; the message names the missing path, the Debian
            package ``dataset-fashion-mnist`` and the ``--data-root`` option.
    """
    _check_split(split)
    root = os.path.abspath(os.fspath(DEFAULT_FASHION_MNIST_ROOT if root is None else root))
    return _load_fashion_mnist_cached(root, split)


# --------------------------------------------------------------------------------------------
# Resizing: separable PIL-style bilinear (antialiased when shrinking) as two small matmuls
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 weights of PIL's BILINEAR filter (triangle, widened when shrinking)."""
    scale = n_in / n_out
    fscale = max(scale, 1.0)
    centers = (np.arange(n_out, dtype=np.float64) + 0.5) * scale
    k = np.arange(n_in, dtype=np.float64) + 0.5
    w = np.maximum(0.0, 1.0 - np.abs(k[None, :] - centers[:, None]) / fscale)
    w /= w.sum(axis=1, keepdims=True)
    w = w.astype(np.float32)
    w.flags.writeable = False
    return w


def _resize(img: np.ndarray, n_out: int) -> np.ndarray:
    """Resize square ``(..., n, n)`` float32 image(s) to ``(..., n_out, n_out)``."""
    m = _resize_matrix(img.shape[-1], n_out)
    return m @ img @ m.T


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


class _FashionMNISTBase(Dataset):
    """Holds a split's arrays; drops them when pickled (spawned workers reload via the cache)."""

    def _init_split(self, split: str, root: str | os.PathLike | None) -> None:
        self.split = _check_split(split)
        self.root = os.path.abspath(os.fspath(DEFAULT_FASHION_MNIST_ROOT if root is None else root))
        self._images, self._split_labels = load_fashion_mnist(self.split, self.root)
        self.classes = list(FASHION_MNIST_CLASSES)

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._images is None:
            self._images, self._split_labels = load_fashion_mnist(self.split, self.root)
        return self._images, self._split_labels

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_images"] = None
        state["_split_labels"] = None
        return state

    def _check_index(self, i: int) -> int:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for dataset of length {n}")
        return int(i)

    def __len__(self) -> int:
        return len(self.targets)


def _check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")


def _check_num_samples(num_samples: Optional[int]) -> None:
    if num_samples is not None and (int(num_samples) != num_samples or num_samples < 0):
        raise ValueError(f"num_samples must be None or an int >= 0, got {num_samples!r}")


def _check_scene(canvas_size, object_scale, num_clutter, clutter_size, min_object_px: int
                 ) -> tuple[int, tuple[float, float], int, float]:
    """Validate a cluttered scene's geometry; returns ``(canvas_size, (lo, hi), num_clutter, clutter_size)``.

    Raises:
        ValueError: canvas not a positive int, ``object_scale`` not ``0 < lo <= hi <= 1`` or
            giving items under ``min_object_px`` pixels, ``num_clutter`` not an int >= 0,
            ``clutter_size`` outside (0, 1] or under 2 px when clutter is drawn.
    """
    if int(canvas_size) != canvas_size or canvas_size < 1:
        raise ValueError(f"canvas_size must be a positive int, got {canvas_size!r}")
    canvas_size = int(canvas_size)
    try:
        lo, hi = (float(v) for v in object_scale)
    except (TypeError, ValueError):
        raise ValueError(f"object_scale must be a pair (lo, hi), got {object_scale!r}") from None
    if not (0.0 < lo <= hi <= 1.0):
        raise ValueError(f"object_scale must satisfy 0 < lo <= hi <= 1, got {object_scale!r}")
    min_px = round(lo * canvas_size)
    if min_px < min_object_px:
        raise ValueError(
            f"canvas_size={canvas_size} too small for object_scale={object_scale!r}: smallest object "
            f"would be {min_px} px, need >= {min_object_px}"
        )
    if int(num_clutter) != num_clutter or num_clutter < 0:
        raise ValueError(f"num_clutter must be an int >= 0, got {num_clutter!r}")
    num_clutter = int(num_clutter)
    clutter_size = float(clutter_size)
    if not (0.0 < clutter_size <= 1.0):
        raise ValueError(f"clutter_size must be in (0, 1], got {clutter_size!r}")
    clutter_px = round(clutter_size * canvas_size)
    if num_clutter > 0 and clutter_px < 2:
        raise ValueError(
            f"clutter_size={clutter_size} gives {clutter_px} px clutter on a {canvas_size} px canvas, need >= 2"
        )
    return canvas_size, (lo, hi), num_clutter, clutter_size


def _object_piece(images: np.ndarray, obj: int, side: int) -> np.ndarray:
    """Split item ``obj`` resized to ``side × side`` pixels: float32 in 0..255 (what the canvas gets)."""
    return _resize(images[obj].astype(np.float32), side)


def _to_tensor(canvas: np.ndarray, channels: int, normalize: bool) -> torch.Tensor:
    """float32 (S, S) in 0..255 -> float32 (C, S, S), [-1, 1] if normalize else [0, 1] (in place)."""
    if normalize:
        canvas *= np.float32(2.0 / 255.0)
        canvas -= np.float32(1.0)
    else:
        canvas *= np.float32(1.0 / 255.0)
    t = torch.from_numpy(canvas).unsqueeze(0)
    if channels == 3:
        t = t.expand(3, -1, -1).contiguous()
    return t


class FashionMNISTDataset(_FashionMNISTBase):
    """Plain Fashion-MNIST as float tensors.

    Item ``i`` is split item ``i % len(split)`` (so ``num_samples`` larger than the split cycles).

    Args:
        split: ``"train"`` or ``"test"`` (the ``t10k`` files).
        root: data directory (``None``: ``/usr/share/datasets/fashion-mnist/``).
        num_samples: ``None`` for the whole split, else the first ``num_samples`` indices.
        channels: 1, or 3 to repeat the gray channel.
        normalize: ``True``: values ``(x/255 - 0.5)/0.5`` in [-1, 1]; ``False`` (default):
            ``x/255`` in [0, 1].
        transform: optional callable applied to the output *tensor* (not a PIL image).

    ``__getitem__(i)`` returns ``(image, label)``: float32 tensor ``(channels, 28, 28)`` and a
    Python int in 0..9. Attributes: ``targets`` / ``labels`` (int64 array, one per index),
    ``classes`` (the 10 names).

    Raises:
        ValueError: bad split / channels / num_samples, corrupt files.
        FileNotFoundError: data files missing (see :func:`load_fashion_mnist`).
    """

    def __init__(
        self,
        split: str = "train",
        root: str | os.PathLike | None = None,
        *,
        num_samples: Optional[int] = None,
        channels: int = 1,
        normalize: bool = False,
        transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    ) -> None:
        _check_channels(channels)
        _check_num_samples(num_samples)
        self._init_split(split, root)
        n_split = len(self._images)
        n = n_split if num_samples is None else int(num_samples)
        if n > 0 and n_split == 0:
            raise ValueError(f"Fashion-MNIST {split!r} split in {self.root} is empty")
        self.channels = channels
        self.normalize = bool(normalize)
        self.transform = transform
        self.targets = self._split_labels[np.arange(n) % max(n_split, 1)] if n else np.zeros(0, np.int64)
        self.labels = self.targets

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        i = self._check_index(i)
        images, labels = self._arrays()
        j = i % len(images)
        img = _to_tensor(images[j].astype(np.float32), self.channels, self.normalize)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(labels[j])


class ClutteredFashionMNIST(_FashionMNISTBase):
    """Cluttered Fashion-MNIST: one small garment on a large black canvas, plus clutter.

    Built like Cluttered MNIST (Jaderberg et al. 2015) and Megapixel MNIST, from real
    Fashion-MNIST items, generated lazily and deterministically per index.

    Item ``i`` (of ``len(self)``) is made as follows, with ``rng = np.random.default_rng([seed,
    i, split_id])`` (``split_id`` 0 for train, 1 for test), so an item depends only on
    ``(seed, i, split)``, not on access order, worker process or the other arguments' draws:

    1. Object: split item ``i % len(split)`` (each item exactly once per pass when
       ``num_samples`` is ``None``; larger ``num_samples`` cycle the split with new
       placements). Its side ``s = round(u * canvas_size)``, ``u ~ U(object_scale)``; its
       top-left corner is uniform over positions that keep it fully on the canvas.
       These are the rng's first draws, so :meth:`object_box` matches ``__getitem__``.
    2. Clutter: ``num_clutter`` pieces, each a ``c x c`` crop (uniform position) of a random
       item of the same split other than the object item, resized to
       ``p = round(clutter_size * canvas_size)`` pixels and placed uniformly on the canvas
       (it may overlap the object). ``c = clip(round(28 * clutter_size / mean(object_scale)),
       2, 28)``, so clutter is magnified about as much as the object and looks like pieces
       of garments at the same scale.
    3. Pieces are pasted with ``max`` (overlaps never black each other out). Resizing is
       PIL's bilinear filter (triangle, antialiased when shrinking), done as small matmuls.

    Args:
        split: ``"train"`` (Fashion-MNIST train items) or ``"test"`` (``t10k`` items).
        root: data directory (``None``: ``/usr/share/datasets/fashion-mnist/``).
        canvas_size: canvas side ``S`` in pixels; the smallest object must be >= 8 px.
        object_scale: ``(lo, hi)``, object side as a fraction of ``S``, ``0 < lo <= hi <= 1``.
        num_clutter: number of clutter pieces, >= 0.
        clutter_size: clutter piece side as a fraction of ``S``, in (0, 1]; >= 2 px when
            ``num_clutter > 0``.
        num_samples: ``None`` for the split size, else indices ``0 .. num_samples-1``.
        seed: generation seed, an int >= 0.
        channels: 1, or 3 to repeat the gray channel.
        normalize: ``True``: ``(x/255 - 0.5)/0.5`` in [-1, 1] (background -1); ``False``
            (default): ``x/255`` in [0, 1] (background 0, the value CNN scorer trunks pad
            with, so the canvas border does not look like an edge).
        transform: optional callable applied to the output *tensor* (not a PIL image).
        return_box: items carry the object's box as part of the target (below).

    ``__getitem__(i)`` returns ``(image, label)``: float32 tensor ``(channels, S, S)`` and the
    object's class, a Python int in 0..9; with ``return_box``, ``(image, {"label": label,
    "box": float32 tensor (4,)})``, the box :meth:`object_box` (the oracle score source and the
    localisation metric, :mod:`dartok.localization`). Attributes: ``targets`` / ``labels`` (int64 array
    of length ``len(self)``, for samplers), ``classes`` (the 10 names).

    Raises:
        ValueError: unknown split; canvas too small for the object; ``object_scale`` not within
            (0, 1] or ``lo > hi``; ``clutter_size`` not within (0, 1]; negative
            ``num_clutter``; ``channels`` not 1 or 3; bad ``num_samples`` or ``seed``; clutter requested
            on a split with a single item; corrupt files.
        FileNotFoundError: data files missing (see :func:`load_fashion_mnist`).
    """

    MIN_OBJECT_PX = 8

    def __init__(
        self,
        split: str = "train",
        root: str | os.PathLike | None = None,
        *,
        canvas_size: int = 224,
        object_scale: Sequence[float] = (0.15, 0.3),
        num_clutter: int = 8,
        clutter_size: float = 0.08,
        num_samples: Optional[int] = None,
        seed: int = 0,
        channels: int = 1,
        normalize: bool = False,
        transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        return_box: bool = False,
    ) -> None:
        _check_split(split)
        _check_channels(channels)
        _check_num_samples(num_samples)
        canvas_size, (lo, hi), num_clutter, clutter_size = _check_scene(
            canvas_size, object_scale, num_clutter, clutter_size, self.MIN_OBJECT_PX)
        self.return_box = bool(return_box)
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")

        self._init_split(split, root)
        n_split = len(self._images)
        n = n_split if num_samples is None else int(num_samples)
        if n > 0 and n_split == 0:
            raise ValueError(f"Fashion-MNIST {split!r} split in {self.root} is empty")
        if n > 0 and num_clutter > 0 and n_split < 2:
            raise ValueError("clutter needs a split with at least 2 items (clutter items differ from the object)")

        self.canvas_size = canvas_size
        self.object_scale = (lo, hi)
        self.num_clutter = num_clutter
        self.clutter_size = clutter_size
        self.clutter_px = round(clutter_size * canvas_size)
        self.clutter_crop = int(np.clip(round(_ITEM_SIDE * clutter_size / ((lo + hi) / 2)), 2, _ITEM_SIDE))
        self.num_samples = n
        self.seed = int(seed)
        self.channels = channels
        self.normalize = bool(normalize)
        self.transform = transform
        self._split_id = _SPLIT_ID[split]
        self.targets = self._split_labels[np.arange(n) % max(n_split, 1)] if n else np.zeros(0, np.int64)
        self.labels = self.targets

    # -- generation -------------------------------------------------------------------------

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, i, self._split_id])

    def _object_params(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """First draws of the item's stream: object side s and top-left (x0, y0)."""
        S = self.canvas_size
        lo, hi = self.object_scale
        u, fx, fy = rng.random(3)
        s = min(max(round((lo + (hi - lo) * u) * S), 1), S)
        x0 = min(int(fx * (S - s + 1)), S - s)
        y0 = min(int(fy * (S - s + 1)), S - s)
        return s, x0, y0

    def object_box(self, i: int) -> tuple[float, float, float, float]:
        """Where item ``i``'s object was pasted, as ``(x0, y0, x1, y1)`` fractions of the canvas.

        All four values lie in [0, 1], ``x0 < x1`` and ``y0 < y1``; pixel columns
        ``round(x0*S) .. round(x1*S) - 1`` (rows likewise) hold the resized 28x28 item.
        Computed from the same rng stream as ``__getitem__``, so it always agrees with it.

        Raises:
            IndexError: ``i`` out of range.
        """
        i = self._check_index(i)
        s, x0, y0 = self._object_params(self._rng(i))
        S = self.canvas_size
        return (x0 / S, y0 / S, (x0 + s) / S, (y0 + s) / S)

    def render(self, i: int) -> np.ndarray:
        """Item ``i``'s canvas before normalization: float32 ``(S, S)`` in 0..255 (0 = background).

        Raises:
            IndexError: ``i`` out of range.
        """
        i = self._check_index(i)
        images, _ = self._arrays()
        n_split = len(images)
        S = self.canvas_size
        rng = self._rng(i)
        obj = i % n_split
        s, x0, y0 = self._object_params(rng)

        canvas = np.zeros((S, S), dtype=np.float32)
        k = self.num_clutter
        if k:
            c, p = self.clutter_crop, self.clutter_px
            items = rng.integers(0, n_split - 1, size=k)
            items += items >= obj  # uniform over the other items
            cx, cy = rng.integers(0, _ITEM_SIDE - c + 1, size=(2, k))
            px, py = rng.integers(0, S - p + 1, size=(2, k))
            # (k, c, c) crops via one fancy index: rows cy+r, cols cx+q
            ar = np.arange(c)
            crops = images[items[:, None, None], (cy[:, None] + ar)[:, :, None], (cx[:, None] + ar)[:, None, :]]
            pieces = _resize(crops.astype(np.float32), p)
            for j in range(k):
                region = canvas[py[j] : py[j] + p, px[j] : px[j] + p]
                np.maximum(region, pieces[j], out=region)
        piece = _object_piece(images, obj, s)
        region = canvas[y0 : y0 + s, x0 : x0 + s]
        np.maximum(region, piece, out=region)
        np.clip(canvas, 0.0, 255.0, out=canvas)
        return canvas

    def _image(self, i: int) -> torch.Tensor:
        """Item ``i``'s image tensor (normalised, ``transform`` applied); ``i`` already checked."""
        img = _to_tensor(self.render(i), self.channels, self.normalize)
        return img if self.transform is None else self.transform(img)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        i = self._check_index(i)
        img = self._image(i)
        if self.return_box:
            return img, {"label": int(self.targets[i]), "box": torch.tensor(self.object_box(i), dtype=torch.float32)}
        return img, int(self.targets[i])

    def extra_repr(self) -> str:  # pragma: no cover - cosmetic
        return (
            f"split={self.split}, n={len(self)}, canvas_size={self.canvas_size}, object_scale={self.object_scale}, "
            f"num_clutter={self.num_clutter}, clutter_size={self.clutter_size}, seed={self.seed}"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class ClutteredFashionMNISTSegmentation(ClutteredFashionMNIST):
    """Cluttered Fashion-MNIST for semantic segmentation: the same scenes, a label per pixel.

    Item ``i`` is the image of :class:`ClutteredFashionMNIST` item ``i`` (same generator, same
    arguments, so the same canvas for the same ``seed``, index and split) and its label mask:
    class 0 (``"background"``) for the background and the clutter, and ``label + 1`` (1..10,
    the object's Fashion-MNIST class shifted by one) on the object's pixels, those where the
    object's resized item is brighter than ``mask_threshold`` (a fraction of full intensity,
    on the 0..1 scale before normalisation; 0.1 keeps the garment and drops the faint
    anti-aliased rim). An object pixel that clutter overlaps is still the object's (pieces are
    pasted with ``max``, so the object shows there at least as bright as it is). Deterministic
    per ``(seed, i, split)`` like the images: :meth:`mask` recomputes the object from the
    item's first random draws.

    Args:
        mask_threshold: in [0, 1); object pixels are those above it.
        transform: applied to the image tensor only (so only photometric transforms keep the
            mask aligned).
        return_box: items carry the object's box too (the oracle score source, the localisation
            metric).
        everything else: as :class:`ClutteredFashionMNIST`.

    ``__getitem__(i)`` returns ``(image, mask)``: float32 ``(channels, S, S)`` and an int64
    ``(S, S)`` tensor of classes in 0..10; with ``return_box``, ``(image, {"mask": mask,
    "box": float32 (4,)})``. Attributes: ``classes`` (11 names, ``"background"`` first),
    ``targets`` / ``labels`` (the object's class per item, 1..10, i.e. its index in ``classes``).

    Raises:
        ValueError: as :class:`ClutteredFashionMNIST`, or ``mask_threshold`` outside [0, 1).
        FileNotFoundError: data files missing (see :func:`load_fashion_mnist`).
    """

    def __init__(self, split: str = "train", root: str | os.PathLike | None = None, *,
                 mask_threshold: float = 0.1, **kwargs: Any) -> None:
        if (isinstance(mask_threshold, bool) or not isinstance(mask_threshold, (int, float))
                or not 0.0 <= mask_threshold < 1.0):
            raise ValueError(f"mask_threshold must be a number in [0, 1), got {mask_threshold!r}")
        super().__init__(split, root, **kwargs)
        self.mask_threshold = float(mask_threshold)
        self.classes = ["background", *FASHION_MNIST_CLASSES]
        self.targets = self.targets + 1
        self.labels = self.targets

    def mask(self, i: int) -> np.ndarray:
        """Item ``i``'s label mask: int64 ``(S, S)``, 0 off the object, its class + 1 on it.

        Raises:
            IndexError: ``i`` out of range.
        """
        i = self._check_index(i)
        images, _ = self._arrays()
        s, x0, y0 = self._object_params(self._rng(i))
        out = np.zeros((self.canvas_size, self.canvas_size), dtype=np.int64)
        piece = _object_piece(images, i % len(images), s)
        out[y0: y0 + s, x0: x0 + s][piece > self.mask_threshold * 255.0] = int(self.targets[i])
        return out

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        i = self._check_index(i)
        mask = torch.from_numpy(self.mask(i))
        if self.return_box:
            return self._image(i), {"mask": mask, "box": torch.tensor(self.object_box(i), dtype=torch.float32)}
        return self._image(i), mask


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------


def _local_split(split: str) -> str:
    """A timm-style split name (``train``, ``val``, ``validation[:10%]``, ...) as ``"train"`` / ``"test"``.

    Raises:
        ValueError: a split that is neither.
    """
    s = split.split("[")[0].lower()
    if s in ("train", "training"):
        return "train"
    if s in ("test", "val", "valid", "validation", "eval", "evaluation"):
        return "test"
    raise ValueError(f"unknown split {split!r} for Fashion-MNIST datasets; use 'train' or 'test'")


def _split_factory(cls: type) -> Callable[..., Dataset]:
    """``factory(root, split, **kwargs)`` building ``cls(split=..., root=root, **kwargs)`` (split synonyms mapped)."""

    def factory(root: str | os.PathLike | None, split: str, **kwargs: Any) -> Dataset:
        return cls(split=_local_split(split), root=root, **kwargs)

    factory.__name__ = f"create_{cls.__name__}"
    return factory


register_dataset(
    "cluttered_fmnist", _split_factory(ClutteredFashionMNIST), num_classes=len(FASHION_MNIST_CLASSES),
    in_chans=1, canvas=True, sized=True, boxes=True,
    accepts=frozenset({"canvas_size", "object_scale", "num_clutter", "clutter_size", "num_samples", "seed",
                       "channels", "normalize", "transform", "return_box"}),
    description="Cluttered Fashion-MNIST: one small garment on a large canvas with clutter",
)
register_dataset(
    "cluttered_fmnist_seg", _split_factory(ClutteredFashionMNISTSegmentation), task="segmentation",
    num_classes=len(FASHION_MNIST_CLASSES) + 1, in_chans=1, canvas=True, sized=True, boxes=True,
    accepts=frozenset({"canvas_size", "object_scale", "num_clutter", "clutter_size", "num_samples", "seed",
                       "channels", "normalize", "transform", "return_box", "mask_threshold"}),
    description="Cluttered Fashion-MNIST segmentation: background and clutter 0, the object's pixels its class + 1",
)
register_dataset(
    "fashion_mnist", _split_factory(FashionMNISTDataset), num_classes=len(FASHION_MNIST_CLASSES), in_chans=1,
    sized=True, accepts=frozenset({"num_samples", "channels", "normalize", "transform"}),
    description="Fashion-MNIST, 28x28 float tensors",
)
