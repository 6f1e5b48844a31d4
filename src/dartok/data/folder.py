"""Your own images: ImageFolder trees with one class map, seeded splits and subsets, and safe loading.

Layout (the ``--data-root``)::

    root/train/<class>/<image>      root/val/<class>/<image>     (val, validation, valid, eval,
                                                                   evaluation or test)
    root/<class>/<image>            (no split folders: hold out a part with ``val_split``)

* The class map is built once, from the training split's folder names (sorted, hidden folders
  skipped): the held-out split (or any split read with a checkpoint's ``classes``) is checked
  against it, and a class the training split does not have is an error. A class the held-out
  split has no images of is allowed (reported in :attr:`ImageFolder.missing_classes`).
* Without a validation folder the held-out split must be asked for: ``val_split=0.1`` holds out
  a seeded, class-stratified 10 % of the training images (:func:`holdout_split`); otherwise
  :func:`create_image_folder` refuses, naming the folders it found.
* Images are read by :func:`load_image`: 16-bit images are scaled to 8 bits (``v / 257``, so
  65535 -> 255), a file that cannot be read raises :class:`ImageReadError` naming it.
* :func:`stratified_indices`: a seeded, class-stratified subset (``--train-samples N``).

The dataset class is torchvision's :class:`~torchvision.datasets.ImageFolder` (``samples``,
``targets``, ``classes``, ``class_to_idx``) with the class map and loader above.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .. import _compat

_compat.ensure_torchvision_importable()

from torchvision.datasets import ImageFolder as _TorchvisionImageFolder  # noqa: E402
from torchvision.datasets.folder import IMG_EXTENSIONS  # noqa: E402

__all__ = [
    "EVAL_DIRS",
    "TRAIN_DIRS",
    "FolderLayout",
    "ImageFolder",
    "ImageReadError",
    "class_folders",
    "create_image_folder",
    "folder_layout",
    "holdout_split",
    "list_images",
    "load_image",
    "looks_like_image_folder",
    "stratified_indices",
]

TRAIN_DIRS = ("train", "training")
"""Folder names of the training split (timm's)."""
EVAL_DIRS = ("val", "validation", "valid", "eval", "evaluation", "test")
"""Folder names of the held-out split, in order of preference (timm's validation names, then ``test``)."""
LAYOUT_HINT = "expected <root>/train/<class>/<image> and <root>/val/<class>/<image>, or <root>/<class>/<image> " \
              "with --val-split"


class ImageReadError(ValueError):
    """An image file that cannot be read (corrupt, truncated, not an image, unsupported pixel format)."""


# --------------------------------------------------------------------------------------
# reading one image
# --------------------------------------------------------------------------------------
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def load_image(path: str | os.PathLike):
    """Read an image file as a PIL image of mode ``"L"`` (grey) or ``"RGB"``.

    * 8-bit grey (``L``, ``1``, ``LA``) stays grey; colour, palette and alpha images become RGB
      (alpha dropped).
    * 16-bit grey (``I;16*``, or ``I`` with values in 0..65535, as PNG decoders give them) is
      scaled to 8 bits by ``round(v / 257)`` (0 -> 0, 65535 -> 255); 16-bit colour PNGs are
      already reduced to 8 bits by Pillow.

    Raises:
        ImageReadError: the file does not exist, is not an image, is truncated or corrupt, or holds
            32-bit integer (outside 0..65535) or floating-point pixels; the message names the file.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in _SIXTEEN_BIT or mode == "I":
                a = np.asarray(im)
                if mode == "I" and a.size and (a.min() < 0 or a.max() > 65535):
                    raise ImageReadError(f"image {str(path)!r} holds 32-bit integer pixels (outside 0..65535); "
                                         f"convert it to 8 or 16 bits")
                return Image.fromarray(np.rint(a.astype(np.float32) / 257.0).astype(np.uint8), mode="L")
            if mode == "F":
                raise ImageReadError(f"image {str(path)!r} holds floating-point pixels; convert it to 8 or 16 bits")
            if mode in ("L", "RGB"):
                return im.copy()
            return im.convert("L" if mode in ("1", "LA", "La") else "RGB")
    except ImageReadError:
        raise
    except Exception as e:  # PIL raises OSError, UnidentifiedImageError, SyntaxError, ValueError, DecompressionBombError
        reason = " ".join(str(e).replace(repr(os.fspath(path)), "").split()) or type(e).__name__
        raise ImageReadError(f"cannot read image {os.fspath(path)!r}: {reason}") from None


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def list_images(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files of ``paths``: files as given, folders searched recursively (sorted, hidden entries skipped).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: no image files at all (the message lists the extensions read).
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p, followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                out.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".") and _is_image(f))
        else:
            raise FileNotFoundError(f"{str(p)!r} does not exist (give image files or folders of images)")
    if not out:
        raise ValueError(f"no image files in {[str(p) for p in paths]}; read: {', '.join(IMG_EXTENSIONS)}")
    return out


# --------------------------------------------------------------------------------------
# subsets
# --------------------------------------------------------------------------------------
def stratified_indices(targets: Sequence[int], n: int, seed: int = 0, *, stream: int = 0) -> list[int]:
    """``n`` indices drawn class by class in proportion to the class sizes, seeded.

    Items are shuffled within their class (``numpy`` generator seeded with ``(seed, stream)``);
    the ``r``-th item of a class of ``n_c`` gets the key ``(r + 0.5) / n_c`` and the ``n``
    smallest keys are taken (ties in a seeded class order). So each class gives ``n·n_c/N``
    items up to rounding (within one of it), a larger ``n`` keeps every item a smaller one took,
    and the result does not depend on the order of the items.

    Args:
        targets: class index of every item (length ``N``).
        n: how many to take (``n >= N`` takes all).
        seed, stream: the seed (``--data-seed``) and a stream number (different subsets of one seed).

    Returns:
        Sorted indices into ``targets``.

    Raises:
        ValueError: ``n < 0``.
    """
    if n < 0:
        raise ValueError(f"subset size must be >= 0, got {n}")
    t = np.asarray(targets, dtype=np.int64).reshape(-1)
    if n >= t.size:
        return list(range(t.size))
    rng = np.random.default_rng([int(seed), int(stream)])
    classes = np.unique(t)
    class_rank = dict(zip(classes.tolist(), rng.permutation(classes.size).tolist()))
    keys = np.empty(t.size, dtype=np.float64)
    tie = np.empty(t.size, dtype=np.int64)
    for c in classes.tolist():
        idx = np.flatnonzero(t == c)
        idx = idx[rng.permutation(idx.size)]
        keys[idx] = (np.arange(idx.size) + 0.5) / idx.size
        tie[idx] = class_rank[c]
    order = np.lexsort((tie, keys))
    return sorted(order[:n].tolist())


def holdout_split(targets: Sequence[int], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split items into ``(kept, held_out)``: a seeded, class-stratified ``fraction`` held out.

    ``round(fraction · N)`` items are held out (:func:`stratified_indices`, stream 0).

    Raises:
        ValueError: ``fraction`` not in (0, 1), or one that holds out no item or every item.
    """
    if not (isinstance(fraction, (int, float)) and 0.0 < fraction < 1.0):
        raise ValueError(f"--val-split must be a fraction between 0 and 1 (e.g. 0.1), got {fraction!r}")
    total = len(targets)
    k = int(round(fraction * total))
    if not 0 < k < total:
        raise ValueError(f"--val-split {fraction} of {total} training images holds out {k}; "
                         f"choose a fraction that leaves images on both sides")
    held = stratified_indices(targets, k, seed, stream=0)
    held_set = set(held)
    return [i for i in range(total) if i not in held_set], held


# --------------------------------------------------------------------------------------
# the dataset
# --------------------------------------------------------------------------------------
def _subfolders(directory: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))


