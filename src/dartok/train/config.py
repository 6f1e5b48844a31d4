"""The options of a training run, and how a resumed run's options are settled.

:class:`TrainConfig` holds every option (what ``dartok train`` fills in). A resumed run
(``resume=True``) continues the run in ``<output>/checkpoint``: :func:`resolve_config` takes
the options a caller did not give from the saved run, exactly as ``dartok train --resume``
does, and :func:`check_resume` refuses options that conflict with it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .._io import json_default
from ..data.registry import DataConfig
from . import checkpoint as ckpt
from .augment import check_augment_values
from .task import TASKS, check_label_smoothing

__all__ = [
    "BEST_DIRNAME",
    "CHECKPOINT_DIRNAME",
    "LOCK_NAME",
    "METRICS_NAME",
    "NOT_INHERITED",
    "ResumeConflictError",
    "RunDirBusyError",
    "TrainConfig",
    "check_resume",
    "load_resume_config",
    "option_flag",
    "resolve_config",
]

METRICS_NAME = "metrics.jsonl"
"""Per-epoch metrics of a run, one JSON object a line, in ``<output>/``."""
CHECKPOINT_DIRNAME = "checkpoint"
"""The run's checkpoint folder, ``<output>/checkpoint``."""
BEST_DIRNAME = "checkpoint_best"
"""The weights of the run's best epoch by the task's best metric, ``<output>/checkpoint_best``."""
LOCK_NAME = ".lock"
"""The lock file a training run holds in ``<output>/`` while it runs (:func:`dartok.train.run.hold_run_dir`)."""
NOT_INHERITED = frozenset({"stop_after", "resume", "output", "progress"})
"""Options a resumed run does not take from the saved run when they are not given."""


def option_flag(name: str) -> str:
    """The ``dartok train`` flag of a :class:`TrainConfig` field: ``warmup_epochs`` -> ``--warmup-epochs``."""
    return "--" + name.replace("_", "-")


class ResumeConflictError(ValueError):
    """Raised when ``--resume`` is asked with options that conflict with the saved run."""


class RunDirBusyError(FileExistsError):
    """Raised when another training holds the run directory's lock (:data:`LOCK_NAME`)."""


