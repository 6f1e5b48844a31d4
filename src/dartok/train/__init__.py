"""Everything that trains or evaluates: options, task, processes, data order, loop, run, checkpoints.

* :mod:`.config`: :class:`TrainConfig`, resume checks and option merging.
* :mod:`.task`: :class:`Task` (loss, metrics, best metric), :class:`Classification`.
* :mod:`.distributed`: ranks, devices, process group, RNG streams.
* :mod:`.sampler`: :class:`ShardedBatchSampler` (data order a function of seed and epoch only).
* :mod:`.augment`: timm's transforms, Mixup / CutMix and repeated augmentation from the run's options.
* :mod:`.loop`: :func:`build_optimization`, :func:`train_one_epoch`, :func:`evaluate`.
* :mod:`.run`: :func:`train` (a run as named steps), :func:`evaluate_checkpoint`.
* :mod:`.checkpoint`: the checkpoint folder format.
"""
from .config import ResumeConflictError, TrainConfig, resolve_config  # noqa: F401
from .task import Classification, Task, create_task  # noqa: F401
from .loop import build_optimization, evaluate, train_one_epoch  # noqa: F401
from .run import evaluate_checkpoint, read_metrics, train  # noqa: F401

__all__ = [
    "Classification",
    "ResumeConflictError",
    "Task",
    "TrainConfig",
    "build_optimization",
    "create_task",
    "evaluate",
    "evaluate_checkpoint",
    "read_metrics",
    "resolve_config",
    "train",
    "train_one_epoch",
]
