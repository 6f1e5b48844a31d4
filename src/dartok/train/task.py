"""What a task is: its training loss, its metrics and which metric is best.

The training loop (:mod:`dartok.train.loop`) and the run (:mod:`dartok.train.run`) know
nothing about classes or labels: they call the task for the loss and keep its metric sums.
A dataset names its task in the registry (:func:`dartok.data.register_dataset`, ``task=``);
:func:`create_task` turns that name and a run's options into a :class:`Task`.

Metrics are sums (:class:`MetricSums`): a batch adds to them, ranks add theirs together
(:meth:`MetricSums.all_reduce`) and :meth:`MetricSums.compute` turns the totals into the
reported numbers, so metrics over many batches or ranks equal those over the whole set.

Adding a task: subclass :class:`Task` (``name``, ``best_metric``, ``higher_is_better``,
``loss``, ``eval_metrics``, ``train_metrics``, ``from_config``), add it to :data:`TASKS`, and
register its datasets with ``task=<name>``.

Targets that carry more than the task's target (a dataset's object box, ``return_box=True``:
``{"label": ..., "box": ...}``) are split by :meth:`Task.unpack`; the box goes to the oracle
score source and to :class:`LocalizationMetrics` (issue 11), never to the loss.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..localization import object_mass, object_tokens
from ..partition import unmix_uniform
from .augment import mixup_active
from .distributed import all_reduce_sum

__all__ = [
    "Classification",
    "ClassificationMetrics",
    "ClassificationTrainMetrics",
    "LocalizationMetrics",
    "MetricSums",
    "TASKS",
    "Task",
    "check_label_smoothing",
    "create_task",
]


class MetricSums:
    """Running sums of a task's metrics over batches (and, after :meth:`all_reduce`, over ranks).

    Subclasses name their sums in ``keys``, add to ``self.sums`` in :meth:`update` and turn
    the totals into metrics in :meth:`compute`.
    """

    keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.sums: dict[str, float] = dict.fromkeys(self.keys, 0.0)

    def update(self, output: torch.Tensor, target: torch.Tensor, **extra: Any) -> None:
        """Add one batch (``output`` and ``target`` on the same device)."""
        raise NotImplementedError

    def merge(self, other: "MetricSums") -> "MetricSums":
        """Add another accumulator's sums to these (same class); returns ``self``."""
        for k in self.keys:
            self.sums[k] += other.sums[k]
        return self

    def all_reduce(self, device: torch.device | str) -> None:
        """Sum every rank's sums (identity without a process group); every rank must call it."""
        self.sums = dict(zip(self.keys, all_reduce_sum([self.sums[k] for k in self.keys], device)))

    def compute(self) -> dict[str, float]:
        """The metrics of everything added so far."""
        raise NotImplementedError


