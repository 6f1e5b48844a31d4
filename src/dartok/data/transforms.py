"""Input preparation for models: bring batches to a model's input size, PIL transforms for timm datasets."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["describe_transform", "model_input_size", "pil_transform", "prepare_images"]


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


class _ConvertMode:
    """PIL mode conversion (picklable; runs before timm's transform)."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, img):
        return img.convert(self.mode) if hasattr(img, "convert") and img.mode != self.mode else img

    def __repr__(self) -> str:
        return f"ConvertMode({self.mode!r})"


def pil_transform(model: nn.Module, is_training: bool, in_chans: int, **overrides):
    """timm transform for PIL datasets: mode conversion + ``timm.data.create_transform``.

    Uses ``timm.data.resolve_data_config({}, model=model)`` (input size, interpolation,
    crop) with mean / std trimmed to ``in_chans``; ``overrides`` are further
    ``create_transform`` kwargs that replace those or timm's defaults (``scale``, ``ratio``,
    ``hflip``, ``vflip``, ``color_jitter``, ``auto_augment``, ``re_prob``, ``re_mode``,
    ``re_count``, ``interpolation``, ``crop_pct``; see
    :func:`dartok.train.augment.transform_kwargs`). With none, training gets timm's ImageNet
    default: ``RandomResizedCrop`` of 8-100% of the area at aspect 3/4-4/3, horizontal flip
    (p 0.5), colour jitter 0.4; evaluation a resize and centre crop (``crop_pct``).

    Returns:
        ``(transform, data_config)``: the ``Compose`` (PIL image → ``in_chans×H×W`` float
        tensor) and the kwargs it was built from (``input_size``, ``mean``, ``std``, ... and
        ``overrides``).

    Raises:
        TypeError: an override ``create_transform`` does not take.
    """
    import timm.data
    from torchvision import transforms as T

    dc = timm.data.resolve_data_config({}, model=model)
    dc["input_size"] = model_input_size(model)
    dc["mean"] = tuple(dc["mean"])[:in_chans] if len(dc["mean"]) >= in_chans else tuple(dc["mean"]) * in_chans
    dc["std"] = tuple(dc["std"])[:in_chans] if len(dc["std"]) >= in_chans else tuple(dc["std"]) * in_chans
    dc.update(overrides)
    tf = timm.data.create_transform(**dc, is_training=is_training)
    return T.Compose([_ConvertMode("L" if in_chans == 1 else "RGB"), tf]), dc


def describe_transform(transform) -> str:
    """A one-line description of a (nested) ``Compose``: each step's ``repr`` on one line, a
    RandAugment / AutoAugment as its policy size (``RandAugment(n=2, 15 ops, m=9, mstd=0.5)``)
    instead of its op list."""
    steps = []

    def walk(t):
        inner = getattr(t, "transforms", None)
        if isinstance(inner, (list, tuple)):
            for u in inner:
                walk(u)
            return
        ops = getattr(t, "ops", None)
        if isinstance(ops, (list, tuple)) and ops:
            op = ops[0]
            detail = f", m={op.magnitude}, mstd={op.magnitude_std}" if hasattr(op, "magnitude") else ""
            layers = f"n={t.num_layers}, " if hasattr(t, "num_layers") else ""
            steps.append(f"{type(t).__name__}({layers}{len(ops)} ops{detail})")
            return
        steps.append(" ".join(repr(t).split()))

    walk(transform)
    return " > ".join(steps)
