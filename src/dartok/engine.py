"""Old path of the training engine, kept so existing imports work.

The code lives in :mod:`dartok.train` (options, task, distributed, sampler, loop, run,
checkpoint) and :mod:`dartok.data` (registry, transforms). ``LOCAL_DATASETS`` and
``VIDEO_DATASETS`` are registry queries, answered when read.
"""
from .data.registry import build_dataset  # noqa: F401
from .data.transforms import model_input_size, pil_transform, prepare_images  # noqa: F401
from .models import create_model as build_model  # noqa: F401
from .models import is_dart as model_is_dart  # noqa: F401
from .train.config import CHECKPOINT_DIRNAME, METRICS_NAME, ResumeConflictError, TrainConfig  # noqa: F401
from .train.distributed import (  # noqa: F401
    DistInfo,
    dist_info,
    get_rng_state,
    init_distributed,
    is_main_process,
    seed_everything,
    select_device,
    set_rng_state,
)
from .train.loop import build_optimization, evaluate, train_one_epoch  # noqa: F401
from .train.run import read_metrics, train  # noqa: F401
from .train.sampler import ShardedBatchSampler, build_loader, epoch_seed, shard_indices  # noqa: F401

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


def __getattr__(name: str):
    """``LOCAL_DATASETS`` (registered classification datasets with 1 channel by default: the
    Fashion-MNIST ones, the old tuple's meaning), ``VIDEO_DATASETS`` (registered clip datasets) and
    ``_CANVAS_DATASETS``, from the registry."""
    from .data.registry import list_datasets

    if name == "LOCAL_DATASETS":
        return tuple(list_datasets(in_chans=1, task="classification"))
    if name == "VIDEO_DATASETS":
        return tuple(list_datasets(video=True))
    if name == "_CANVAS_DATASETS":
        return tuple(list_datasets(canvas=True))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
