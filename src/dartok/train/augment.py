"""Augmentation and regularisation of a run, built from timm's parts (DeiT's recipe).

The options are :class:`~dartok.train.config.TrainConfig` fields with the names of timm's
``train.py`` flags; this module turns them into timm objects and checks them:

* per-image transforms of PIL datasets (ImageFolder, timm's sources):
  ``timm.data.create_transform`` with ``scale``, ``ratio``, ``hflip``, ``vflip``,
  ``color_jitter``, ``aa`` (``auto_augment``), ``reprob`` (``re_prob``, in timm ``train.py``'s
  ``pixel`` mode, one box) and ``train_interpolation`` for training, ``crop_pct`` for
  evaluation (:func:`transform_kwargs`). Left at ``None`` they keep timm's defaults.
  Registered tensor datasets (the Fashion-MNIST canvases, clips) have no per-image
  transform: these options are refused for them (:func:`check_augment`).
* batch mixing: timm's ``Mixup`` (``mixup`` / ``cutmix`` alphas, ``mixup_prob``, the run's
  ``label_smoothing``) turns each training batch into mixed images and soft targets
  (:func:`build_mixup`); the loss is then timm's ``SoftTargetCrossEntropy``
  (:class:`~dartok.train.task.Classification`), as in timm's ``train.py`` and DeiT.
* repeated augmentation: timm's ``RepeatAugSampler`` (``repeated_aug``; used in
  :mod:`dartok.train.run`).
* stochastic depth: ``drop_path`` (the model's ``drop_path_rate``).
"""
from __future__ import annotations

from typing import Any, Mapping

__all__ = [
    "IMAGE_AUG_FIELDS",
    "RE_COUNT",
    "RE_MODE",
    "build_mixup",
    "check_augment",
    "check_augment_values",
    "mixup_active",
    "transform_kwargs",
]

IMAGE_AUG_FIELDS = ("scale", "ratio", "hflip", "vflip", "color_jitter", "aa", "reprob", "train_interpolation",
                    "crop_pct")
"""The options that go to ``timm.data.create_transform`` (PIL datasets only)."""

RE_MODE = "pixel"
"""Random erasing fill mode with ``reprob``: per-pixel normal noise (timm ``train.py``'s and DeiT's ``--remode``)."""
RE_COUNT = 1
"""Random erasing boxes per image (timm ``train.py``'s and DeiT's ``--recount``)."""

_INTERPOLATIONS = ("random", "bilinear", "bicubic", "nearest", "box", "hamming", "lanczos")
_AA_EXAMPLES = ("'rand-m9-mstd0.5-inc1' (RandAugment, DeiT's)", "'original' / 'v0' (AutoAugment)",
                "'augmix-m5-w4-d2' (AugMix)", "'3a' (3-Augment)")
_TIMM_ARG = {"aa": "auto_augment", "reprob": "re_prob", "train_interpolation": "interpolation"}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def mixup_active(cfg: Any) -> bool:
    """Whether a run mixes its batches: ``mixup > 0`` or ``cutmix > 0`` (timm's rule)."""
    return (getattr(cfg, "mixup", 0.0) or 0.0) > 0 or (getattr(cfg, "cutmix", 0.0) or 0.0) > 0


