"""A training run from start to end, and the evaluation of a checkpoint.

:func:`train` is a short sequence of named steps: settle the options (:func:`resolve_config`),
check the run directory (new run, or the run to resume), seed, build the data and its task,
the model, the loaders and the optimisation, restore a resumed run's state, wrap for EMA
and DDP, then run the epochs, each ending in an evaluation, a ``metrics.jsonl`` line and an
atomic checkpoint.

Multi-process training (DDP)
----------------------------
Launch the same ``dartok train`` command under ``torchrun``; every process reads
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` / ``MASTER_PORT`` from the
environment torchrun sets up::

    # one machine, 4 processes (4 GPUs -> cuda:LOCAL_RANK each, NCCL; or CPU -> gloo)
    torchrun --standalone --nproc_per_node=4 $(which dartok) train --batch-size 256 -o runs/x
    python -m torch.distributed.run --standalone --nproc_per_node=4 -m dartok.cli train ...
    # two machines, 8 GPUs each (run on both, --node_rank=0 / 1; MASTER = node 0's address)
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --master_addr=$MASTER --master_port=29500 \\
        $(which dartok) train --batch-size 1024 -o /shared/runs/x
    # CPU threads per process: --threads 1 (torchrun also sets OMP_NUM_THREADS=1 by default)

* Backend: NCCL when the device is CUDA (``cuda:<LOCAL_RANK>``), gloo otherwise (e.g.
  ``--device cpu``). An already initialized default process group is reused.
* ``--batch-size`` is the GLOBAL batch: each of the ``K`` processes gets ``batch_size / K``
  samples per step (an error if not divisible). The data order is a function of ``(seed,
  epoch)`` only: each global batch of the seeded permutation is cut into ``K`` contiguous
  shards (:class:`~dartok.train.sampler.ShardedBatchSampler`), so the union over ranks of
  the step-``i`` batches is exactly the step-``i`` batch of a 1-process run, and the
  schedule (steps per epoch) does not depend on ``K``. A last partial batch (kept when the
  training set holds fewer than two global batches) is split as evenly as possible and
  every rank's loss is scaled so the all-reduced gradient is still the mean over the whole
  global batch.
* Gradients are averaged by ``DistributedDataParallel``; evaluation shards the test set
  without padding (contiguous, unequal shards) and sums the task's metric sums over ranks,
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
``torch.Generator`` per loader, reseeded each epoch; with ``repeated_aug`` timm's
``RepeatAugSampler`` seeded with ``epoch_seed(seed, e)``, its ranks taking every K-th sample), and the global RNG states (torch CPU
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
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data.registry import (DataConfig, DatasetInfo, build_dataset, dataset_info, list_datasets, num_classes_of,
                             square_side)
from ..data.transforms import describe_transform, model_input_size, pil_transform
from . import checkpoint as ckpt
from .augment import build_mixup, check_augment, mixup_active, transform_kwargs
from .._io import atomic_write, json_default
from .config import (BEST_DIRNAME, CHECKPOINT_DIRNAME, LOCK_NAME, METRICS_NAME, RunDirBusyError, TrainConfig,
                     check_resume, load_resume_config, resolve_config)
from .distributed import (barrier, dist_info, dist_ready, get_rng_state, init_distributed, log, rank_seed,
                          seed_everything, select_device, set_rng_state)
from .loop import _unpack, build_optimization, evaluate, train_one_epoch
from .sampler import ShardedBatchSampler, build_loader, epoch_seed, shard_indices
from .task import Task, create_task

__all__ = ["describe_data", "evaluate_checkpoint", "evaluate_pretrained", "hold_run_dir", "label_size", "read_metrics", "train"]


# --------------------------------------------------------------------------------------
# metrics.jsonl
# --------------------------------------------------------------------------------------
def _append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, default=json_default) + "\n")
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
        atomic_write(path, "".join(keep))


def _complete_metrics(path: Path, record: Mapping[str, Any] | None, last_epoch: int) -> None:
    """Append the checkpoint's own record of epoch ``last_epoch`` when ``metrics.jsonl`` stops
    before it (a run stopped between its checkpoint and its metrics line)."""
    if not isinstance(record, Mapping) or record.get("epoch") != last_epoch:
        return
    rows = read_metrics(path.parent) if path.is_file() else []
    if not rows or rows[-1].get("epoch", 0) < last_epoch:
        _append_jsonl(path, record)


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Parse ``<run_dir>/metrics.jsonl`` into a list of per-epoch dicts (``[]`` if there is none)."""
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# --------------------------------------------------------------------------------------
# the steps of a run
# --------------------------------------------------------------------------------------
@dataclass
class _Data:
    """The datasets of a run and what they say about it."""

    train: Dataset
    test: Dataset
    info: DatasetInfo
    task: Task
    num_classes: int
    in_chans: int


@dataclass
class _Loaders:
    train: DataLoader
    sampler: Any  # ShardedBatchSampler, or timm's RepeatAugSampler (repeated_aug)
    batch_plan: list[tuple[int, float]]
    test: DataLoader
    eval_generator: torch.Generator
    train_generator: torch.Generator
    seed: int

    def set_epoch(self, epoch: int) -> None:
        """Make epoch ``epoch``'s data order and worker seeds a function of ``(seed, epoch)``.

        timm's ``RepeatAugSampler`` seeds its permutation with the number it is given (DeiT's
        sampler takes the epoch alone); it is given :func:`epoch_seed` so the order depends
        on the run's seed too.
        """
        if isinstance(self.sampler, ShardedBatchSampler):
            self.sampler.set_epoch(epoch)
        else:
            self.sampler.set_epoch(epoch_seed(self.seed, epoch))
            self.train_generator.manual_seed(epoch_seed(self.seed, epoch))


@dataclass
class _Progress:
    """Where a run stands: the next epoch, the update count, the best metric values, the last record."""

    start_epoch: int = 0
    global_step: int = 0
    best: float = -math.inf
    best_ema: float = -math.inf
    last_metrics: dict[str, Any] | None = None
    saved_world: int = 1


@dataclass
class _Model:
    model: nn.Module
    kwargs: dict[str, Any]
    input_size: tuple[int, int, int]
    is_dart: bool
    ema: Any = None  # timm ModelEmaV3
    train_model: nn.Module | None = None  # the DDP wrapper, or the model itself


