"""Dataset dicts from names, and the train/test data loaders.

Train loader = deterministic index stream (:class:`TrainingSampler`) -> aspect-ratio grouping on the
dataset dicts' width/height -> batches of indices -> map. Each sample carries its position in the
global sample stream; its augmentation RNG is seeded from (loader seed, position) inside a scope that
restores the caller's RNG state. Hence batch ``k`` is the same for any ``num_workers``, and a loader
built with ``start_iter=k`` (which skips ``k`` index batches without loading any image) continues
exactly where an uninterrupted run would be.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import pickle
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mrdetr.utils import comm

from .catalog import DatasetCatalog, MetadataCatalog
from .detection_utils import BadImageError
from .samplers import InferenceSampler, TrainingSampler

__all__ = [
    "DetectionLoader",
    "TrainDetectionLoader",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "get_detection_dataset_dicts",
]

logger = logging.getLogger(__name__)

Mapper = Callable[[dict[str, Any]], dict[str, Any] | None]
_SEED_MASK = 2**63 - 1  # SeedSequence entropy must be non-negative
_UINT32 = 2**32
_WORKER_TAG = 1
_NAMED_BAD_FILES = 5  # how many of the unreadable files an error message names


def get_detection_dataset_dicts(
    names: str | Sequence[str], filter_empty: bool = True
) -> list[dict[str, Any]]:
    """Load and concatenate the dataset dicts of registered datasets.

    Args:
        names: one dataset name or several.
        filter_empty: drop images without any non-crowd annotation.
    """
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError("get_detection_dataset_dicts: no dataset names given")
    dicts_per_name = [DatasetCatalog.get(name) for name in names]
    for name, dicts in zip(names, dicts_per_name):
        if len(dicts) == 0:
            raise ValueError(f"Dataset '{name}' is empty")
    classes = {name: MetadataCatalog.get(name).get("thing_classes") for name in names}
    known = {n: c for n, c in classes.items() if c is not None}
    if len({tuple(c) for c in known.values()}) > 1:
        raise ValueError(f"Datasets {names} have different thing_classes: {known}")
    dataset_dicts = [d for dicts in dicts_per_name for d in dicts]
    if filter_empty:
        before = len(dataset_dicts)
        dataset_dicts = [
            d
            for d in dataset_dicts
            if any(int(a.get("iscrowd", 0)) == 0 for a in d.get("annotations", []))
        ]
        logger.info("Removed %d images with no usable annotations", before - len(dataset_dicts))
        if not dataset_dicts:
            raise ValueError(f"No images with non-crowd annotations in {names}")
    return dataset_dicts


class _SerializedList:
    """A list stored as one pickled byte buffer: forked workers do not copy it on read."""

    def __init__(self, items: Sequence[Any]):
        blobs = [
            np.frombuffer(pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8)
            for x in items
        ]
        self._ends = np.cumsum([len(b) for b in blobs], dtype=np.int64)
        self._bytes = np.concatenate(blobs) if blobs else np.zeros(0, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i: int) -> Any:
        start = 0 if i == 0 else int(self._ends[i - 1])
        return pickle.loads(memoryview(self._bytes[start : int(self._ends[i])]))


def sample_seed(seed: int, position: int) -> int:
    """The RNG seed of the sample at ``position`` of a loader seeded with ``seed`` (uint32)."""
    seq = np.random.SeedSequence([seed & _SEED_MASK, position])
    return int(seq.generate_state(1, dtype=np.uint32)[0])


@contextlib.contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Seed the CPU torch, numpy and ``random`` global RNGs; restore their states on exit.

    CUDA generators are neither seeded nor touched.
    """
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()
    py_state = random.getstate()
    torch.default_generator.manual_seed(seed)
    np.random.seed(seed % _UINT32)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py_state)


class _MapDataset(Dataset):
    """``dataset[(index, position)]`` is ``mapper(dicts[index])`` run under
    ``seeded_rng(sample_seed(seed, position))``."""

    def __init__(self, dicts: Sequence[dict[str, Any]], mapper: Mapper, seed: int):
        self._dicts = _SerializedList(dicts)
        self._mapper = mapper
        self._seed = seed

    def __len__(self) -> int:
        return len(self._dicts)

    @property
    def dicts(self) -> Sequence[dict[str, Any]]:
        """The dataset dicts (before the mapper), read-only."""
        return self._dicts

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any] | _Unreadable:
        index, position = key
        dataset_dict = self._dicts[index]
        with seeded_rng(sample_seed(self._seed, position)):
            mapped = self._mapper(dataset_dict)
        return (
            _Unreadable(str(dataset_dict.get("file_name", f"#{index}")))
            if mapped is None
            else mapped
        )


class _Unreadable:
    """What the map dataset yields for an item the mapper skipped (returned None): its file name."""

    def __init__(self, file_name: str):
        self.file_name = file_name


