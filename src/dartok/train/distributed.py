"""Processes and devices of a run: ranks, the default process group, devices, RNG streams.

A run is one process, or many launched by ``torchrun`` (see :mod:`dartok.train.run`). Rank
``r > 0`` draws dropout / drop-path from its own RNG streams, seeded from ``(seed, r)``
(:func:`rank_seed`); every rank's streams are saved in the checkpoint and restored on resume.
"""
from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from .sampler import epoch_seed

__all__ = [
    "DistInfo",
    "all_reduce_sum",
    "barrier",
    "dist_info",
    "dist_ready",
    "get_rng_state",
    "init_distributed",
    "is_main_process",
    "log",
    "rank_seed",
    "seed_everything",
    "select_device",
    "set_rng_state",
]


@dataclass(frozen=True)
class DistInfo:
    """Rank information of this process (1 process, rank 0, unless launched by torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that logs and writes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when the run has more than one process."""
        return self.world_size > 1


def dist_ready() -> bool:
    """True when a default process group is initialized."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def dist_info() -> DistInfo:
    """Rank, local rank and world size of this process.

    From the initialized default process group if there is one, else from torchrun's
    ``RANK`` / ``LOCAL_RANK`` / ``WORLD_SIZE`` environment variables (defaults: one process).
    """
    if dist_ready():
        rank = torch.distributed.get_rank()
        return DistInfo(rank=rank, local_rank=int(os.environ.get("LOCAL_RANK", rank)),
                        world_size=torch.distributed.get_world_size())
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
    )


def is_main_process() -> bool:
    """True on the process that logs and writes checkpoints (rank 0)."""
    return dist_info().is_main


def select_device(name: str | None = None) -> torch.device:
    """``name`` if given (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``), else cuda if available, else cpu.

    A bare ``"cuda"`` maps to ``cuda:<LOCAL_RANK>`` (torchrun: one GPU per process), or to
    ``cuda:0`` when the process sees a single GPU outside torchrun (e.g. a scheduler that
    sets ``CUDA_VISIBLE_DEVICES`` per process). Two ranks never share a GPU (NCCL refuses).

    Raises:
        ValueError: unknown device string, cuda requested but not available, or fewer
            visible GPUs than local processes.
    """
    if name is None or name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"invalid device {name!r}: {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        if dev.index is None:
            local, count = dist_info().local_rank, torch.cuda.device_count()
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 0))  # set by torchrun
            if local < count:
                dev = torch.device("cuda", local)
            elif count == 1 and local_world <= 1:  # one GPU bound to each process by the scheduler
                dev = torch.device("cuda", 0)
            else:
                raise ValueError(f"local rank {local} has no GPU of its own ({count} visible); start at most "
                                 f"{count} processes per node, or pass --device cpu")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r} requested but MPS is not available")
    return dev


def init_distributed(device: torch.device) -> bool:
    """Join the default process group of a torchrun launch, if this is one and not done yet.

    Backend NCCL for a CUDA ``device`` (which becomes the current device), gloo otherwise;
    rendezvous ``env://`` (``MASTER_ADDR`` / ``MASTER_PORT`` / ``RANK`` / ``WORLD_SIZE``).

    Returns:
        True if this call created the group (the caller then destroys it when done).
    """
    info = dist_info()
    if not info.distributed or dist_ready():
        return False
    if not torch.distributed.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={info.world_size} but {', '.join(missing)} not set; launch with torchrun")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return True


def barrier(device: torch.device) -> None:
    """Wait for every rank (no-op without a process group)."""
    if not dist_ready():
        return
    if device.type == "cuda" and torch.distributed.get_backend() == "nccl":
        torch.distributed.barrier(device_ids=[device.index])
    else:
        torch.distributed.barrier()


def all_reduce_sum(values: list[float], device: torch.device | str) -> list[float]:
    """Sum ``values`` over all ranks (identity without a process group)."""
    if not dist_ready() or torch.distributed.get_world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t.tolist()


def rank_seed(seed: int, rank: int, epoch: int = 0) -> int:
    """Seed of the global RNG streams of rank ``rank > 0`` (rank 0 keeps ``seed`` itself)."""
    return epoch_seed(seed, epoch, stream=1000 + rank) % 2**32


def get_rng_state() -> dict[str, Any]:
    """Global RNG states (torch CPU, all CUDA devices, numpy, python) as weights_only-safe data."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU + CUDA), numpy and python ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)


def log(msg: str) -> None:
    """Print a line on rank 0 (through tqdm, so progress bars stay intact)."""
    if is_main_process():
        try:
            from tqdm.auto import tqdm

            tqdm.write(msg, file=sys.stdout)
        except Exception:  # pragma: no cover
            print(msg, flush=True)
