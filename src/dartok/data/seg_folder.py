"""Your own segmentation data: a folder of images and label PNGs in the common layout.

::

    root/
      images/train/<name>.<jpg|png|...>      annotations/train/<name>.png
      images/val/<name>.<jpg|png|...>        annotations/val/<name>.png
      classes.txt                            (optional: one class name a line, class 0 first)

The layout of mmsegmentation's custom datasets and ADE20K (``training`` / ``validation`` are
read too). An annotation is a single-channel PNG (``L``, ``P`` palette indices, or 16-bit)
whose pixel values are class indices; 255 means *ignore* (not scored, no loss). Images and
annotations are matched by file stem; an image without an annotation (or the other way round)
is an error that names them.

Registered as ``"seg_folder"`` (task ``"segmentation"``): ``dartok train --task segmentation
--data-root root`` finds it by its layout.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .folder import (ANNOTATIONS_DIR, EVAL_DIRS, IMAGES_DIR, TRAIN_DIRS, ImageReadError, _is_image, load_image,
                     looks_like_seg_folder)
from .registry import register_dataset

__all__ = ["IGNORE_INDEX", "SegmentationFolder", "looks_like_seg_folder", "read_label_png"]

IGNORE_INDEX = 255
"""The label value of pixels that are not scored (no loss, not in mIoU or pixel accuracy)."""

LAYOUT_HINT = ("expected <root>/images/{train,val}/<name>.<jpg|png> and <root>/annotations/{train,val}/<name>.png "
               "(255 = ignore), and optionally <root>/classes.txt")


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """An annotation file as an int64 ``H×W`` array of class indices (255 = ignore).

    Raises:
        ValueError: not readable as an image, or not single-channel (an RGB-coloured mask must be
            converted to class indices first); the message names the file.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "P", "I", "I;16", "I;16L", "I;16B", "1"):
                raise ValueError(f"annotation {os.fspath(path)!r} is a {im.mode} image; label PNGs hold one class "
                                 f"index per pixel (mode L or P, 255 = ignore)")
            return np.asarray(im, dtype=np.int64).copy()
    except ValueError:
        raise
    except Exception as e:  # PIL's OSError, UnidentifiedImageError, ...
        raise ValueError(f"cannot read annotation {os.fspath(path)!r}: {e}") from None


def _split_dir(root: Path, sub: str, split: str) -> Path:
    names = TRAIN_DIRS if split == "train" else EVAL_DIRS
    for name in names:
        if (root / sub / name).is_dir():
            return root / sub / name
    raise FileNotFoundError(f"{str(root / sub)!r} has no {split} folder ({' / '.join(names)}); {LAYOUT_HINT}")


