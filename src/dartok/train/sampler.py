"""Data order of a run: a function of ``(seed, epoch)`` only, for any number of processes.

Each global batch of the seeded permutation is cut into ``K`` contiguous rank shards
(:class:`ShardedBatchSampler`), so the union over ranks of the step-``i`` batches is the
step-``i`` batch of a 1-process run; evaluation shards the test set without padding
(:func:`shard_indices`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["ShardedBatchSampler", "build_loader", "epoch_seed", "shard_indices"]


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """Seed of the data order of ``epoch``: a function of ``(seed, epoch, stream)`` only.

    ``stream`` separates independent loaders (0: training, 1: evaluation).
    """
    entropy = [int(seed) % 2**32, int(seed) // 2**32 % 2**32, int(epoch) % 2**32, int(stream) % 2**32, 0x5EED]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)


def build_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    num_workers: int = 0,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
    pin_memory: bool | None = None,
    persistent_workers: bool = False,
) -> DataLoader:
    """A DataLoader with its own ``torch.Generator`` (never touches the global RNG).

    Reseed ``loader.generator`` with :func:`epoch_seed` before each epoch to make the
    order (and worker seeds) a function of ``(seed, epoch)``. ``pin_memory`` ``None``: on
    when ``device`` is CUDA. ``persistent_workers`` keeps the workers between iterations
    (only with ``num_workers > 0``; their seeds are then drawn once).
    """
    if generator is None:
        generator = torch.Generator()
        generator.manual_seed(0)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=generator,
        pin_memory=(device is not None and device.type == "cuda") if pin_memory is None else pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
    )


class ShardedBatchSampler(torch.utils.data.Sampler):
    """Batches of one rank: each GLOBAL batch of a seeded permutation, cut into rank shards.

    Epoch ``e`` draws the permutation ``torch.randperm(n, generator=g)`` with ``g`` reseeded
    to ``epoch_seed(seed, e)`` by :meth:`set_epoch` (give the same generator to the
    ``DataLoader``; it draws the worker base seed from it first, exactly as a shuffling
    ``DataLoader`` does, so with one process the order is the one :func:`build_loader`
    gives). The permutation is chunked into global batches of ``global_batch_size``
    (``drop_last``: the last partial one is dropped); rank ``r`` of ``K`` gets the
    contiguous slice ``[r*m//K, (r+1)*m//K)`` of each global batch of size ``m``. So:

    * the union over ranks of step ``i``'s batches is step ``i``'s batch of a 1-process
      run, for every ``K`` (full batches: ``global_batch_size / K`` per rank);
    * ``len(sampler)`` (steps per epoch) does not depend on ``K``.

    A partial batch of ``m < K`` samples leaves some ranks with none: they get the batch's
    first sample as padding, with loss weight 0 (see :meth:`plan`) -- every rank must take
    part in each gradient all-reduce.

    ``shuffle=False`` keeps the dataset order (no generator needed).
    """

    def __init__(
        self,
        dataset_len: int,
        global_batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        generator: torch.Generator | None = None,
    ):
        if global_batch_size <= 0 or world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"bad sampler arguments: batch {global_batch_size}, rank {rank}, world {world_size}")
        if global_batch_size % world_size:
            raise ValueError(f"global batch size {global_batch_size} is not divisible by the number of "
                             f"processes {world_size}")
        self.n = int(dataset_len)
        self.batch_size = int(global_batch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self.shuffle, self.drop_last = shuffle, drop_last
        self.seed = seed
        self.generator = generator if generator is not None else torch.Generator()
        self.epoch = 0
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Reseed the generator for ``epoch`` (call before iterating, like ``DistributedSampler``)."""
        self.epoch = int(epoch)
        self.generator.manual_seed(epoch_seed(self.seed, self.epoch))

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def _global_sizes(self) -> list[int]:
        sizes = [self.batch_size] * (self.n // self.batch_size)
        if not self.drop_last and self.n % self.batch_size:
            sizes.append(self.n % self.batch_size)
        return sizes

    def _bounds(self, m: int) -> tuple[int, int]:
        return self.rank * m // self.world_size, (self.rank + 1) * m // self.world_size

    def plan(self) -> list[tuple[int, float]]:
        """Per step: ``(real samples of this rank, loss weight)``.

        The weight ``n_rank * K / m`` makes DDP's gradient average over ranks the mean over
        the ``m`` samples of the global batch: 1.0 for even shards, 0.0 for padding.
        """
        out = []
        for m in self._global_sizes():
            lo, hi = self._bounds(m)
            k = hi - lo
            out.append((k, 1.0 if k * self.world_size == m else k * self.world_size / m))
        return out

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator).tolist() if self.shuffle else list(range(self.n))
        start = 0
        for m in self._global_sizes():
            batch = order[start:start + m]
            start += m
            lo, hi = self._bounds(m)
            yield batch[lo:hi] if hi > lo else batch[:1]


def shard_indices(n: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous, unpadded share of ``range(n)`` (sizes differ by at most 1)."""
    return range(rank * n // world_size, (rank + 1) * n // world_size)