class _TrainIndexBatches:
    """Infinite stream of index batches ``[(index, position), ...]`` (the DataLoader batch_sampler)."""

    def __init__(
        self, sampler: TrainingSampler, groups: list[int] | None, batch_size: int, start_iter: int
    ):
        self.sampler = sampler
        self.groups = groups
        self.batch_size = batch_size
        self.start_iter = start_iter

    def _batches(self) -> Iterator[list[tuple[int, int]]]:
        num_buckets = 1 if self.groups is None else max(self.groups) + 1
        buckets: list[list[tuple[int, int]]] = [[] for _ in range(num_buckets)]
        for position, index in self.sampler.iter_with_positions():
            bucket = buckets[0 if self.groups is None else self.groups[index]]
            bucket.append((index, position))
            if len(bucket) == self.batch_size:
                yield bucket[:]
                bucket.clear()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batches = self._batches()
        for _ in range(self.start_iter):  # cheap: only indices, no image is read
            next(batches)
        yield from batches


def _trivial_batch_collator(batch: list[Any]) -> list[Any]:
    return batch


def _worker_init(seed: int, worker_id: int) -> None:
    # Three-number entropy: never equal to a sample seed (two numbers).
    seq = np.random.SeedSequence([seed & _SEED_MASK, worker_id, _WORKER_TAG])
    worker_seed = int(seq.generate_state(1, dtype=np.uint32)[0])
    torch.manual_seed(worker_seed)
    np.random.seed(worker_seed)
    random.seed(worker_seed)


class DetectionLoader:
    """Iterable over batches (lists of mapped dicts); items the mapper returned as None are dropped.

    Args:
        loader: the ``DataLoader`` over a map dataset.
        max_consecutive_unreadable: stop with a :class:`BadImageError` once this many items in a
            row were unreadable (e.g. a wrong image root), instead of skipping batches forever;
            ``None`` never stops.

    Attributes:
        num_skipped: number of dropped (None) items so far.
    """

    def __init__(self, loader: DataLoader, max_consecutive_unreadable: int | None = None):
        if max_consecutive_unreadable is not None and max_consecutive_unreadable < 1:
            raise ValueError(
                f"max_consecutive_unreadable must be >= 1 or None, got {max_consecutive_unreadable}"
            )
        self._loader = loader
        self.max_consecutive_unreadable = max_consecutive_unreadable
        self.num_skipped = 0
        self._streak: list[str] = []  # the first files of the current run of unreadable items
        self._streak_length = 0

    @property
    def dataset(self) -> Dataset:
        return self._loader.dataset

    def _count_unreadable(self, batch: list[Any]) -> None:
        """Track consecutive unreadable items; raise when there are too many in a row."""
        unreadable = self.num_skipped + sum(isinstance(x, _Unreadable) for x in batch)
        for item in batch:
            if not isinstance(item, _Unreadable):
                self._streak, self._streak_length = [], 0
                continue
            self._streak_length += 1
            if len(self._streak) < _NAMED_BAD_FILES:
                self._streak.append(item.file_name)
            limit = self.max_consecutive_unreadable
            if limit is not None and self._streak_length >= limit:
                raise BadImageError(
                    f"{self._streak_length} images in a row could not be read "
                    f"({unreadable} unreadable so far), first: "
                    f"{', '.join(self._streak)}; check the dataset's image folder and file names "
                    "(the warnings above say why each failed)."
                )

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        for batch in self._loader:
            self._count_unreadable(batch)
            kept = [x for x in batch if not isinstance(x, _Unreadable)]
            if len(kept) < len(batch):
                # warn on the first drop only (the mapper names each file once); count the rest
                level = logging.WARNING if self.num_skipped == 0 else logging.DEBUG
                self.num_skipped += len(batch) - len(kept)
                logger.log(
                    level,
                    "Dropped %d unreadable images from a batch (%d in total, see .num_skipped)",
                    len(batch) - len(kept),
                    self.num_skipped,
                )
            if not kept:
                logger.warning("Skipped a batch whose images are all unreadable")
                continue
            yield kept

    def __len__(self) -> int:
        return len(self._loader)


class TrainDetectionLoader(DetectionLoader):
    """Infinite training loader; ``seed`` and ``start_iter`` describe where its stream starts.

    A batch whose items are all unreadable is skipped (then iteration k of a resumed run is one
    index batch behind the uninterrupted run; with readable data, resume is exact).
    """

    def __init__(
        self,
        loader: DataLoader,
        index_batches: _TrainIndexBatches,
        seed: int,
        max_consecutive_unreadable: int | None = None,
    ):
        super().__init__(loader, max_consecutive_unreadable)
        self._index_batches = index_batches
        self.seed = seed

    @property
    def start_iter(self) -> int:
        return self._index_batches.start_iter

    def set_start_iter(self, start_iter: int) -> None:
        """Make the next ``iter()`` start at batch ``start_iter`` (e.g. after loading a checkpoint)."""
        if start_iter < 0:
            raise ValueError(f"start_iter must be >= 0, got {start_iter}")
        self._index_batches.start_iter = start_iter

    def __len__(self) -> int:
        raise TypeError("The training loader is infinite")