@dataclass
class TrainConfig:
    """All options of a training run (serialized into the checkpoint's ``config.json``).

    Task: ``task`` (``None``: the dataset's, as registered; ``"classification"`` or
    ``"segmentation"``, :data:`dartok.train.task.TASKS`): a given task must be the dataset's,
    and names the default dataset (``cluttered_fmnist`` / ``cluttered_fmnist_seg``; with a
    ``data_root``, a folder of that task's layout). A segmentation run wraps ``model`` in
    Segmenter's linear decoder (:func:`dartok.models.create_model` ``task="segmentation"``).

    Model: ``model`` (name for :func:`dartok.models.create_model`), ``num_tokens``,
    ``model_kwargs`` (extra kwargs, e.g. scorer options), ``num_classes`` / ``in_chans``
    (``None``: inferred from the data -- 10 classes and 1 channel for the Fashion-MNIST
    datasets, 3 channels otherwise).

    Initialisation: ``init_from`` (``None``: the model's own init): a checkpoint folder (or
    a run folder holding one), a ``.safetensors`` or a ``.pth`` state dict whose weights the
    model starts from (:func:`dartok.train.checkpoint.init_from`): loaded as they are for the
    same architecture, inflated when they are an image Vim's and the model is a VideoMamba
    (as VideoMamba starts from ImageNet weights); a head of another class count is dropped.
    Only the weights: the run still starts at epoch 0 with a fresh optimizer and schedule
    (continuing a run is ``resume``), and a resumed run does not load them again.

    Data: ``data`` (a registered name, :func:`dartok.data.list_datasets`, or a timm /
    ImageFolder name; the registry also says the run's task), ``data_root``, ``canvas_size``
    (canvas datasets), ``train_samples`` / ``test_samples``
    (``None``: whole split; for an ImageFolder a seeded, class-stratified subset), ``val_split``
    (ImageFolder without a validation folder: hold out this seeded, class-stratified fraction of
    the training images, e.g. ``0.1``), ``data_kwargs`` (extra dataset kwargs), ``data_seed`` (the
    seed of generated data, ImageFolder subsets and ``val_split``).

    Optimization: ``epochs``, ``batch_size`` (the GLOBAL batch: split evenly across the
    processes of a distributed run), ``lr``, ``weight_decay``, ``warmup_epochs``,
    ``warmup_lr``, ``min_lr``, ``label_smoothing``, ``prior_epochs`` (a DART model built with a
    training-free ``prior`` mixes it into its score map with a share annealed linearly from 1
    to 0 over this many epochs; 0 never; docs/method.md §10), ``scorer_pretrain_epochs`` (a DART
    model whose scorer trunk learns from scratch first trains that trunk and its CAM head alone, as a
    classifier of the full images, for this many epochs, then freezes it, as the paper's
    pretrained trunk is frozen; :mod:`dartok.train.scorer_pretrain`, docs/method.md §10; 0 off;
    models without such a scorer skip it, so a comparison can set it for all its runs),
    ``scorer_pretrain_lr`` (that pretraining's peak learning rate; ``None``: ``lr``), ``train_num_tokens``
    (a DART model trains each batch at a budget drawn uniformly from these, FlexiViT's random patch
    size in DART's terms, and is evaluated and saved at ``num_tokens``; ``None``: always ``num_tokens``;
    README "Elastic token budget"), ``clip_grad`` (max grad norm, ``None``
    off), ``seed``, ``model_ema`` (keep an exponential moving average of the weights, as
    DeiT does, with ``timm.utils.ModelEmaV3``; evaluated and checkpointed alongside),
    ``model_ema_decay``.

    Augmentation and regularisation (timm ``train.py``'s names; :mod:`dartok.train.augment`):
    per-image transforms of PIL datasets (ImageFolder, timm's sources), each ``None`` = timm's
    default: ``scale`` (RandomResizedCrop area range, timm: (0.08, 1)), ``ratio`` (its aspect
    range, timm: (3/4, 4/3)), ``hflip`` (timm: 0.5), ``vflip`` (timm: 0), ``color_jitter``
    (timm: 0.4; timm turns it off when ``aa`` is set), ``aa`` (RandAugment / AutoAugment
    policy, e.g. ``"rand-m9-mstd0.5-inc1"``; timm: none), ``reprob`` (random erasing
    probability, timm: 0), ``train_interpolation`` (timm name; default: the model's
    interpolation), ``crop_pct`` (evaluation centre crop; default: the model's). Tensor
    datasets (the Fashion-MNIST canvases, clips) keep their own items and refuse these.
    Batch mixing, any image dataset of a classification task: ``mixup`` / ``cutmix`` (Beta
    alphas, 0 off), ``mixup_prob`` (share of batches mixed); with either > 0 the loss is
    timm's ``SoftTargetCrossEntropy`` and ``label_smoothing`` goes into timm's ``Mixup``.
    ``drop_path`` (stochastic depth rate, the model's ``drop_path_rate``; ``None``: the
    model's default). ``repeated_aug``: timm's ``RepeatAugSampler`` (3 augmented copies of
    each image, spread over the processes; an epoch then shows about a third of the images).

    Runtime: ``num_workers``, ``pin_mem`` (page-locked batches for a faster copy to the GPU;
    ``None``: on for CUDA), ``persistent_workers`` (keep the worker processes between
    epochs; the data order stays a function of ``(seed, epoch)`` but the workers' random
    augmentation draws then run on from epoch to epoch, so after ``--resume`` they differ
    from an uninterrupted run's), ``output`` (run dir), ``resume``, ``amp`` (bf16 autocast),
    ``device`` (``None``: cuda if available else cpu), ``progress`` (tqdm bar),
    ``stop_after`` (stop after this many completed epochs in total, e.g. to split a run
    into chunks; the schedule still spans ``epochs``), ``eval_batch_size`` (global like
    ``batch_size``; ``None``: 2x ``batch_size``), ``threads`` (``torch.set_num_threads`` for CPU work; ``None``: torch's
    default. On a small, shared CPU ``1`` can be much faster: with 2 intra-op threads a
    co-running process stalls every OpenMP barrier).
    """

    model: str = "dart_vit_micro_patch8"
    task: str | None = None
    num_tokens: int | None = None
    model_kwargs: dict = field(default_factory=dict)
    num_classes: int | None = None
    in_chans: int | None = None
    init_from: str | None = None
    data: str = "cluttered_fmnist"
    data_root: str | None = None
    canvas_size: int | None = None
    train_samples: int | None = None
    test_samples: int | None = None
    val_split: float | None = None
    data_kwargs: dict = field(default_factory=dict)
    data_seed: int = 0
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    label_smoothing: float = 0.1
    prior_epochs: float = 0.0
    scorer_pretrain_epochs: int = 0
    scorer_pretrain_lr: float | None = None
    train_num_tokens: tuple[int, ...] | None = None
    clip_grad: float | None = None
    seed: int = 0
    model_ema: bool = False
    model_ema_decay: float = 0.99996
    scale: tuple[float, float] | None = None
    ratio: tuple[float, float] | None = None
    hflip: float | None = None
    vflip: float | None = None
    color_jitter: float | None = None
    aa: str | None = None
    reprob: float | None = None
    train_interpolation: str | None = None
    crop_pct: float | None = None
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    drop_path: float | None = None
    repeated_aug: bool = False
    num_workers: int = 0
    pin_mem: bool | None = None
    persistent_workers: bool = False
    output: str = "runs/default"
    resume: bool = False
    amp: bool = False
    device: str | None = None
    progress: bool = True
    stop_after: int | None = None
    threads: int | None = None

    # options that may change between a run and its resumption
    RESUMABLE_CHANGES = frozenset(
        {"epochs", "num_workers", "output", "resume", "device", "progress", "stop_after", "eval_batch_size", "amp",
         "threads", "pin_mem", "persistent_workers"}
    )

    def __post_init__(self) -> None:
        for name in ("scale", "ratio"):  # a JSON list (config.json) and a tuple are the same option
            v = getattr(self, name)
            if isinstance(v, list):
                setattr(self, name, tuple(v))

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict (JSON-serializable) form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Build from a dict, ignoring unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def data_config(self) -> DataConfig:
        """The data options (:class:`dartok.data.DataConfig`) of this run."""
        return DataConfig.from_options(self)

    def validate(self, *, flags: bool = False) -> None:
        """Raise ``ValueError`` naming the first invalid option (``flags``: by its ``dartok train``
        flag, :func:`option_flag`, else by its field name)."""
        def n(name: str) -> str:
            return option_flag(name) if flags else name

        def pos(name, v, allow_none=False, zero=False):
            if v is None and allow_none:
                return
            if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or (v < 0 if zero else v <= 0):
                raise ValueError(f"{n(name)} must be a finite number {'>= 0' if zero else '> 0'}, got {v!r}")
        for name in ("epochs", "batch_size", "lr"):
            pos(name, getattr(self, name))
        for name in ("weight_decay", "warmup_epochs", "warmup_lr", "min_lr", "num_workers"):
            pos(name, getattr(self, name), zero=True)
        for name in ("eval_batch_size", "num_tokens", "num_classes", "canvas_size", "train_samples", "test_samples",
                     "clip_grad", "stop_after", "threads"):
            pos(name, getattr(self, name), allow_none=True)
        if self.in_chans is not None and self.in_chans not in (1, 3):
            raise ValueError(f"{n('in_chans')} must be 1 or 3, got {self.in_chans!r}")
        if self.val_split is not None and not (isinstance(self.val_split, (int, float))
                                               and 0.0 < self.val_split < 1.0):
            raise ValueError(f"{n('val_split')} must be a fraction between 0 and 1 (e.g. 0.1), got {self.val_split!r}")
        if not 0.0 <= self.model_ema_decay < 1.0:
            raise ValueError(f"{n('model_ema_decay')} must be in [0, 1), got {self.model_ema_decay!r}")
        try:
            check_label_smoothing(self.label_smoothing)
        except ValueError:
            raise ValueError(f"{n('label_smoothing')} must be in [0, 1), got {self.label_smoothing!r}") from None
        check_augment_values(self)
        if not (isinstance(self.prior_epochs, (int, float)) and 0 <= self.prior_epochs <= self.epochs):
            raise ValueError(f"{n('prior_epochs')} must be between 0 and {n('epochs')} ({self.epochs}): the prior's "
                             f"share must reach 0 before training ends, got {self.prior_epochs!r}")
        if self.train_num_tokens is not None:
            vals = self.train_num_tokens
            if (not isinstance(vals, (list, tuple)) or not vals
                    or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in vals)):
                raise ValueError(f"{n('train_num_tokens')} must be a non-empty list of token budgets (ints >= 1), "
                                 f"e.g. 9,16,25,36, got {vals!r}")
            self.train_num_tokens = tuple(vals)
        if (isinstance(self.scorer_pretrain_epochs, bool) or not isinstance(self.scorer_pretrain_epochs, int)
                or self.scorer_pretrain_epochs < 0):
            raise ValueError(f"{n('scorer_pretrain_epochs')} must be an int >= 0 (0: off), "
                             f"got {self.scorer_pretrain_epochs!r}")
        if self.scorer_pretrain_lr is not None and (
                isinstance(self.scorer_pretrain_lr, bool) or not isinstance(self.scorer_pretrain_lr, (int, float))
                or not math.isfinite(self.scorer_pretrain_lr) or self.scorer_pretrain_lr <= 0):
            raise ValueError(f"{n('scorer_pretrain_lr')} must be a finite number > 0 (or unset: {n('lr')}), "
                             f"got {self.scorer_pretrain_lr!r}")
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ValueError(f"{n('warmup_epochs')} ({self.warmup_epochs}) must be < {n('epochs')} ({self.epochs})")
        if not isinstance(self.model_kwargs, dict):
            raise ValueError(f"{n('model_kwargs')} must be a dict, got {type(self.model_kwargs).__name__}")
        if not isinstance(self.data_kwargs, dict):
            raise ValueError(f"{n('data_kwargs')} must be a dict, got {type(self.data_kwargs).__name__}")
        if not self.model:
            raise ValueError(f"{n('model')} name is empty")
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"{n('task')} must be one of {sorted(TASKS)}, got {self.task!r}")
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            raise ValueError(f"{n('init_from')} must be a path (checkpoint folder, .safetensors, .pth), "
                             f"got {self.init_from!r}")


