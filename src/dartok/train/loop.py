"""One epoch of training, one evaluation, and the recipe's optimisation (DeiT's ``engine.py``).

Generic over the task (:mod:`dartok.train.task`): the loss and the metrics come from a
:class:`~dartok.train.task.Task` (default :class:`~dartok.train.task.Classification`).

Batches whose targets carry object boxes (:meth:`~dartok.train.task.Task.unpack`) feed them
to a DART model whose score source is the oracle (:meth:`dartok.DART.oracle_pdf`, set with
:meth:`dartok.DART.given_pdf` around the model call), and, at evaluation, to
:class:`~dartok.train.task.LocalizationMetrics` for every DART model (issue 11).
"""
from __future__ import annotations

import random
import sys
import time
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from .._io import autocast
from ..data.transforms import model_input_size, prepare_images
from .checkpoint import unwrap_model
from .distributed import all_reduce_sum, dist_ready, is_main_process
from .task import Classification, LocalizationMetrics, Task

__all__ = ["build_optimization", "evaluate", "train_one_epoch"]


def _output(out: Any) -> torch.Tensor:
    """The prediction tensor of a model's output (a tensor, the first of a tuple, or ``out[\"logits\"]``)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if isinstance(out, Mapping) and "logits" in out:
        return out["logits"]
    raise TypeError(f"model returned {type(out).__name__}; expected logits tensor")


class _Batch(NamedTuple):
    targets: torch.Tensor
    boxes: torch.Tensor | None


def _unpack(task: Task, targets: Any, device: torch.device) -> _Batch:
    """The task's targets as a tensor on ``device`` and the object boxes (``None`` for plain targets)."""
    targets, boxes = task.unpack(targets)
    targets = torch.as_tensor(targets).to(device, non_blocking=True)
    return _Batch(targets, None if boxes is None else torch.as_tensor(boxes).to(device, non_blocking=True))


def _tokenizer(model: nn.Module):
    """The DART tokenizer of ``model`` (through a DDP wrapper), or ``None`` for other models."""
    from ..models import is_dart

    bare = unwrap_model(model)
    return bare.patch_embed if is_dart(bare) else None


def prior_weight(progress: float, prior_epochs: float) -> float:
    """The share of DART's training-free prior after ``progress`` epochs (docs/method.md §10).

    ``max(0, 1 − progress / prior_epochs)``: 1 at the start, linearly down to 0 at
    ``prior_epochs`` and 0 after; 0 throughout when ``prior_epochs`` is 0.

    Args:
        progress: fractional epochs done (``epoch + step / steps_per_epoch``), ≥ 0.
        prior_epochs: length of the annealing in epochs, ≥ 0.
    """
    if prior_epochs <= 0:
        return 0.0
    return max(0.0, 1.0 - progress / prior_epochs)


def _run_model(model: nn.Module, images: torch.Tensor, boxes: torch.Tensor | None, dart, *,
               capture: bool = False) -> tuple[torch.Tensor, Any]:
    """``model(images)`` → ``(prediction tensor, the tokenizer's DartOutput or None)``.

    An oracle tokenizer (``score_source="oracle"``) gets the score map of ``boxes``; with
    ``capture`` the tokenizer's output is caught with a forward hook (for the localisation metric).
    """
    if dart is None:
        return _output(model(images)), None
    given = dart.oracle_pdf(boxes) if boxes is not None and dart.score_source == "oracle" else None
    seen: list = []
    handle = dart.register_forward_hook(lambda _m, _a, out: seen.append(out)) if capture else None
    try:
        with dart.given_pdf(given):
            out = _output(model(images))
    finally:
        if handle is not None:
            handle.remove()
    return out, (seen[-1] if seen else None)


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
    task: Task | None = None,
) -> dict[str, float]:
    """Evaluate a model on a task's metrics (default: a classifier's).

    Args:
        model: module mapping ``B×C×H×W`` images (or ``B×C×T×H×W`` clips) to the task's
            outputs (``B×K`` logits for classification).
        loader: iterable of ``(inputs, targets)`` batches.
        device: device to run on.
        amp: bf16 autocast.
        input_size: ``(C, H, W)`` to bring batches to (see :func:`prepare_images`);
            default: :func:`model_input_size` if the model has a ``pretrained_cfg``, else
            batches are used as they are.
        progress: show a tqdm bar.
        all_reduce: in a distributed run, sum the metric sums over all ranks (each
            rank passes its own shard of the data, e.g. :func:`shard_indices`; every rank
            must call this, with its own ``loader``, possibly empty). Pass the bare model,
            not the DDP wrapper.
        task: the :class:`~dartok.train.task.Task` whose metrics to compute (default
            :class:`~dartok.train.task.Classification`).

    Returns:
        The task's metrics; for classification ``{"loss": mean cross-entropy (no label
        smoothing), "top1": %, "top5": %, "n": count}`` (``top5`` uses ``min(5, K)`` classes).
        A DART model evaluated on batches with object boxes (a dataset built with
        ``return_box=True``) adds ``object_mass`` and ``object_tokens``
        (:class:`~dartok.train.task.LocalizationMetrics`).
    """
    task = task if task is not None else Classification()
    device = torch.device(device)
    if input_size is None:
        try:
            input_size = model_input_size(model)
        except ValueError:
            input_size = None
    was_training = model.training
    model.eval()
    metrics = task.eval_metrics()
    dart = _tokenizer(model)
    where = LocalizationMetrics() if dart is not None else None  # every rank of a DART run, for all_reduce
    try:
        for images, targets in _progress(loader, enabled=progress and is_main_process(), desc="eval"):
            images = images.to(device, non_blocking=True)
            batch = _unpack(task, targets, device)
            if input_size is not None:
                images = prepare_images(images, input_size)
            with autocast(device, amp):
                output, tokens = _run_model(model, images, batch.boxes, dart, capture=batch.boxes is not None)
            metrics.update(output.float(), batch.targets)
            if tokens is not None:
                where.update(tokens, dart.object_boxes(batch.boxes), alpha=dart.alpha)
    finally:
        model.train(was_training)
    if all_reduce:
        metrics.all_reduce(device)
        if where is not None:
            where.all_reduce(device)
    return {**metrics.compute(), **(where.compute() if where is not None else {})}