def _check_run_dir(cfg: TrainConfig, ckpt_dir: Path, metrics_path: Path) -> dict[str, Any] | None:
    """The saved config of the run to resume (checked against ``cfg``), or ``None`` for a new run.

    A new run starts in a directory without a checkpoint and without a non-empty
    ``metrics.jsonl``: a run writes its checkpoint before each metrics line, so metrics without a
    checkpoint are never a run this one could continue, and are not appended to.

    Raises:
        FileNotFoundError: ``resume`` without a checkpoint.
        FileExistsError: a new run in a directory that holds a checkpoint, or the metrics of another run.
        ResumeConflictError: options that conflict with the saved run.
    """
    if cfg.resume:
        saved_config = load_resume_config(ckpt_dir)
        check_resume(saved_config, cfg, ckpt_dir)
        return saved_config
    if ckpt.checkpoint_exists(ckpt_dir):
        raise FileExistsError(
            f"run directory {str(ckpt_dir.parent)!r} already holds a checkpoint; pass --resume to continue it, "
            f"or choose another --output"
        )
    if metrics_path.is_file() and metrics_path.stat().st_size > 0:
        raise FileExistsError(
            f"run directory {str(ckpt_dir.parent)!r} holds the {METRICS_NAME} of another run but no checkpoint to "
            f"--resume; a new run does not append to it: choose another --output, or delete {str(metrics_path)!r}"
        )
    return None


def _leftovers(run_dir: Path) -> list[Path]:
    """Temporary files of an interrupted save that only a training run writes in its directory:
    ``.checkpoint.tmp-*`` / ``.checkpoint_best.tmp-*`` folders (:func:`dartok._io.atomic_dir`) and
    ``.metrics.jsonl.*.tmp``."""
    return sorted([*run_dir.glob(f".{CHECKPOINT_DIRNAME}.tmp-*"), *run_dir.glob(f".{BEST_DIRNAME}.tmp-*"),
                   *run_dir.glob(f".{METRICS_NAME}.*.tmp")])


@contextlib.contextmanager
def hold_run_dir(run_dir: str | os.PathLike):
    """Own a run directory for a training run: create it, check it is writable, lock it and
    remove the leftovers of interrupted saves.

    The lock is ``<run_dir>/.lock`` (``filelock``: an OS lock on the open file, released when
    the process ends, however it ends), held until the block exits, so a second training on the
    same directory fails at once instead of interleaving metrics and overwriting checkpoints.
    Holding it proves that the ``.checkpoint.tmp-*`` / ``.metrics.jsonl.*.tmp`` leftovers
    (:func:`_leftovers`) belong to no running save; they are deleted. A directory this call
    created is removed again if the block fails before writing anything into it.

    Raises:
        RunDirBusyError: another process holds the lock.
        ValueError: the directory cannot be created or written (a file in the way, no permission,
            a read-only file system).
    """
    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    created = not run_dir.exists()
    lock = FileLock(os.fspath(run_dir / LOCK_NAME), timeout=0)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout:
        raise RunDirBusyError(
            f"run directory {str(run_dir)!r} is in use by another training (it holds the lock "
            f"{str(run_dir / LOCK_NAME)!r}); wait for it to end, or choose another --output") from None
    except OSError as e:
        blocker = next((p for p in (run_dir, *run_dir.parents) if p.exists()), None)
        why = f"{str(blocker)!r} is a file" if blocker is not None and not blocker.is_dir() else (e.strerror or e)
        raise ValueError(f"cannot write to --output {str(run_dir)!r}: {why}") from None
    try:
        try:
            import tempfile

            with tempfile.TemporaryFile(dir=run_dir):
                pass
            metrics = run_dir / METRICS_NAME
            if metrics.exists():
                with open(metrics, "a", encoding="utf-8"):
                    pass
        except OSError as e:
            raise ValueError(f"cannot write to --output {str(run_dir)!r}: {e.strerror or e}") from None
        stale = _leftovers(run_dir)
        for p in stale:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        if stale:
            log(f"removed {len(stale)} leftover(s) of an interrupted save: {', '.join(p.name for p in stale)}")
        yield run_dir
    except BaseException:
        if created and [p.name for p in run_dir.iterdir()] == [LOCK_NAME]:
            with contextlib.suppress(OSError):
                (run_dir / LOCK_NAME).unlink()
                run_dir.rmdir()
        raise
    finally:
        lock.release()


def _seed(cfg: TrainConfig, device: torch.device) -> None:
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(cfg.seed)


def _wants_boxes(model: str, model_kwargs: Mapping[str, Any], info: DatasetInfo) -> tuple[bool, bool]:
    """``(train, test)``: which splits carry object boxes (``return_box``).

    The test set of a DART model, when the dataset has boxes (the localisation metric); the
    training set of an oracle model (``score_source="oracle"``), which needs them.

    Raises:
        ValueError: an oracle model on a dataset without object boxes.
    """
    dart = model.startswith("dart_")
    oracle = dart and model_kwargs.get("score_source", "scorer") == "oracle"
    if oracle and not info.boxes:
        raise ValueError(f"score_source='oracle' takes the score map from the dataset's object boxes; "
                         f"dataset {info.name!r} has none")
    return oracle, dart and info.boxes


def _build_data(cfg: TrainConfig) -> _Data:
    """The train and test datasets, the task their registration names, classes and channels.

    Raises:
        ValueError: an empty split, unknown classes, a ``num_classes`` smaller than the classes the
            data names (their labels would be out of range).
    """
    info = dataset_info(cfg.data)
    boxes_train, boxes_test = _wants_boxes(cfg.model, cfg.model_kwargs, info)
    train_ds = build_dataset(cfg, "train", num_samples=cfg.train_samples, boxes=boxes_train)
    test_ds = build_dataset(cfg, "test", num_samples=cfg.test_samples, boxes=boxes_test)
    if len(train_ds) == 0:
        raise ValueError("the training set is empty")
    if len(test_ds) == 0:
        raise ValueError(f"the evaluation split {getattr(test_ds, 'source', '')} is empty".replace("  ", " "))
    named = num_classes_of(train_ds) or info.num_classes
    num_classes = cfg.num_classes or cfg.model_kwargs.get("num_classes") or named
    if num_classes is None:
        raise ValueError(f"cannot infer the number of classes of dataset {cfg.data!r}; pass --num-classes")
    if named is not None and num_classes < named:
        names = getattr(train_ds, "classes", None)
        raise ValueError(f"--num-classes {num_classes} is less than the {named} classes the data has"
                         + (f" ({', '.join(map(str, names[:12]))}{', ...' if len(names) > 12 else ''})" if names else "")
                         + "; leave it out to take the data's")
    task = create_task(info.task, dataclasses.replace(cfg, num_classes=num_classes))
    return _Data(train_ds, test_ds, info, task, num_classes, cfg.in_chans or info.in_chans)


def _input_pixels(name: str, kwargs: Mapping[str, Any]) -> int | None:
    """Pixels of a DART model's input (``img_size``² of the kwargs or of timm's default config,
    times ``num_frames`` for a clip model), ``None`` when unknown."""
    import timm.models

    side = kwargs.get("img_size")
    if side is None:
        try:
            side = timm.models.get_pretrained_cfg(name).input_size[-1]
        except Exception:  # not registered with a default config
            return None
    h, w = (side, side) if isinstance(side, int) else tuple(side)[-2:]
    return int(h) * int(w) * int(kwargs.get("num_frames") or 1)