class SegmentationFolder(Dataset):
    """Images and label PNGs (see the module docstring), as tensors of one size.

    Each image is resized to ``image_size × image_size`` (bilinear, antialiased) and scaled to
    ``(x/255 − mean)/std``; its mask is resized with nearest neighbour to the same size. With
    ``hflip`` > 0 both are flipped together with that probability (torch's RNG,
    so the draws follow the run's seed and worker seeds).

    Args:
        root: the dataset folder.
        split: ``"train"`` (``train`` / ``training``) or ``"test"`` (``val`` / ``validation`` /
            ``valid`` / ``eval`` / ``test``).
        image_size: side of the items in pixels (>= 2).
        channels: 1 (grey) or 3 (RGB).
        mean, std: per-channel normalisation (default ImageNet's, as timm's models expect; cut or
            repeated to ``channels``).
        hflip: probability of a horizontal flip, in [0, 1] (default 0.5, as mmsegmentation's
            ``RandomFlip``; the registered factory sets 0 for the evaluation split).
        num_samples: the first ``num_samples`` items (sorted by name), ``None`` for all.
        classes: class names, index 0 first (default: ``classes.txt`` if present, else
            ``class0 .. class{K-1}`` with K one more than the largest label in the training
            annotations, read once).
        transform: applied to the image tensor only (photometric transforms).

    ``__getitem__(i)`` returns ``(image, mask)``: float32 ``(channels, S, S)`` and int64 ``(S, S)``
    with values in ``0..K-1`` or 255.

    Raises:
        FileNotFoundError: ``root`` or a split folder missing.
        ValueError: no images, images without annotations or annotations without images, an
            unreadable or multi-channel annotation, a label >= K (other than 255) when reading
            an item, bad options.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", *, image_size: int = 256, channels: int = 3,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, hflip: float = 0.5,
                 num_samples: int | None = None, classes: Sequence[str] | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 2:
            raise ValueError(f"image_size must be an integer >= 2, got {image_size!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        if not (isinstance(hflip, (int, float)) and 0.0 <= hflip <= 1.0):
            raise ValueError(f"hflip must be a probability in [0, 1], got {hflip!r}")
        if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, int)
                                        or num_samples < 0):
            raise ValueError(f"num_samples must be None or an integer >= 0, got {num_samples!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"segmentation folder {str(self.root)!r} does not exist")
        self.split = split
        images = _split_dir(self.root, IMAGES_DIR, split)
        annotations = _split_dir(self.root, ANNOTATIONS_DIR, split)
        imgs = {p.stem: p for p in sorted(images.iterdir()) if p.is_file() and _is_image(p.name)}
        anns = {p.stem: p for p in sorted(annotations.iterdir()) if p.is_file() and p.suffix.lower() == ".png"}
        if not imgs:
            raise ValueError(f"no images in {str(images)!r}; {LAYOUT_HINT}")
        lonely = sorted(set(imgs) - set(anns))
        if lonely:
            raise ValueError(f"{len(lonely)} image(s) in {str(images)!r} have no annotation <name>.png in "
                             f"{str(annotations)!r}: {', '.join(lonely[:8])}{', ...' if len(lonely) > 8 else ''}")
        extra = sorted(set(anns) - set(imgs))
        if extra:
            raise ValueError(f"{len(extra)} annotation(s) in {str(annotations)!r} have no image in {str(images)!r}: "
                             f"{', '.join(extra[:8])}{', ...' if len(extra) > 8 else ''}")
        names = sorted(imgs)
        if num_samples is not None:
            names = names[:num_samples]
        self.samples = [(imgs[n], anns[n]) for n in names]
        self.image_size = image_size
        self.channels = channels
        self.hflip = float(hflip)
        self.transform = transform

        def per_channel(v, default):
            v = tuple(default if v is None else v)
            return v[:channels] if len(v) >= channels else v * channels

        self.mean = per_channel(mean, IMAGENET_DEFAULT_MEAN)
        self.std = per_channel(std, IMAGENET_DEFAULT_STD)
        self.classes = list(classes) if classes is not None else self._read_classes()
        self.source = f"{str(images)!r} + {str(annotations)!r}"

    def _read_classes(self) -> list[str]:
        listed = self.root / "classes.txt"
        if listed.is_file():
            names = [line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip()]
            if names:
                return names
        train = _split_dir(self.root, ANNOTATIONS_DIR, "train")
        top = -1
        for p in sorted(train.glob("*.png")):
            a = read_label_png(p)
            valid = a[a != IGNORE_INDEX]
            if valid.size:
                top = max(top, int(valid.max()))
        if top < 0:
            raise ValueError(f"the annotations in {str(train)!r} label no pixel (all 255); add {str(listed)!r}")
        return [f"class{k}" for k in range(top + 1)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        import torch.nn.functional as F

        image_path, label_path = self.samples[i]
        try:
            im = load_image(image_path)
        except ImageReadError as e:
            raise ValueError(str(e)) from None
        im = im.convert("L" if self.channels == 1 else "RGB")
        x = torch.from_numpy(np.asarray(im, dtype=np.float32).copy())
        x = (x[None] if x.ndim == 2 else x.permute(2, 0, 1)) / 255.0
        mask = torch.from_numpy(read_label_png(label_path))
        if tuple(mask.shape) != tuple(x.shape[-2:]):
            raise ValueError(f"annotation {str(label_path)!r} is {tuple(mask.shape)} pixels, its image "
                             f"{str(image_path)!r} {tuple(x.shape[-2:])}")
        bad = (mask >= len(self.classes)) & (mask != IGNORE_INDEX)
        if bool(bad.any()):
            raise ValueError(f"annotation {str(label_path)!r} has label {int(mask[bad].max())}, but there are "
                             f"{len(self.classes)} classes (0..{len(self.classes) - 1}, 255 = ignore)")
        s = self.image_size
        x = F.interpolate(x[None], size=(s, s), mode="bilinear", antialias=True, align_corners=False)[0]
        mask = F.interpolate(mask[None, None].float(), size=(s, s), mode="nearest")[0, 0].long()
        if self.hflip > 0 and float(torch.rand(())) < self.hflip:
            x, mask = x.flip(-1), mask.flip(-1)
        mean = torch.tensor(self.mean, dtype=x.dtype)[:, None, None]
        std = torch.tensor(self.std, dtype=x.dtype)[:, None, None]
        x = (x - mean) / std
        if self.transform is not None:
            x = self.transform(x)
        return x.contiguous(), mask.contiguous()


def _factory(root: str | os.PathLike | None, split: str, **kwargs: Any) -> SegmentationFolder:
    if root is None:
        raise ValueError(f"dataset 'seg_folder' needs a root directory (--data-root); {LAYOUT_HINT}")
    s = split.split("[")[0].lower()
    split = "train" if s in TRAIN_DIRS else "test" if s in (*EVAL_DIRS, "test") else split
    if split == "test":
        kwargs["hflip"] = 0.0  # evaluation sees the images as they are
    return SegmentationFolder(root, split, **kwargs)


register_dataset(
    "seg_folder", _factory, task="segmentation", in_chans=3, sized=True,
    accepts=frozenset({"image_size", "channels", "mean", "std", "hflip", "num_samples", "classes", "transform"}),
    description="your segmentation data: images/{train,val} + annotations/{train,val} label PNGs (255 = ignore)",
)