def load_resume_config(ckpt_dir: str | Path) -> dict[str, Any]:
    """The saved ``config.json`` of the run to resume in ``ckpt_dir``.

    Raises:
        FileNotFoundError: no checkpoint there (message starts with ``--resume:``).
        ValueError: a corrupt config, or one without the training options (not resumable).
    """
    if not ckpt.checkpoint_exists(ckpt_dir):
        raise FileNotFoundError(f"--resume: no checkpoint found at {str(ckpt_dir)!r}")
    saved = ckpt.load_config(ckpt_dir)
    if not isinstance(saved.get("train"), dict):
        raise ValueError(f"checkpoint {str(ckpt_dir)!r} has no training config; it cannot be resumed")
    return saved


def check_resume(saved_config: Mapping[str, Any], cfg: TrainConfig, path: str | Path) -> None:
    """Refuse to resume the saved run with options that conflict with it.

    Options in :attr:`TrainConfig.RESUMABLE_CHANGES` may change; options the saved run did not
    record are not compared.

    Raises:
        ResumeConflictError: another model, or other options (the message lists each difference).
    """
    if saved_config.get("model") != cfg.model:
        raise ResumeConflictError(
            f"cannot resume from {str(path)!r}: it holds model {saved_config.get('model')!r}, "
            f"requested {cfg.model!r}. Use the same --model, or a new --output directory."
        )
    saved = saved_config["train"]
    diffs = []
    for k, v in cfg.to_dict().items():
        if k in TrainConfig.RESUMABLE_CHANGES or k not in saved:
            continue
        if json.loads(json.dumps(saved[k], default=json_default)) != json.loads(json.dumps(v, default=json_default)):
            diffs.append(f"{k}: checkpoint {saved[k]!r} vs requested {v!r}")
    if diffs:
        raise ResumeConflictError(
            f"cannot resume from {str(path)!r}: the requested options conflict with the saved run ("
            + "; ".join(diffs)
            + "). Use the same options, or a new --output directory."
        )


