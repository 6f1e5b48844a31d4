"""Training / evaluation engine, generic over timm classification models (DART or plain).

Single process for now, but structured for DDP (torchrun) later: device selection goes
through :func:`select_device`, rank information through :func:`dist_info`, and all logging
and checkpointing is guarded by :func:`is_main_process`.

Main entry points:

* :class:`TrainConfig` -- every option of a run (what ``dartok train`` fills in).
* :func:`train` -- full training loop: timm AdamW + per-update cosine schedule, label
  smoothing, gradient clipping, bf16 autocast, per-epoch metrics (``metrics.jsonl``) and
  atomic checkpoints (``<run_dir>/checkpoint``), exact resume.
* :func:`evaluate` -- loss / top-1 / top-5 over a loader.

Determinism: the data order of epoch ``e`` is a function of ``(seed, e)`` only (a
``torch.Generator`` per loader, reseeded each epoch), and the global RNG states (torch CPU
and CUDA, numpy, python) are saved in every checkpoint and restored on resume, so dropout /
drop-path draws continue exactly: 2 epochs straight == 1 epoch + resume, bit for bit.
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
    "select_device",
    "build_model",
    "model_is_dart",
    "model_input_size",
    "prepare_images",
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
]

LOCAL_DATASETS = ("cluttered_fmnist", "fashion_mnist")
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

    Optimization: ``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``warmup_epochs``,
    ``warmup_lr``, ``min_lr``, ``label_smoothing``, ``clip_grad`` (max grad norm, ``None``
    off), ``seed``.

    Runtime: ``num_workers``, ``output`` (run dir), ``resume``, ``amp`` (bf16 autocast),
    ``device`` (``None``: cuda if available else cpu), ``progress`` (tqdm bar),
    ``stop_after`` (stop after this many completed epochs in total, e.g. to split a run
    into chunks; the schedule still spans ``epochs``), ``eval_batch_size`` (``None``: 2x
    ``batch_size``), ``threads`` (``torch.set_num_threads`` for CPU work; ``None``: torch's
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
# process / device helpers (DDP-ready)
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistInfo:
    """Rank information (from the torchrun environment variables; 1 process if unset)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Read ``RANK`` / ``LOCAL_RANK`` / ``WORLD_SIZE`` (torchrun). Defaults: one process."""
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

    Under torchrun, a bare ``"cuda"`` would map to ``cuda:<LOCAL_RANK>``.

    Raises:
        ValueError: unknown device string, or cuda requested but not available.
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
            dev = torch.device("cuda", dist_info().local_rank)
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r} requested but MPS is not available")
    return dev


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
    """Bring a ``B×C×H×W`` batch to the model's ``(C, H, W)``.

    Channels: gray → RGB by repeating, RGB → gray by averaging (RGBA: alpha dropped).
    Size: ``F.interpolate(mode="bilinear", antialias=True, align_corners=False)`` when the
    spatial size differs (e.g. the fixed-grid baseline sees the canvas downsampled to its
    ``sqrt(N)·patch`` input; a DART model sees the full canvas).
    """
    c, h, w = input_size
    if images.ndim != 4:
        raise ValueError(f"expected a B×C×H×W batch, got shape {tuple(images.shape)}")
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
    if name in LOCAL_DATASETS:
        kw.setdefault("channels", cfg.in_chans or 1)
        if num_samples is not None:
            kw["num_samples"] = num_samples
        if name == "cluttered_fmnist":
            if cfg.canvas_size is not None:
                kw["canvas_size"] = cfg.canvas_size
            kw.setdefault("seed", cfg.data_seed)
        elif cfg.canvas_size is not None:
            raise ValueError(f"canvas_size only applies to cluttered_fmnist, not {name!r}")
        if transform is not None:
            kw["transform"] = transform
        return create_dataset(name, cfg.data_root, split, **kw)
    if cfg.canvas_size is not None:
        raise ValueError(f"canvas_size only applies to cluttered_fmnist, not {name!r}")
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
    if isinstance(x, torch.Tensor) and x.ndim == 3 and x.shape[-1] == x.shape[-2]:
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
    if n == 0:
        return {"loss": float("nan"), "top1": float("nan"), "top5": float("nan"), "n": 0}
    return {"loss": loss_sum / n, "top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "n": n}


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
) -> tuple[dict[str, float], int]:
    """One pass over ``loader``; the scheduler steps after every update.

    Returns:
        ``(stats, global_step)`` with stats ``loss`` (mean training loss), ``acc``
        (top-1 % on the training batches), ``n``, ``time_s`` and ``images_per_s``.

    Raises:
        FloatingPointError: the loss became NaN / inf.
    """
    model.train()
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
        with _autocast(device, amp):
            logits = _logits(model(images))
        loss = loss_fn(logits.float(), labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss {loss.item()} at epoch {epoch + 1}, step {global_step}; "
                f"try a lower --lr or --clip-grad"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad is not None:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], clip_grad)
        optimizer.step()
        global_step += 1
        if scheduler is not None:
            scheduler.step_update(num_updates=global_step)
        bs = labels.numel()
        loss_sum += loss.item() * bs
        correct += (logits.argmax(1) == labels).sum().item()
        n += bs
        if bar is not loader and (i % 5 == 0 or i == len(loader) - 1):
            dt = time.perf_counter() - t0
            bar.set_postfix(loss=f"{loss_sum / n:.4f}", acc=f"{100.0 * correct / n:.1f}",
                            img_s=f"{n / max(dt, 1e-9):.0f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    dt = time.perf_counter() - t0
    if bar is not loader:
        bar.close()
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
    epoch_time_s``, plus ``global_step``) and ``checkpoint/`` (atomic, after every epoch;
    see :mod:`dartok.checkpoint`).

    With ``cfg.resume`` the run continues from ``<output>/checkpoint`` exactly where it
    stopped (model, optimizer, scheduler, epoch, step, RNG states). Options recorded in
    the checkpoint that differ from ``cfg`` (except :attr:`TrainConfig.RESUMABLE_CHANGES`)
    raise :class:`ResumeConflictError`. Without ``cfg.resume`` an existing checkpoint in
    the run dir is an error (nothing is overwritten).

    Returns:
        dict with ``epoch`` (completed), ``global_step``, ``best_top1``, ``metrics`` (last
        epoch's record, or ``None`` if no epoch ran), ``test`` (final evaluation),
        ``checkpoint`` (path), ``run_dir`` and ``model`` (the trained module, on its device).
    """
    if not isinstance(cfg, TrainConfig):
        cfg = TrainConfig.from_dict(cfg)
    cfg.validate()
    info = dist_info()
    if info.world_size > 1:
        raise NotImplementedError("distributed (DDP) training is not implemented yet; run a single process")
    main = info.is_main
    device = select_device(cfg.device)
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

    # ---- model ----
    model_kwargs = dict(cfg.model_kwargs)
    model_kwargs.setdefault("num_classes", num_classes)
    model_kwargs.setdefault("in_chans", in_chans)
    if "img_size" not in model_kwargs and cfg.model.startswith("dart_"):
        side = _square_side(train_ds)
        if side is not None:  # DART sees the full canvas (any size works); record it
            model_kwargs["img_size"] = side
    model = build_model(cfg.model, num_tokens=cfg.num_tokens, **model_kwargs)
    full_model_kwargs = dict(model_kwargs, num_tokens=cfg.num_tokens)
    input_size = model_input_size(model)
    is_dart = model_is_dart(model)
    model.to(device)

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
    if cfg.data in LOCAL_DATASETS:
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

    g_train = torch.Generator()
    g_eval = torch.Generator()
    train_loader = build_loader(train_ds, cfg.batch_size, shuffle=True, num_workers=cfg.num_workers,
                                drop_last=len(train_ds) >= 2 * cfg.batch_size, generator=g_train, device=device)
    eval_bs = cfg.eval_batch_size or 2 * cfg.batch_size
    test_loader = build_loader(test_ds, eval_bs, shuffle=False, num_workers=cfg.num_workers,
                               generator=g_eval, device=device)
    updates_per_epoch = len(train_loader)

    # ---- optimizer / schedule / loss (timm factories) ----
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    optimizer = create_optimizer_v2(model, opt="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler, _ = create_scheduler_v2(
        optimizer, sched="cosine", num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
        warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr, step_on_epochs=False, updates_per_epoch=updates_per_epoch,
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    start_epoch = 0
    global_step = 0
    best_top1 = float("-inf")
    last_metrics: dict[str, Any] | None = None
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
        set_rng_state(rng)
        _log(f"resumed {str(ckpt_dir)!r} at epoch {start_epoch}/{cfg.epochs}, step {global_step}")

    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        n_params = sum(p.numel() for p in model.parameters())
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        _log(
            f"model {cfg.model} ({'DART' if is_dart else 'fixed grid'}, input {input_size}, "
            f"{n_params / 1e6:.2f}M params, {n_train / 1e6:.2f}M trainable) | data {cfg.data}: "
            f"{len(train_ds)} train / {len(test_ds)} test | device {device}"
            + (" bf16" if cfg.amp else "")
        )

    stop_at = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, cfg.stop_after)
    test_stats: dict[str, float] | None = None
    for epoch in range(start_epoch, stop_at):
        t_epoch = time.perf_counter()
        g_train.manual_seed(epoch_seed(cfg.seed, epoch))
        g_eval.manual_seed(epoch_seed(cfg.seed, 0, stream=1))
        tr, global_step = train_one_epoch(
            model, train_loader, optimizer, scheduler, loss_fn, device, epoch=epoch, global_step=global_step,
            input_size=input_size, amp=cfg.amp, clip_grad=cfg.clip_grad, progress=cfg.progress,
            num_epochs=cfg.epochs,
        )
        test_stats = evaluate(model, test_loader, device, amp=cfg.amp, input_size=input_size, progress=cfg.progress)
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
        }
        if main:
            _append_jsonl(metrics_path, last_metrics)
            _log(
                f"epoch {epoch + 1}/{cfg.epochs}  train_loss {tr['loss']:.4f}  train_acc {tr['acc']:.2f}  "
                f"test_loss {test_stats['loss']:.4f}  test_top1 {test_stats['top1']:.2f}  "
                f"test_top5 {test_stats['top5']:.2f}  lr {last_metrics['lr']:.2e}  "
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
                "versions": _versions(),
            }
            train_state = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch + 1,
                "global_step": global_step,
                "best_top1": best_top1,
                "rng": get_rng_state(),
            }
            ckpt.save_checkpoint(ckpt_dir, model, config, train_state)

    completed = max(start_epoch, stop_at)
    if test_stats is None:  # nothing trained in this call (already complete): report a fresh eval
        g_eval.manual_seed(epoch_seed(cfg.seed, 0, stream=1))
        rng = get_rng_state()
        test_stats = evaluate(model, test_loader, device, amp=cfg.amp, input_size=input_size, progress=False)
        set_rng_state(rng)
    return {
        "epoch": completed,
        "global_step": global_step,
        "best_top1": best_top1 if math.isfinite(best_top1) else None,
        "metrics": last_metrics,
        "test": test_stats,
        "checkpoint": str(ckpt_dir),
        "run_dir": str(run_dir),
        "model": model,
    }


def _versions() -> dict[str, str]:
    import timm

    try:
        from . import __version__ as dv
    except ImportError:  # pragma: no cover
        dv = "?"
    return {"dartok": dv, "timm": timm.__version__, "torch": torch.__version__}
