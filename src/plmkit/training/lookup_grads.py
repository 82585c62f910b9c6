"""Gradients of large token-embedding tables accumulated in place, row by row, instead of re-created every step.

A (V, C) lookup table's dense backward allocates a fresh (V, C) gradient each step (a vocabulary of 30k x 384 is
47 MB: new pages from the OS, zero-filled by the kernel and again by the op), then scatters the few rows the batch
looked up. Fine-tuning on short sentences, where the step is small, that was 15-20 ms of a 330 ms step on 2 CPU
cores, plus ~12k page faults (torch 2.13; measured on all-MiniLM-L6-v2, batch 32 x 10 tokens).

`LookupGrads` keeps each such table's `.grad` allocated for the whole run: during the step the lookup's gradient
is sparse (`nn.Embedding.sparse`), which autograd adds into the existing dense `.grad` (only the looked-up rows are
touched), and between steps those rows are zeroed in place rather than the gradient freed. Optimizers, clipping and
checkpoints see the same dense gradient as before (the same values, up to the order in which rows that occur
several times in a batch are summed).

It applies to untied tables (a table shared with an output head gets a dense head gradient anyway; see
`layers.embeddings.tied_lookup_sparse_grad`) of at least `MIN_ROWS` rows, in single-process eager training only:
DDP and FSDP reduce the gradients themselves, and `torch.compile` traces the dense lookup.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import nn

MIN_ROWS = 4096  # position and segment tables are small: their dense gradient costs nothing


class LookupGrads:
    """`with lookup_grads.active(): forward + backward`, then `lookup_grads.zero_grad(optimizer)` after the step."""

    def __init__(self, model: nn.Module, enabled: bool = True, min_rows: int | None = None) -> None:
        min_rows = MIN_ROWS if min_rows is None else min_rows
        uses: dict[int, int] = {}
        for _, p in model.named_parameters(remove_duplicate=False):
            uses[id(p)] = uses.get(id(p), 0) + 1
        self.tables: list[nn.Embedding] = []
        if enabled:
            self.tables = [m for m in model.modules()
                           if isinstance(m, nn.Embedding) and m.num_embeddings >= min_rows and not m.sparse
                           and m.weight.requires_grad and uses[id(m.weight)] == 1
                           and m.max_norm is None and not m.scale_grad_by_freq]
        self._buffers: list[torch.Tensor | None] = [None] * len(self.tables)  # the kept dense gradients
        self._rows: list[list[torch.Tensor]] = [[] for _ in self.tables]  # rows written since the last zeroing
        self._whole = [False] * len(self.tables)  # a dense gradient came in: zero all of it
        self._written: dict[nn.Parameter, torch.Tensor] | None = None  # `written_rows()`, until rows change

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Within the block, the tables' lookups have sparse gradients, added into their kept dense `.grad`. A table
        that received no gradient in the block is left with `.grad` None, as it would be without this."""
        if not self.tables:
            yield
            return
        hooks = []
        self._written = None
        for i, m in enumerate(self.tables):
            grad = m.weight.grad
            if grad is None:
                if self._buffers[i] is None or self._buffers[i].shape != m.weight.shape:
                    self._buffers[i] = torch.zeros_like(m.weight)
                m.weight.grad = self._buffers[i]
            elif grad is not self._buffers[i]:  # a gradient from outside: take it over as it is
                self._buffers[i], self._whole[i] = grad, True
            m.sparse = True
            hooks.append(m.weight.register_hook(functools.partial(self._note_rows, i)))
        try:
            yield
        finally:
            for i, (m, hook) in enumerate(zip(self.tables, hooks, strict=True)):
                m.sparse = False
                hook.remove()
                if not self._rows[i] and not self._whole[i]:
                    m.weight.grad = None  # nothing reached it (the buffer is still all zeros)

    def _note_rows(self, table: int, grad: torch.Tensor) -> None:
        self._written = None
        if grad.is_sparse:
            self._rows[table].append(grad._indices()[0])
        else:
            self._whole[table] = True

    def written_rows(self) -> dict[nn.Parameter, torch.Tensor]:
        """{table weight: the rows its gradient has in this step (unique)}, for the tables whose gradient is zero
        elsewhere (not those that took a dense gradient). Computed once per step (clipping and the step both ask)."""
        if self._written is None:
            self._written = {m.weight: torch.unique(torch.cat(self._rows[i])) for i, m in enumerate(self.tables)
                             if self._rows[i] and not self._whole[i]}
        return self._written

    def zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        """`optimizer.zero_grad(set_to_none=True)`; the tables' gradients are then zeroed in place where they were
        written (all of it after a dense gradient), ready for the next step."""
        optimizer.zero_grad(set_to_none=True)
        self._written = None
        for i, buffer in enumerate(self._buffers):
            if buffer is None:
                continue
            if self._whole[i]:
                buffer.zero_()
            elif self._rows[i]:
                buffer.index_fill_(0, torch.cat(self._rows[i]), 0.0)
            self._rows[i], self._whole[i] = [], False
