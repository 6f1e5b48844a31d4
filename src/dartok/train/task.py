"""What a task is: its training loss, its metrics and which metric is best.

The training loop (:mod:`dartok.train.loop`) and the run (:mod:`dartok.train.run`) know
nothing about classes or labels: they call the task for the loss and keep its metric sums.
A dataset names its task in the registry (:func:`dartok.data.register_dataset`, ``task=``);
:func:`create_task` turns that name and a run's options into a :class:`Task`.

Metrics are sums (:class:`MetricSums`): a batch adds to them, ranks add theirs together
(:meth:`MetricSums.all_reduce`) and :meth:`MetricSums.compute` turns the totals into the
reported numbers, so metrics over many batches or ranks equal those over the whole set.

Adding a task: subclass :class:`Task` (``name``, ``default_data``, ``best_metric``,
``higher_is_better``, ``columns``, ``target_key``, ``loss``, ``eval_metrics``,
``train_metrics``, ``from_config``), add it to :data:`TASKS`, and register its datasets with
``task=<name>``; a model of another shape than a classifier is a ``task=`` of
:func:`dartok.models.create_model`.

Two tasks: :class:`Classification` (``B×K`` logits, int labels) and :class:`Segmentation`
(``B×K×H×W`` logits, ``B×H×W`` int masks with 255 = ignore; mIoU, pixel accuracy, per-class IoU).

Targets that carry more than the task's target (a dataset's object box, ``return_box=True``:
``{"label": ..., "box": ...}``) are split by :meth:`Task.unpack`; the box goes to the oracle
score source and to :class:`LocalizationMetrics` (issue 11), never to the loss.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.seg_folder import IGNORE_INDEX
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
    "Segmentation",
    "SegmentationMetrics",
    "SegmentationTrainMetrics",
    "TASKS",
    "Task",
    "check_label_smoothing",
    "create_task",
    "resize_logits",
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
        default_data: the dataset a run of this task trains on when none is named.
        target_key: the key of the task's target in a mapping of targets (``return_box`` items).
        best_metric: key of :meth:`eval_metrics`' result that picks the best epoch.
        higher_is_better: direction of ``best_metric``.
        columns: the evaluation metrics a report shows, ``(key, label, unit)`` triples, the
            best metric first (``compare``'s tables and figure, the CLI's summaries).
    """

    name: ClassVar[str] = ""
    default_data: ClassVar[str] = ""
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

    def details(self, metrics: Mapping[str, Any], classes: Sequence[str] | None = None) -> list[str]:
        """Further lines of a result for people, after :meth:`describe` (default none; segmentation:
        the per-class IoU, named by ``classes``)."""
        return []

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
    default_data = "cluttered_fmnist"
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