def _lr_scaled_groups(model: nn.Module, weight_decay: float) -> list[dict] | None:
    """timm's weight-decay parameter groups (``param_groups_weight_decay``), each split by the
    ``lr_scale`` of the submodule holding its parameters (e.g. :class:`~dartok.scorer.Scorer`'s),
    which timm's schedulers honour. ``None`` when no submodule sets a scale other than 1 (then
    timm's optimizer factory groups the model itself)."""
    from timm.optim import param_groups_weight_decay

    scaled = {id(p): float(m.lr_scale) for _, m in model.named_modules()
              if float(getattr(m, "lr_scale", 1.0)) != 1.0 for p in m.parameters()}
    if not scaled:
        return None
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    groups = []
    for group in param_groups_weight_decay(model, weight_decay, no_weight_decay_list=skip):
        by_scale: dict[float, list] = {}
        for p in group["params"]:
            by_scale.setdefault(scaled.get(id(p), 1.0), []).append(p)
        groups += [{**group, "params": ps, **({"lr_scale": k} if k != 1.0 else {})} for k, ps in by_scale.items()]
    return groups


def build_optimization(model: nn.Module, cfg: Any, updates_per_epoch: int, task: Task | None = None):
    """The recipe's optimizer, schedule and loss, from timm's factories (``cfg``: a ``TrainConfig``).

    AdamW (``cfg.lr``, ``cfg.weight_decay``; timm leaves norms, biases and the parameters in
    ``model.no_weight_decay()`` undecayed); a cosine from ``cfg.lr`` to ``cfg.min_lr`` over all
    ``cfg.epochs · updates_per_epoch`` updates, whose first ``cfg.warmup_epochs`` epochs are
    replaced by a linear warmup from ``cfg.warmup_lr`` (timm's, not a prefix), stepped per
    update (``scheduler.step_update``); the loss is ``task.loss`` (default: the
    classification task of ``cfg``, cross-entropy with ``cfg.label_smoothing``, returned as its
    ``nn.CrossEntropyLoss``).

    Returns:
        ``(optimizer, scheduler, loss_fn)``.
    """
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    optimizer = create_optimizer_v2(_lr_scaled_groups(model, cfg.weight_decay) or model, opt="adamw", lr=cfg.lr,
                                    weight_decay=cfg.weight_decay)
    scheduler, _ = create_scheduler_v2(
        optimizer, sched="cosine", num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
        warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr, step_on_epochs=False, updates_per_epoch=updates_per_epoch,
    )
    if task is None:
        return optimizer, scheduler, Classification.from_config(cfg).criterion
    return optimizer, scheduler, task.loss


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
    task: Task | None = None,
    prior_epochs: float = 0.0,
    mixup_fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    budgets: Sequence[int] | None = None,
    seed: int = 0,
) -> tuple[dict[str, float], int]:
    """One pass over ``loader``; the scheduler steps after every update.

    In a distributed run ``model`` is the ``DistributedDataParallel`` wrapper and
    ``batch_plan`` is :meth:`ShardedBatchSampler.plan`: per step, this rank's number of
    real samples and its loss weight (uneven / padded shards of a last partial batch).
    The statistics are then summed over ranks, and a non-finite loss on any rank stops
    all of them.

    Args:
        loss_fn: ``loss_fn(outputs, targets)``, the mean loss of a batch (e.g. ``task.loss``).
        model_ema: a ``timm.utils.ModelEmaV3`` updated after every optimizer step.
        task: whose :meth:`~dartok.train.task.Task.train_metrics` are reported (default
            :class:`~dartok.train.task.Classification`).
        prior_epochs: a DART tokenizer with a ``prior`` mixes it in with weight
            :func:`prior_weight` of the fractional epoch, set before every step (the weight
            stays as the last step left it, so the evaluation after an epoch sees it too).
        mixup_fn: timm's ``Mixup`` (:func:`dartok.train.augment.build_mixup`): applied to
            each batch at the model's input size, it mixes the images (a DART scorer sees,
            and places its tokens on, the mixed image) and gives the soft targets that
            ``loss_fn`` and the tokenizer's auxiliary losses take; the reported training
            accuracy stays against the unmixed labels.
        budgets: a DART model trains each batch at a token budget drawn uniformly from these
            (``set_num_tokens``; FlexiViT's random patch size), the same on every rank and on
            resumption (a function of ``seed`` and the global step); the budget it had is put back
            at the end of the epoch. ``None``: the model's own budget throughout.
        seed: the run's seed (for ``budgets``).

    Returns:
        ``(stats, global_step)``: the task's training statistics (classification: ``loss``,
        the mean training loss, ``acc``, top-1 % on the training batches, ``n``), plus
        ``time_s``, ``images_per_s``, ``data_time_s`` (time spent waiting for the loader's
        next batch) and ``compute_time_s`` (the rest: copy, forward, backward, step; the
        loss read every step waits for the device, so this is device time too).

    Raises:
        FloatingPointError: the loss became NaN / inf.
    """
    task = task if task is not None else Classification()
    model.train()
    distributed = dist_ready() and torch.distributed.get_world_size() > 1
    stats = task.train_metrics()
    n = 0
    t0 = time.perf_counter()
    t_data = 0.0
    t_ready = t0  # when the loop last asked the loader for a batch
    desc = f"epoch {epoch + 1}" + (f"/{num_epochs}" if num_epochs else "")
    bar = _progress(loader, enabled=progress and is_main_process(), desc=desc, total=len(loader))
    dart = _tokenizer(model)
    anneal = dart is not None and getattr(dart, "prior", None) is not None
    ramp = getattr(getattr(dart, "scorer", None), "set_progress", None)
    own_budget = dart.num_tokens if budgets else None
    for i, (images, targets) in enumerate(bar):
        t_data += time.perf_counter() - t_ready
        if budgets:  # FlexiViT-style: this step's budget, a function of (seed, step) alone
            unwrap_model(model).set_num_tokens(budgets[random.Random(seed * 1_000_003 + global_step).randrange(len(budgets))])
        if anneal:  # the training-free prior's share, 1 → 0 over prior_epochs (docs/method.md §10)
            dart.prior_weight = prior_weight(epoch + i / max(len(loader), 1), prior_epochs)
        if ramp is not None:  # the scorer's sigmoid → softmax ramp, if it has one (docs/method.md §10)
            ramp(epoch + i / max(len(loader), 1))
        images = images.to(device, non_blocking=True)
        labels, boxes = _unpack(task, targets, device)
        images = prepare_images(images, input_size)
        n_real, weight = batch_plan[i] if batch_plan is not None else (labels.shape[0], 1.0)
        soft = labels
        if mixup_fn is not None:  # mixed images, soft targets (label smoothing included)
            images, soft = mixup_fn(images, labels)
        with autocast(device, amp):
            logits, _ = _run_model(model, images, boxes, dart)
        task_loss = loss_fn(logits.float(), soft)
        # the tokenizer's auxiliary losses (CAM head, taught prior; docs/method.md §10): trained, not reported
        aux = dart.auxiliary_loss(soft) if dart is not None else None
        loss = task_loss if aux is None else task_loss + aux
        bad = not torch.isfinite(loss)
        if distributed:  # every rank must stop together, or the others hang in the all-reduce
            bad = all_reduce_sum([float(bad)], device)[0] > 0
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
        stats.update(logits[:n_real].detach(), labels[:n_real], loss=task_loss.item() if n_real else 0.0)
        n += n_real
        if bar is not loader and (i % 5 == 0 or i == len(loader) - 1):
            dt = time.perf_counter() - t0
            shown = {k: f"{v:.4g}" for k, v in stats.compute().items() if k != "n"}
            bar.set_postfix(**shown, img_s=f"{n / max(dt, 1e-9):.0f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        t_ready = time.perf_counter()
    if own_budget is not None:  # evaluation and checkpoints see the run's budget
        unwrap_model(model).set_num_tokens(own_budget)
    if bar is not loader:
        bar.close()
    if distributed:
        stats.all_reduce(device)
    dt = time.perf_counter() - t0
    out = stats.compute()
    out.update(time_s=dt, images_per_s=out["n"] / max(dt, 1e-9), data_time_s=t_data,
               compute_time_s=max(dt - t_data, 0.0))
    return out, global_step
