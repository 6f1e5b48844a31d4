"""Classify image files with a trained checkpoint (``dartok predict``), preparing them as its evaluation did."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

__all__ = ["input_transform", "predict"]


def input_transform(model: nn.Module, config: Mapping[str, Any]) -> Callable[[Any], torch.Tensor]:
    """PIL image -> the ``C×H×W`` float tensor the checkpoint's model takes, prepared as its
    evaluation data were.

    * Models trained on PIL data (ImageFolder, timm datasets): timm's evaluation transform
      (:func:`dartok.data.transforms.pil_transform`: resize, centre crop, normalise with the
      model's mean / std), as in training's evaluation.
    * Models trained on tensor data (Fashion-MNIST canvases): the image in [0, 1] with the model's
      channels (grey <-> RGB), normalised with the checkpoint's recorded mean / std and resized to
      the model's input (:func:`dartok.data.transforms.prepare_images`).
    """
    from ..data import dataset_info
    from ..data.transforms import model_input_size, pil_transform, prepare_images

    d = config.get("data") or {}
    in_size = model_input_size(model)
    chans = in_size[0]
    try:
        tensors = dataset_info(d.get("name", "cluttered_fmnist")).tensors
    except ValueError:  # a dataset this install does not know: its images are PIL images
        tensors = False
    if not tensors:
        return pil_transform(model, False, chans)[0]
    import numpy as np

    mean = torch.tensor(d.get("mean") or [0.0] * chans, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(d.get("std") or [1.0] * chans, dtype=torch.float32).view(-1, 1, 1)

    def to_input(img) -> torch.Tensor:
        img = img.convert("L" if chans == 1 else "RGB")
        a = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
        x = a[None] if a.ndim == 2 else a.permute(2, 0, 1)
        return prepare_images(((x - mean) / std)[None], in_size)[0]

    return to_input


def predict(
    checkpoint: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    *,
    top_k: int = 5,
    batch_size: int = 32,
    device: str | None = None,
    num_tokens: int | None = None,
) -> dict[str, Any]:
    """The ``top_k`` classes of every image in ``inputs`` by a checkpoint's model.

    Args:
        checkpoint: a checkpoint folder (``<run>/checkpoint``).
        inputs: image files, or folders searched recursively for images
            (:func:`dartok.data.folder.list_images`).
        top_k: classes per image (capped at the number of classes), >= 1.
        batch_size: images per forward pass, >= 1.
        device: ``"cpu"``, ``"cuda"``, ... (default: cuda if available).
        num_tokens: run a DART model at this token budget instead of the trained one
            (:func:`dartok.models.set_num_tokens`); ``None``: the trained one.

    Returns:
        ``{"checkpoint", "model", "num_tokens", "classes", "predictions"}`` (``num_tokens``: the DART
        budget used, ``None`` for a fixed-grid model); ``classes``: the model's class
        names (their indices as strings for a checkpoint that has none); ``predictions``: one
        ``{"path": str, "top": [{"class": name, "index": int, "prob": float in [0, 1]}, ...]}``
        per image, most probable first (softmax over the logits).

    Raises:
        ValueError: ``top_k`` or ``batch_size`` < 1, no images found, an unreadable image
            (:class:`dartok.data.folder.ImageReadError`, naming it), a corrupt checkpoint, a
            checkpoint of a video model or of an oracle model (it needs object boxes), ``num_tokens``
            for a fixed-grid model or one the tokenizer refuses.
        FileNotFoundError: a missing checkpoint or input path.
    """
    from ..data.folder import list_images, load_image
    from ..models import is_dart
    from ..train.checkpoint import checkpoint_classes, model_from_checkpoint
    from ..train.distributed import select_device
    from ..train.loop import _output

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"--top-k must be an integer >= 1, got {top_k!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--batch-size must be an integer >= 1, got {batch_size!r}")
    paths = list_images(inputs)
    dev = select_device(device)
    model, config = model_from_checkpoint(checkpoint, device=dev, num_tokens=num_tokens)
    if config.get("task", "classification") != "classification":
        raise ValueError(f"checkpoint {str(checkpoint)!r} is a {config['task']} model; predict gives class names of "
                         f"whole images (dartok visualize -c {str(checkpoint)} --image ... draws its masks)")
    if (config.get("model_kwargs") or {}).get("num_frames"):
        raise ValueError(f"checkpoint {str(checkpoint)!r} is a video model ({config['model']}); predict takes images")
    if is_dart(model) and model.patch_embed.score_source == "oracle":
        raise ValueError(f"checkpoint {str(checkpoint)!r} is an oracle model: its score map is a dataset's object box, "
                         f"which image files do not have")
    tf = input_transform(model, config)
    names = checkpoint_classes(config)
    out = []
    with torch.no_grad():
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            x = torch.stack([tf(load_image(p)) for p in chunk]).to(dev)
            probs = _output(model(x)).float().softmax(-1).cpu()
            if names is None:
                names = [str(i) for i in range(probs.shape[-1])]
            p, idx = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
            for path, pr, ix in zip(chunk, p.tolist(), idx.tolist()):
                out.append({"path": str(path), "top": [{"class": names[i] if i < len(names) else str(i), "index": i,
                                                        "prob": v} for v, i in zip(pr, ix)]})
    return {"checkpoint": str(checkpoint), "model": config["model"],
            "num_tokens": model.patch_embed.num_tokens if is_dart(model) else None, "classes": names,
            "predictions": out}