def resize_logits(output: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``B×K×h×w`` logits at the label size ``(H, W)``: as they are, else bilinearly resized
    (``align_corners=False``, as mmsegmentation scores predictions made at another size)."""
    if tuple(output.shape[-2:]) == tuple(size):
        return output
    return F.interpolate(output, size=tuple(size), mode="bilinear", align_corners=False)


def _check_masks(output: torch.Tensor, target: torch.Tensor) -> None:
    """Raise ``ValueError`` for masks that do not fit the logits (shape, dtype, labels out of range)."""
    if output.dim() != 4 or target.dim() != 3 or output.shape[0] != target.shape[0]:
        raise ValueError(f"segmentation needs B×K×H×W logits and B×H×W masks, got {tuple(output.shape)} and "
                         f"{tuple(target.shape)}")
    if target.dtype not in (torch.int64, torch.int32, torch.uint8, torch.int16):
        raise ValueError(f"segmentation masks must hold integer class indices, got {target.dtype}")
    k = output.shape[1]
    if target.numel():
        bad = (target >= k) & (target != IGNORE_INDEX) | (target < 0)
        if bool(bad.any()):
            raise ValueError(f"a mask has label {int(target[bad][0])}, outside the model's {k} classes "
                             f"(0..{k - 1}, {IGNORE_INDEX} = ignore); pass --num-classes or fix the labels")


class SegmentationMetrics(MetricSums):
    """Per-pixel metrics of ``B×K×h×w`` logits against ``B×H×W`` masks (255 = ignore).

    The logits are brought to the masks' size first (:func:`resize_logits`). Per class k the
    sums of the intersection, the predicted and the labelled pixels over all images (as
    mmsegmentation's ``IoUMetric``); :meth:`compute` gives

    - ``miou``: the mean over classes of ``IoU_k = |pred_k ∩ label_k| / |pred_k ∪ label_k|`` (%),
      classes that neither the labels nor the predictions hold left out;
    - ``pixel_acc``: the share of labelled pixels predicted right (%);
    - ``class_iou``: the K per-class IoUs (%), ``None`` for a class left out;
    - ``loss``: the mean cross-entropy over the labelled pixels (no label smoothing);
    - ``n``: the number of images.

    With no labelled pixel every value but ``n`` is NaN (``class_iou`` all ``None``).

    Args:
        num_classes: K (``None``: taken from the first batch's logits; every rank of a
            distributed evaluation needs it given).
    """

    def __init__(self, num_classes: int | None = None) -> None:
        self.num_classes = None
        self.keys = ("loss", "pixels", "correct", "n")
        super().__init__()
        if num_classes is not None:
            self._size(int(num_classes))

    def _size(self, k: int) -> None:
        self.num_classes = k
        per_class = tuple(f"{name}_{c}" for name in ("inter", "pred", "label") for c in range(k))
        self.keys = ("loss", "pixels", "correct", "n", *per_class)
        for key in per_class:
            self.sums.setdefault(key, 0.0)

    def update(self, output: torch.Tensor, target: torch.Tensor, **extra: Any) -> None:
        logits = resize_logits(output.float(), target.shape[-2:])
        _check_masks(logits, target)
        if self.num_classes is None:
            self._size(logits.shape[1])
        k = self.num_classes
        target = target.long()
        valid = target != IGNORE_INDEX
        self.sums["loss"] += F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum").item()
        pred = logits.argmax(1)[valid]
        label = target[valid]
        inter = torch.bincount(label[pred == label], minlength=k)[:k]
        area_pred = torch.bincount(pred, minlength=k)[:k]
        area_label = torch.bincount(label, minlength=k)[:k]
        for c, (i, p, lab) in enumerate(zip(inter.tolist(), area_pred.tolist(), area_label.tolist())):
            self.sums[f"inter_{c}"] += i
            self.sums[f"pred_{c}"] += p
            self.sums[f"label_{c}"] += lab
        self.sums["pixels"] += label.numel()
        self.sums["correct"] += int(inter.sum())
        self.sums["n"] += target.shape[0]

    def compute(self) -> dict[str, Any]:
        n = int(round(self.sums["n"]))
        k = self.num_classes or 0
        ious = []
        for c in range(k):
            union = self.sums[f"pred_{c}"] + self.sums[f"label_{c}"] - self.sums[f"inter_{c}"]
            ious.append(100.0 * self.sums[f"inter_{c}"] / union if union > 0 else None)
        present = [v for v in ious if v is not None]
        pixels = self.sums["pixels"]
        nan = float("nan")
        return {"loss": self.sums["loss"] / pixels if pixels else nan,
                "miou": sum(present) / len(present) if present and pixels else nan,
                "pixel_acc": 100.0 * self.sums["correct"] / pixels if pixels else nan,
                "class_iou": ious, "n": n}


class SegmentationTrainMetrics(MetricSums):
    """Training-batch statistics of segmentation: mean training loss (per image) and pixel accuracy (%).

    :meth:`update` takes the batch's mean training ``loss`` as a keyword; :meth:`compute` gives
    ``{"loss", "pixel_acc", "n"}`` (``n`` images).
    """

    keys = ("loss", "correct", "pixels", "n")

    def update(self, output: torch.Tensor, target: torch.Tensor, *, loss: float = 0.0, **extra: Any) -> None:
        b = target.shape[0]
        if b:
            pred = resize_logits(output, target.shape[-2:]).argmax(1)
            valid = target != IGNORE_INDEX
            self.sums["loss"] += float(loss) * b
            self.sums["correct"] += (pred[valid] == target[valid]).sum().item()
            self.sums["pixels"] += valid.sum().item()
        self.sums["n"] += b

    def compute(self) -> dict[str, float]:
        n = int(round(self.sums["n"]))
        return {"loss": self.sums["loss"] / max(n, 1),
                "pixel_acc": 100.0 * self.sums["correct"] / max(self.sums["pixels"], 1), "n": n}


class Segmentation(Task):
    """Semantic segmentation: items ``(x, H×W int mask)``, the model gives ``B×K×h×w`` logits.

    Training loss: per-pixel cross-entropy (``label_smoothing`` as the run's) over the pixels
    whose label is not :data:`~dartok.data.IGNORE_INDEX` (255), the logits brought to the
    masks' size first (:func:`resize_logits`). Metrics: :class:`SegmentationMetrics` (mIoU,
    pixel accuracy, per-class IoU); best metric ``"miou"`` (the best-mIoU checkpoint).
    The object box of a ``return_box`` item (``{"mask", "box"}``) serves the oracle score
    source and the localisation metric, as for classification.

    Args:
        num_classes: K, for the metrics (``None``: from the logits).
        label_smoothing: in [0, 1).

    Raises:
        ValueError: ``label_smoothing`` outside [0, 1); in :meth:`loss`, masks that do not fit
            the logits (shape, a label >= K other than 255).
    """

    name = "segmentation"
    default_data = "cluttered_fmnist_seg"
    best_metric = "miou"
    higher_is_better = True
    columns = (("miou", "mIoU", "%"), ("pixel_acc", "pixel acc", "%"))
    target_key = "mask"

    def __init__(self, num_classes: int | None = None, label_smoothing: float = 0.0) -> None:
        self.num_classes = num_classes
        self.label_smoothing = check_label_smoothing(label_smoothing)

    @classmethod
    def from_config(cls, cfg: Any) -> "Segmentation":
        """Cross-entropy with ``cfg.label_smoothing``, metrics over ``cfg.num_classes`` classes."""
        return cls(num_classes=cfg.num_classes, label_smoothing=cfg.label_smoothing)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = resize_logits(output, target.shape[-2:])
        _check_masks(logits, target)
        target = target.long()
        total = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum",
                                label_smoothing=self.label_smoothing)
        return total / (target != IGNORE_INDEX).sum().clamp_min(1)

    def eval_metrics(self) -> SegmentationMetrics:
        return SegmentationMetrics(self.num_classes)

    def train_metrics(self) -> SegmentationTrainMetrics:
        return SegmentationTrainMetrics()

    def details(self, metrics: Mapping[str, Any], classes: Sequence[str] | None = None) -> list[str]:
        """``["per-class IoU (%): background 97.33, T-shirt/top 41.20, ..."]`` when ``metrics`` has
        ``class_iou`` (``-`` for a class neither labelled nor predicted), else ``[]``."""
        ious = metrics.get("class_iou")
        if not ious:
            return []
        names = list(classes or [])
        return ["per-class IoU (%): " + ", ".join(
            f"{names[c] if c < len(names) else c} {'-' if v is None else f'{v:.2f}'}" for c, v in enumerate(ious))]


TASKS: dict[str, type[Task]] = {Classification.name: Classification, Segmentation.name: Segmentation}
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
