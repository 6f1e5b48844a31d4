"""The dataset registry: a name -> its factory, task, classes, channels and whether it is video.

Adding a dataset is one :func:`register_dataset` call beside its class; training
(:func:`dartok.train.run.train`), evaluation and the CLI then know it by name::

    from dartok.data import register_dataset

    register_dataset("my_shapes", lambda root, split, **kw: MyShapes(split, **kw), num_classes=3,
                     in_chans=1, accepts=frozenset({"channels", "num_samples"}), sized=True)
    dartok.engine.train(TrainConfig(data="my_shapes", ...))

ImageFolder trees (``"folder"``, ``"imagefolder"``, ``"image_folder"`` or ``""``, with a root
folder) are read by :mod:`dartok.data.folder` (one class map from the training split, a held-out
split that must exist or be asked for, seeded class-stratified subsets). Other names that are not
registered fall through to timm (:func:`timm.data.create_dataset`): prefixed names
(``"torch/..."``, ``"hfds/..."``, ``"hfids/..."``, ``"tfds/..."``, ``"wds/..."``) and ``.tar``
ImageFolders. Both return PIL images and need a transform (:func:`dartok.data.transforms.pil_transform`).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch.utils.data import Dataset

__all__ = [
    "DataConfig",
    "DatasetInfo",
    "build_dataset",
    "create_dataset",
    "dataset_info",
    "infer_dataset",
    "list_datasets",
    "num_classes_of",
    "register_dataset",
    "square_side",
]

FOLDER_NAMES = ("", "folder", "imagefolder", "image_folder")
FOLDER_KWARGS = frozenset({"transform", "classes", "val_split", "seed"})
"""What :func:`create_dataset` passes to an ImageFolder (:func:`dartok.data.folder.create_image_folder`)."""
TIMM_PREFIXES = ("torch/", "hfds/", "hfids/", "tfds/", "wds/")
# timm create_dataset options that mean nothing for registered datasets; dropped silently so a
# training script can pass one set of kwargs whatever the dataset.
TIMM_ONLY_KWARGS = frozenset(
    {"search_split", "class_map", "load_bytes", "is_training", "download", "batch_size", "repeats",
     "input_img_mode", "trust_remote_code", "target_transform"}
)


@dataclass(frozen=True)
class DatasetInfo:
    """What the registry knows about a dataset name.

    Attributes:
        name: the (lower-case) name.
        factory: ``factory(root, split, **kwargs) -> Dataset``; ``split`` is ``"train"`` or
            ``"test"`` (or a timm synonym the factory maps).
        task: the task its items are for (``"classification"``: items ``(x, int label)``);
            see :func:`dartok.train.task.create_task`.
        num_classes: the number of classes, when fixed (``None``: the dataset's ``classes``
            attribute tells, or the run's ``num_classes``).
        video: items are ``C×T×H×W`` clips (else ``C×H×W`` images).
        in_chans: channels its items have by default.
        tensors: items are float tensors ready for a model; the factory then takes ``channels``
            (1 or 3). ``False``: PIL images that need a transform (timm datasets).
        canvas: the factory takes ``canvas_size`` and the generation ``seed`` (the run's ``data_seed``).
        sized: the factory takes ``num_samples`` (else a run takes the first items with a subset).
        boxes: the factory takes ``return_box``: items then are ``(x, {"label": int, "box":
            float32 tensor})`` with the object's box (``4`` for an image, ``T×K×4`` per-frame
            pieces for a clip; :mod:`dartok.localization`), for the oracle score source and the
            localisation metric (:func:`build_dataset`'s ``boxes``).
        accepts: the kwargs the factory takes (``None``: not checked); others raise ``TypeError``.
        description: one line for listings.
        registered: ``False`` for the timm pass-through names.
    """

    name: str
    factory: Callable[..., Dataset]
    task: str = "classification"
    num_classes: int | None = None
    video: bool = False
    in_chans: int = 3
    tensors: bool = True
    canvas: bool = False
    sized: bool = False
    boxes: bool = False
    accepts: frozenset | None = None
    description: str = ""
    registered: bool = True


_REGISTRY: dict[str, DatasetInfo] = {}


def _key(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
    return name.strip().lower()


def register_dataset(
    name: str,
    factory: Callable[..., Dataset],
    *,
    task: str = "classification",
    num_classes: int | None = None,
    video: bool = False,
    in_chans: int = 3,
    tensors: bool = True,
    canvas: bool = False,
    sized: bool = False,
    boxes: bool = False,
    accepts: frozenset | set | None = None,
    description: str = "",
    overwrite: bool = False,
) -> DatasetInfo:
    """Register a dataset under ``name`` (case-insensitive); see :class:`DatasetInfo` for the fields.

    Returns:
        The new :class:`DatasetInfo`.

    Raises:
        ValueError: an empty name, a name timm owns (folder names, timm prefixes), a name already
            registered (unless ``overwrite``), ``in_chans`` not 1 or 3, ``num_classes`` < 1.
        TypeError: ``factory`` not callable.
    """
    key = _key(name)
    if not key or key in FOLDER_NAMES or key.startswith(TIMM_PREFIXES):
        raise ValueError(f"cannot register dataset name {name!r}: empty, or a name timm owns")
    if key in _REGISTRY and not overwrite:
        raise ValueError(f"dataset {key!r} is already registered; pass overwrite=True to replace it")
    if not callable(factory):
        raise TypeError(f"factory of dataset {key!r} must be callable, got {type(factory).__name__}")
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans!r}")
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    info = DatasetInfo(key, factory, task=task, num_classes=num_classes, video=bool(video), in_chans=in_chans,
                       tensors=bool(tensors), canvas=bool(canvas), sized=bool(sized), boxes=bool(boxes),
                       accepts=None if accepts is None else frozenset(accepts), description=description)
    _REGISTRY[key] = info
    return info


def unregister_dataset(name: str) -> None:
    """Remove a registration (tests, or to replace a built-in). Unknown names are ignored."""
    _REGISTRY.pop(_key(name), None)


def _timm_dataset(root: str | os.PathLike | None, split: str, *, _timm_name: str = "", **kwargs: Any) -> Dataset:
    import timm.data  # deferred: importing timm is slow and needs dartok's torchvision shim first

    return timm.data.create_dataset(_timm_name, root=None if root is None else os.fspath(root), split=split, **kwargs)


def _unknown(name: str) -> ValueError:
    return ValueError(
        f"unknown dataset {name!r}; expected one of {list_datasets()}, an ImageFolder name "
        f"{[n for n in FOLDER_NAMES if n]} (or '') with a root directory, or a timm name with a "
        f"prefix {list(TIMM_PREFIXES)}"
    )


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``: a registered dataset, or timm's pass-through
    (``registered=False``, ``tensors=False``, 3 channels) for folder names and timm prefixes.

    Raises:
        ValueError: an unknown name (the message lists the registered ones).
    """
    key = _key(name)
    if key in _REGISTRY:
        return _REGISTRY[key]
    if key in FOLDER_NAMES or key.startswith(TIMM_PREFIXES):
        return DatasetInfo(key, _timm_dataset, tensors=False, registered=False,
                           description="timm dataset (PIL images)")
    raise _unknown(name)


def list_datasets(*, task: str | None = None, video: bool | None = None, canvas: bool | None = None,
                  in_chans: int | None = None) -> list[str]:
    """Registered dataset names (sorted), optionally only those with the given ``task`` /
    ``video`` / ``canvas`` / default ``in_chans``."""
    out = []
    for key, info in sorted(_REGISTRY.items()):
        if ((task is None or info.task == task) and (video is None or info.video == video)
                and (canvas is None or info.canvas == canvas) and (in_chans is None or info.in_chans == in_chans)):
            out.append(key)
    return out


def create_dataset(name: str, root: str | os.PathLike | None, split: str, **kwargs: Any) -> Dataset:
    """Create a dataset by name.

    * registered names (:func:`list_datasets`: ``"cluttered_fmnist"``, ``"fashion_mnist"``,
      ``"moving_fmnist"``, ``"moving_cluttered_fmnist"``, ``"video_folder"``, ``"ssv2"``, and any
      registered since) go to their factory. ``None`` values and timm-only kwargs
      (``is_training``, ``batch_size``, ``download``, ...) are dropped; the Fashion-MNIST
      datasets take ``root=None`` as ``/usr/share/datasets/fashion-mnist/``, splits ``train`` /
      ``test`` (timm synonyms ``training``, ``val``, ``validation`` ... mapped), and return
      *tensors*, so a ``transform`` must take a tensor.
    * ``"folder"``, ``"imagefolder"``, ``"image_folder"``, ``""``: an ImageFolder tree
      (``root/train/<class>/<img>`` and ``root/val/<class>/<img>``, or ``root/<class>/<img>`` with
      ``val_split``): :func:`dartok.data.folder.create_image_folder` (kwargs ``transform``,
      ``classes``, ``val_split``, ``seed``); a ``.tar`` root goes to timm's ``ImageDataset``.
    * ``"torch/..."``, ``"hfds/..."``, ``"hfids/..."``, ``"tfds/..."``, ``"wds/..."``: passed to
      :func:`timm.data.create_dataset` unchanged (kwargs too). timm datasets return
      ``(PIL.Image, int)``: pass ``transform=`` to get tensors.

    Raises:
        ValueError: unknown name (the message lists the valid ones), unknown split, root
            missing for a folder dataset, bad dataset arguments, an ImageFolder whose layout or
            classes do not fit (:mod:`dartok.data.folder`).
        FileNotFoundError: ``root`` does not exist (folder datasets) or data files are missing.
        TypeError: a kwarg the registered (or ImageFolder) dataset does not accept.
    """
    info = dataset_info(name)
    if not info.registered:
        if info.name in FOLDER_NAMES:
            if root is None:
                raise ValueError(f"dataset {name!r} (ImageFolder) needs a root directory (--data-root)")
            if not os.path.exists(root):
                raise FileNotFoundError(f"--data-root {os.fspath(root)!r} does not exist")
            if not (os.path.isfile(root) and os.fspath(root).endswith(".tar")):
                from .folder import create_image_folder

                kw = {k: v for k, v in kwargs.items() if v is not None and k not in TIMM_ONLY_KWARGS}
                unknown = sorted(set(kw) - FOLDER_KWARGS)
                if unknown:
                    raise TypeError(f"create_dataset({name!r}) got unexpected kwargs {unknown}; accepted: "
                                    f"{sorted(FOLDER_KWARGS)}")
                return create_image_folder(root, split, **kw)
            timm_name = ""
        else:
            timm_name = name.strip()
        return _timm_dataset(root, split, _timm_name=timm_name, **kwargs)
    kw = {k: v for k, v in kwargs.items() if v is not None and k not in TIMM_ONLY_KWARGS}
    if info.accepts is not None:
        unknown = sorted(set(kw) - info.accepts)
        if unknown:
            raise TypeError(
                f"create_dataset({name!r}) got unexpected kwargs {unknown}; accepted: {sorted(info.accepts)}")
    return info.factory(root, split, **kw)


# --------------------------------------------------------------------------------------
# a run's datasets
# --------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    """The data options of a run (the ``data*`` fields of :class:`dartok.train.config.TrainConfig`,
    same names, so a ``TrainConfig`` works wherever a ``DataConfig`` is asked for).

    ``data`` (dataset name), ``data_root``, ``canvas_size`` (canvas datasets only),
    ``data_kwargs`` (extra factory kwargs), ``data_seed`` (generation seed of canvas datasets;
    the seed of ImageFolder subsets and of ``val_split``), ``in_chans`` (``None``: the dataset's
    default), ``train_samples`` / ``test_samples`` (``None``: the whole split), ``val_split``
    (ImageFolder: hold out this fraction of the training images as the held-out split).
    """

    data: str = "cluttered_fmnist"
    data_root: str | None = None
    canvas_size: int | None = None
    data_kwargs: dict = field(default_factory=dict)
    data_seed: int = 0
    in_chans: int | None = None
    train_samples: int | None = None
    test_samples: int | None = None
    val_split: float | None = None

    @classmethod
    def from_options(cls, options: Any) -> "DataConfig":
        """The data fields of any object that has them (e.g. a ``TrainConfig``)."""
        return cls(**{f.name: getattr(options, f.name) for f in dataclasses.fields(cls)})

    @classmethod
    def from_checkpoint(
        cls,
        config: Mapping[str, Any],
        *,
        data: str | None = None,
        data_root: str | None = None,
        canvas_size: int | None = None,
        num_samples: int | None = None,
        data_seed: int | None = None,
    ) -> "DataConfig":
        """The data a checkpoint was trained on (its ``config.json``'s ``data`` record), with overrides.

        A different ``data`` name starts from that dataset's defaults (root, canvas and kwargs of
        the checkpoint's dataset are not carried over); ``num_samples`` sets both splits' sizes;
        the channels stay the model's. The run's ``val_split`` is kept unless ``data`` or
        ``data_root`` is given (another folder's own validation split is read then).
        """
        d = config.get("data") or {}
        same = not data
        return cls(
            data=data or d.get("name", "cluttered_fmnist"),
            data_root=data_root if data_root is not None else (d.get("root") if same else None),
            canvas_size=canvas_size if canvas_size is not None else (d.get("canvas_size") if same else None),
            data_kwargs=dict(d.get("kwargs") or {}) if same else {},
            data_seed=data_seed if data_seed is not None else d.get("seed", 0),
            in_chans=d.get("in_chans") or (config.get("model_kwargs") or {}).get("in_chans"),
            train_samples=num_samples,
            test_samples=num_samples,
            val_split=d.get("val_split") if same and data_root is None else None,
        )


def build_dataset(cfg: Any, split: str, *, num_samples: int | None = None, transform=None,
                  boxes: bool = False, classes: list[str] | None = None) -> Dataset:
    """Create the ``"train"`` or ``"test"`` dataset of a run (``cfg``: a :class:`DataConfig` or a
    ``TrainConfig``) with :func:`create_dataset`.

    Tensor datasets get ``channels`` (= ``cfg.in_chans`` or the dataset's default), canvas
    datasets ``canvas_size`` and ``seed`` (= ``cfg.data_seed``), sized datasets
    ``num_samples``, and all ``cfg.data_kwargs`` and ``transform``. ImageFolders get
    ``cfg.val_split``, ``seed`` and ``classes`` (a checkpoint's class names: the class map; default
    the training split's), and their ``"test"`` split is the validation folder or the held-out part
    (:func:`dartok.data.folder.create_image_folder`); other timm datasets get ``transform`` and
    ``cfg.data_kwargs``, and their ``"test"`` split is timm's ``"validation"``.
    Datasets that do not take ``num_samples`` are cut to ``num_samples`` items: a seeded
    (``cfg.data_seed``), class-stratified subset (:func:`dartok.data.folder.stratified_indices`) when
    the dataset lists its ``targets`` and is not a registered one, else its first items.
    ``boxes``: items carry the object's box (``return_box=True``; :class:`DatasetInfo` ``boxes``).

    Raises:
        ValueError: unknown dataset, ``canvas_size`` for a dataset without a canvas, ``boxes``
            for a dataset without object boxes, ``val_split`` for a dataset that is not an
            ImageFolder, bad options.
    """
    info = dataset_info(cfg.data)
    folder = not info.registered and info.name in FOLDER_NAMES
    kw = dict(cfg.data_kwargs)
    if boxes:
        if not info.boxes:
            raise ValueError(f"dataset {cfg.data!r} provides no object boxes; datasets that do: "
                             f"{[n for n in list_datasets() if dataset_info(n).boxes]}")
        kw["return_box"] = True
    if cfg.canvas_size is not None and not info.canvas:
        raise ValueError(f"canvas_size only applies to {list_datasets(canvas=True)}, not {cfg.data!r}")
    val_split = getattr(cfg, "val_split", None)
    if val_split is not None and not folder:
        raise ValueError(f"--val-split holds out part of an ImageFolder's training images; dataset {cfg.data!r} "
                         f"has its own test split")
    if info.tensors:
        kw.setdefault("channels", cfg.in_chans or info.in_chans)
    if info.canvas:
        if cfg.canvas_size is not None:
            kw["canvas_size"] = cfg.canvas_size
        kw.setdefault("seed", cfg.data_seed)
    if info.sized and num_samples is not None:
        kw["num_samples"] = num_samples
    if transform is not None:
        kw["transform"] = transform
    if folder:
        kw.update(val_split=val_split, seed=cfg.data_seed, classes=classes)
    elif not info.registered and split == "test":  # timm's name for the held-out split
        split = "validation"
    ds = create_dataset(cfg.data, cfg.data_root, split, **kw)
    if not info.sized and num_samples is not None and num_samples < len(ds):
        targets = getattr(ds, "targets", None)
        if targets is not None and not info.registered:
            from .folder import stratified_indices

            idx = stratified_indices(targets, num_samples, cfg.data_seed, stream=1 if split == "train" else 2)
            how = f"class-stratified subset (--data-seed {cfg.data_seed})"
        else:
            idx, how = range(num_samples), "first items"
        source = getattr(ds, "source", None)
        ds = _Subset(ds, idx, source=f"{how} of {len(ds)}" + (f": {source}" if source else ""))
    return ds


class _Subset(torch.utils.data.Subset):
    """Items ``indices`` of a dataset (an int ``n``: the first ``n``), forwarding ``transform`` /
    ``classes`` / ``num_frames`` / ``targets``; ``source`` says what it is (logs)."""

    def __init__(self, dataset: Dataset, indices, source: str | None = None):
        super().__init__(dataset, range(indices) if isinstance(indices, int) else list(indices))
        self.source = source

    @property
    def classes(self):
        return getattr(self.dataset, "classes", None)

    @property
    def num_frames(self):
        return getattr(self.dataset, "num_frames", None)

    @property
    def targets(self):
        t = getattr(self.dataset, "targets", None)
        return None if t is None else [t[i] for i in self.indices]

    @property
    def missing_classes(self):
        classes, targets = self.classes, self.targets
        if classes is None or targets is None:
            return None
        present = set(int(v) for v in targets)
        return [c for i, c in enumerate(classes) if i not in present]

    @property
    def transform(self):
        return getattr(self.dataset, "transform", None)

    @transform.setter
    def transform(self, tf):
        self.dataset.transform = tf


def infer_dataset(data_root: str | os.PathLike | None, default: str = "cluttered_fmnist") -> str:
    """The dataset a ``--data-root`` alone names: ``"seg_folder"`` when it holds ``images/`` and
    ``annotations/`` (:func:`dartok.data.folder.looks_like_seg_folder`), ``"folder"`` when it
    looks like an ImageFolder (:func:`dartok.data.folder.looks_like_image_folder`), else ``default``."""
    from .folder import looks_like_image_folder, looks_like_seg_folder

    if looks_like_seg_folder(data_root):
        return "seg_folder"
    return "folder" if looks_like_image_folder(data_root) else default


def num_classes_of(dataset: Dataset) -> int | None:
    """The number of classes a dataset names (``classes``, or a timm reader's ``class_to_idx``), else ``None``."""
    v = getattr(dataset, "classes", None)
    if v is not None and len(v):
        return len(v)
    reader = getattr(dataset, "reader", None) or getattr(dataset, "parser", None)
    ctoi = getattr(reader, "class_to_idx", None)
    if ctoi:
        return len(ctoi)
    return None


def square_side(dataset: Dataset) -> int | None:
    """Side of the dataset's first item if it is a square ``C×H×W`` image or ``C×T×H×W`` clip tensor, else None."""
    try:
        x = dataset[0][0]
    except Exception:
        return None
    if isinstance(x, torch.Tensor) and x.ndim in (3, 4) and x.shape[-1] == x.shape[-2]:
        return int(x.shape[-1])
    return None
