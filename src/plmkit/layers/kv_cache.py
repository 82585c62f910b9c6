"""Key/value cache for incremental decoding: each layer's keys and values of the positions seen so far.

Buffers are preallocated (to `max_length` when known) and grow by doubling, so a decoding step writes one
position in place instead of concatenating the whole history (which costs O(T) per step, O(T^2) in all).
"""

from __future__ import annotations

import torch


class KVCache:
    """Per-layer (B, KV, S, D) keys and values; `length` positions are filled, the same for every layer.

    A forward pass calls `update(layer, k, v)` in each layer, then `advance(T)` once, so that all layers of one
    step write to the same positions.
    """

    def __init__(self, num_layers: int, max_length: int = 0) -> None:
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.length = 0
        self.max_length = max_length

    def __len__(self) -> int:
        return self.length

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, KV, T, D) after the cached positions; return all keys and values (B, KV, length + T, D)."""
        end = self.length + k.shape[2]
        keys, values = self.keys[layer], self.values[layer]
        if keys is None or keys.shape[2] < end:
            capacity = max(end, self.max_length, 2 * keys.shape[2] if keys is not None else 0)
            keys, values = self._grow(keys, k, capacity), self._grow(values, v, capacity)
            self.keys[layer], self.values[layer] = keys, values
        keys[:, :, self.length:end] = k
        values[:, :, self.length:end] = v
        return keys[:, :, :end], values[:, :, :end]

    def _grow(self, old: torch.Tensor | None, new: torch.Tensor, capacity: int) -> torch.Tensor:
        B, KV, _, D = new.shape
        buffer = new.new_empty(B, KV, capacity, D)
        if old is not None:
            buffer[:, :, :self.length] = old[:, :, :self.length]
        return buffer

    def advance(self, steps: int) -> None:
        """Mark `steps` more positions as filled (after every layer has written them)."""
        self.length += steps

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (B',), in that order: beam search follows the beams it keeps."""
        for cache in (self.keys, self.values):
            for i, t in enumerate(cache):
                if t is not None:
                    cache[i] = t.index_select(0, index)
