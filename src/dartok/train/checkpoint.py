"""Atomic, validated checkpoints: ``model.safetensors`` + ``config.json`` (+ ``train_state.pt``).

A checkpoint is a directory::

    checkpoint/
        model.safetensors   # weights (shared/tied tensors stored once, aliases in the metadata)
        model_ema.safetensors  # optional: EMA of the weights (``--model-ema``), same keys
        config.json         # model name + kwargs, data config, epoch, metrics, ...
        train_state.pt      # optional: optimizer, scheduler, epoch, step, RNG states, best acc

Saving is atomic: everything is written and fsync'ed into a temporary sibling directory,
which is then swapped into place with renames (old -> ``<name>.old``, tmp -> ``<name>``,
then the old copy is deleted). An exception or crash at any point leaves either the old or
the new checkpoint complete; if a crash hits exactly between the two renames, the loader
finds the intact ``<name>.old`` and uses it.

Loading validates everything and raises :class:`FileNotFoundError` (missing directory or
file) or :class:`ValueError` (corrupt file, bad JSON, state-dict key/shape mismatch) with
a message naming the file and what was wrong.

Weights are always those of the bare model: a ``DistributedDataParallel`` /
``DataParallel`` wrapper (or a timm ``ModelEma*`` holder) is unwrapped before saving and
loading (:func:`unwrap_model`), so keys never carry a ``module.`` prefix.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .._io import atomic_dir, backup_path, json_default

__all__ = [
    "WEIGHTS_NAME",
    "EMA_WEIGHTS_NAME",
    "CONFIG_NAME",
    "TRAIN_STATE_NAME",
    "CHECKPOINT_FORMAT_VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "load_config",
    "load_weights",
    "load_train_state",
    "model_from_checkpoint",
    "checkpoint_exists",
    "resolve_checkpoint_dir",
    "has_ema_weights",
    "unwrap_model",
    "read_state_dict",
    "init_from",
    "checkpoint_classes",
]

WEIGHTS_NAME = "model.safetensors"
EMA_WEIGHTS_NAME = "model_ema.safetensors"
CONFIG_NAME = "config.json"
TRAIN_STATE_NAME = "train_state.pt"
CHECKPOINT_FORMAT_VERSION = 1
_ALIAS_KEY = "dartok_aliases"


# --------------------------------------------------------------------------------------
# low-level helpers
# --------------------------------------------------------------------------------------
def _dedupe_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Split a state dict into unique CPU tensors + ``{alias: kept_name}`` for tied tensors.

    Exact aliases (same storage, offset, shape, stride, dtype) are stored once. Other
    tensors that merely share storage (views) are copied so safetensors accepts them.
    """
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    storage_users: dict[tuple, int] = {}
    for name, t in state_dict.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"state_dict entry {name!r} is not a tensor ({type(t).__name__})")
        t = t.detach()
        if t.numel() == 0:
            unique[name] = t.cpu().clone()
            continue
        sid = (t.device.type, t.device.index, t.untyped_storage().data_ptr())
        key = (sid, t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        storage_users[sid] = storage_users.get(sid, 0) + 1
        unique[name] = t
    out: dict[str, torch.Tensor] = {}
    for name, t in unique.items():
        if t.numel() > 0:
            sid = (t.device.type, t.device.index, t.untyped_storage().data_ptr())
            partial = t.untyped_storage().nbytes() != t.numel() * t.element_size()
            if storage_users.get(sid, 0) > 1 or partial or not t.is_contiguous():
                t = t.contiguous().clone() if t.device.type == "cpu" else t.contiguous()
        out[name] = t.cpu()
    return out, aliases


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside ``DistributedDataParallel`` / ``DataParallel`` / timm ``ModelEma*`` wrappers."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    while True:
        if isinstance(model, (DistributedDataParallel, DataParallel)):
            model = model.module
        elif type(model).__name__.startswith("ModelEma") and isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            return model


def _write_weights(path: Path, model: nn.Module) -> None:
    from safetensors.torch import save_file

    unique, aliases = _dedupe_state_dict(unwrap_model(model).state_dict())
    metadata = {"format": "pt", _ALIAS_KEY: json.dumps(aliases, sort_keys=True)}
    save_file(unique, str(path), metadata=metadata)
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def checkpoint_exists(path_dir: str | os.PathLike) -> bool:
    """True if ``path_dir`` (or its crash-recovery backup ``<path_dir>.old``) holds a checkpoint."""
    try:
        resolve_checkpoint_dir(path_dir)
    except FileNotFoundError:
        return False
    return True


def resolve_checkpoint_dir(path_dir: str | os.PathLike) -> Path:
    """Return the directory to load a checkpoint from.

    Normally ``path_dir`` itself. If it does not exist but ``<path_dir>.old`` does (a crash
    happened between the two renames of :func:`save_checkpoint`), that backup is returned.

    Raises:
        FileNotFoundError: neither exists.
    """
    path = Path(path_dir)
    if (path / CONFIG_NAME).is_file() or (path / WEIGHTS_NAME).is_file():
        return path
    backup = backup_path(path)
    if not path.exists() and (backup / CONFIG_NAME).is_file() and (backup / WEIGHTS_NAME).is_file():
        return backup
    if path.is_file():
        raise FileNotFoundError(f"checkpoint path {str(path)!r} is a file; expected a checkpoint directory "
                                f"containing {WEIGHTS_NAME} and {CONFIG_NAME}")
    if path.is_dir():
        raise FileNotFoundError(f"{str(path)!r} is not a checkpoint directory: {CONFIG_NAME} and {WEIGHTS_NAME} "
                                f"not found in it")
    raise FileNotFoundError(f"checkpoint directory {str(path)!r} does not exist")


# --------------------------------------------------------------------------------------
# save
# --------------------------------------------------------------------------------------
def save_checkpoint(
    path_dir: str | os.PathLike,
    model: nn.Module,
    config: Mapping[str, Any],
    train_state: Mapping[str, Any] | None = None,
    *,
    ema_model: nn.Module | None = None,
) -> Path:
    """Atomically write a checkpoint directory.

    Args:
        path_dir: target directory (created or replaced as a whole).
        model: model whose ``state_dict()`` is saved to ``model.safetensors`` (tied
            tensors are stored once; their aliases are kept in the file metadata).
            A DDP / DataParallel wrapper is unwrapped first (no ``module.`` prefix).
        config: JSON-serializable dict (model name, ``model_kwargs``, data config,
            epoch, metrics, ...). ``format_version`` is added.
        train_state: optional dict saved with ``torch.save`` to ``train_state.pt``
            (optimizer/scheduler state dicts, epoch, step, RNG states, ...). It must
            only hold tensors and plain Python containers/scalars, so that it loads with
            ``torch.load(weights_only=True)``.
        ema_model: optional EMA copy of the model (a module, or a timm ``ModelEmaV3``),
            saved to ``model_ema.safetensors`` with the same keys as ``model``.

    Returns:
        The checkpoint directory path.

    The previous checkpoint at ``path_dir`` (if any) survives any exception raised while
    saving: files go to a temporary sibling directory first, are fsync'ed, and are then
    swapped in with two renames.
    """
    target = Path(path_dir)
    with atomic_dir(target) as tmp:
        _write_weights(tmp / WEIGHTS_NAME, model)
        if ema_model is not None:
            _write_weights(tmp / EMA_WEIGHTS_NAME, ema_model)
        cfg = dict(config)
        cfg.setdefault("format_version", CHECKPOINT_FORMAT_VERSION)
        text = json.dumps(cfg, indent=2, sort_keys=False, default=json_default)
        with open(tmp / CONFIG_NAME, "w", encoding="utf-8") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        if train_state is not None:
            with open(tmp / TRAIN_STATE_NAME, "wb") as f:
                torch.save(dict(train_state), f)
                f.flush()
                os.fsync(f.fileno())
    return target


# --------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------
def load_config(path_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``config.json`` of a checkpoint directory.

    Raises:
        FileNotFoundError: directory or ``config.json`` missing.
        ValueError: invalid JSON, not an object, or no ``model`` entry.
    """
    path = resolve_checkpoint_dir(path_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint config {str(path)!r} is missing")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"checkpoint config {str(path)!r} is not valid JSON: {e}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"checkpoint config {str(path)!r} is not valid UTF-8 text: {e}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"checkpoint config {str(path)!r} must hold a JSON object, got {type(cfg).__name__}")
    if not isinstance(cfg.get("model"), str) or not cfg["model"]:
        raise ValueError(f"checkpoint config {str(path)!r} has no 'model' name entry")
    mk = cfg.get("model_kwargs", {})
    if not isinstance(mk, dict):
        raise ValueError(f"checkpoint config {str(path)!r}: 'model_kwargs' must be an object, got {type(mk).__name__}")
    version = cfg.get("format_version", CHECKPOINT_FORMAT_VERSION)
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
        raise ValueError(f"checkpoint config {str(path)!r} has format_version {version!r}; this dartok "
                         f"reads format_version <= {CHECKPOINT_FORMAT_VERSION}")
    return cfg


def _read_weights(path: Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"checkpoint weights {str(path)!r} are missing")
    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            metadata = f.metadata() or {}
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    except Exception as e:  # safetensors raises SafetensorError / OSError / ValueError
        raise ValueError(f"checkpoint weights {str(path)!r} are corrupt or not a safetensors file: {e}") from None
    try:
        aliases = json.loads(metadata.get(_ALIAS_KEY, "{}"))
        if not isinstance(aliases, dict):
            raise ValueError("not an object")
    except ValueError as e:
        raise ValueError(f"checkpoint weights {str(path)!r}: bad '{_ALIAS_KEY}' metadata: {e}") from None
    return tensors, aliases


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors with the tied aliases restored (:func:`_dedupe_state_dict`)."""
    tensors, aliases = _read_weights(path)
    for alias, kept in aliases.items():
        if kept in tensors and alias not in tensors:
            tensors[alias] = tensors[kept]
    return tensors


def has_ema_weights(path_dir: str | os.PathLike) -> bool:
    """True if the checkpoint holds EMA weights (``model_ema.safetensors``)."""
    try:
        return (resolve_checkpoint_dir(path_dir) / EMA_WEIGHTS_NAME).is_file()
    except FileNotFoundError:
        return False


def load_weights(model: nn.Module, path_dir: str | os.PathLike, *, strict: bool = True, ema: bool = False) -> nn.Module:
    """Load ``model.safetensors`` of a checkpoint into ``model`` (in place), validating it.

    Args:
        model: module with the architecture the weights were saved from (a DDP /
            DataParallel / ``ModelEma*`` wrapper is unwrapped).
        path_dir: checkpoint directory.
        strict: require exactly the model's keys (shapes must always match).
        ema: load the EMA weights ``model_ema.safetensors`` instead.

    Raises:
        FileNotFoundError: file missing (with ``ema``: the run was trained without EMA).
        ValueError: corrupt file, or keys / shapes that do not match the model (the message
            lists the missing, unexpected and mismatched names).
    """
    model = unwrap_model(model)
    path = resolve_checkpoint_dir(path_dir) / (EMA_WEIGHTS_NAME if ema else WEIGHTS_NAME)
    if ema and not path.is_file():
        raise FileNotFoundError(f"checkpoint EMA weights {str(path)!r} are missing (run trained without --model-ema?)")
    tensors = _read_state_dict(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in tensors and tuple(tensors[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if mismatched:
        problems.append("shape mismatch for " + "; ".join(_clip(mismatched)))
    if strict and missing:
        problems.append("missing keys " + ", ".join(_clip(missing)))
    if strict and unexpected:
        problems.append("unexpected keys " + ", ".join(_clip(unexpected)))
    if problems:
        raise ValueError(
            f"checkpoint weights {str(path)!r} do not match model {type(model).__name__}: " + " | ".join(problems)
        )
    with torch.no_grad():
        model.load_state_dict({k: v for k, v in tensors.items() if k in expected}, strict=strict)
    return model


def _clip(items: list[str], n: int = 8) -> list[str]:
    return items if len(items) <= n else items[:n] + [f"... ({len(items) - n} more)"]


def load_train_state(path_dir: str | os.PathLike, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Load ``train_state.pt`` with ``torch.load(weights_only=True)``.

    Raises:
        FileNotFoundError: file missing (e.g. a checkpoint saved without training state).
        ValueError: the file cannot be unpickled safely / is corrupt.
    """
    path = resolve_checkpoint_dir(path_dir) / TRAIN_STATE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"training state {str(path)!r} is missing (checkpoint saved without training state?)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"training state {str(path)!r} is corrupt or unreadable: {e}") from None
    if not isinstance(state, dict):
        raise ValueError(f"training state {str(path)!r} must hold a dict, got {type(state).__name__}")
    return state


def load_checkpoint(
    path_dir: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    load_state: bool = False,
    strict: bool = True,
    map_location: str | torch.device | None = "cpu",
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Load and validate a checkpoint directory.

    Args:
        path_dir: checkpoint directory written by :func:`save_checkpoint`.
        model: if given, its weights are loaded in place from ``model.safetensors``.
        load_state: also load ``train_state.pt`` (error if missing).
        strict: exact key match for the weights.
        map_location: device for the training-state tensors.

    Returns:
        ``(config, train_state_or_None)``.
    """
    config = load_config(path_dir)
    if model is not None:
        load_weights(model, path_dir, strict=strict)
    else:
        p = resolve_checkpoint_dir(path_dir) / WEIGHTS_NAME
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint weights {str(p)!r} are missing")
    state = load_train_state(path_dir, map_location=map_location) if load_state else None
    return config, state


def checkpoint_classes(config: Mapping[str, Any]) -> list[str] | None:
    """The class names of a checkpoint (its ``config.json`` as a dict): ``data.classes``, or for
    checkpoints saved before they were recorded, Fashion-MNIST's names for its 10-class datasets;
    ``None`` when unknown."""
    record = config.get("data") or {}
    names = record.get("classes")
    if names:
        return [str(n) for n in names]
    if record.get("name") in ("cluttered_fmnist", "fashion_mnist") and record.get("num_classes") == 10:
        from ..data.fashion_mnist import FASHION_MNIST_CLASSES

        return list(FASHION_MNIST_CLASSES)
    return None


def model_from_checkpoint(
    path_dir: str | os.PathLike, *, device: str | torch.device = "cpu", ema: bool = False,
    num_tokens: int | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a checkpoint's ``config.json`` and load its weights.

    The model is built with :func:`dartok.models.create_model` from ``config["model"]`` and
    ``config["model_kwargs"]`` (which holds ``num_tokens``, ``num_classes``, ``in_chans``
    and any extra options), loaded, moved to ``device`` and put in eval mode. With ``ema``
    the EMA weights (``model_ema.safetensors``) are loaded instead of the raw ones. A
    ``num_tokens`` other than the trained one runs a DART model at that budget
    (:func:`dartok.models.set_num_tokens`, the elastic budget; ``config`` is unchanged).

    Returns:
        ``(model, config)``.

    Raises:
        ValueError: a corrupt checkpoint; ``num_tokens`` for a fixed-grid model or one the
            tokenizer refuses.
    """
    from ..models import create_model, set_num_tokens  # deferred: importing the models registers them with timm

    config = load_config(path_dir)
    kwargs = dict(config.get("model_kwargs", {}))
    if config.get("is_dart") and "scorer_cam" not in kwargs:
        # a checkpoint from before the auxiliary CAM head became the default records no
        # scorer_cam: without the head's weights, build no head (docs/method.md §10)
        weights = _weights_folder(resolve_checkpoint_dir(path_dir)) / WEIGHTS_NAME
        if weights.is_file():
            from safetensors import safe_open

            with safe_open(str(weights), "pt") as f:
                if not any(k.startswith("patch_embed.scorer.cam.") for k in f.keys()):
                    kwargs["scorer_cam"] = False
    try:
        model = create_model(config["model"], **kwargs)
    except Exception as e:
        raise ValueError(
            f"cannot build model {config['model']!r} with kwargs {kwargs} from "
            f"{str(resolve_checkpoint_dir(path_dir) / CONFIG_NAME)!r}: {e}"
        ) from e
    load_weights(model, path_dir, ema=ema)
    if num_tokens is not None:
        set_num_tokens(model, num_tokens)
    model.to(device).eval()
    return model, config


# --------------------------------------------------------------------------------------
# init_from: another run's weights as a new run's starting point
# --------------------------------------------------------------------------------------
def _weights_folder(path: Path) -> Path:
    """The checkpoint folder of a checkpoint folder or of a run folder holding ``checkpoint/``.

    Raises:
        FileNotFoundError: neither (see :func:`resolve_checkpoint_dir`).
    """
    if not checkpoint_exists(path) and checkpoint_exists(path / "checkpoint"):
        path = path / "checkpoint"
    return resolve_checkpoint_dir(path)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights at ``path``: a checkpoint folder (its ``model.safetensors``), a run folder
    holding ``checkpoint/``, a ``.safetensors`` file, or a ``.pth`` / ``.pt`` / ``.bin`` file
    (``torch.load(weights_only=True)``; a ``{"model": ...}`` / ``{"state_dict": ...}`` wrapper
    is unwrapped, a ``module.`` prefix dropped).

    Raises:
        FileNotFoundError: nothing there.
        ValueError: a file that is not a state dict (corrupt, or of another kind).
    """
    path = Path(path)
    if path.is_dir():
        return _read_state_dict(_weights_folder(path) / WEIGHTS_NAME)
    if not path.is_file():
        raise FileNotFoundError(f"weights {str(path)!r} do not exist (a checkpoint folder, .safetensors or .pth)")
    if path.suffix == ".safetensors":
        return _read_state_dict(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"weights {str(path)!r} are corrupt or not a torch state dict: {e}") from None
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"weights {str(path)!r} hold no state dict (name -> tensor)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def init_from(model: nn.Module, path: str | os.PathLike):
    """Start ``model`` from the weights at ``path`` (``dartok train --init-from``), in place.

    Only weights: no optimizer, schedule, epoch or RNG state (that is ``--resume``). Two cases:

    - an image Vim (plain or DART: no ``temporal_pos_embedding``) into a VideoMamba (plain
      or DART): inflated (:func:`dartok.models.videomamba.load_image_weights`; from a
      checkpoint folder the image model is rebuilt from its ``config.json`` so its class
      token position and scan-direction averaging are read off it; a bare file is taken to
      have hustvl's / dartok's Vim layout);
    - otherwise the weights are loaded as they are (the same architecture), except that a
      head of another class count is dropped and scorer weights the model has no scorer
      for (an oracle run) go unused.

    Returns:
        A :class:`dartok.models.weights.WeightReport` (what was loaded, left at init, unused; notes).

    Raises:
        FileNotFoundError: no weights at ``path``.
        ValueError: weights that do not fit (named keys / shapes), or a video checkpoint for an
            image model.
    """
    from ..models.videomamba import VideoMamba, load_image_weights
    from ..models.weights import load_fitting

    model = unwrap_model(model)
    source = f"weights {str(path)!r}"
    sd = read_state_dict(path)
    video_source = any(k.endswith("temporal_pos_embedding") for k in sd)
    if isinstance(model, VideoMamba) and not video_source:
        image = sd
        if Path(path).is_dir() and (_weights_folder(Path(path)) / CONFIG_NAME).is_file():
            image, _ = model_from_checkpoint(_weights_folder(Path(path)))  # its class token position, ... read off it
        return load_image_weights(model, image, source=source)
    if video_source and not isinstance(model, VideoMamba):
        raise ValueError(f"{source} are a video model's; {type(model).__name__} is an image model")
    return load_fitting(model, sd, may_ignore=("patch_embed.scorer",), source=source)
