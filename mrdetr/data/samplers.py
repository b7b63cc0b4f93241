"""Index samplers for training (infinite, sharded, seeded) and inference (finite, contiguous shards)."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from mrdetr.utils import comm

__all__ = ["InferenceSampler", "TrainingSampler"]


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    rank = comm.get_rank() if rank is None else rank
    world_size = comm.get_world_size() if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"Bad rank/world_size: rank={rank}, world_size={world_size}")
    return rank, world_size


class TrainingSampler(Sampler[int]):
    """An infinite stream of dataset indices, sharded across ranks.

    All ranks generate the same global stream (epoch after epoch: a permutation of ``range(size)``
    drawn from a generator seeded with ``seed``, or ``range(size)`` when ``shuffle=False``);
    rank ``r`` of ``W`` takes its elements ``r, r + W, r + 2W, ...``. The same seed gives the
    same stream.

    Args:
        size: dataset length.
        shuffle: shuffle each epoch.
        seed: stream seed; ``None`` draws one shared by all ranks (``comm.shared_random_seed``).
        rank: this process' rank (default: from ``torch.distributed``).
        world_size: number of processes (default: from ``torch.distributed``).
    """

    def __init__(
        self,
        size: int,
        shuffle: bool = True,
        seed: int | None = None,
        *,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        size = operator.index(size)
        if size <= 0:
            raise ValueError(f"TrainingSampler needs a positive dataset size, got {size}")
        self._size = size
        self._shuffle = shuffle
        self.seed = int(comm.shared_random_seed() if seed is None else seed)
        self._rank, self._world_size = _rank_and_world(rank, world_size)

    def _global_stream(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        while True:
            if self._shuffle:
                yield from torch.randperm(self._size, generator=generator).tolist()
            else:
                yield from range(self._size)

    def iter_with_positions(self) -> Iterator[tuple[int, int]]:
        """Yield ``(position, index)``: ``position`` counts samples in the global (unsharded) stream.

        The position identifies a sample independently of the number of ranks and workers; the
        loaders derive each sample's augmentation seed from it.
        """
        stream = itertools.islice(
            enumerate(self._global_stream()), self._rank, None, self._world_size
        )
        yield from stream

    def __iter__(self) -> Iterator[int]:
        for _, index in self.iter_with_positions():
            yield index


class InferenceSampler(Sampler[int]):
    """``range(size)`` split into contiguous shards, one per rank (sizes differ by at most one).

    Args:
        size: dataset length.
        rank: this process' rank (default: from ``torch.distributed``).
        world_size: number of processes (default: from ``torch.distributed``).
    """

    def __init__(self, size: int, *, rank: int | None = None, world_size: int | None = None):
        size = operator.index(size)
        if size < 0:
            raise ValueError(f"InferenceSampler needs a non-negative dataset size, got {size}")
        rank, world_size = _rank_and_world(rank, world_size)
        per_rank, extra = divmod(size, world_size)
        shard_sizes = [per_rank + int(r < extra) for r in range(world_size)]
        begin = sum(shard_sizes[:rank])
        self._indices = range(begin, begin + shard_sizes[rank])

    def __iter__(self) -> Iterator[int]:
        yield from self._indices

    def __len__(self) -> int:
        return len(self._indices)