def resolve_config(cfg: TrainConfig | Mapping[str, Any] | None = None, /, **options: Any) -> TrainConfig:
    """The :class:`TrainConfig` of a run, from a complete config or from the options given.

    * A :class:`TrainConfig` is complete: it is used as it is (``options`` replace fields).
    * A mapping and/or keyword ``options`` name only the options given; the others take
      :class:`TrainConfig`'s defaults, or, when ``resume`` is true, the saved run's values
      (``<output>/checkpoint/config.json``), except :data:`NOT_INHERITED`. This is what
      ``dartok train --resume`` does with the options left off its command line, so
      ``train(output="runs/x", resume=True)`` continues the run as ``dartok train -o runs/x
      --resume`` does. Given options that conflict with the saved run are refused later,
      by :func:`check_resume`. Defaults that depend on other options, for a new run:

      - ``data``: ``"seg_folder"`` when ``data_root`` holds ``images/`` and ``annotations/``,
        ``"folder"`` when it is an ImageFolder (:func:`dartok.data.infer_dataset`), else the
        task's default (``"cluttered_fmnist"``; ``"cluttered_fmnist_seg"`` for ``task``
        ``"segmentation"``);
      - ``warmup_epochs``: 1, but ``epochs - 1`` when that is less (a 1-epoch run has no warm-up).

      A given ``data_root`` is made absolute (so a run resumes from any working directory).

    Raises:
        TypeError: a keyword that is not a :class:`TrainConfig` field.
        FileNotFoundError / ValueError: ``resume`` without a resumable checkpoint (see
            :func:`load_resume_config`).
    """
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise TypeError(f"unknown training options {unknown}; see TrainConfig")
    if isinstance(cfg, TrainConfig):
        return dataclasses.replace(cfg, **options) if options else cfg
    given = {k: v for k, v in dict(cfg or {}).items() if k in names}
    given.update(options)
    if isinstance(given.get("data_root"), (str, os.PathLike)) and str(given["data_root"]):
        given["data_root"] = os.path.abspath(os.path.expanduser(os.fspath(given["data_root"])))
    if given.get("resume"):
        output = given.get("output", TrainConfig.output)
        saved = load_resume_config(Path(output) / CHECKPOINT_DIRNAME)["train"]
        for k, v in saved.items():
            if k in names and k not in NOT_INHERITED and k not in given:
                given[k] = v
    if "data" not in given:
        task = TASKS.get(given.get("task") or "")
        default = task.default_data if task is not None else TrainConfig.data
        if given.get("data_root"):
            from ..data.registry import infer_dataset

            given["data"] = infer_dataset(given["data_root"], default)
        elif task is not None:
            given["data"] = default
    epochs = given.get("epochs", TrainConfig.epochs)
    if "warmup_epochs" not in given and isinstance(epochs, int) and epochs <= TrainConfig.warmup_epochs:
        given["warmup_epochs"] = max(0, epochs - 1)
    return TrainConfig(**given)