class Task:
    """A task: training loss, evaluation / training metrics and the best-metric rule.

    Attributes:
        name: the task's name (the registry's ``task=``).
        best_metric: key of :meth:`eval_metrics`' result that picks the best epoch.
        higher_is_better: direction of ``best_metric``.
        columns: the evaluation metrics a report shows, ``(key, label, unit)`` triples, the
            best metric first (``compare``'s tables and figure, the CLI's summaries).
    """

    name: ClassVar[str] = ""
    best_metric: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True
    columns: ClassVar[tuple[tuple[str, str, str], ...]] = ()
    target_key: ClassVar[str] = "label"

    def unpack(self, targets: Any) -> tuple[Any, torch.Tensor | None]:
        """``(the task's targets, object boxes or None)`` of a batch's targets.

        A plain batch (a tensor or list of targets) is returned as it is with ``None``: the
        classification path is unchanged. A mapping (items of a dataset built with
        ``return_box=True``) gives ``targets[target_key]`` and ``targets["box"]`` (``B×4`` or
        ``B×T×K×4``, :mod:`dartok.localization`).

        Raises:
            ValueError: a mapping without ``target_key``.
        """
        if not isinstance(targets, Mapping):
            return targets, None
        if self.target_key not in targets:
            raise ValueError(f"batch targets are a mapping with keys {sorted(targets)}; the {self.name} task "
                             f"needs {self.target_key!r}")
        return targets[self.target_key], targets.get("box")

    def describe(self, metrics: Mapping[str, float]) -> str:
        """One line of a result's metrics for people (``"top-1 57.85%  top-5 96.10%  loss 1.2034"``).

        ``metrics`` holds the keys of :meth:`eval_metrics`' result (a missing one is skipped).
        """
        parts = [f"{label} {metrics[key]:.2f}{unit}" for key, label, unit in self.columns if key in metrics]
        if "loss" in metrics:
            parts.append(f"loss {metrics['loss']:.4f}")
        return "  ".join(parts)

    @classmethod
    def from_config(cls, cfg: Any) -> "Task":
        """The task with a run's options (a :class:`dartok.train.config.TrainConfig`)."""
        return cls()

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch, a scalar tensor (mean over the batch)."""
        raise NotImplementedError

    def eval_metrics(self) -> MetricSums:
        """A fresh accumulator of the evaluation metrics (``best_metric`` among them)."""
        raise NotImplementedError

    def train_metrics(self) -> MetricSums:
        """A fresh accumulator of the statistics reported for the training batches."""
        raise NotImplementedError

    def worst(self) -> float:
        """The value every real ``best_metric`` beats (``-inf`` when higher is better)."""
        return -math.inf if self.higher_is_better else math.inf

    def is_better(self, value: float, best: float) -> bool:
        """True when ``value`` beats ``best`` in the task's direction (NaN never does)."""
        return value > best if self.higher_is_better else value < best


class ClassificationMetrics(MetricSums):
    """Cross-entropy (no label smoothing), top-1 and top-5 of ``B×K`` logits against ``B`` int labels.

    :meth:`compute` gives ``{"loss": mean cross-entropy, "top1": %, "top5": %, "n": count}``;
    ``top5`` uses ``min(5, K)`` classes; with no samples every value but ``n`` is NaN.
    """

    keys = ("loss", "top1", "top5", "n")

    def update(self, output: torch.Tensor, target: torch.Tensor, **extra: Any) -> None:
        logits = output.float()
        self.sums["loss"] += F.cross_entropy(logits, target, reduction="sum").item()
        k = min(5, logits.shape[1])
        hit = logits.topk(k, dim=1).indices.eq(target[:, None])
        self.sums["top1"] += hit[:, :1].any(1).sum().item()
        self.sums["top5"] += hit.any(1).sum().item()
        self.sums["n"] += target.numel()

    def compute(self) -> dict[str, float]:
        n = int(round(self.sums["n"]))
        if n == 0:
            return {"loss": float("nan"), "top1": float("nan"), "top5": float("nan"), "n": 0}
        s = self.sums
        return {"loss": s["loss"] / n, "top1": 100.0 * s["top1"] / n, "top5": 100.0 * s["top5"] / n, "n": n}


class ClassificationTrainMetrics(MetricSums):
    """Training-batch statistics: mean training loss and top-1 accuracy (%).

    :meth:`update` takes the batch's mean training ``loss`` (a float) as a keyword; :meth:`compute`
    gives ``{"loss", "acc", "n"}`` (0 with no samples).
    """

    keys = ("loss", "acc", "n")

    def update(self, output: torch.Tensor, target: torch.Tensor, *, loss: float = 0.0, **extra: Any) -> None:
        n = target.numel()
        if n:
            self.sums["loss"] += float(loss) * n
            self.sums["acc"] += (output.argmax(1) == target).sum().item()
        self.sums["n"] += n

    def compute(self) -> dict[str, float]:
        n = int(round(self.sums["n"]))
        return {"loss": self.sums["loss"] / max(n, 1), "acc": 100.0 * self.sums["acc"] / max(n, 1), "n": n}


