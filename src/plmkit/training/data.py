"""Deterministic batches: which examples an optimizer step sees is a pure function of (seed, step).

That makes resuming exact without saving any loader state (the step number *is* the data position), and it
makes distributed training see the same global batch as one process: every rank computes the same global
order and takes its own slice. The order is a fresh permutation of the dataset every epoch, and each example
comes with its own seed, f(seed, epoch, index), for whatever randomness collation adds (dynamic masking:
re-drawn every epoch, and the same for an example whichever rank or batch it lands in).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from plmkit.errors import PlmkitError

Collate = Callable[[list[Any], list[int]], dict[str, torch.Tensor]]


def example_seed(seed: int, epoch: int, index: int) -> int:
    """A distinct 63-bit seed per (run seed, epoch, example index)."""
    return ((seed * 1_000_003 + epoch) * 2_147_483_647 + index) % (1 << 63)


def ignore_seeds(collate: Callable[[list[Any]], dict[str, torch.Tensor]]) -> Collate:
    """Adapt a collate function that needs no randomness to the (examples, seeds) signature."""
    return lambda examples, seeds: collate(examples)


class ExampleStream:
    """The training stream: epoch after epoch of shuffled examples, cut into global batches of `batch_size`.

    `batches(step)` returns this rank's micro-batches for optimizer step `step` (0-based): its share of the
    global batch, `batch_size // world_size` examples, in chunks of `micro_batch_size`.
    """

    def __init__(self, dataset: Sequence[Any], collate: Collate, batch_size: int, *, seed: int = 0,
                 shuffle: bool = True, micro_batch_size: int | None = None, rank: int = 0,
                 world_size: int = 1, lengths: Sequence[int] | None = None) -> None:
        if len(dataset) == 0:
            raise PlmkitError("the training set is empty")
        if batch_size % world_size:
            raise PlmkitError(f"train.batch_size {batch_size} must be divisible by the number of processes "
                              f"({world_size})")
        per_rank = batch_size // world_size
        micro = micro_batch_size or per_rank
        if per_rank % micro:
            raise PlmkitError(f"train.micro_batch_size {micro} must divide the per-process batch {per_rank} "
                              f"(train.batch_size {batch_size} / {world_size} processes)")
        self.dataset, self.collate, self.batch_size = dataset, collate, batch_size
        self.seed, self.shuffle, self.rank, self.world_size = seed, shuffle, rank, world_size
        self.micro_batch_size, self.accumulation = micro, per_rank // micro
        if lengths is not None and len(lengths) != len(dataset):
            raise ValueError(f"{len(lengths)} lengths for {len(dataset)} examples")
        self.lengths = torch.as_tensor(lengths) if lengths is not None else None
        self._orders: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def order(self, epoch: int) -> torch.Tensor:
        """The example indexes of `epoch` in the order they are seen."""
        if epoch not in self._orders:
            if self.shuffle:
                g = torch.Generator().manual_seed(example_seed(self.seed, epoch, 0))
                order = torch.randperm(len(self.dataset), generator=g)
            else:
                order = torch.arange(len(self.dataset))
            if self.lengths is not None:
                order = self._group_by_length(order)
            self._orders = {epoch: order}
        return self._orders[epoch]

    def _group_by_length(self, order: torch.Tensor) -> torch.Tensor:
        """Length-grouped batches (as transformers' LengthGroupedSampler): cut the shuffled order into mega-batches
        of 50 global batches and sort each by length, longest first, so a batch holds similar lengths (less
        padding) while batches still come in random order."""
        size = 50 * self.batch_size
        chunks = [order[i:i + size] for i in range(0, len(order), size)]
        return torch.cat([c[torch.sort(self.lengths[c], descending=True, stable=True).indices] for c in chunks])

    def epoch_at(self, step: int) -> float:
        return step * self.batch_size / len(self.dataset)

    def batches(self, step: int) -> list[dict[str, torch.Tensor]]:
        """This rank's micro-batches of global batch `step`."""
        start = step * self.batch_size
        per_rank = self.batch_size // self.world_size
        out = []
        for m in range(self.accumulation):
            # Micro-batch m of every rank together covers global positions [m * W * micro, (m + 1) * W * micro).
            first = start + (m * self.world_size + self.rank) * self.micro_batch_size
            out.append(self._collate_positions(range(first, first + self.micro_batch_size)))
        assert sum(len(next(iter(b.values()))) for b in out) == per_rank
        return out

    def _collate_positions(self, positions: range) -> dict[str, torch.Tensor]:
        n = len(self.dataset)
        examples, seeds = [], []
        for p in positions:
            epoch, i = divmod(p, n)
            index = int(self.order(epoch)[i])
            examples.append(self.dataset[index])
            seeds.append(example_seed(self.seed, epoch, index))
        return self.collate(examples, seeds)


def iter_eval_batches(dataset: Sequence[Any], collate: Collate, batch_size: int, *, seed: int = 0,
                      max_batches: int | None = None, rank: int = 0,
                      world_size: int = 1) -> Iterator[dict[str, torch.Tensor]]:
    """Evaluation batches in dataset order with fixed per-example seeds (the same masks at every evaluation);
    with several processes each takes every `world_size`-th batch."""
    n_batches = (len(dataset) + batch_size - 1) // batch_size
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    for b in range(rank, n_batches, world_size):
        idx = range(b * batch_size, min(len(dataset), (b + 1) * batch_size))
        yield collate([dataset[i] for i in idx], [example_seed(seed, 0, i) for i in idx])
