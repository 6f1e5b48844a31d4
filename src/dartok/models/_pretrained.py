"""``pretrained=True`` without a network: fail at once, naming the model asked for (issue 12).

``huggingface_hub`` retries an unreachable hub five times with back-off (23-47 s measured)
before it says that a file is not cached, and the message names the file, not the model.
:func:`check_pretrained_available` looks first: every weight file a model needs (its own,
its backbone's, its scorer trunk's) that is neither local nor in the cache, with the hub in
offline mode (``HF_HUB_OFFLINE``) or its host unreachable within
:data:`CONNECT_TIMEOUT` seconds, is one ``RuntimeError`` that names the model, what is
missing and the offline route (``pretrained_cfg_overlay=dict(file=...)``).
"""
from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

from .. import _compat

_compat.ensure_torchvision_importable()

from timm.models._hub import check_cached_file, hf_split  # noqa: E402

__all__ = ["CONNECT_TIMEOUT", "check_pretrained_available", "hub_offline", "weight_location"]

CONNECT_TIMEOUT = 3.0
"""Seconds a connection to the weights' host may take before it counts as unreachable."""

_HF_FILES = ("model.safetensors", "pytorch_model.bin")
"""What timm's ``load_state_dict_from_hf`` fetches for a hub id without a filename."""


def hub_offline() -> bool:
    """True if the Hugging Face hub is in offline mode (``HF_HUB_OFFLINE``, read now or at import)."""
    try:
        from huggingface_hub import constants
        if constants.HF_HUB_OFFLINE:
            return True
    except ImportError:
        pass
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def weight_location(cfg: Mapping[str, Any]) -> tuple[str, str] | None:
    """Where timm's ``load_pretrained`` would take a cfg's weights from: ``(kind, location)``.

    ``kind`` is ``"state_dict"``, ``"file"`` (a path), ``"local-dir"``, ``"hf-hub"`` (a hub
    id) or ``"url"``; ``None`` when the cfg names no weights (timm's precedence).
    """
    if cfg.get("source") == "hf-hub" and cfg.get("hf_hub_id"):
        return "hf-hub", cfg["hf_hub_id"]
    if cfg.get("source") == "local-dir":
        return "local-dir", cfg.get("file") or ""
    if cfg.get("state_dict"):
        return "state_dict", "(in memory)"
    if cfg.get("file"):
        return "file", str(cfg["file"])
    if cfg.get("hf_hub_id"):
        return "hf-hub", cfg["hf_hub_id"]
    if cfg.get("url"):
        return "url", cfg["url"]
    return None


def _hub_cached(hub_id: str, filename: str | None, cache_dir) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    repo, revision = hf_split(hub_id)
    names = (filename, filename.rsplit(".", 1)[0] + ".safetensors") if filename else _HF_FILES
    return any(isinstance(try_to_load_from_cache(repo, name, cache_dir=cache_dir, revision=revision), str)
               for name in names)


def _reachable(host: str, port: int = 443, timeout: float = CONNECT_TIMEOUT) -> bool:
    """Can a TCP connection to ``host`` be opened within ``timeout`` s (name lookup included)?"""
    result: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=connect, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _hub_host() -> str:
    try:
        from huggingface_hub import constants
        endpoint = constants.ENDPOINT
    except ImportError:
        endpoint = "https://huggingface.co"
    return urlparse(endpoint).hostname or "huggingface.co"


def check_pretrained_available(model_name: str, parts: Mapping[str, Mapping[str, Any]], cache_dir=None) -> None:
    """Raise at once if the pretrained weights of ``model_name`` cannot be had.

    Args:
        model_name: the model the user asked for (named in every error).
        parts: what needs weights → its resolved pretrained cfg (a dict or ``PretrainedCfg``),
            e.g. ``{"backbone deit_tiny_patch16_224": cfg, "scorer trunk mobilenetv3_small_100": cfg}``.
        cache_dir: timm's ``cache_dir`` (the hub cache otherwise).

    Raises:
        RuntimeError: a part has no weights at all; a local file or folder that does not
            exist; or remote files that are not cached while the hub is offline or its host
            cannot be reached within :data:`CONNECT_TIMEOUT` s.
    """
    remote: list[tuple[str, str]] = []
    for part, cfg in parts.items():
        cfg = cfg if isinstance(cfg, Mapping) else cfg.to_dict(remove_null=False)
        where = weight_location(cfg)
        if where is None:
            raise RuntimeError(f"No pretrained weights exist for {model_name} ({part} has none). Use pretrained=False, "
                               "or pretrained_cfg_overlay=dict(file=PATH) to load a checkpoint of this model.")
        kind, location = where
        if kind in ("file", "local-dir") and not Path(location).exists():
            raise RuntimeError(f"pretrained weights of {model_name} ({part}): {location} does not exist")
        if kind == "hf-hub" and not _hub_cached(location, cfg.get("hf_hub_filename"), cache_dir):
            remote.append((part, f"hf-hub:{location}"))
        elif kind == "url" and not check_cached_file(location, cache_dir=cache_dir):
            remote.append((part, location))
    if not remote:
        return
    hosts = {urlparse(loc).hostname if not loc.startswith("hf-hub:") else _hub_host() for _, loc in remote}
    if hub_offline() and any(loc.startswith("hf-hub:") for _, loc in remote):
        why = "the Hugging Face hub is offline (HF_HUB_OFFLINE is set)"
    else:
        down = sorted(h for h in hosts if h and not _reachable(h))
        if not down:
            return
        why = f"{', '.join(down)} cannot be reached"
    missing = "; ".join(f"{part} from {loc}" for part, loc in remote)
    raise RuntimeError(f"pretrained=True for {model_name} needs weights that are not in the local cache "
                       f"({missing}) and {why}. Connect and retry, or load a local checkpoint of {model_name} with "
                       "pretrained_cfg_overlay=dict(file=PATH) (or create_model('local-dir:DIR', pretrained=True)).")