class LocalizationMetrics(MetricSums):
    """Where a DART model's score map and tokens go, against the true object (issue 11 item 2).

    Per image (or clip), from the tokenizer's output (:class:`dartok.DartOutput`) and the
    object boxes in its coordinates (:meth:`dartok.DART.object_boxes`):

    - ``object_mass``: the share of the score map's mass inside the object *before* uniform
      mixing, :func:`dartok.localization.object_mass` of :func:`dartok.partition.unmix_uniform`
      of ``DartOutput.pdf``; in [0, 1]; the area share of the object for a uniform map, 1
      (up to cell rounding) for the oracle;
    - ``object_tokens``: how many of the N boxes have their centre inside the object
      (:func:`dartok.localization.object_tokens`); in [0, N].

    :meth:`compute` gives their means over all samples added, or ``{}`` when none was
    (a dataset without boxes: the keys are then absent, not NaN).
    """

    keys = ("object_mass", "object_tokens", "n")
    columns: ClassVar[tuple[tuple[str, str, str], ...]] = (("object_mass", "object mass", ""),
                                                           ("object_tokens", "object tokens", ""))
    """Report columns ``(key, label, unit)``, shown after the task's where a run has them."""

    def update(self, output: Any, target: torch.Tensor, *, alpha: float = 0.0, **extra: Any) -> None:
        """Add a batch: ``output`` a :class:`dartok.DartOutput`, ``target`` the object boxes
        (``B×4`` / ``B×K×4``, the pdf's coordinates), ``alpha`` the tokenizer's mixing weight."""
        pdf = unmix_uniform(output.pdf.detach().float(), alpha)
        self.sums["object_mass"] += object_mass(pdf, target).sum().item()
        self.sums["object_tokens"] += object_tokens(output.boxes.detach(), target).sum().item()
        self.sums["n"] += pdf.shape[0]

    def compute(self) -> dict[str, float]:
        n = int(round(self.sums["n"]))
        if n == 0:
            return {}
        return {"object_mass": self.sums["object_mass"] / n, "object_tokens": self.sums["object_tokens"] / n}


def check_label_smoothing(value: float) -> float:
    """``value`` if it is a valid label smoothing, in [0, 1).

    Raises:
        ValueError: otherwise (the message names ``label_smoothing``).
    """
    if not 0.0 <= value < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {value!r}")
    return value


class Classification(Task):
    """Single-label classification: items ``(x, int label)``, the model gives ``B×K`` logits.

    Training loss (:attr:`criterion`): cross-entropy with ``label_smoothing`` (a
    ``nn.CrossEntropyLoss``) on ``B`` int labels; with ``soft_targets`` (a run with mixup /
    cutmix) timm's ``SoftTargetCrossEntropy`` on ``B×K`` target probabilities, the label
    smoothing being applied by timm's ``Mixup`` to those targets (as timm's ``train.py`` and
    DeiT do). Metrics: :class:`ClassificationMetrics`; best metric ``"top1"``.

    Raises:
        ValueError: ``label_smoothing`` outside [0, 1).
    """

    name = "classification"
    best_metric = "top1"
    higher_is_better = True
    columns = (("top1", "top-1", "%"), ("top5", "top-5", "%"))

    def __init__(self, label_smoothing: float = 0.0, soft_targets: bool = False) -> None:
        check_label_smoothing(label_smoothing)
        self.soft_targets = bool(soft_targets)
        if self.soft_targets:
            from timm.loss import SoftTargetCrossEntropy

            self.criterion = SoftTargetCrossEntropy()
        else:
            self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    @classmethod
    def from_config(cls, cfg: Any) -> "Classification":
        """Cross-entropy with ``cfg.label_smoothing``; soft targets when ``cfg`` mixes batches (mixup / cutmix)."""
        return cls(label_smoothing=cfg.label_smoothing, soft_targets=mixup_active(cfg))

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.criterion(output, target)

    def eval_metrics(self) -> ClassificationMetrics:
        return ClassificationMetrics()

    def train_metrics(self) -> ClassificationTrainMetrics:
        return ClassificationTrainMetrics()


TASKS: dict[str, type[Task]] = {Classification.name: Classification}
"""Task name -> its :class:`Task` class."""


def create_task(name: str, cfg: Any = None) -> Task:
    """The :class:`Task` called ``name``, with a run's options ``cfg`` (``None``: the task's defaults).

    Raises:
        ValueError: an unknown task name (the message lists the known ones).
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
    cls = TASKS[name]
    return cls() if cfg is None else cls.from_config(cfg)