def _resolve(dataset: str | Sequence[Any], filter_empty: bool) -> list[dict[str, Any]]:
    if isinstance(dataset, str) or (
        isinstance(dataset, Sequence)
        and len(dataset) > 0
        and all(isinstance(d, str) for d in dataset)
    ):
        return get_detection_dataset_dicts(dataset, filter_empty=filter_empty)
    if not isinstance(dataset, Sequence) or not all(isinstance(d, dict) for d in dataset):
        raise TypeError(
            "dataset must be a dataset name, a list of names or a list of dataset dicts"
        )
    return list(dataset)


def _aspect_groups(dicts: list[dict[str, Any]]) -> list[int]:
    groups = []
    for d in dicts:
        if "width" not in d or "height" not in d:
            raise ValueError(
                f"aspect_ratio_grouping needs 'width' and 'height' in every dataset dict "
                f"(missing in '{d.get('file_name', d)}'); add them or set aspect_ratio_grouping=False"
            )
        groups.append(0 if d["width"] > d["height"] else 1)
    return groups


def build_detection_train_loader(
    *,
    dataset: str | Sequence[Any],
    mapper: Mapper,
    total_batch_size: int,
    num_workers: int = 0,
    aspect_ratio_grouping: bool = True,
    seed: int | None = None,
    start_iter: int = 0,
    max_consecutive_unreadable: int | None = 100,
) -> TrainDetectionLoader:
    """Build the infinite training loader.

    Args:
        dataset: list of dataset dicts, or registered dataset name(s) (empty images filtered).
        mapper: dataset dict -> model input dict (or None to skip).
        total_batch_size: images per iteration over all ranks; each rank gets
            ``total_batch_size // world_size``.
        num_workers: DataLoader worker processes (results do not depend on it).
        aspect_ratio_grouping: batch landscape (w > h) and portrait images separately.
        seed: seed of the index stream and of the augmentations; ``None`` draws a seed shared by
            all ranks (logged, and kept in ``loader.seed``).
        start_iter: skip that many batches without reading images (exact resume).
        max_consecutive_unreadable: stop with a :class:`BadImageError` naming the first files
            once this many images in a row were unreadable (``None``: skip them forever).

    Returns:
        An iterable of lists of mapped dicts.
    """
    world_size = comm.get_world_size()
    if total_batch_size <= 0 or total_batch_size % world_size != 0:
        raise ValueError(
            f"total_batch_size ({total_batch_size}) must be a positive multiple of the world size ({world_size})"
        )
    if start_iter < 0:
        raise ValueError(f"start_iter must be >= 0, got {start_iter}")
    dicts = _resolve(dataset, filter_empty=True)
    if seed is None:
        seed = comm.shared_random_seed()
        logger.info(
            "Training data loader uses the random seed %d (pass seed=%d to reproduce)", seed, seed
        )
    sampler = TrainingSampler(len(dicts), shuffle=True, seed=seed)
    groups = _aspect_groups(dicts) if aspect_ratio_grouping else None
    index_batches = _TrainIndexBatches(sampler, groups, total_batch_size // world_size, start_iter)
    loader = DataLoader(
        _MapDataset(dicts, mapper, seed),
        batch_sampler=index_batches,
        num_workers=num_workers,
        collate_fn=_trivial_batch_collator,
        worker_init_fn=functools.partial(_worker_init, seed),
        generator=torch.Generator().manual_seed(seed),  # never draw from the global RNG
    )
    return TrainDetectionLoader(loader, index_batches, seed, max_consecutive_unreadable)


def build_detection_test_loader(
    *,
    dataset: str | Sequence[Any],
    mapper: Mapper,
    batch_size: int = 1,
    num_workers: int = 0,
) -> DetectionLoader:
    """Build the finite, ordered test loader over this rank's contiguous shard.

    Args:
        dataset: list of dataset dicts, or registered dataset name(s) (empty images kept).
        mapper: dataset dict -> model input dict (or None to skip).
        batch_size: images per batch on this rank.
        num_workers: DataLoader worker processes.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    dicts = _resolve(dataset, filter_empty=False)
    indices = list(InferenceSampler(len(dicts)))
    batches = [
        [(i, i) for i in indices[start : start + batch_size]]
        for start in range(0, len(indices), batch_size)
    ]
    loader = DataLoader(
        _MapDataset(dicts, mapper, seed=0),
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=_trivial_batch_collator,
        worker_init_fn=functools.partial(_worker_init, 0),
        generator=torch.Generator().manual_seed(0),
    )
    return DetectionLoader(loader)
