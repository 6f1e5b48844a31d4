"""Pre-train a DART scorer's trunk as a classifier on the full images, then freeze it (docs/method.md §10).

The paper's scorer trunk is an ImageNet-trained MobileNetV3, frozen: it already responds to
objects before DART training starts. A user without such weights (and every run on this
project's CPU data) starts from a random trunk, and the classification loss that reaches it
through the partition is too weak for it to learn where the object is in a short run
(issue 11: object mass ≈ the box's area share after 5 epochs). This module gives such a trunk
what the paper's had, made from the user's own training data:

1. ``epochs`` passes over the training loader in which only the scorer's trunk and its
   auxiliary class-activation (CAM) head learn, as a plain classifier of the full image
   (its pooled CAM logits and cross-entropy, as in :meth:`dartok.scorer.Scorer.auxiliary_loss`), with AdamW
   and timm's cosine schedule over these steps. The backbone does not run.
2. The trunk is then frozen and kept in eval mode (:func:`freeze_scorer_trunk`), as the paper
   keeps its pretrained trunk; DART training proper trains the scorer head, its contrast, the
   CAM head and the backbone.

A class-activation map at cells no larger than the backbone's patch is what localises here
(``scorer_stage=2``: stride 8; measured in README "Accuracy"); it is a model option, not set here.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .._io import autocast
from ..data.transforms import prepare_images
from .distributed import all_reduce_sum, dist_ready, is_main_process

__all__ = ["freeze_scorer_trunk", "learned_scorer", "pretrain_scorer"]


def learned_scorer(model: nn.Module):
    """The :class:`~dartok.scorer.Scorer` of a DART ``model`` whose trunk learns from scratch, or ``None``.

    ``None`` for a model without a DART tokenizer, an oracle run (no scorer), a scorer that is
    not a :class:`~dartok.scorer.Scorer`, or one whose trunk is frozen (the paper's pretrained trunk).
    """
    from ..models import is_dart
    from ..scorer import Scorer
    from .checkpoint import unwrap_model

    bare = unwrap_model(model)
    if not is_dart(bare):
        return None
    scorer = getattr(bare.patch_embed, "scorer", None)
    if not isinstance(scorer, Scorer) or not scorer.trainable_trunk:
        return None
    return scorer


def freeze_scorer_trunk(scorer) -> None:
    """Freeze a scorer's trunk as the paper's pretrained one is: no gradients, eval mode for good.

    Sets ``scorer.trainable_trunk = False`` (so :meth:`~dartok.scorer.Scorer.train` keeps the
    trunk in eval mode, its BatchNorm statistics fixed, and inference runs its BatchNorm-folded
    copy) and ``requires_grad_(False)`` on the trunk; the head, the contrast and the CAM head
    stay trainable. Build the optimizer after this call: timm's parameter groups skip frozen
    parameters.
    """
    scorer.trainable_trunk = False
    scorer.trunk.requires_grad_(False)
    scorer.trunk.eval()


def pretrain_scorer(
    scorer,
    loader: Iterable,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    device: torch.device,
    input_size: tuple[int, int, int],
    unpack: Callable[[Any], torch.Tensor],
    amp: bool = False,
    mixup_fn: Callable | None = None,
    progress: bool = False,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    set_epoch: Callable[[int], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``scorer``'s trunk and CAM head as a full-image classifier for ``epochs`` passes.

    The optimizer is timm's AdamW (``lr``, ``weight_decay``; norms and biases undecayed) over
    the trunk and the CAM head only; the learning rate follows timm's cosine from ``lr`` to
    ``lr / 100`` over all steps, stepped per update. In a distributed run the gradients are
    averaged over the processes before each step (every process holds the same scorer, as
    after DDP's broadcast), so all end with the same weights.

    Args:
        scorer: a :class:`~dartok.scorer.Scorer` with a trainable trunk and a CAM head
            (``cam_classes`` > 0). Left in training mode, trunk still trainable: freeze it
            with :func:`freeze_scorer_trunk`.
        loader: the training loader, ``(images, targets)`` batches.
        epochs: passes over ``loader`` (≥ 1).
        lr, weight_decay: peak learning rate and AdamW weight decay.
        device: where the scorer is.
        input_size: ``(C, H, W)`` the model takes (:func:`dartok.data.transforms.prepare_images`).
        unpack: targets of a batch → ``B`` int64 class indices on ``device``.
        amp: bf16 autocast.
        mixup_fn: timm's ``Mixup``: mixed images and soft targets, as in DART training.
        progress: a tqdm bar per epoch (main process).
        on_epoch: called after each epoch with ``(epoch index, stats)``.
        set_epoch: called before each epoch with its index (the loader's data order).

    Returns:
        Per epoch: ``{"epoch", "loss", "acc", "n", "time_s"}`` (``acc``: the auxiliary
        classifier's top-1 %, against the unmixed labels, on the training batches).

    Raises:
        ValueError: a scorer without a CAM head or with a frozen trunk, or ``epochs`` < 1.
        FloatingPointError: a non-finite loss.
    """
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"scorer pretraining epochs must be an int >= 1, got {epochs!r}")
    if scorer.cam is None:
        raise ValueError("scorer pretraining trains the scorer as a classifier through its CAM head, and this scorer "
                         "has none: build the model with scorer_cam=True (the default for a trunk trained from "
                         "scratch) or a scorer dict with cam_classes > 0")
    if not scorer.trainable_trunk:
        raise ValueError("scorer pretraining needs a trainable scorer trunk; this one is frozen (pretrained)")
    params = nn.ModuleDict({"trunk": scorer.trunk, "cam": scorer.cam})
    optimizer = create_optimizer_v2(params, opt="adamw", lr=lr, weight_decay=weight_decay)
    steps = max(1, len(loader))  # type: ignore[arg-type]
    scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=epochs, warmup_epochs=0,
                                       min_lr=lr / 100, step_on_epochs=False, updates_per_epoch=steps)
    distributed = dist_ready() and torch.distributed.get_world_size() > 1
    trained = [p for p in params.parameters() if p.requires_grad]
    history = []
    step = 0
    for epoch in range(epochs):
        if set_epoch is not None:
            set_epoch(epoch)
        scorer.train()
        t0 = time.perf_counter()
        total_loss, correct, n = 0.0, 0, 0
        batches = loader
        if progress and is_main_process():
            from tqdm.auto import tqdm

            batches = tqdm(loader, desc=f"scorer pretraining {epoch + 1}/{epochs}", leave=False, dynamic_ncols=True)
        for images, targets in batches:
            labels = unpack(targets)
            images = prepare_images(images.to(device, non_blocking=True), input_size)
            soft = labels
            if mixup_fn is not None:
                images, soft = mixup_fn(images, labels)
            with autocast(device, amp):
                logits = scorer.cam_logits(scorer.features(images))  # the head and the score map are not needed
            loss = F.cross_entropy(logits.float(), soft)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite scorer pretraining loss {loss.item()} at epoch {epoch + 1}; "
                                         f"try a lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if distributed:
                world = torch.distributed.get_world_size()
                for p in trained:
                    if p.grad is not None:
                        torch.distributed.all_reduce(p.grad)
                        p.grad.div_(world)
            optimizer.step()
            step += 1
            scheduler.step_update(num_updates=step)
            b = labels.shape[0]
            total_loss += loss.item() * b
            correct += int((logits.detach().argmax(1) == labels).sum())
            n += b
        if distributed:
            total_loss, correct, n = all_reduce_sum([total_loss, float(correct), float(n)], device)
        stats = {"epoch": epoch + 1, "loss": total_loss / max(n, 1), "acc": 100.0 * correct / max(n, 1),
                 "n": int(n), "time_s": time.perf_counter() - t0}
        history.append(stats)
        if on_epoch is not None:
            on_epoch(epoch, stats)
    return history