def check_augment_values(cfg: Any) -> None:
    """Check the augmentation options' values (:meth:`TrainConfig.validate` calls this).

    Ranges: ``scale`` two floats with ``0 < lo <= hi <= 1`` (area fractions); ``ratio`` two
    floats with ``0 < lo <= hi``; ``hflip``, ``vflip``, ``reprob``, ``mixup_prob`` in [0, 1];
    ``color_jitter``, ``mixup``, ``cutmix`` >= 0; ``crop_pct`` in (0, 1]; ``drop_path`` in
    [0, 1); ``mixup_prob`` other than 1 only with mixup or cutmix on; ``train_interpolation``
    one of timm's names (``random``, ``bilinear``, ``bicubic``, ...); ``aa`` a policy timm's
    parser accepts (it builds the transform to find out); ``persistent_workers`` only with
    ``num_workers > 0``.

    Raises:
        ValueError: the first bad option, with what is allowed.
    """
    def pair(name, upper):
        v = getattr(cfg, name)
        if v is None:
            return
        ok = isinstance(v, (tuple, list)) and len(v) == 2 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        if not ok or not 0 < v[0] <= v[1] or (upper is not None and v[1] > upper):
            bound = f"0 < lo <= hi <= {upper}" if upper is not None else "0 < lo <= hi"
            raise ValueError(f"{name} must be two numbers lo hi with {bound}, got {v!r}")

    def unit(name, allow_none=True):
        v = getattr(cfg, name)
        if v is None and allow_none:
            return
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {v!r}")

    def nonneg(name):
        v = getattr(cfg, name)
        if v is None:
            return
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{name} must be >= 0, got {v!r}")

    pair("scale", 1.0)
    pair("ratio", None)
    for name in ("hflip", "vflip", "reprob"):
        unit(name)
    unit("mixup_prob", allow_none=False)
    for name in ("color_jitter", "mixup", "cutmix"):
        nonneg(name)
    if cfg.mixup_prob != 1.0 and not mixup_active(cfg):
        raise ValueError(f"mixup_prob {cfg.mixup_prob!r} has no effect without mixup or cutmix > 0")
    if cfg.crop_pct is not None and not (isinstance(cfg.crop_pct, (int, float)) and 0 < cfg.crop_pct <= 1):
        raise ValueError(f"crop_pct must be in (0, 1] (the evaluation centre crop's share of the resized side), "
                         f"got {cfg.crop_pct!r}")
    if cfg.drop_path is not None and not (isinstance(cfg.drop_path, (int, float)) and 0 <= cfg.drop_path < 1):
        raise ValueError(f"drop_path must be in [0, 1), got {cfg.drop_path!r}")
    if cfg.train_interpolation is not None and cfg.train_interpolation not in _INTERPOLATIONS:
        raise ValueError(f"train_interpolation must be one of {list(_INTERPOLATIONS)}, got {cfg.train_interpolation!r}")
    if cfg.aa is not None:
        _check_aa(cfg.aa)
    if cfg.persistent_workers and cfg.num_workers == 0:
        raise ValueError("persistent_workers keeps DataLoader worker processes alive between epochs; it needs "
                         "num_workers > 0")


def _check_aa(aa: Any) -> None:
    """Build a tiny training transform with ``auto_augment=aa``: timm's own parser decides."""
    import timm.data

    if not isinstance(aa, str) or not aa:
        raise ValueError(f"aa must be a timm augmentation policy string, e.g. {', '.join(_AA_EXAMPLES)}; got {aa!r}")
    try:
        timm.data.create_transform(32, is_training=True, auto_augment=aa)
    except (AssertionError, ValueError, KeyError, IndexError, TypeError) as e:
        detail = f" ({e})" if str(e) else ""
        raise ValueError(f"aa {aa!r} is not a policy timm knows{detail}; use e.g. {', '.join(_AA_EXAMPLES)}") \
            from None