def _loose_images(directory: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(directory) if e.is_file() and _is_image(e.name))


class ImageFolder(_TorchvisionImageFolder):
    """torchvision's ImageFolder over ``directory/<class>/<image>`` (sub-folders of a class folder
    are searched too), read with :func:`load_image`, with a fixed class map when ``classes`` is given.

    Args:
        root: the split folder.
        classes: the class names, index = position (the training split's, or a checkpoint's). Every
            class folder must be one of them; a class without a folder or images is allowed.
            ``None``: the sorted sub-folder names (hidden ones skipped), each of which must hold images.
        transform: applied to the PIL image (mode ``L`` or ``RGB``).
        source: how the split is described in logs (default: the folder's name).

    Attributes: ``classes``, ``class_to_idx``, ``samples`` (``(path, class index)``), ``targets``,
    ``missing_classes`` (names with no image here), ``source``.

    Raises:
        FileNotFoundError: no class folders, or (``classes=None``) a class folder without images.
        ValueError: images lying loose in ``root`` (outside class folders), or a class folder not in ``classes``.
    """

    def __init__(self, root: str | os.PathLike, *, classes: Sequence[str] | None = None,
                 transform: Callable | None = None, source: str | None = None):
        self._fixed_classes = None if classes is None else [str(c) for c in classes]
        root = Path(root)
        try:
            super().__init__(os.fspath(root), transform=transform, loader=load_image,
                             allow_empty=self._fixed_classes is not None)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{str(root)!r}: {e}") from None
        present = set(self.targets)
        self.missing_classes = [c for i, c in enumerate(self.classes) if i not in present]
        self.source = source or f"{root.name}/"

    def find_classes(self, directory: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
        """The class names and map (see the class docstring); called by torchvision's constructor."""
        names = class_folders(directory, self._fixed_classes)
        return names, {c: i for i, c in enumerate(names)}


def class_folders(directory: str | os.PathLike, classes: Sequence[str] | None = None) -> list[str]:
    """The class names of a split folder: its sorted sub-folders (hidden ones skipped), or ``classes``
    after checking that every sub-folder is one of them.

    Raises:
        ValueError: images lying loose in ``directory``; a sub-folder not in ``classes``.
        FileNotFoundError: no sub-folders (``classes=None``).
    """
    directory = Path(directory)
    loose = _loose_images(directory)
    if loose:
        more = f" and {len(loose) - 3} more" if len(loose) > 3 else ""
        raise ValueError(f"{str(directory)!r} holds images outside class folders ({', '.join(loose[:3])}{more}); "
                         f"put each class's images in {directory.name}/<class>/")
    found = _subfolders(directory)
    if classes is None:
        if not found:
            raise FileNotFoundError(f"no class folders in {str(directory)!r}; {LAYOUT_HINT}")
        return found
    known = set(classes)
    extra = [c for c in found if c not in known]
    if extra:
        raise ValueError(f"{str(directory)!r} has class folders that are not among the {len(known)} classes of the "
                         f"training split: {_names(extra)} (those are: {_names(list(classes))})")
    return list(classes)


def _names(names: Sequence[str], k: int = 12) -> str:
    shown = ", ".join(names[:k])
    return shown + (f", ... ({len(names)} in all)" if len(names) > k else "")


# --------------------------------------------------------------------------------------
# the layout of a root folder
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FolderLayout:
    """Where the splits of an ImageFolder root are.

    ``train``: the training split's folder (``root/train`` or ``root`` itself); ``held_out``: the
    validation folder, ``None`` if there is none; ``others``: sub-folders of a split layout that
    are neither (ignored, named in errors).
    """

    root: Path
    train: Path
    held_out: Path | None
    others: tuple[str, ...] = ()


def folder_layout(root: str | os.PathLike) -> FolderLayout:
    """Find the split folders of an ImageFolder root (see the module docstring).

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``root`` is a file or holds no folders, or has a validation folder but no ``train/``.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"--data-root {str(root)!r} does not exist")
    if not root.is_dir():
        raise ValueError(f"--data-root {str(root)!r} is a file, not a folder; {LAYOUT_HINT}")
    subdirs = _subfolders(root)
    if not subdirs:
        raise ValueError(f"--data-root {str(root)!r} holds no folders; {LAYOUT_HINT}")
    train = next((d for d in TRAIN_DIRS if d in subdirs), None)
    held = next((d for d in EVAL_DIRS if d in subdirs), None)
    if train is None:
        if held is not None:
            raise ValueError(f"--data-root {str(root)!r} has {held}/ but no train/ folder; {LAYOUT_HINT}")
        return FolderLayout(root, root, None)
    others = tuple(d for d in subdirs if d not in TRAIN_DIRS + EVAL_DIRS)
    return FolderLayout(root, root / train, None if held is None else root / held, others)


def looks_like_image_folder(root: str | os.PathLike | None) -> bool:
    """True if ``root`` is a folder with a ``train/`` folder, or class folders holding images (a quick
    look at the first images found), so ``--data-root`` alone can say the data is an ImageFolder."""
    if root is None or not os.path.isdir(root):
        return False
    try:
        layout = folder_layout(root)
        for c in _subfolders(layout.train)[:8]:
            for _, _, files in os.walk(layout.train / c):
                if any(_is_image(f) for f in files):
                    return True
    except (OSError, ValueError):
        return False
    return False


IMAGES_DIR, ANNOTATIONS_DIR = "images", "annotations"
"""The two folders of a segmentation dataset (:mod:`dartok.data.seg_folder`)."""


def looks_like_seg_folder(root: str | os.PathLike | None) -> bool:
    """True if ``root`` holds ``images/`` and ``annotations/`` folders with a training split in each
    (the layout :class:`dartok.data.seg_folder.SegmentationFolder` reads)."""
    if root is None or not os.path.isdir(root):
        return False
    root = Path(root)
    return all(any((root / d / s).is_dir() for s in TRAIN_DIRS) for d in (IMAGES_DIR, ANNOTATIONS_DIR))


class _HeldOut(torch.utils.data.Subset):
    """Part of an :class:`ImageFolder` (``val_split``, or a subset), forwarding its class attributes."""

    def __init__(self, dataset, indices: Sequence[int], source: str):
        super().__init__(dataset, list(indices))
        self.source = source

    @property
    def classes(self):
        return self.dataset.classes

    @property
    def targets(self):
        t = self.dataset.targets
        return [t[i] for i in self.indices]

    @property
    def missing_classes(self):
        present = set(self.targets)
        return [c for i, c in enumerate(self.classes) if i not in present]

    @property
    def transform(self):
        return self.dataset.transform

    @transform.setter
    def transform(self, tf):
        self.dataset.transform = tf


def create_image_folder(root: str | os.PathLike, split: str, *, classes: Sequence[str] | None = None,
                        val_split: float | None = None, seed: int = 0, transform: Callable | None = None,
                        **_: Any):
    """The ``"train"`` or held-out (``"test"``; also ``"val"``, ``"validation"``, ...) split of an
    ImageFolder root (:func:`folder_layout`), with the training split's class map.

    Args:
        root: the ``--data-root``.
        split: ``"train"``/``"training"`` or the held-out split's names.
        classes: the class map to use (e.g. a checkpoint's); default: the training split's folders.
        val_split: hold out this seeded, class-stratified fraction of the training images as the
            held-out split (:func:`holdout_split`) instead of a validation folder (which is then not used).
        seed: the seed of ``val_split`` (``--data-seed``).
        transform: applied to each PIL image.

    Returns:
        An :class:`ImageFolder`, or a part of one (``val_split``), with ``classes``, ``targets``,
        ``missing_classes`` and ``source`` (``"val/"``, ``"10% of train/ held out (--data-seed 0)"``, ...).

    Raises:
        ValueError: an unknown split; no validation folder and no ``val_split`` (the message names
            the folders found); class folders outside the class map; see :func:`folder_layout` and
            :class:`ImageFolder`.
        FileNotFoundError: a missing root, no class folders, a training class folder without images.
    """
    s = split.strip().lower()
    if s in TRAIN_DIRS:
        s = "train"
    elif s in EVAL_DIRS:
        s = "test"
    else:
        raise ValueError(f"unknown split {split!r} of an ImageFolder; use 'train' or 'test' (or {list(EVAL_DIRS)})")
    layout = folder_layout(root)
    train_name = "train/" if layout.train != layout.root else f"{layout.root.name}/"
    if val_split is not None:
        full = ImageFolder(layout.train, classes=classes, transform=transform, source=train_name)
        kept, held = holdout_split(full.targets, val_split, seed)
        if s == "train":
            return _HeldOut(full, kept, f"{train_name} less the {100 * val_split:g}% held out")
        return _HeldOut(full, held, f"{100 * val_split:g}% of {train_name} held out (--data-seed {seed})"
                        + (f"; {layout.held_out.name}/ not used" if layout.held_out is not None else ""))
    if s == "train":
        return ImageFolder(layout.train, classes=classes, transform=transform, source=train_name)
    if layout.held_out is None:
        found = f" (found: {', '.join(d + '/' for d in layout.others)})" if layout.others else ""
        where = ("next to train/" + found) if layout.train != layout.root else "(the class folders are the root's)"
        raise ValueError(
            f"--data-root {str(layout.root)!r} has no validation split: no {'/, '.join(EVAL_DIRS[:3])}/ or test/ "
            f"folder {where}. Add one, or hold out part of the training images with --val-split 0.1")
    return ImageFolder(layout.held_out, classes=class_folders(layout.train) if classes is None else classes,
                       transform=transform)

