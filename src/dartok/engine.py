"""Training / evaluation engine, generic over timm classification models (DART or plain).

Main entry points:

* :class:`TrainConfig` -- every option of a run (what ``dartok train`` fills in).
* :func:`train` -- full training loop: timm AdamW + per-update cosine schedule, label
  smoothing, gradient clipping, bf16 autocast, optional EMA of the weights, per-epoch
  metrics (``metrics.jsonl``) and atomic checkpoints (``<run_dir>/checkpoint``), exact
  resume; one process or many (``torch.distributed``, launched by ``torchrun``).
* :func:`evaluate` -- loss / top-1 / top-5 over a loader (summed over ranks on request).

Multi-process training (DDP)
----------------------------
Launch the same ``dartok train`` command under ``torchrun``; every process reads
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` / ``MASTER_PORT`` from the
environment torchrun sets up::

    # one machine, 4 processes (4 GPUs -> cuda:LOCAL_RANK each, NCCL; or CPU -> gloo)
    torchrun --standalone --nproc_per_node=4 $(which dartok) train --batch-size 256 -o runs/x
    python -m torch.distributed.run --standalone --nproc_per_node=4 -m dartok.cli train ...
    # two machines, 8 GPUs each (run on both, --node_rank=0 / 1; MASTER = node 0's address)
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --master_addr=$MASTER --master_port=29500 \
        $(which dartok) train --batch-size 1024 -o /shared/runs/x
    # CPU threads per process: --threads 1 (torchrun also sets OMP_NUM_THREADS=1 by default)

* Backend: NCCL when the device is CUDA (``cuda:<LOCAL_RANK>``), gloo otherwise (e.g.
  ``--device cpu``). An already initialized default process group is reused.
* ``--batch-size`` is the GLOBAL batch: each of the ``K`` processes gets ``batch_size / K``
  samples per step (an error if not divisible). The data order is a function of ``(seed,
  epoch)`` only: each global batch of the seeded permutation is cut into ``K`` contiguous
  shards (:class:`ShardedBatchSampler`), so the union over ranks of the step-``i`` batches
  is exactly the step-``i`` batch of a 1-process run, and the schedule (steps per epoch)
  does not depend on ``K``. A last partial batch (kept when the training set holds fewer
  than two global batches) is split as evenly as possible and every rank's loss is scaled
  so the all-reduced gradient is still the mean over the whole global batch.
* Gradients are averaged by ``DistributedDataParallel``; evaluation shards the test set
  without padding (contiguous, unequal shards) and sums loss / correct / count over ranks,
  so test metrics cover every test image exactly once.
* Rank 0 alone logs, writes ``metrics.jsonl`` and the checkpoint (the bare model's
  weights, no ``module.`` prefix); the other ranks wait on a barrier. All ranks read the
  checkpoint on ``--resume``: with several machines the run directory must be on a shared
  filesystem.
* ``--resume`` works across a changed world size (e.g. 2 processes -> 1 -> 2): the weights,
  optimizer, schedule and data order continue as they would have. Each rank's RNG
  streams (dropout / drop-path) are saved too and restored for ranks that existed before;
  ranks that did not are seeded from ``(seed, rank, epoch)``.

Determinism: the data order of epoch ``e`` is a function of ``(seed, e)`` only (a
``torch.Generator`` per loader, reseeded each epoch), and the global RNG states (torch CPU
and CUDA, numpy, python) are saved in every checkpoint and restored on resume, so dropout /
drop-path draws continue exactly: 2 epochs straight == 1 epoch + resume, bit for bit (same
world size). Rank ``r > 0`` draws from its own RNG streams (seeded from ``(seed, r)``), so
with dropout / drop-path a K-process run is not draw-for-draw a 1-process run; without
them it matches up to float summation order.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import checkpoint as ckpt

__all__ = [
    "TrainConfig",
    "DistInfo",
    "dist_info",
    "is_main_process",
    "init_distributed",
    "ShardedBatchSampler",
    "shard_indices",
    "select_device",
    "build_model",
    "model_is_dart",
    "model_input_size",
    "prepare_images",
    "build_optimization",
    "build_dataset",
    "build_loader",
    "epoch_seed",
    "get_rng_state",
    "set_rng_state",
    "evaluate",
    "train_one_epoch",
    "train",
    "ResumeConflictError",
    "LOCAL_DATASETS",
    "VIDEO_DATASETS",
]

LOCAL_DATASETS = ("cluttered_fmnist", "fashion_mnist", "moving_fmnist", "moving_cluttered_fmnist")
"""Datasets generated here from Fashion-MNIST: tensors in [0, 1], 1 channel by default."""
VIDEO_DATASETS = ("moving_fmnist", "moving_cluttered_fmnist", "video_folder", "ssv2")
"""Datasets of clips (``C×T×H×W`` tensors), created by :func:`dartok.video_data.create_video_dataset`."""
_CANVAS_DATASETS = ("cluttered_fmnist", "moving_fmnist", "moving_cluttered_fmnist")
METRICS_NAME = "metrics.jsonl"
CHECKPOINT_DIRNAME = "checkpoint"


class ResumeConflictError(ValueError):
    """Raised when ``--resume`` is asked with options that conflict with the saved run."""


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """All options of a training run (serialized into the checkpoint's ``config.json``).

    Model: ``model`` (name for :func:`dartok.models.create_model`), ``num_tokens``,
    ``model_kwargs`` (extra kwargs, e.g. scorer options), ``num_classes`` / ``in_chans``
    (``None``: inferred from the data -- 10 classes and 1 channel for the Fashion-MNIST
    datasets, 3 channels otherwise).

    Data: ``data`` (``"cluttered_fmnist"``, ``"fashion_mnist"``, or a timm / ImageFolder
    name), ``data_root``, ``canvas_size`` (cluttered), ``train_samples`` / ``test_samples``
    (``None``: whole split), ``data_kwargs`` (extra dataset kwargs), ``data_seed``.

    Optimization: ``epochs``, ``batch_size`` (the GLOBAL batch: split evenly across the
    processes of a distributed run), ``lr``, ``weight_decay``, ``warmup_epochs``,
    ``warmup_lr``, ``min_lr``, ``label_smoothing``, ``clip_grad`` (max grad norm, ``None``
    off), ``seed``, ``model_ema`` (keep an exponential moving average of the weights, as
    DeiT does, with ``timm.utils.ModelEmaV3``; evaluated and checkpointed alongside),
    ``model_ema_decay``.

    Runtime: ``num_workers``, ``output`` (run dir), ``resume``, ``amp`` (bf16 autocast),
    ``device`` (``None``: cuda if available else cpu), ``progress`` (tqdm bar),
    ``stop_after`` (stop after this many completed epochs in total, e.g. to split a run
    into chunks; the schedule still spans ``epochs``), ``eval_batch_size`` (global like
    ``batch_size``; ``None``: 2x ``batch_size``), ``threads`` (``torch.set_num_threads`` for CPU work; ``None``: torch's
    default. On a small, shared CPU ``1`` can be much faster: with 2 intra-op threads a
    co-running process stalls every OpenMP barrier).
    """

    model: str = "dart_vit_micro_patch8"
    num_tokens: int | None = None
    model_kwargs: dict = field(default_factory=dict)
    num_classes: int | None = None
    in_chans: int | None = None
    data: str = "cluttered_fmnist"
    data_root: str | None = None
    canvas_size: int | None = None
    train_samples: int | None = None
    test_samples: int | None = None
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
    clip_grad: float | None = None
    seed: int = 0
    model_ema: bool = False
    model_ema_decay: float = 0.99996
    num_workers: int = 0
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
         "threads"}
    )

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict (JSON-serializable) form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Build from a dict, ignoring unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid option."""
        def pos(name, v, allow_none=False, zero=False):
            if v is None and allow_none:
                return
            if v is None or (v < 0 if zero else v <= 0):
                raise ValueError(f"{name} must be {'>= 0' if zero else '> 0'}, got {v!r}")
        pos("epochs", self.epochs)
        pos("batch_size", self.batch_size)
        pos("eval_batch_size", self.eval_batch_size, allow_none=True)
        pos("lr", self.lr)
        pos("weight_decay", self.weight_decay, zero=True)
        pos("warmup_epochs", self.warmup_epochs, zero=True)
        pos("warmup_lr", self.warmup_lr, zero=True)
        pos("min_lr", self.min_lr, zero=True)
        pos("num_workers", self.num_workers, zero=True)
        pos("num_tokens", self.num_tokens, allow_none=True)
        pos("num_classes", self.num_classes, allow_none=True)
        pos("canvas_size", self.canvas_size, allow_none=True)
        pos("train_samples", self.train_samples, allow_none=True)
        pos("test_samples", self.test_samples, allow_none=True)
        pos("clip_grad", self.clip_grad, allow_none=True)
        pos("stop_after", self.stop_after, allow_none=True)
        pos("threads", self.threads, allow_none=True)
        if self.in_chans is not None and self.in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {self.in_chans!r}")
        if not 0.0 <= self.model_ema_decay < 1.0:
            raise ValueError(f"model_ema_decay must be in [0, 1), got {self.model_ema_decay!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs})")
        if not isinstance(self.model_kwargs, dict):
            raise ValueError(f"model_kwargs must be a dict, got {type(self.model_kwargs).__name__}")
        if not isinstance(self.data_kwargs, dict):
            raise ValueError(f"data_kwargs must be a dict, got {type(self.data_kwargs).__name__}")
        if not self.model:
            raise ValueError("model name is empty")


# --------------------------------------------------------------------------------------
# process / device helpers
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistInfo:
    """Rank information of this process (1 process, rank 0, unless launched by torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def dist_info() -> DistInfo:
    """Rank, local rank and world size of this process.

    From the initialized default process group if there is one, else from torchrun's
    ``RANK`` / ``LOCAL_RANK`` / ``WORLD_SIZE`` environment variables (defaults: one process).
    """
    if _dist_ready():
        rank = torch.distributed.get_rank()
        return DistInfo(rank=rank, local_rank=int(os.environ.get("LOCAL_RANK", rank)),
                        world_size=torch.distributed.get_world_size())
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
    )


def is_main_process() -> bool:
    """True on the process that logs and writes checkpoints (rank 0)."""
    return dist_info().is_main


def select_device(name: str | None = None) -> torch.device:
    """``name`` if given (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``), else cuda if available, else cpu.

    A bare ``"cuda"`` maps to ``cuda:<LOCAL_RANK>`` (torchrun: one GPU per process), or to
    ``cuda:0`` when the process sees a single GPU outside torchrun (e.g. a scheduler that
    sets ``CUDA_VISIBLE_DEVICES`` per process). Two ranks never share a GPU (NCCL refuses).

    Raises:
        ValueError: unknown device string, cuda requested but not available, or fewer
            visible GPUs than local processes.
    """
    if name is None or name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"invalid device {name!r}: {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        if dev.index is None:
            local, count = dist_info().local_rank, torch.cuda.device_count()
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 0))  # set by torchrun
            if local < count:
                dev = torch.device("cuda", local)
            elif count == 1 and local_world <= 1:  # one GPU bound to each process by the scheduler
                dev = torch.device("cuda", 0)
            else:
                raise ValueError(f"local rank {local} has no GPU of its own ({count} visible); start at most "
                                 f"{count} processes per node, or pass --device cpu")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r} requested but MPS is not available")
    return dev


def init_distributed(device: torch.device) -> bool:
    """Join the default process group of a torchrun launch, if this is one and not done yet.

    Backend NCCL for a CUDA ``device`` (which becomes the current device), gloo otherwise;
    rendezvous ``env://`` (``MASTER_ADDR`` / ``MASTER_PORT`` / ``RANK`` / ``WORLD_SIZE``).

    Returns:
        True if this call created the group (the caller then destroys it when done).
    """
    info = dist_info()
    if not info.distributed or _dist_ready():
        return False
    if not torch.distributed.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={info.world_size} but {', '.join(missing)} not set; launch with torchrun")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return True


def _barrier(device: torch.device) -> None:
    if not _dist_ready():
        return
    if device.type == "cuda" and torch.distributed.get_backend() == "nccl":
        torch.distributed.barrier(device_ids=[device.index])
    else:
        torch.distributed.barrier()


def _all_reduce_sum(values: list[float], device: torch.device | str) -> list[float]:
    """Sum ``values`` over all ranks (identity without a process group)."""
    if not _dist_ready() or torch.distributed.get_world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t.tolist()


def _autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# --------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------
def build_model(name: str, num_tokens: int | None = None, **kwargs: Any) -> nn.Module:
    """Create a model with :func:`dartok.models.create_model` (DART or plain timm ViT)."""
    from .models import create_model

    return create_model(name, num_tokens=num_tokens, **kwargs)


def model_is_dart(model: nn.Module) -> bool:
    """True for DART models (:func:`dartok.models.is_dart`)."""
    from .models import is_dart

    return bool(is_dart(model))


def _first_conv_in_chans(model: nn.Module) -> int | None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return None


def model_input_size(model: nn.Module) -> tuple[int, int, int]:
    """``(C, H, W)`` the model expects, from ``model.pretrained_cfg["input_size"]``.

    ``C`` is taken from ``model.in_chans`` / ``pretrained_cfg`` when consistent with the
    first conv; if the model has an explicit ``in_chans`` attribute it wins.
    """
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = cfg.get("input_size")
    if size is None or len(size) != 3:
        raise ValueError(f"model {type(model).__name__} has no pretrained_cfg['input_size']")
    c, h, w = (int(v) for v in size)
    explicit = getattr(model, "in_chans", None)
    if isinstance(explicit, int):
        c = explicit
    else:
        conv_c = _first_conv_in_chans(getattr(model, "patch_embed", model))
        if conv_c is not None:
            c = conv_c
    return c, h, w


def prepare_images(images: torch.Tensor, input_size: tuple[int, int, int]) -> torch.Tensor:
    """Bring a ``B×C×H×W`` batch (or a ``B×C×T×H×W`` batch of clips) to the model's ``(C, H, W)``.

    Clips are converted frame by frame (the frame count is kept).

    Channels: gray → RGB by repeating, RGB → gray by averaging (RGBA: alpha dropped).
    Size: ``F.interpolate(mode="bilinear", antialias=True, align_corners=False)`` when the
    spatial size differs (e.g. the fixed-grid baseline sees the canvas downsampled to its
    ``sqrt(N)·patch`` input; a DART model sees the full canvas).
    """
    c, h, w = input_size
    if images.ndim == 5:  # clips: B×C×T×H×W → (B·T)×C×H×W and back
        b, _, t = images.shape[:3]
        frames = prepare_images(images.transpose(1, 2).flatten(0, 1), input_size)
        return frames.unflatten(0, (b, t)).transpose(1, 2).contiguous()
    if images.ndim != 4:
        raise ValueError(f"expected a B×C×H×W batch (or B×C×T×H×W clips), got shape {tuple(images.shape)}")
    ci = images.shape[1]
    if ci != c:
        if ci == 4:
            images, ci = images[:, :3], 3
        if ci == c:
            pass
        elif ci == 1 and c == 3:
            images = images.expand(-1, 3, -1, -1)
        elif ci == 3 and c == 1:
            images = images.mean(1, keepdim=True)
        else:
            raise ValueError(f"cannot convert {ci}-channel images to the model's {c} channels")
    if tuple(images.shape[-2:]) != (h, w):
        if not images.is_floating_point():
            images = images.float()
        images = F.interpolate(images, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return images.contiguous()


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------
class _ConvertMode:
    """PIL mode conversion (picklable; runs before timm's transform)."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, img):
        return img.convert(self.mode) if hasattr(img, "convert") and img.mode != self.mode else img

    def __repr__(self) -> str:
        return f"ConvertMode({self.mode!r})"


def _num_classes_of(dataset: Dataset) -> int | None:
    for attr in ("classes",):
        v = getattr(dataset, attr, None)
        if v is not None and len(v):
            return len(v)
    reader = getattr(dataset, "reader", None) or getattr(dataset, "parser", None)
    ctoi = getattr(reader, "class_to_idx", None)
    if ctoi:
        return len(ctoi)
    return None


def pil_transform(model: nn.Module, is_training: bool, in_chans: int):
    """timm transform for PIL datasets: mode conversion + ``timm.data.create_transform``.

    Uses ``timm.data.resolve_data_config({}, model=model)`` (input size, interpolation,
    crop) with mean / std trimmed to ``in_chans``.
    """
    import timm.data
    from torchvision import transforms as T

    dc = timm.data.resolve_data_config({}, model=model)
    dc["input_size"] = model_input_size(model)
    dc["mean"] = tuple(dc["mean"])[:in_chans] if len(dc["mean"]) >= in_chans else tuple(dc["mean"]) * in_chans
    dc["std"] = tuple(dc["std"])[:in_chans] if len(dc["std"]) >= in_chans else tuple(dc["std"]) * in_chans
    tf = timm.data.create_transform(**dc, is_training=is_training)
    return T.Compose([_ConvertMode("L" if in_chans == 1 else "RGB"), tf]), dc


def build_dataset(cfg: TrainConfig, split: str, *, num_samples: int | None = None, transform=None) -> Dataset:
    """Create the train or test dataset of a run with :func:`dartok.data.create_dataset`.

    Local datasets get ``canvas_size`` (cluttered only), ``num_samples``, ``seed`` (=
    ``cfg.data_seed``, cluttered only), ``channels`` (= ``cfg.in_chans`` or 1) and
    ``cfg.data_kwargs``; others get ``transform`` and ``cfg.data_kwargs``, and their
    ``"test"`` split is timm's ``"validation"`` (``val``, ``valid``, ... folders) unless
    ``<data_root>/test`` exists.
    """
    from .data import create_dataset

    name = cfg.data
    kw = dict(cfg.data_kwargs)
    if name in LOCAL_DATASETS or name in VIDEO_DATASETS:  # tensor datasets: dartok's own factories
        if name in VIDEO_DATASETS:
            from .video_data import create_video_dataset as factory
        else:
            factory = create_dataset
        kw.setdefault("channels", cfg.in_chans or (1 if name in LOCAL_DATASETS else 3))
        if name in LOCAL_DATASETS and num_samples is not None:
            kw["num_samples"] = num_samples
        if name in _CANVAS_DATASETS:
            if cfg.canvas_size is not None:
                kw["canvas_size"] = cfg.canvas_size
            kw.setdefault("seed", cfg.data_seed)
        elif cfg.canvas_size is not None:
            raise ValueError(f"canvas_size only applies to {list(_CANVAS_DATASETS)}, not {name!r}")
        if transform is not None:
            kw["transform"] = transform
        ds = factory(name, cfg.data_root, split, **kw)
        if name not in LOCAL_DATASETS and num_samples is not None and num_samples < len(ds):
            ds = _Subset(ds, num_samples)
        return ds
    if cfg.canvas_size is not None:
        raise ValueError(f"canvas_size only applies to {list(_CANVAS_DATASETS)}, not {name!r}")
    if split == "test":  # timm's name for the held-out split, unless a 'test' folder exists
        if not (cfg.data_root and os.path.isdir(os.path.join(cfg.data_root, "test"))):
            split = "validation"
    ds = create_dataset(name, cfg.data_root, split, transform=transform, **kw)
    if num_samples is not None and num_samples < len(ds):
        ds = _Subset(ds, num_samples)
    return ds


class _Subset(torch.utils.data.Subset):
    """First ``n`` items of a dataset, forwarding ``transform`` / ``classes``."""

    def __init__(self, dataset: Dataset, n: int):
        super().__init__(dataset, range(n))

    @property
    def classes(self):
        return getattr(self.dataset, "classes", None)

    @property
    def transform(self):
        return getattr(self.dataset, "transform", None)

    @transform.setter
    def transform(self, tf):
        self.dataset.transform = tf


def _square_side(dataset: Dataset) -> int | None:
    """Side of the dataset's first image if it is a square tensor, else None."""
    try:
        x = dataset[0][0]
    except Exception:
        return None
    if isinstance(x, torch.Tensor) and x.ndim in (3, 4) and x.shape[-1] == x.shape[-2]:  # image or C×T×H×W clip
        return int(x.shape[-1])
    return None


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """Seed of the data order of ``epoch``: a function of ``(seed, epoch, stream)`` only.

    ``stream`` separates independent loaders (0: training, 1: evaluation).
    """
    entropy = [int(seed) % 2**32, int(seed) // 2**32 % 2**32, int(epoch) % 2**32, int(stream) % 2**32, 0x5EED]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)


def build_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    num_workers: int = 0,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
) -> DataLoader:
    """A DataLoader with its own ``torch.Generator`` (never touches the global RNG).

    Reseed ``loader.generator`` with :func:`epoch_seed` before each epoch to make the
    order (and worker seeds) a function of ``(seed, epoch)``.
    """
    if generator is None:
        generator = torch.Generator()
        generator.manual_seed(0)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=generator,
        pin_memory=device is not None and device.type == "cuda",
        persistent_workers=False,
    )


class ShardedBatchSampler(torch.utils.data.Sampler):
    """Batches of one rank: each GLOBAL batch of a seeded permutation, cut into rank shards.

    Epoch ``e`` draws the permutation ``torch.randperm(n, generator=g)`` with ``g`` reseeded
    to ``epoch_seed(seed, e)`` by :meth:`set_epoch` (give the same generator to the
    ``DataLoader``; it draws the worker base seed from it first, exactly as a shuffling
    ``DataLoader`` does, so with one process the order is the one :func:`build_loader`
    gives). The permutation is chunked into global batches of ``global_batch_size``
    (``drop_last``: the last partial one is dropped); rank ``r`` of ``K`` gets the
    contiguous slice ``[r*m//K, (r+1)*m//K)`` of each global batch of size ``m``. So:

    * the union over ranks of step ``i``'s batches is step ``i``'s batch of a 1-process
      run, for every ``K`` (full batches: ``global_batch_size / K`` per rank);
    * ``len(sampler)`` (steps per epoch) does not depend on ``K``.

    A partial batch of ``m < K`` samples leaves some ranks with none: they get the batch's
    first sample as padding, with loss weight 0 (see :meth:`plan`) -- every rank must take
    part in each gradient all-reduce.

    ``shuffle=False`` keeps the dataset order (no generator needed).
    """

    def __init__(
        self,
        dataset_len: int,
        global_batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        generator: torch.Generator | None = None,
    ):
        if global_batch_size <= 0 or world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"bad sampler arguments: batch {global_batch_size}, rank {rank}, world {world_size}")
        if global_batch_size % world_size:
            raise ValueError(f"global batch size {global_batch_size} is not divisible by the number of "
                             f"processes {world_size}")
        self.n = int(dataset_len)
        self.batch_size = int(global_batch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self.shuffle, self.drop_last = shuffle, drop_last
        self.seed = seed
        self.generator = generator if generator is not None else torch.Generator()
        self.epoch = 0
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Reseed the generator for ``epoch`` (call before iterating, like ``DistributedSampler``)."""
        self.epoch = int(epoch)
        self.generator.manual_seed(epoch_seed(self.seed, self.epoch))

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def _global_sizes(self) -> list[int]:
        sizes = [self.batch_size] * (self.n // self.batch_size)
        if not self.drop_last and self.n % self.batch_size:
            sizes.append(self.n % self.batch_size)
        return sizes

    def _bounds(self, m: int) -> tuple[int, int]:
        return self.rank * m // self.world_size, (self.rank + 1) * m // self.world_size

    def plan(self) -> list[tuple[int, float]]:
        """Per step: ``(real samples of this rank, loss weight)``.

        The weight ``n_rank * K / m`` makes DDP's gradient average over ranks the mean over
        the ``m`` samples of the global batch: 1.0 for even shards, 0.0 for padding.
        """
        out = []
        for m in self._global_sizes():
            lo, hi = self._bounds(m)
            k = hi - lo
            out.append((k, 1.0 if k * self.world_size == m else k * self.world_size / m))
        return out

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator).tolist() if self.shuffle else list(range(self.n))
        start = 0
        for m in self._global_sizes():
            batch = order[start:start + m]
            start += m
            lo, hi = self._bounds(m)
            yield batch[lo:hi] if hi > lo else batch[:1]


def shard_indices(n: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous, unpadded share of ``range(n)`` (sizes differ by at most 1)."""
    return range(rank * n // world_size, (rank + 1) * n // world_size)


def _rank_seed(seed: int, rank: int, epoch: int = 0) -> int:
    """Seed of the global RNG streams of rank ``rank > 0`` (rank 0 keeps ``seed`` itself)."""
    return epoch_seed(seed, epoch, stream=1000 + rank) % 2**32


# --------------------------------------------------------------------------------------
# RNG state
# --------------------------------------------------------------------------------------
def get_rng_state() -> dict[str, Any]:
    """Global RNG states (torch CPU, all CUDA devices, numpy, python) as weights_only-safe data."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU + CUDA), numpy and python ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)


# --------------------------------------------------------------------------------------
# evaluation / training steps
# --------------------------------------------------------------------------------------
def _logits(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if isinstance(out, Mapping) and "logits" in out:
        return out["logits"]
    raise TypeError(f"model returned {type(out).__name__}; expected logits tensor")


def _progress(iterable, *, enabled: bool, desc: str, total: int | None = None):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, dynamic_ncols=True, leave=False, file=sys.stderr)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str = "cpu",
    amp: bool = False,
    *,
    input_size: tuple[int, int, int] | None = None,
    progress: bool = False,
    all_reduce: bool = False,
) -> dict[str, float]:
    """Evaluate a classifier.

    Args:
        model: module mapping ``B×C×H×W`` images to ``B×K`` logits.
        loader: iterable of ``(images, labels)`` batches.
        device: device to run on.
        amp: bf16 autocast.
        input_size: ``(C, H, W)`` to bring batches to (see :func:`prepare_images`);
            default: :func:`model_input_size` if the model has a ``pretrained_cfg``, else
            batches are used as they are.
        progress: show a tqdm bar.
        all_reduce: in a distributed run, sum loss / hits / count over all ranks (each
            rank passes its own shard of the data, e.g. :func:`shard_indices`; every rank
            must call this, with its own ``loader``, possibly empty). Pass the bare model,
            not the DDP wrapper.

    Returns:
        ``{"loss": mean cross-entropy (no label smoothing), "top1": %, "top5": %, "n": count}``.
        ``top5`` uses ``min(5, K)`` classes.
    """
    device = torch.device(device)
    if input_size is None:
        try:
            input_size = model_input_size(model)
        except ValueError:
            input_size = None
    was_training = model.training
    model.eval()
    loss_sum = 0.0
    c1 = c5 = 0
    n = 0
    try:
        for images, labels in _progress(loader, enabled=progress and is_main_process(), desc="eval"):
            images = images.to(device, non_blocking=True)
            labels = torch.as_tensor(labels).to(device, non_blocking=True)
            if input_size is not None:
                images = prepare_images(images, input_size)
            with _autocast(device, amp):
                logits = _logits(model(images))
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            k = min(5, logits.shape[1])
            topk = logits.topk(k, dim=1).indices
            hit = topk.eq(labels[:, None])
            c1 += hit[:, :1].any(1).sum().item()
            c5 += hit.any(1).sum().item()
            n += labels.numel()
    finally:
        model.train(was_training)
    if all_reduce:
        loss_sum, c1, c5, n = _all_reduce_sum([loss_sum, c1, c5, n], device)
        n = int(round(n))
    if n == 0:
        return {"loss": float("nan"), "top1": float("nan"), "top5": float("nan"), "n": 0}
    return {"loss": loss_sum / n, "top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "n": n}


def build_optimization(model: nn.Module, cfg: TrainConfig, updates_per_epoch: int):
    """The recipe's optimizer, schedule and loss, from timm's factories.

    AdamW (``cfg.lr``, ``cfg.weight_decay``; timm leaves norms, biases and the parameters in
    ``model.no_weight_decay()`` undecayed); a cosine from ``cfg.lr`` to ``cfg.min_lr`` over all
    ``cfg.epochs · updates_per_epoch`` updates, whose first ``cfg.warmup_epochs`` epochs are
    replaced by a linear warmup from ``cfg.warmup_lr`` (timm's, not a prefix), stepped per
    update (``scheduler.step_update``); cross-entropy with ``cfg.label_smoothing``.

    Returns:
        ``(optimizer, scheduler, loss_fn)``.
    """
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    optimizer = create_optimizer_v2(model, opt="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler, _ = create_scheduler_v2(
        optimizer, sched="cosine", num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
        warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr, step_on_epochs=False, updates_per_epoch=updates_per_epoch,
    )
    return optimizer, scheduler, nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    device: torch.device,
    *,
    epoch: int,
    global_step: int,
    input_size: tuple[int, int, int],
    amp: bool = False,
    clip_grad: float | None = None,
    progress: bool = True,
    num_epochs: int | None = None,
    model_ema: nn.Module | None = None,
    batch_plan: list[tuple[int, float]] | None = None,
) -> tuple[dict[str, float], int]:
    """One pass over ``loader``; the scheduler steps after every update.

    In a distributed run ``model`` is the ``DistributedDataParallel`` wrapper and
    ``batch_plan`` is :meth:`ShardedBatchSampler.plan`: per step, this rank's number of
    real samples and its loss weight (uneven / padded shards of a last partial batch).
    The statistics are then summed over ranks, and a non-finite loss on any rank stops
    all of them.

    Args:
        model_ema: a ``timm.utils.ModelEmaV3`` updated after every optimizer step.

    Returns:
        ``(stats, global_step)`` with stats ``loss`` (mean training loss), ``acc``
        (top-1 % on the training batches), ``n``, ``time_s`` and ``images_per_s``.

    Raises:
        FloatingPointError: the loss became NaN / inf.
    """
    from .checkpoint import unwrap_model

    model.train()
    distributed = _dist_ready() and torch.distributed.get_world_size() > 1
    loss_sum = 0.0
    correct = 0
    n = 0
    t0 = time.perf_counter()
    desc = f"epoch {epoch + 1}" + (f"/{num_epochs}" if num_epochs else "")
    bar = _progress(loader, enabled=progress and is_main_process(), desc=desc, total=len(loader))
    for i, (images, labels) in enumerate(bar):
        images = images.to(device, non_blocking=True)
        labels = torch.as_tensor(labels).to(device, non_blocking=True)
        images = prepare_images(images, input_size)
        n_real, weight = batch_plan[i] if batch_plan is not None else (labels.numel(), 1.0)
        with _autocast(device, amp):
            logits = _logits(model(images))
        loss = loss_fn(logits.float(), labels)
        bad = not torch.isfinite(loss)
        if distributed:  # every rank must stop together, or the others hang in the all-reduce
            bad = _all_reduce_sum([float(bad)], device)[0] > 0
        if bad:
            raise FloatingPointError(
                f"non-finite training loss {loss.item()} at epoch {epoch + 1}, step {global_step}; "
                f"try a lower --lr or --clip-grad"
            )
        optimizer.zero_grad(set_to_none=True)
        (loss if weight == 1.0 else loss * weight).backward()
        if clip_grad is not None:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], clip_grad)
        optimizer.step()
        global_step += 1
        if model_ema is not None:
            model_ema.update(unwrap_model(model), step=global_step)
        if scheduler is not None:
            scheduler.step_update(num_updates=global_step)
        bs = n_real
        if bs:
            loss_sum += loss.item() * bs
            correct += (logits[:bs].argmax(1) == labels[:bs]).sum().item()
        n += bs
        if bar is not loader and (i % 5 == 0 or i == len(loader) - 1):
            dt = time.perf_counter() - t0
            bar.set_postfix(loss=f"{loss_sum / max(n, 1):.4f}", acc=f"{100.0 * correct / max(n, 1):.1f}",
                            img_s=f"{n / max(dt, 1e-9):.0f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    if bar is not loader:
        bar.close()
    if distributed:
        loss_sum, correct, n = _all_reduce_sum([loss_sum, correct, n], device)
        n = int(round(n))
    dt = time.perf_counter() - t0
    stats = {
        "loss": loss_sum / max(n, 1),
        "acc": 100.0 * correct / max(n, 1),
        "n": n,
        "time_s": dt,
        "images_per_s": n / max(dt, 1e-9),
    }
    return stats, global_step


# --------------------------------------------------------------------------------------
# run directory helpers
# --------------------------------------------------------------------------------------
def _append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, default=ckpt._json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _truncate_metrics(path: Path, last_epoch: int) -> None:
    """Drop metrics lines of epochs after ``last_epoch`` (written before a crash)."""
    if not path.is_file():
        return
    keep = []
    changed = False
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                changed = True
                continue
            if isinstance(rec, dict) and rec.get("epoch", 0) > last_epoch:
                changed = True
                continue
            keep.append(line if line.endswith("\n") else line + "\n")
    if changed:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(keep)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Parse ``<run_dir>/metrics.jsonl`` into a list of per-epoch dicts."""
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _check_resume_conflicts(saved: Mapping[str, Any], cfg: TrainConfig, path: Path) -> None:
    current = cfg.to_dict()
    diffs = []
    for k, v in current.items():
        if k in TrainConfig.RESUMABLE_CHANGES or k not in saved:
            continue
        if json.loads(json.dumps(saved[k], default=ckpt._json_default)) != json.loads(
            json.dumps(v, default=ckpt._json_default)
        ):
            diffs.append(f"{k}: checkpoint {saved[k]!r} vs requested {v!r}")
    if diffs:
        raise ResumeConflictError(
            f"cannot resume from {str(path)!r}: the requested options conflict with the saved run ("
            + "; ".join(diffs)
            + "). Use the same options, or a new --output directory."
        )


def _log(msg: str) -> None:
    if is_main_process():
        try:
            from tqdm.auto import tqdm

            tqdm.write(msg, file=sys.stdout)
        except Exception:  # pragma: no cover
            print(msg, flush=True)


# --------------------------------------------------------------------------------------
# the training loop
# --------------------------------------------------------------------------------------
def train(cfg: TrainConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Train (or resume) a run; returns the final summary.

    Writes to ``cfg.output``: ``metrics.jsonl`` (one JSON line per epoch: ``epoch,
    train_loss, train_acc, test_loss, test_top1, test_top5, lr, images_per_s,
    epoch_time_s``, plus ``global_step``, ``world_size`` and, with ``model_ema``,
    ``test_loss_ema, test_top1_ema, test_top5_ema``) and ``checkpoint/`` (atomic, after
    every epoch; see :mod:`dartok.checkpoint`; with ``model_ema`` it also holds
    ``model_ema.safetensors``).

    With ``cfg.resume`` the run continues from ``<output>/checkpoint`` exactly where it
    stopped (model, EMA, optimizer, scheduler, epoch, step, RNG states), also with a
    different number of processes. Options recorded in the checkpoint that differ from
    ``cfg`` (except :attr:`TrainConfig.RESUMABLE_CHANGES`) raise
    :class:`ResumeConflictError`. Without ``cfg.resume`` an existing checkpoint in the run
    dir is an error (nothing is overwritten).

    Distributed: called in every process of a ``torchrun`` launch (see the module
    docstring), it joins / creates the default process group (NCCL on CUDA, gloo on CPU),
    trains with ``DistributedDataParallel`` on ``batch_size / world_size`` samples per rank
    and step, and destroys the group again if it created it. Every rank returns the same
    summary (metrics are reduced over ranks); only rank 0 writes files.

    Returns:
        dict with ``epoch`` (completed), ``global_step``, ``best_top1``, ``metrics`` (last
        epoch's record, or ``None`` if no epoch ran), ``test`` (final evaluation),
        ``checkpoint`` (path), ``run_dir``, ``world_size``, ``model`` (the trained bare
        module, on its device) and, with ``model_ema``, ``test_ema``, ``best_top1_ema`` and
        ``model_ema`` (the EMA module).

    Raises:
        ValueError: invalid options, e.g. a ``batch_size`` not divisible by the number of
            processes.
    """
    if not isinstance(cfg, TrainConfig):
        cfg = TrainConfig.from_dict(cfg)
    cfg.validate()
    info = dist_info()
    if cfg.batch_size % info.world_size:
        raise ValueError(
            f"batch_size {cfg.batch_size} is the global batch size and must be divisible by the number of "
            f"processes ({info.world_size})"
        )
    device = select_device(cfg.device)
    created = init_distributed(device)
    try:
        return _train(cfg, device)
    finally:
        if created and _dist_ready():
            torch.distributed.destroy_process_group()


def _train(cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    from .checkpoint import unwrap_model

    info = dist_info()
    rank, world = info.rank, info.world_size
    main = info.is_main
    run_dir = Path(cfg.output)
    ckpt_dir = run_dir / CHECKPOINT_DIRNAME
    metrics_path = run_dir / METRICS_NAME

    saved_config = None
    if cfg.resume:
        if not ckpt.checkpoint_exists(ckpt_dir):
            raise FileNotFoundError(f"--resume: no checkpoint found at {str(ckpt_dir)!r}")
        saved_config = ckpt.load_config(ckpt_dir)
        saved_train = saved_config.get("train")
        if not isinstance(saved_train, dict):
            raise ValueError(f"checkpoint {str(ckpt_dir)!r} has no training config; it cannot be resumed")
        if saved_config.get("model") != cfg.model:
            raise ResumeConflictError(
                f"cannot resume from {str(ckpt_dir)!r}: it holds model {saved_config.get('model')!r}, "
                f"requested {cfg.model!r}. Use the same --model, or a new --output directory."
            )
        _check_resume_conflicts(saved_train, cfg, ckpt_dir)
    elif ckpt.checkpoint_exists(ckpt_dir):
        raise FileExistsError(
            f"run directory {str(run_dir)!r} already holds a checkpoint; pass --resume to continue it, "
            f"or choose another --output"
        )

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(cfg.seed)

    # ---- data (datasets first: they tell the number of classes) ----
    train_ds = build_dataset(cfg, "train", num_samples=cfg.train_samples)
    test_ds = build_dataset(cfg, "test", num_samples=cfg.test_samples)
    if len(train_ds) == 0:
        raise ValueError("the training set is empty")
    num_classes = cfg.num_classes or _num_classes_of(train_ds)
    if num_classes is None:
        raise ValueError(f"cannot infer the number of classes of dataset {cfg.data!r}; pass num_classes")
    in_chans = cfg.in_chans or (1 if cfg.data in LOCAL_DATASETS else 3)

    # ---- model (same seed on every rank -> same init; DDP broadcasts rank 0's anyway) ----
    model_kwargs = dict(cfg.model_kwargs)
    model_kwargs.setdefault("num_classes", num_classes)
    model_kwargs.setdefault("in_chans", in_chans)
    frames = getattr(train_ds, "num_frames", None) or getattr(getattr(train_ds, "dataset", None), "num_frames", None)
    if cfg.data in VIDEO_DATASETS and frames:
        model_kwargs.setdefault("num_frames", int(frames))  # the clip length the data gives
    if "img_size" not in model_kwargs and cfg.model.startswith("dart_"):
        side = _square_side(train_ds)
        if side is not None:  # DART sees the full canvas (any size works); record it
            model_kwargs["img_size"] = side
    model = build_model(cfg.model, num_tokens=cfg.num_tokens, **model_kwargs)
    full_model_kwargs = dict(model_kwargs, num_tokens=cfg.num_tokens)
    input_size = model_input_size(model)
    is_dart = model_is_dart(model)
    model.to(device)
    if rank > 0:  # own dropout / drop-path / augmentation streams per rank (rank 0 keeps the 1-process ones)
        seed_everything(_rank_seed(cfg.seed, rank))

    data_info: dict[str, Any] = {
        "name": cfg.data,
        "root": cfg.data_root,
        "canvas_size": cfg.canvas_size,
        "kwargs": dict(cfg.data_kwargs),
        "seed": cfg.data_seed,
        "train_samples": cfg.train_samples,
        "test_samples": cfg.test_samples,
        "num_classes": num_classes,
        "in_chans": in_chans,
    }
    if cfg.data in LOCAL_DATASETS or cfg.data in VIDEO_DATASETS:  # tensors already
        normalize = cfg.data_kwargs.get("normalize", False)
        data_info["mean"] = [0.5] * in_chans if normalize else [0.0] * in_chans
        data_info["std"] = [0.5] * in_chans if normalize else [1.0] * in_chans
    else:
        train_tf, dc = pil_transform(model, True, in_chans)
        eval_tf, _ = pil_transform(model, False, in_chans)
        train_ds.transform = train_tf
        test_ds.transform = eval_tf
        data_info["mean"] = list(dc["mean"])
        data_info["std"] = list(dc["std"])

    # training: global batches of the (seed, epoch) permutation, cut into rank shards;
    # evaluation: an unpadded contiguous shard of the test set per rank, metrics summed
    g_train = torch.Generator()
    g_eval = torch.Generator()
    train_sampler = ShardedBatchSampler(
        len(train_ds), cfg.batch_size, rank=rank, world_size=world, shuffle=True,
        drop_last=len(train_ds) >= 2 * cfg.batch_size, seed=cfg.seed, generator=g_train,
    )
    train_loader = DataLoader(train_ds, batch_sampler=train_sampler, num_workers=cfg.num_workers,
                              generator=g_train, pin_memory=device.type == "cuda", persistent_workers=False)
    batch_plan = train_sampler.plan()
    eval_bs = -(-(cfg.eval_batch_size or 2 * cfg.batch_size) // world)
    test_shard = test_ds if world == 1 else torch.utils.data.Subset(test_ds, shard_indices(len(test_ds), rank, world))
    test_loader = build_loader(test_shard, eval_bs, shuffle=False, num_workers=cfg.num_workers,
                               generator=g_eval, device=device)
    updates_per_epoch = len(train_loader)

    optimizer, scheduler, loss_fn = build_optimization(model, cfg, updates_per_epoch)

    start_epoch = 0
    global_step = 0
    best_top1 = float("-inf")
    best_top1_ema = float("-inf")
    last_metrics: dict[str, Any] | None = None
    state: dict[str, Any] | None = None
    if cfg.resume:
        saved_train = saved_config["train"]
        ckpt.load_weights(model, ckpt_dir)
        state = ckpt.load_train_state(ckpt_dir, map_location="cpu")
        try:
            optimizer.load_state_dict(state["optimizer"])
            if saved_train.get("epochs") == cfg.epochs and state.get("scheduler") is not None:
                scheduler.load_state_dict(state["scheduler"])
            start_epoch = int(state["epoch"])
            global_step = int(state["global_step"])
            best_top1 = float(state.get("best_top1", best_top1))
            best_top1_ema = float(state.get("best_top1_ema", best_top1_ema))
            rng = state["rng"]
        except (KeyError, ValueError, RuntimeError, TypeError) as e:
            raise ValueError(
                f"training state {str(ckpt.resolve_checkpoint_dir(ckpt_dir) / ckpt.TRAIN_STATE_NAME)!r} "
                f"does not match this run: {e}"
            ) from None
        if saved_train.get("epochs") != cfg.epochs:
            scheduler.step_update(num_updates=global_step)  # re-derive the lr on the new schedule
        last_metrics = saved_config.get("metrics")
        if main:
            _truncate_metrics(metrics_path, start_epoch)
        rng_ranks = state.get("rng_ranks")
        if isinstance(rng_ranks, (list, tuple)) and rank < len(rng_ranks):
            set_rng_state(rng_ranks[rank])
        elif rank == 0:
            set_rng_state(rng)
        else:  # a rank the saved run did not have
            seed_everything(_rank_seed(cfg.seed, rank, start_epoch))
        saved_world = saved_config.get("world_size", 1)
        _log(f"resumed {str(ckpt_dir)!r} at epoch {start_epoch}/{cfg.epochs}, step {global_step}"
             + (f" ({saved_world} -> {world} processes)" if saved_world != world else ""))

    # ---- EMA of the weights (DeiT: --model-ema); a copy of the bare model, same on every rank ----
    model_ema = None
    if cfg.model_ema:
        from timm.utils import ModelEmaV3

        model_ema = ModelEmaV3(model, decay=cfg.model_ema_decay)
        if cfg.resume:
            ckpt.load_weights(model_ema.module, ckpt_dir, ema=True)

    # ---- DDP: gradients averaged over ranks during backward ----
    train_model: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        with torch.no_grad():  # DDP's gradient buckets want plain strides (DART's prefix pos_embed is a view)
            for p in model.parameters():
                if p.numel() and p.stride() != torch.empty(p.shape).stride():
                    p.data = p.data.clone(memory_format=torch.contiguous_format)
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        n_params = sum(p.numel() for p in model.parameters())
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        _log(
            f"model {cfg.model} ({'DART' if is_dart else 'fixed grid'}, input {input_size}, "
            f"{n_params / 1e6:.2f}M params, {n_train / 1e6:.2f}M trainable) | data {cfg.data}: "
            f"{len(train_ds)} train / {len(test_ds)} test | device {device}"
            + (" bf16" if cfg.amp else "")
            + (f" | {world} processes x {cfg.batch_size // world} = global batch {cfg.batch_size}" if world > 1 else "")
            + (f" | EMA decay {cfg.model_ema_decay}" if model_ema is not None else "")
        )

    def run_eval(progress: bool) -> tuple[dict[str, float], dict[str, float] | None]:
        g_eval.manual_seed(epoch_seed(cfg.seed, 0, stream=1))
        res = evaluate(model, test_loader, device, amp=cfg.amp, input_size=input_size, progress=progress,
                       all_reduce=world > 1)
        res_ema = None
        if model_ema is not None:
            g_eval.manual_seed(epoch_seed(cfg.seed, 0, stream=1))
            res_ema = evaluate(model_ema.module, test_loader, device, amp=cfg.amp, input_size=input_size,
                               progress=progress, all_reduce=world > 1)
        return res, res_ema

    stop_at = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, cfg.stop_after)
    test_stats: dict[str, float] | None = None
    test_ema: dict[str, float] | None = None
    for epoch in range(start_epoch, stop_at):
        t_epoch = time.perf_counter()
        train_sampler.set_epoch(epoch)
        tr, global_step = train_one_epoch(
            train_model, train_loader, optimizer, scheduler, loss_fn, device, epoch=epoch, global_step=global_step,
            input_size=input_size, amp=cfg.amp, clip_grad=cfg.clip_grad, progress=cfg.progress,
            num_epochs=cfg.epochs, model_ema=model_ema, batch_plan=batch_plan,
        )
        test_stats, test_ema = run_eval(cfg.progress)
        best_top1 = max(best_top1, test_stats["top1"])
        last_metrics = {
            "epoch": epoch + 1,
            "train_loss": tr["loss"],
            "train_acc": tr["acc"],
            "test_loss": test_stats["loss"],
            "test_top1": test_stats["top1"],
            "test_top5": test_stats["top5"],
            "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": tr["images_per_s"],
            "epoch_time_s": time.perf_counter() - t_epoch,
            "global_step": global_step,
            "world_size": world,
        }
        if test_ema is not None:
            best_top1_ema = max(best_top1_ema, test_ema["top1"])
            last_metrics.update(test_loss_ema=test_ema["loss"], test_top1_ema=test_ema["top1"],
                                test_top5_ema=test_ema["top5"])
        # every rank's RNG streams, so that each continues exactly on resume
        rng_ranks = [get_rng_state()]
        if world > 1:
            rng_ranks = [None] * world
            torch.distributed.all_gather_object(rng_ranks, get_rng_state())
        if main:
            _append_jsonl(metrics_path, last_metrics)
            _log(
                f"epoch {epoch + 1}/{cfg.epochs}  train_loss {tr['loss']:.4f}  train_acc {tr['acc']:.2f}  "
                f"test_loss {test_stats['loss']:.4f}  test_top1 {test_stats['top1']:.2f}  "
                f"test_top5 {test_stats['top5']:.2f}  "
                + (f"ema_top1 {test_ema['top1']:.2f}  " if test_ema is not None else "")
                + f"lr {last_metrics['lr']:.2e}  "
                f"{tr['images_per_s']:.0f} img/s  {last_metrics['epoch_time_s']:.1f}s"
            )
            config = {
                "model": cfg.model,
                "model_kwargs": full_model_kwargs,
                "input_size": list(input_size),
                "is_dart": is_dart,
                "data": data_info,
                "train": cfg.to_dict(),
                "epoch": epoch + 1,
                "global_step": global_step,
                "metrics": last_metrics,
                "best_top1": best_top1,
                "has_ema": model_ema is not None,
                "world_size": world,
                "versions": _versions(),
            }
            if model_ema is not None:
                config["best_top1_ema"] = best_top1_ema
            train_state = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch + 1,
                "global_step": global_step,
                "best_top1": best_top1,
                "rng": rng_ranks[0],
                "rng_ranks": rng_ranks,
                "world_size": world,
            }
            if model_ema is not None:
                train_state["best_top1_ema"] = best_top1_ema
            ckpt.save_checkpoint(ckpt_dir, model, config, train_state,
                                 ema_model=model_ema.module if model_ema is not None else None)
        _barrier(device)  # the checkpoint is complete when any rank goes on

    completed = max(start_epoch, stop_at)
    if test_stats is None:  # nothing trained in this call (already complete): report a fresh eval
        rng = get_rng_state()
        test_stats, test_ema = run_eval(False)
        set_rng_state(rng)
    summary = {
        "epoch": completed,
        "global_step": global_step,
        "best_top1": best_top1 if math.isfinite(best_top1) else None,
        "metrics": last_metrics,
        "test": test_stats,
        "checkpoint": str(ckpt_dir),
        "run_dir": str(run_dir),
        "world_size": world,
        "model": unwrap_model(model),
    }
    if model_ema is not None:
        summary["test_ema"] = test_ema
        summary["best_top1_ema"] = best_top1_ema if math.isfinite(best_top1_ema) else None
        summary["model_ema"] = model_ema.module
    return summary


def _versions() -> dict[str, str]:
    import timm

    try:
        from . import __version__ as dv
    except ImportError:  # pragma: no cover
        dv = "?"
    return {"dartok": dv, "timm": timm.__version__, "torch": torch.__version__}
