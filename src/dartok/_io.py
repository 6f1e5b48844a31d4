"""One place for writing files safely: atomic writes, JSON of tensors and paths, autocast.

Every file dartok writes (checkpoints, results, figures, metrics) goes through
:func:`atomic_path` so a crash or bad input never leaves a half-written file where a good
one was: the data goes to a temporary file in the same directory, is flushed to disk and
then moved over the target with ``os.replace`` (atomic on POSIX).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch

__all__ = [
    "atomic_dir", "atomic_path", "atomic_write", "autocast", "backup_path", "fsync_dir", "json_default", "umask",
    "write_json",
]


def umask() -> int:
    """The process's file-creation mask (read without changing it for longer than a call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory's entries to disk (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, mode: int = 0o666) -> Iterator[Path]:
    """A temporary path next to ``path``; on a clean exit it is fsynced and moved onto ``path``.

    Write whatever you like to the yielded path (``torch.save``, ``fig.savefig``,
    safetensors, ...). If the block raises, the temporary file is removed and ``path`` is
    left as it was. The file gets ``mode & ~umask`` (``mkstemp`` alone would give 0600).

    Raises:
        FileNotFoundError: the parent directory does not exist.
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, mode & ~umask())
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def backup_path(path: str | os.PathLike) -> Path:
    """Where :func:`atomic_dir` keeps the previous folder during its swap: ``<name>.old``."""
    p = Path(path)
    return p.with_name(p.name + ".old")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder next to ``path``; on a clean exit it replaces ``path`` as a whole.

    Write the folder's files into the yielded path (flush and ``fsync`` them). On a clean
    exit the folder gets normal permissions (``0777``/``0666`` less the umask), is
    fsynced, and is swapped in with two renames: the old ``path`` to
    :func:`backup_path`, the new folder to ``path``; then the backup is removed. If the
    block or the swap fails, the temporary folder is removed and the old ``path`` is left
    (or put back) as it was. A backup left with no ``path`` (a crash between the two
    renames) is restored before anything else, so readers that fall back to the backup see
    a complete folder either way.
    """
    target = Path(path)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    backup = backup_path(target)
    if backup.exists() and not target.exists():
        os.replace(backup, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    try:
        yield tmp
        mask = umask()
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes a private 0700 folder
        for child in tmp.iterdir():
            os.chmod(child, 0o666 & ~mask)
        fsync_dir(tmp)
        if backup.exists():
            shutil.rmtree(backup)
        had_old = target.exists()
        if had_old:
            os.replace(target, backup)
        try:
            os.replace(tmp, target)
        except BaseException:
            if had_old and not target.exists():
                os.replace(backup, target)
            raise
        fsync_dir(parent)
        if had_old:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically (:func:`atomic_path`)."""
    target = Path(path)
    with atomic_path(target) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return target


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for what dartok records: tensors, numpy scalars/arrays, paths,
    devices, dtypes, sets and tuples.

    Raises:
        TypeError: any other object (so a config never silently holds a ``repr``).
    """
    if isinstance(obj, torch.Tensor):
        return obj.item() if obj.numel() == 1 else obj.tolist()
    if isinstance(obj, (Path, torch.device, torch.dtype)):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        try:
            return obj.item()
        except (ValueError, TypeError):
            pass
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays
        return obj.tolist()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2, allow_nan: bool = True) -> Path:
    """Write ``obj`` as JSON (:func:`json_default` for tensors etc.) to ``path`` atomically."""
    text = json.dumps(obj, indent=indent, default=json_default, allow_nan=allow_nan) + "\n"
    return atomic_write(path, text)


def autocast(device: torch.device | str, enabled: bool, dtype: torch.dtype = torch.bfloat16):
    """``torch.autocast`` in ``dtype`` (bf16) on ``device``'s type when ``enabled``, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