def _build_model(cfg: TrainConfig, data: _Data, device: torch.device) -> _Model:
    """The model (same seed on every rank -> same init; DDP broadcasts rank 0's anyway).

    ``num_classes`` / ``in_chans`` come from the data unless ``model_kwargs`` sets them; a video
    dataset's clip length becomes ``num_frames``; a DART model records the square side of the
    data as ``img_size`` (it sees the full canvas). A task other than classification is built
    with ``task=`` (:func:`dartok.models.create_model`); segmentation paints its logits at the
    label masks' size (``output_size``, :func:`label_size`).

    Raises:
        ValueError: a DART budget ``num_tokens`` larger than the pixels of the model's input
            (checked before the model is built).
    """
    from ..models import create_model, is_dart

    kwargs = dict(cfg.model_kwargs)
    kwargs.setdefault("num_classes", data.num_classes)
    kwargs.setdefault("in_chans", data.in_chans)
    frames = getattr(data.train, "num_frames", None) or getattr(getattr(data.train, "dataset", None),
                                                                "num_frames", None)
    if data.info.video and frames:
        kwargs.setdefault("num_frames", int(frames))
    if "img_size" not in kwargs and cfg.model.startswith("dart_"):
        side = square_side(data.train)
        if side is not None:
            kwargs["img_size"] = side
    if cfg.drop_path is not None:
        kwargs["drop_path_rate"] = cfg.drop_path
    if data.task.name != "classification":  # e.g. Segmenter's decoder, logits at the masks' size
        kwargs["task"] = data.task.name
        label = label_size(data.train)
        if label is not None:
            kwargs.setdefault("output_size", list(label))
    if cfg.model.startswith("dart_") and cfg.num_tokens is not None:
        pixels = _input_pixels(cfg.model, kwargs)
        if pixels is not None and cfg.num_tokens > pixels:
            raise ValueError(f"--num-tokens {cfg.num_tokens} is more tokens than the {pixels} pixels of "
                             f"{cfg.model}'s input; use at most {pixels} (or a larger img_size in --model-kwargs)")
    model = create_model(cfg.model, num_tokens=cfg.num_tokens, **kwargs)
    if cfg.train_num_tokens:
        _check_train_num_tokens(model, cfg.train_num_tokens)
    out = _Model(model, dict(kwargs, num_tokens=cfg.num_tokens), model_input_size(model), bool(is_dart(model)))
    model.to(device)
    return out


def _check_train_num_tokens(model: nn.Module, budgets: tuple[int, ...]) -> None:
    """Refuse ``train_num_tokens`` for a model without an elastic budget, or a budget its tokenizer refuses
    (:func:`dartok.models.set_num_tokens` on each, then the model's own budget back).

    Raises:
        ValueError: the message names the option, the budget and what is allowed.
    """
    from ..models import set_num_tokens

    own = getattr(model.patch_embed, "num_tokens", None)
    for n in budgets:
        try:
            set_num_tokens(model, n)
        except ValueError as e:
            raise ValueError(f"--train-num-tokens: budget {n} is refused by the model: {e}") from None
    set_num_tokens(model, own)


def label_size(dataset: Dataset) -> tuple[int, int] | None:
    """``(H, W)`` of the first item's label mask (a ``H×W`` tensor, or ``target["mask"]``), else ``None``."""
    try:
        target = dataset[0][1]
    except Exception:
        return None
    mask = target.get("mask") if isinstance(target, Mapping) else target
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        return int(mask.shape[0]), int(mask.shape[1])
    return None


def _data_record(cfg: TrainConfig, data: _Data, model: nn.Module) -> dict[str, Any]:
    """The checkpoint's ``data`` record; PIL datasets get timm's transforms here (their mean / std recorded)."""
    names = getattr(data.train, "classes", None)
    record: dict[str, Any] = {
        "name": cfg.data, "root": cfg.data_root, "canvas_size": cfg.canvas_size, "kwargs": dict(cfg.data_kwargs),
        "seed": cfg.data_seed, "train_samples": cfg.train_samples, "test_samples": cfg.test_samples,
        "val_split": cfg.val_split, "num_classes": data.num_classes, "in_chans": data.in_chans,
        "classes": [str(c) for c in names] if names else None,
    }
    if data.info.tensors:
        normalize = cfg.data_kwargs.get("normalize", False)
        record["mean"] = list(getattr(data.train, "mean", None) or [0.5 if normalize else 0.0] * data.in_chans)
        record["std"] = list(getattr(data.train, "std", None) or [0.5 if normalize else 1.0] * data.in_chans)
    else:
        data.train.transform, dc = pil_transform(model, True, data.in_chans, **transform_kwargs(cfg, True))
        data.test.transform, dc_test = pil_transform(model, False, data.in_chans, **transform_kwargs(cfg, False))
        record["mean"], record["std"] = list(dc["mean"]), list(dc["std"])
        record["train_transform"] = describe_transform(data.train.transform)
        record["crop_pct"], record["interpolation"] = dc_test.get("crop_pct"), dc_test.get("interpolation")
    return record