def check_augment(cfg: Any, info: Any, world_size: int = 1) -> None:
    """Check the options that depend on the dataset and the number of processes (before any data is built).

    Args:
        cfg: the run's :class:`~dartok.train.config.TrainConfig`.
        info: the dataset's :class:`~dartok.data.registry.DatasetInfo`.
        world_size: processes of the run (the per-process batch is ``batch_size / world_size``).

    Raises:
        ValueError: per-image transform options (:data:`IMAGE_AUG_FIELDS`) for a tensor dataset
            (they apply to PIL datasets only); ``mixup`` / ``cutmix`` for a task other than
            classification, for an oracle model (its boxes are the unmixed image's), or with an
            odd per-process batch (timm's ``Mixup`` needs pairs); ``cutmix`` on clips; ``drop_path``
            together with ``model_kwargs["drop_path_rate"]``.
    """
    given = [n for n in IMAGE_AUG_FIELDS if getattr(cfg, n) is not None]
    if given and info.tensors:
        raise ValueError(
            f"{', '.join(_flag(n) for n in given)}: per-image transforms apply to PIL-image datasets (ImageFolder, "
            f"timm's sources); {info.name!r} yields ready tensors from its own generator. Options that apply to it: "
            f"--mixup, --cutmix, --mixup-prob, --smoothing, --drop-path, --repeated-aug")
    if mixup_active(cfg):
        if info.task != "classification":
            raise ValueError(f"--mixup / --cutmix mix class labels (classification); dataset {info.name!r} has "
                             f"task {info.task!r}")
        if cfg.model.startswith("dart_") and cfg.model_kwargs.get("score_source") == "oracle":
            raise ValueError("--mixup / --cutmix with score_source='oracle': the oracle's object boxes belong to the "
                             "unmixed images")
        if cfg.cutmix > 0 and info.video:
            raise ValueError(f"--cutmix cuts boxes out of B×C×H×W images; {info.name!r} gives clips "
                             f"(B×C×T×H×W). Use --mixup alone")
        per_rank = cfg.batch_size // max(world_size, 1)
        if per_rank % 2:
            where = f" per process ({cfg.batch_size} / {world_size})" if world_size > 1 else ""
            raise ValueError(f"--mixup / --cutmix need an even batch{where}: timm's Mixup mixes each image with "
                             f"its mirror in the batch; got {per_rank}")
    if cfg.drop_path is not None and "drop_path_rate" in cfg.model_kwargs:
        raise ValueError(f"drop_path {cfg.drop_path!r} and model_kwargs drop_path_rate "
                         f"{cfg.model_kwargs['drop_path_rate']!r} set the same thing; give one")


def transform_kwargs(cfg: Any, is_training: bool) -> dict[str, Any]:
    """``timm.data.create_transform`` kwargs of a run's options (only those given; the rest stay timm's).

    Training: ``scale``, ``ratio``, ``hflip``, ``vflip``, ``color_jitter``,
    ``auto_augment`` (``aa``), ``re_prob`` (``reprob``, with ``re_mode`` :data:`RE_MODE` and
    ``re_count`` :data:`RE_COUNT`) and ``interpolation`` (``train_interpolation``).
    Evaluation: ``crop_pct``. ``cfg`` may be a ``TrainConfig`` or a mapping of its fields
    (a checkpoint's ``config.json`` ``train`` record; missing fields are not given).
    """
    get = cfg.get if isinstance(cfg, Mapping) else (lambda k, d=None: getattr(cfg, k, d))
    names = [n for n in IMAGE_AUG_FIELDS if n != "crop_pct"] if is_training else ["crop_pct"]
    out: dict[str, Any] = {}
    for name in names:
        v = get(name)
        if v is not None:
            out[_TIMM_ARG.get(name, name)] = tuple(v) if isinstance(v, list) else v
    if out.get("re_prob"):
        out.update(re_mode=RE_MODE, re_count=RE_COUNT)
    return out


def build_mixup(cfg: Any, num_classes: int):
    """timm's ``Mixup`` for a run, or ``None`` when neither ``mixup`` nor ``cutmix`` is > 0.

    ``Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
    label_smoothing=cfg.label_smoothing, num_classes=num_classes)`` with timm's other defaults
    (switch probability 0.5, one draw per batch, lambda corrected for clipped cutmix boxes),
    which are DeiT's. Called on a ``B×C×H×W`` batch (``B`` even) and ``B`` int labels it mixes
    the batch in place and returns ``B×num_classes`` float soft targets; its draws come from
    numpy's global RNG (saved in every checkpoint).
    """
    if not mixup_active(cfg):
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                 label_smoothing=cfg.label_smoothing, num_classes=num_classes)