def _build_loaders(cfg: TrainConfig, data: _Data, device: torch.device) -> _Loaders:
    """Training: global batches of the (seed, epoch) permutation cut into rank shards, or with
    ``repeated_aug`` timm's ``RepeatAugSampler`` (per-rank batches, the last partial one dropped);
    evaluation: an unpadded contiguous shard of the test set per rank (metrics summed over ranks).

    With mixup / cutmix the last partial batch is dropped too (timm's ``Mixup`` needs even
    batches; timm's ``train.py`` always drops it). With ``persistent_workers`` the loader's
    worker seeds come from a generator of their own, so the sampler's order stays a function
    of ``(seed, epoch)``.

    Raises:
        ValueError: a training set that gives no full batch where the last partial one is dropped.
    """
    info = dist_info()
    rank, world = info.rank, info.world_size
    g_train, g_eval = torch.Generator(), torch.Generator()
    loader_kw = dict(num_workers=cfg.num_workers, persistent_workers=cfg.persistent_workers,
                     pin_memory=device.type == "cuda" if cfg.pin_mem is None else cfg.pin_mem)
    n = len(data.train)
    if cfg.repeated_aug:
        from timm.data.distributed_sampler import RepeatAugSampler

        sampler = RepeatAugSampler(data.train, num_replicas=world, rank=rank, shuffle=True)
        per_rank = cfg.batch_size // world
        train_loader = DataLoader(data.train, sampler=sampler, batch_size=per_rank, drop_last=True,
                                  generator=g_train, **loader_kw)
        plan = [(per_rank, 1.0)] * len(train_loader)
        if not plan:
            raise ValueError(f"--repeated-aug: timm's RepeatAugSampler gives each of the {world} process(es) "
                             f"{len(sampler)} of the {n} training images per epoch, fewer than a batch of "
                             f"{per_rank}; use a smaller --batch-size or more data")
    else:
        drop_last = n >= 2 * cfg.batch_size or mixup_active(cfg)
        if drop_last and n < cfg.batch_size:
            raise ValueError(f"--mixup / --cutmix drop the last partial batch (timm's Mixup needs even batches); "
                             f"the {n} training images hold no full batch of {cfg.batch_size}")
        sampler = ShardedBatchSampler(n, cfg.batch_size, rank=rank, world_size=world, shuffle=True,
                                      drop_last=drop_last, seed=cfg.seed, generator=g_train)
        g_workers = g_train
        if cfg.persistent_workers:  # its worker seeds are drawn once, not before every epoch's order
            g_workers = torch.Generator()
            g_workers.manual_seed(epoch_seed(cfg.seed, 0, stream=2))
        train_loader = DataLoader(data.train, batch_sampler=sampler, generator=g_workers, **loader_kw)
        plan = sampler.plan()
    eval_bs = -(-(cfg.eval_batch_size or 2 * cfg.batch_size) // world)
    shard = data.test if world == 1 else torch.utils.data.Subset(data.test, shard_indices(len(data.test), rank, world))
    test_loader = build_loader(shard, eval_bs, shuffle=False, generator=g_eval, device=device, **loader_kw)
    return _Loaders(train_loader, sampler, plan, test_loader, g_eval, g_train, cfg.seed)


def _restore(cfg: TrainConfig, saved_config: dict[str, Any], ckpt_dir: Path, model: nn.Module, optimizer, scheduler,
             task: Task, metrics_path: Path) -> _Progress:
    """Load a resumed run's weights, optimizer, schedule, counters and this rank's RNG streams."""
    info = dist_info()
    saved_train = saved_config["train"]
    best_key = f"best_{task.best_metric}"
    ckpt.load_weights(model, ckpt_dir)
    state = ckpt.load_train_state(ckpt_dir, map_location="cpu")
    progress = _Progress(best=task.worst(), best_ema=task.worst(), saved_world=saved_config.get("world_size", 1))
    try:
        optimizer.load_state_dict(state["optimizer"])
        if saved_train.get("epochs") == cfg.epochs and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        progress.start_epoch = int(state["epoch"])
        progress.global_step = int(state["global_step"])
        progress.best = float(state.get(best_key, progress.best))
        progress.best_ema = float(state.get(best_key + "_ema", progress.best_ema))
        rng = state["rng"]
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise ValueError(
            f"training state {str(ckpt.resolve_checkpoint_dir(ckpt_dir) / ckpt.TRAIN_STATE_NAME)!r} "
            f"does not match this run: {e}"
        ) from None
    if saved_train.get("epochs") != cfg.epochs:
        scheduler.step_update(num_updates=progress.global_step)  # re-derive the lr on the new schedule
    progress.last_metrics = saved_config.get("metrics")
    if info.is_main:
        _truncate_metrics(metrics_path, progress.start_epoch)
        _complete_metrics(metrics_path, progress.last_metrics, progress.start_epoch)
    rng_ranks = state.get("rng_ranks")
    if isinstance(rng_ranks, (list, tuple)) and info.rank < len(rng_ranks):
        set_rng_state(rng_ranks[info.rank])
    elif info.rank == 0:
        set_rng_state(rng)
    else:  # a rank the saved run did not have
        seed_everything(rank_seed(cfg.seed, info.rank, progress.start_epoch))
    return progress


def _wrap(cfg: TrainConfig, m: _Model, device: torch.device, ckpt_dir: Path) -> None:
    """EMA of the weights (DeiT's ``--model-ema``; a copy of the bare model, same on every rank) and the
    DDP wrapper that averages gradients over ranks."""
    if cfg.model_ema:
        from timm.utils import ModelEmaV3

        m.ema = ModelEmaV3(m.model, decay=cfg.model_ema_decay)
        if cfg.resume:
            ckpt.load_weights(m.ema.module, ckpt_dir, ema=True)
    m.train_model = m.model
    if dist_info().world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        with torch.no_grad():  # DDP's gradient buckets want plain strides (DART's prefix pos_embed is a view)
            for p in m.model.parameters():
                if p.numel() and p.stride() != torch.empty(p.shape).stride():
                    p.data = p.data.clone(memory_format=torch.contiguous_format)
        m.train_model = DistributedDataParallel(m.model, device_ids=[device.index] if device.type == "cuda" else None)


def _evaluate_run(cfg: TrainConfig, m: _Model, loaders: _Loaders, task: Task, device: torch.device,
                  progress: bool) -> tuple[dict[str, float], dict[str, float] | None]:
    """Test metrics of the model and of its EMA (``None`` without EMA), in a fixed data order."""
    kw = dict(amp=cfg.amp, input_size=m.input_size, progress=progress, all_reduce=dist_info().world_size > 1,
              task=task)
    loaders.eval_generator.manual_seed(epoch_seed(cfg.seed, 0, stream=1))
    res = evaluate(m.model, loaders.test, device, **kw)
    res_ema = None
    if m.ema is not None:
        loaders.eval_generator.manual_seed(epoch_seed(cfg.seed, 0, stream=1))
        res_ema = evaluate(m.ema.module, loaders.test, device, **kw)
    return res, res_ema


LOADER_BOUND_SHARE = 0.1
"""An epoch whose training loop waited for the loader this share of its time or more is logged as loader-bound."""


def _epoch_record(epoch: int, tr: Mapping[str, float], test: Mapping[str, float], test_ema, lr: float,
                  seconds: float, global_step: int, world: int) -> dict[str, Any]:
    """One ``metrics.jsonl`` line: ``train_<stat>``, ``test_<metric>`` (and ``test_<metric>_ema``), lr, speed,
    and where the training time went (``data_time_s`` waiting for the loader, ``compute_time_s`` the rest)."""
    timing = ("n", "time_s", "images_per_s", "data_time_s", "compute_time_s")
    record: dict[str, Any] = {"epoch": epoch + 1}
    record.update({f"train_{k}": v for k, v in tr.items() if k not in timing})
    record.update({f"test_{k}": v for k, v in test.items() if k != "n"})
    record.update(lr=lr, images_per_s=tr["images_per_s"], epoch_time_s=seconds, global_step=global_step,
                  world_size=world, data_time_s=tr["data_time_s"], compute_time_s=tr["compute_time_s"])
    if test_ema is not None:
        record.update({f"test_{k}_ema": v for k, v in test_ema.items() if k != "n"})
    return record


def _log_epoch(cfg: TrainConfig, record: Mapping[str, Any], task: Task, test_ema) -> None:
    def fmt(k, v):
        return f"{k} {v:.4f}" if "loss" in k else f"{k} {v:.2f}"

    shown = [fmt(k, v) for k, v in record.items() if k.startswith(("train_", "test_")) and not k.endswith("_ema")
             and isinstance(v, (int, float))]  # per-class lists (segmentation's class_iou) stay in the file
    if test_ema is not None:
        shown.append(f"ema_{task.best_metric} {test_ema[task.best_metric]:.2f}")
    log(f"epoch {record['epoch']}/{cfg.epochs}  " + "  ".join(shown) + f"  lr {record['lr']:.2e}  "
        f"{record['images_per_s']:.0f} img/s  {record['epoch_time_s']:.1f}s")
    log(throughput_line(record["data_time_s"], record["compute_time_s"], cfg.num_workers))


def throughput_line(data_s: float, compute_s: float, num_workers: int) -> str:
    """The per-epoch line that says whether the loader or the model limits training speed.

    ``data_s``: seconds the training loop waited for the loader's next batch; ``compute_s``:
    the rest of the epoch's training time (copy, forward, backward, step). Loader-bound when
    the wait is at least :data:`LOADER_BOUND_SHARE` of the two.
    """
    total = data_s + compute_s
    share = data_s / total if total > 0 else 0.0
    if share >= LOADER_BOUND_SHARE:
        verdict = (f"loader-bound: the model waited {share:.0%} of the time"
                   + (f"; try more --num-workers (now {num_workers})" if num_workers < (os.cpu_count() or 1)
                      else ""))
    else:
        verdict = "model-bound: the loader keeps up"
    return f"  throughput: data wait {data_s:.1f}s ({share:.0%}), compute {compute_s:.1f}s -> {verdict}"


def _save(cfg: TrainConfig, ckpt_dir: Path, m: _Model, data_record: dict, task: Task, optimizer, scheduler,
          p: _Progress, epoch: int, rng_ranks: list, best_dir: Path | None = None) -> None:
    """The checkpoint after ``epoch`` (rank 0): weights, ``config.json`` and the training state; with
    ``best_dir`` (this epoch has the best metric so far) the weights and ``config.json`` there too."""
    world = dist_info().world_size
    best_key = f"best_{task.best_metric}"
    config = {
        "model": cfg.model,
        "model_kwargs": m.kwargs,
        "input_size": list(m.input_size),
        "is_dart": m.is_dart,
        "data": data_record,
        "train": cfg.to_dict(),
        "epoch": epoch + 1,
        "global_step": p.global_step,
        "metrics": p.last_metrics,
        best_key: p.best,
        "task": task.name,
        "best_metric": task.best_metric,
        "has_ema": m.ema is not None,
        "world_size": world,
        "versions": _versions(),
    }
    train_state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch + 1,
        "global_step": p.global_step,
        best_key: p.best,
        "rng": rng_ranks[0],
        "rng_ranks": rng_ranks,
        "world_size": world,
    }
    if m.ema is not None:
        config[best_key + "_ema"] = p.best_ema
        train_state[best_key + "_ema"] = p.best_ema
    ckpt.save_checkpoint(ckpt_dir, m.model, config, train_state, ema_model=m.ema.module if m.ema is not None else None)
    if best_dir is not None:  # timm's model_best: evaluable, not resumable (no training state)
        ckpt.save_checkpoint(best_dir, m.model, config, ema_model=m.ema.module if m.ema is not None else None)


def _all_rng_states() -> list:
    """Every rank's RNG streams (gathered on every rank), so that each continues exactly on resume."""
    world = dist_info().world_size
    if world == 1:
        return [get_rng_state()]
    states = [None] * world
    torch.distributed.all_gather_object(states, get_rng_state())
    return states


def _versions() -> dict[str, str]:
    import timm

    from .._version import __version__

    return {"dartok": __version__, "timm": timm.__version__, "torch": torch.__version__}


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------
def train(cfg: TrainConfig | Mapping[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """Train (or resume) a run; returns the final summary.

    The options: a complete :class:`TrainConfig`, or a mapping and/or keywords naming the
    options to set (the rest: defaults, or with ``resume=True`` the saved run's; see
    :func:`~dartok.train.config.resolve_config`). So ``train(output="runs/x", resume=True)``
    continues a run exactly as ``dartok train -o runs/x --resume`` does.

    Writes to ``cfg.output``: ``metrics.jsonl`` (one JSON line per epoch: ``epoch``, the
    task's ``train_*`` statistics and ``test_*`` metrics -- for classification
    ``train_loss, train_acc, test_loss, test_top1, test_top5`` --, ``lr, images_per_s,
    epoch_time_s, global_step, world_size``, ``data_time_s`` / ``compute_time_s`` (the
    training time spent waiting for the loader / the rest; also logged as a throughput line
    that says which is the bottleneck) and, with ``model_ema``, ``test_*_ema``) and
    ``checkpoint/`` (atomic, after every epoch; see :mod:`dartok.train.checkpoint`; with
    ``model_ema`` it also holds ``model_ema.safetensors``; its ``config.json`` records the
    ``task``, its ``best_metric`` and ``best_<metric>``, e.g. ``best_top1``) and
    ``checkpoint_best/`` (the weights and ``config.json`` of the epoch with the best metric so
    far, e.g. the best mIoU; evaluable like ``checkpoint/``, not resumable).

    With ``init_from`` the model starts from those weights (inflated from an image Vim into
    a VideoMamba; :func:`dartok.train.checkpoint.init_from`), at epoch 0 with a fresh
    optimizer; what was loaded, left at init or dropped is logged.

    The task (loss, metrics, best metric) is the one the dataset is registered with
    (:func:`dartok.data.register_dataset`); ``task``, when given, must be that one, and is
    recorded resolved (a resumed run keeps it). A segmentation run builds the model with
    ``task="segmentation"`` and its logits at the masks' size (:func:`dartok.models.create_model`).

    With ``resume`` the run continues from ``<output>/checkpoint`` exactly where it
    stopped (model, EMA, optimizer, scheduler, epoch, step, RNG states), also with a
    different number of processes. Options recorded in the checkpoint that differ from
    the requested ones (except :attr:`TrainConfig.RESUMABLE_CHANGES`) raise
    :class:`~dartok.train.config.ResumeConflictError`. Without ``resume`` an existing
    checkpoint in the run dir is an error (nothing is overwritten).

    Distributed: called in every process of a ``torchrun`` launch (see the module
    docstring), it joins / creates the default process group (NCCL on CUDA, gloo on CPU),
    trains with ``DistributedDataParallel`` on ``batch_size / world_size`` samples per rank
    and step, and destroys the group again if it created it. Every rank returns the same
    summary (metrics are reduced over ranks); only rank 0 writes files.

    Returns:
        dict with ``epoch`` (completed), ``epochs`` (of the schedule), ``global_step``,
        ``best_<metric>`` (e.g. ``best_top1``), ``metrics`` (last epoch's record, or ``None``
        if no epoch ran), ``test`` (final evaluation), ``checkpoint`` (path), ``run_dir``,
        ``world_size``, ``task``, ``classes`` (the class names, ``None`` when the data names none),
        ``model`` (the trained bare module, on its device) and, with
        ``model_ema``, ``test_ema``, ``best_<metric>_ema`` and ``model_ema`` (the EMA module).

    Raises:
        ValueError: invalid options, e.g. a ``batch_size`` not divisible by the number of
            processes, a ``task`` the dataset is not for; ResumeConflictError (a ValueError) for
            conflicting resume options.
        TypeError: an unknown keyword option.
        FileNotFoundError: ``resume`` without a checkpoint in ``<output>/checkpoint``.
        FileExistsError: a new run in a directory that already holds a checkpoint.
    """
    cfg = resolve_config(cfg, **options)
    cfg.validate()
    info = dist_info()
    if cfg.batch_size % info.world_size:
        raise ValueError(
            f"batch_size {cfg.batch_size} is the global batch size and must be divisible by the number of "
            f"processes ({info.world_size})"
        )
    data_info = dataset_info(cfg.data)
    if cfg.task is not None and cfg.task != data_info.task:
        raise ValueError(f"--task {cfg.task}: dataset {cfg.data or 'folder'!r} is for {data_info.task}; datasets for "
                         f"{cfg.task}: {list_datasets(task=cfg.task)}"
                         + (" (or --data-root a folder with images/ and annotations/)"
                            if cfg.task == "segmentation" else ""))
    cfg = dataclasses.replace(cfg, task=data_info.task)  # recorded: a resumed run keeps it
    check_augment(cfg, data_info, info.world_size)
    device = select_device(cfg.device)
    created = init_distributed(device)
    try:
        return _train(cfg, device)
    finally:
        if created and dist_ready():
            torch.distributed.destroy_process_group()


def _train(cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    """Rank 0 holds the run directory (:func:`hold_run_dir`) for the whole run."""
    if not dist_info().is_main:
        return _run(cfg, device)
    with hold_run_dir(cfg.output):
        return _run(cfg, device)


def _run(cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    info = dist_info()
    run_dir = Path(cfg.output)
    ckpt_dir = run_dir / CHECKPOINT_DIRNAME
    metrics_path = run_dir / METRICS_NAME

    saved_config = _check_run_dir(cfg, ckpt_dir, metrics_path)
    _seed(cfg, device)
    data = _build_data(cfg)
    task = data.task
    m = _build_model(cfg, data, device)
    if cfg.init_from and saved_config is None:  # a resumed run has its own weights
        report = ckpt.init_from(m.model, cfg.init_from)
        log(f"initialised from {cfg.init_from!r}: " + report.describe())
    if info.rank > 0:  # own dropout / drop-path / augmentation streams per rank (rank 0 keeps the 1-process ones)
        seed_everything(rank_seed(cfg.seed, info.rank))
    data_record = _data_record(cfg, data, m.model)
    loaders = _build_loaders(cfg, data, device)
    mixup_fn = build_mixup(cfg, data.num_classes)
    _pretrain_scorer(cfg, m, loaders, task, device, mixup_fn, fresh=saved_config is None, run_dir=run_dir,
                     data_boxes=data.info.boxes)
    optimizer, scheduler, loss_fn = build_optimization(m.model, cfg, len(loaders.train), task)

    p = _Progress(best=task.worst(), best_ema=task.worst())
    if saved_config is not None:
        p = _restore(cfg, saved_config, ckpt_dir, m.model, optimizer, scheduler, task, metrics_path)
        log(f"resumed {str(ckpt_dir)!r} at epoch {p.start_epoch}/{cfg.epochs}, step {p.global_step}"
            + (f" ({p.saved_world} -> {info.world_size} processes)" if p.saved_world != info.world_size else ""))
    _wrap(cfg, m, device, ckpt_dir)
    if info.is_main:
        if saved_config is None and metrics_path.is_file():  # empty (checked): start it anew
            metrics_path.unlink()
        _log_start(cfg, m, data, device)

    stop_at = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, cfg.stop_after)
    test: dict[str, float] | None = None
    test_ema: dict[str, float] | None = None
    best = task.best_metric
    for epoch in range(p.start_epoch, stop_at):
        t_epoch = time.perf_counter()
        loaders.set_epoch(epoch)
        tr, p.global_step = train_one_epoch(
            m.train_model, loaders.train, optimizer, scheduler, loss_fn, device, epoch=epoch,
            global_step=p.global_step, input_size=m.input_size, amp=cfg.amp, clip_grad=cfg.clip_grad,
            progress=cfg.progress, num_epochs=cfg.epochs, model_ema=m.ema, batch_plan=loaders.batch_plan, task=task,
            prior_epochs=cfg.prior_epochs, mixup_fn=mixup_fn, budgets=cfg.train_num_tokens, seed=cfg.seed,
        )
        test, test_ema = _evaluate_run(cfg, m, loaders, task, device, cfg.progress)
        improved = task.is_better(test[best], p.best)
        if improved:
            p.best = test[best]
        if test_ema is not None and task.is_better(test_ema[best], p.best_ema):
            p.best_ema = test_ema[best]
        p.last_metrics = _epoch_record(epoch, tr, test, test_ema, optimizer.param_groups[0]["lr"],
                                       time.perf_counter() - t_epoch, p.global_step, info.world_size)
        rng_ranks = _all_rng_states()
        if info.is_main:  # checkpoint first: a metrics line always has its checkpoint (see _check_run_dir)
            _save(cfg, ckpt_dir, m, data_record, task, optimizer, scheduler, p, epoch, rng_ranks,
                  best_dir=run_dir / BEST_DIRNAME if improved else None)
            _append_jsonl(metrics_path, p.last_metrics)
            _log_epoch(cfg, p.last_metrics, task, test_ema)
        barrier(device)  # the checkpoint is complete when any rank goes on

    if test is None:  # nothing trained in this call (already complete): report a fresh eval
        rng = get_rng_state()
        test, test_ema = _evaluate_run(cfg, m, loaders, task, device, False)
        set_rng_state(rng)
    summary = {
        "epoch": max(p.start_epoch, stop_at),
        "epochs": cfg.epochs,
        "global_step": p.global_step,
        f"best_{best}": _finite(p.best),
        "metrics": p.last_metrics,
        "test": test,
        "checkpoint": str(ckpt_dir),
        "run_dir": str(run_dir),
        "world_size": info.world_size,
        "task": task.name,
        "classes": data_record.get("classes"),
        "model": ckpt.unwrap_model(m.model),
    }
    if m.ema is not None:
        summary["test_ema"] = test_ema
        summary[f"best_{best}_ema"] = _finite(p.best_ema)
        summary["model_ema"] = m.ema.module
    return summary


SCORER_PRETRAIN_NAME = "scorer_pretrain.jsonl"
"""Per-epoch record of the scorer pretraining (:mod:`dartok.train.scorer_pretrain`) in the run directory."""


def _pretrain_scorer(cfg: TrainConfig, m: _Model, loaders: _Loaders, task: Task, device: torch.device, mixup_fn,
                     *, fresh: bool, run_dir: Path, data_boxes: bool) -> None:
    """``cfg.scorer_pretrain_epochs`` of scorer pretraining, then its trunk frozen (docs/method.md §10).

    A fresh run pretrains (on the training loader, before the optimizer of DART training is
    built, so the frozen trunk is not in it) and writes ``scorer_pretrain.jsonl``: per epoch
    the auxiliary classifier's training loss and top-1, and, on data with object boxes, the
    object mass and object tokens of the scorer's partition on the test split
    (:func:`~dartok.train.loop.evaluate`; its top-1 is the untrained backbone's and is not
    kept). A resumed run only freezes the trunk again: its weights come from the checkpoint.
    Runs without a learned scorer trunk (a grid, the oracle, a pretrained frozen trunk) skip it.
    """
    from .scorer_pretrain import freeze_scorer_trunk, learned_scorer, pretrain_scorer

    if not cfg.scorer_pretrain_epochs:
        return
    scorer = learned_scorer(m.model)
    if scorer is None:
        log(f"scorer pretraining: skipped ({cfg.model} has no scorer trunk learning from scratch)")
        return
    if fresh:
        path = run_dir / SCORER_PRETRAIN_NAME
        if dist_info().is_main and path.is_file():
            path.unlink()

        def on_epoch(epoch: int, stats: dict[str, float]) -> None:
            record = dict(stats)
            if data_boxes:
                res = evaluate(m.model, loaders.test, device, amp=cfg.amp, progress=False, task=task)
                record.update({k: v for k, v in res.items() if k in ("object_mass", "object_tokens")})
            if dist_info().is_main:
                _append_jsonl(path, record)
                log(f"scorer pretraining {epoch + 1}/{cfg.scorer_pretrain_epochs}  loss {record['loss']:.4f}  "
                    f"acc {record['acc']:.2f}" + "".join(f"  test_{k} {record[k]:.3f}" for k in
                                                     ("object_mass", "object_tokens") if k in record)
                    + f"  {record['time_s']:.1f}s")

        pretrain_scorer(scorer, loaders.train, epochs=cfg.scorer_pretrain_epochs,
                        lr=cfg.lr if cfg.scorer_pretrain_lr is None else cfg.scorer_pretrain_lr,
                        weight_decay=cfg.weight_decay, device=device, input_size=m.input_size,
                        unpack=lambda t: _unpack(task, t, device).targets, amp=cfg.amp, mixup_fn=mixup_fn,
                        progress=cfg.progress, on_epoch=on_epoch, set_epoch=loaders.set_epoch)
        if m.ema is not None:  # the EMA copy starts from the pretrained scorer (a resumed one comes from the checkpoint)
            m.ema.module.load_state_dict(ckpt.unwrap_model(m.model).state_dict())
    freeze_scorer_trunk(scorer)
    ema_scorer = learned_scorer(m.ema.module) if m.ema is not None else None
    if ema_scorer is not None:
        freeze_scorer_trunk(ema_scorer)


def _log_start(cfg: TrainConfig, m: _Model, data: _Data, device: torch.device) -> None:
    world = dist_info().world_size
    n_params = sum(q.numel() for q in m.model.parameters())
    n_train = sum(q.numel() for q in m.model.parameters() if q.requires_grad)
    log(
        f"model {cfg.model} ({'DART' if m.is_dart else 'fixed grid'}, input {m.input_size}, "
        f"{n_params / 1e6:.2f}M params, {n_train / 1e6:.2f}M trainable) | data {cfg.data or 'folder'}: "
        f"{len(data.train)} train / {len(data.test)} test | device {device}"
        + (" bf16" if cfg.amp else "")
        + (f" | {world} processes x {cfg.batch_size // world} = global batch {cfg.batch_size}" if world > 1 else "")
        + (f" | EMA decay {cfg.model_ema_decay}" if m.ema is not None else "")
    )
    if not data.info.tensors:
        log(f"train transform: {describe_transform(data.train.transform)}")
    extra = []
    if mixup_active(cfg):
        extra.append(f"Mixup (mixup {cfg.mixup}, cutmix {cfg.cutmix}, prob {cfg.mixup_prob}, smoothing "
                     f"{cfg.label_smoothing}) + SoftTargetCrossEntropy")
    if cfg.repeated_aug:
        extra.append("RepeatAugSampler (3 repeats)")
    if cfg.drop_path is not None:
        extra.append(f"drop_path {cfg.drop_path}")
    if extra:
        log("augmentation: " + ", ".join(extra))
    for line in describe_data(cfg, data.train, data.test):
        log(line)


def describe_data(cfg: Any, train_ds: Dataset, test_ds: Dataset) -> list[str]:
    """What a run trains and evaluates on, for the log: the dataset and root, its classes, and
    which images each split holds (for an ImageFolder: which folder, the held-out part, the subset)."""
    names = getattr(train_ds, "classes", None)
    src_train, src_test = getattr(train_ds, "source", None), getattr(test_ds, "source", None)
    if not (names or src_train or src_test):
        return []
    out = [f"dataset {cfg.data or 'folder'}" + (f" at {cfg.data_root}" if cfg.data_root else "")
           + (f": {len(names)} classes ({', '.join(map(str, names[:12]))}{', ...' if len(names) > 12 else ''})"
              if names else "")]
    out.append(f"  train: {len(train_ds)} images" + (f": {src_train}" if src_train else ""))
    out.append(f"  evaluated on: {len(test_ds)} images" + (f": {src_test}" if src_test else ""))
    missing = getattr(test_ds, "missing_classes", None)
    if missing:
        out.append(f"  note: the evaluation split has no images of {len(missing)} class(es): "
                   f"{', '.join(map(str, missing[:12]))}{', ...' if len(missing) > 12 else ''}")
    return out


# --------------------------------------------------------------------------------------
# evaluate a checkpoint
# --------------------------------------------------------------------------------------
def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    split: str = "test",
    *,
    data: str | None = None,
    data_root: str | None = None,
    canvas_size: int | None = None,
    samples: int | None = None,
    data_seed: int | None = None,
    batch_size: int = 128,
    num_workers: int = 0,
    device: str | None = None,
    amp: bool = False,
    progress: bool = False,
    num_tokens: int | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on a split of its own dataset (or of ``data``), with the dataset's task.

    ``num_tokens`` evaluates a DART model at another token budget than it was trained at (the
    elastic budget, :func:`dartok.models.set_num_tokens`; ``None``: the trained one).

    The data options default to the checkpoint's (:meth:`dartok.data.DataConfig.from_checkpoint`);
    ``samples`` defaults to the number the run used for that split (unless ``data`` is given). An
    ImageFolder is read with the checkpoint's class names as its class map (a class folder the
    model does not know is an error).

    Returns:
        ``{"checkpoint", "model", "data", "split", "task", "classes", "num_tokens"}`` (``classes``:
        the model's class names, ``None`` when unknown; ``num_tokens``: the DART budget evaluated,
        ``None`` for a fixed-grid model) and the task's metrics (classification: ``loss``,
        ``top1``, ``top5``, ``n``; segmentation: ``loss``, ``miou``, ``pixel_acc``, ``class_iou``,
        ``n``).

    Raises:
        ValueError: ``split`` not ``"test"`` / ``"train"``, ``batch_size`` < 1, bad data options, a
            corrupt checkpoint, ``num_tokens`` for a fixed-grid model or one the tokenizer refuses.
        FileNotFoundError: missing checkpoint or data.
    """
    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    from ..models import is_dart

    dev = select_device(device)
    model, config = ckpt.model_from_checkpoint(checkpoint, device=dev, num_tokens=num_tokens)
    d = config.get("data") or {}
    if samples is None and not data:
        samples = d.get("test_samples" if split == "test" else "train_samples")
    dcfg = DataConfig.from_checkpoint(config, data=data, data_root=data_root, canvas_size=canvas_size,
                                      num_samples=samples, data_seed=data_seed)
    info = dataset_info(dcfg.data)
    _, boxes = _wants_boxes(config["model"], config.get("model_kwargs") or {}, info)
    names = ckpt.checkpoint_classes(config)
    ds = build_dataset(dcfg, split, num_samples=samples, boxes=boxes,
                       classes=names if d.get("classes") and dcfg.data == d.get("name") else None)
    if not info.tensors:  # PIL images: timm's eval transform, with the run's crop_pct
        ds.transform, _ = pil_transform(model, False, d.get("in_chans") or 3,
                                        **transform_kwargs(config.get("train") or {}, False))
    loader = build_loader(ds, batch_size, shuffle=False, num_workers=num_workers, device=dev)
    task_cfg = TrainConfig.from_dict({**(config.get("train") or {}), "num_classes": d.get("num_classes")})
    res = evaluate(model, loader, dev, amp=amp, progress=progress, task=create_task(info.task, task_cfg))
    return {"checkpoint": str(checkpoint), "model": config["model"], "data": dcfg.data, "split": split,
            "task": info.task, "classes": names,
            "num_tokens": model.patch_embed.num_tokens if is_dart(model) else None, **res}


def evaluate_pretrained(
    model_name: str,
    data_root: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    samples: int | None = None,
    data_seed: int = 0,
    batch_size: int = 128,
    num_workers: int = 0,
    device: str | None = None,
    amp: bool = False,
    progress: bool = False,
    num_tokens: int | None = None,
) -> dict[str, Any]:
    """Evaluate a timm model with its pretrained weights on an ImageFolder (e.g. ImageNet's val/).

    ``num_tokens`` runs a DART model at that token budget (:func:`dartok.models.set_num_tokens`).

    The model is ``timm.create_model(model_name, pretrained=True)`` (``weights``: a local file
    instead, ``pretrained_cfg_overlay=dict(file=weights)``), e.g. the DART authors' checkpoints
    ``dart_deit_tiny_patch16_224.hcplab_in1k`` (README "The authors' checkpoints"). The images
    go through timm's evaluation transform of the model's ``pretrained_cfg`` (resize, centre
    crop ``crop_pct``, normalisation). ``data_root`` is either a root with ``train/`` and
    ``val/`` (the held-out folder is read, class map from ``train/``) or a folder of class
    folders (all of it is read): ImageNet's synset folders, sorted, are the 1000 classes in
    timm's order. ``samples``: a seeded, class-stratified subset of that many images.

    Returns:
        ``{"model", "weights", "data_root", "split", "task", "classes"}`` and ``loss``,
        ``top1``, ``top5``, ``n``.

    Raises:
        ValueError: ``batch_size`` < 1, an unknown model, a folder whose class count is not
            the model's, bad folder layouts (:func:`dartok.data.folder.folder_layout`).
        FileNotFoundError: missing data or weights file.
        RuntimeError: pretrained weights that cannot be had (no weights, offline).
    """
    import timm

    from ..data.folder import ImageFolder, class_folders, folder_layout, stratified_indices
    from ..data.registry import _Subset

    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    if weights is not None and not os.path.isfile(weights):
        raise FileNotFoundError(f"weights file {str(weights)!r} does not exist")
    if not timm.is_model(model_name):
        raise ValueError(f"unknown model {model_name!r} (timm.list_models() lists them; "
                         "the DART authors' checkpoints are the '.hcplab_*' tags, timm.list_pretrained('dart_*'))")
    layout = folder_layout(data_root)
    if layout.held_out is not None:
        folder, classes, split = layout.held_out, class_folders(layout.train), layout.held_out.name
    else:
        folder, classes, split = layout.root, class_folders(layout.root), layout.root.name
    dev = select_device(device)
    overlay = {"pretrained_cfg_overlay": dict(file=str(weights))} if weights is not None else {}
    model = timm.create_model(model_name, pretrained=True, **overlay)
    if num_tokens is not None:
        from ..models import set_num_tokens

        set_num_tokens(model, num_tokens)
    model = model.to(dev).eval()
    if len(classes) != getattr(model, "num_classes", len(classes)):
        raise ValueError(f"{str(folder)!r} has {len(classes)} class folders, {model_name} has {model.num_classes} "
                         "classes (ImageNet's val/ with its 1000 synset folders, for ImageNet-1k weights)")
    transform, _ = pil_transform(model, False, 3)
    ds = ImageFolder(folder, classes=classes, transform=transform)
    if samples is not None and samples < len(ds):
        ds = _Subset(ds, stratified_indices(ds.targets, samples, data_seed, stream=2))
    loader = build_loader(ds, batch_size, shuffle=False, num_workers=num_workers, device=dev)
    res = evaluate(model, loader, dev, amp=amp, progress=progress, task=create_task("classification"))
    return {"model": model_name, "weights": str(weights) if weights is not None else "pretrained",
            "data_root": str(data_root), "split": split, "task": "classification", "classes": list(classes), **res}
