"""Language-model head: logits over the vocabulary at every position, and the next-token (causal) loss.

The loss of position t is the cross-entropy of predicting token t + 1, averaged over the targets that are not -100
(labels are shifted inside, as in Hugging Face). `fused_linear_cross_entropy` computes the same loss without ever
holding the (B*T, V) logits: it works through chunks of positions and computes the gradients of the hidden states and
of the output matrix on the way, so the backward pass is two multiplications. With a 50k vocabulary the logits
and their gradient are most of a small model's training memory and memory traffic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100
DECODE_ROWS = 64  # up to this many rows, `LMHead.project` takes the transposed product (see there)


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B, T): position t's target is labels[t + 1]; the last position gets -100 (nothing follows it).

    Padding the labels instead of slicing the logits keeps the (B, T, V) logits contiguous (no copy).
    """
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits (B, T, V), labels (B, T) unshifted -> mean cross-entropy over the non -100 targets."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), shift_labels(labels).reshape(-1),
                           ignore_index=IGNORE_INDEX)


class _LinearCrossEntropy(torch.autograd.Function):
    """mean CE(hidden @ weight.T + bias, targets), with every gradient computed chunk by chunk in the forward pass.

    Each chunk's logits are computed transposed, (V, n) = weight @ hidden_chunk.T, into one reused buffer: with a
    small hidden size (K = C) that product runs about twice as fast on CPU as hidden @ weight.T into a fresh
    (n, V) tensor. `buffer` (at least V * min(chunk_size, N) elements) is scratch space the caller may keep
    between calls: a fresh 100 MB allocation is fresh pages, and faulting them in cost ~30 ms a step on CPU.
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,  # noqa: ANN001
                targets: torch.Tensor, chunk_size: int, buffer: torch.Tensor | None) -> torch.Tensor:
        N, V = hidden.shape[0], weight.shape[0]
        n_valid = (targets != IGNORE_INDEX).sum()
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.empty_like(weight) if ctx.needs_input_grad[1] else None
        grad_bias = torch.zeros_like(bias) if bias is not None and ctx.needs_input_grad[2] else None
        total = hidden.new_zeros((), dtype=torch.float32)
        if buffer is None:
            buffer = hidden.new_empty(V * min(chunk_size, N))
        for start in range(0, N, chunk_size):
            h, t = hidden[start:start + chunk_size], targets[start:start + chunk_size]
            n = h.shape[0]
            valid = t != IGNORE_INDEX
            t = t.clamp(min=0)
            cols = torch.arange(n, device=h.device)
            out = buffer[:V * n].view(V, n)
            if bias is None:
                logits = torch.mm(weight, h.T.contiguous(), out=out)  # (V, n)
            else:
                logits = torch.addmm(bias[:, None], weight, h.T.contiguous(), out=out)
            top = logits.amax(dim=0)  # (n,)
            target_logit = logits[t, cols]
            probs = logits.sub_(top).exp_()  # in place: the buffer is the only (V, n) tensor
            norm = probs.sum(dim=0)
            total += ((norm.log() + top - target_logit) * valid).sum()  # logsumexp - target logit
            # d(mean CE)/d logits = (softmax - one_hot) / n_valid on valid positions, 0 on ignored ones, which is
            # (probs - norm * one_hot) * col_scale with col_scale = valid / (n_valid * norm). The column scale is
            # applied to the small (n, C) factors, not to the (V, n) buffer: one pass over it fewer.
            col_scale = valid.to(probs.dtype) / (n_valid * norm)
            probs[t, cols] -= norm
            if grad_hidden is not None:
                torch.mm(probs.T, weight, out=grad_hidden[start:start + n]).mul_(col_scale[:, None])
            if grad_weight is not None:
                h_scaled = h * col_scale[:, None]
                if start == 0:
                    torch.mm(probs, h_scaled, out=grad_weight)
                else:
                    grad_weight.addmm_(probs, h_scaled)
            if grad_bias is not None:
                grad_bias.addmv_(probs, col_scale)
        # Kept on ctx, not saved for backward: backward hands them over and drops its reference, so autograd can
        # adopt them as .grad instead of copying (V, C) floats.
        ctx.grads = (grad_hidden, grad_weight, grad_bias)
        return total / n_valid

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # noqa: ANN205
        grads = ctx.grads
        del ctx.grads
        if not bool(grad_output == 1):  # 1 is the usual case (loss.backward()): no pass over the (V, C) gradient
            grads = tuple(g * grad_output if g is not None else None for g in grads)
        return (*grads, None, None, None)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         bias: torch.Tensor | None = None, chunk_size: int = 512,
                         buffer: torch.Tensor | None = None) -> torch.Tensor:
    """hidden (N, C), weight (V, C), bias (V,) or None, targets (N,) -> mean cross-entropy of hidden @ weight.T + bias
    over the targets that are not -100, `chunk_size` rows at a time, never holding the (N, V) logits.

    With gradients, the gradients of hidden, weight and bias come out of the forward pass (`_LinearCrossEntropy`);
    `buffer` is optional reusable scratch space of at least V * min(chunk_size, N) elements (same dtype, device)."""
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (hidden, weight, bias)):
        return _LinearCrossEntropy.apply(hidden, weight, bias, targets, chunk_size, buffer)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_size):
        logits = F.linear(hidden[start:start + chunk_size], weight, bias).float()
        total += F.cross_entropy(logits, targets[start:start + chunk_size], ignore_index=IGNORE_INDEX,
                                 reduction="sum")
    return total / (targets != IGNORE_INDEX).sum()


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                               chunk_size: int = 512, buffer: torch.Tensor | None = None) -> torch.Tensor:
    """hidden (B, T, C), weight (V, C), labels (B, T) unshifted -> the same loss as `causal_lm_loss` on
    hidden @ weight.T, computed `chunk_size` positions at a time (`linear_cross_entropy`)."""
    return linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), weight, shift_labels(labels).reshape(-1),
                                chunk_size=chunk_size, buffer=buffer)


class ScratchBuffer:
    """Scratch space a head keeps between training steps for `linear_cross_entropy` (allocated once, then reused;
    not a parameter or buffer: never saved, and reallocated when the dtype or device changes)."""

    def __init__(self) -> None:
        self.tensor: torch.Tensor | None = None

    def for_loss(self, hidden: torch.Tensor, vocab_size: int, chunk_size: int, training: bool) -> torch.Tensor | None:
        """The buffer for one `linear_cross_entropy` call over `hidden` (..., C) while training; None otherwise
        (evaluation has no gradients to compute and allocates per call)."""
        if not (training and torch.is_grad_enabled()):
            return None
        numel = vocab_size * min(chunk_size, hidden.numel() // hidden.shape[-1])
        t = self.tensor
        if t is None or t.numel() < numel or t.dtype != hidden.dtype or t.device != hidden.device:
            self.tensor = t = hidden.new_empty(numel)
        return t


class LMHead(nn.Module):
    """hidden (B, T, C) -> logits (B, T, V) = hidden @ W.T, with no bias (GPT-2, Llama).

    With `tied_embedding` W *is* the token embedding matrix (no copy); otherwise the head owns `proj`.
    """

    def __init__(self, hidden_size: int, vocab_size: int, tied_embedding: nn.Embedding | None = None) -> None:
        super().__init__()
        # A plain attribute, not a submodule: the embedding is registered (and saved) by its owner.
        self._tied = [tied_embedding] if tied_embedding is not None else None
        self.proj = None if tied_embedding is not None else nn.Linear(hidden_size, vocab_size, bias=False)
        self._scratch = ScratchBuffer()  # the fused loss's (V * chunk) buffer, kept between training steps

    @property
    def weight(self) -> torch.Tensor:
        return self._tied[0].weight if self._tied is not None else self.proj.weight

    @property
    def is_tied(self) -> bool:
        return self._tied is not None

    def forward(self, hidden: torch.Tensor, labels: torch.Tensor | None = None, return_logits: bool = True,
                chunk_size: int = 512) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Returns (logits or None, loss or None).

        `return_logits=False` (with labels) computes the loss with `fused_linear_cross_entropy` and no logits:
        the same value and gradients, in a fraction of the memory. Every position is still scored.
        """
        if labels is not None and not return_logits:
            buffer = self._scratch.for_loss(hidden, self.weight.shape[0], chunk_size, self.training)
            return None, fused_linear_cross_entropy(hidden, self.weight, labels, chunk_size, buffer)
        logits = self.project(hidden)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return logits, loss

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (..., C) -> logits (..., V) = hidden @ W.T.

        For a few rows on CPU (decoding: one position per sequence) the product is taken as W @ hidden.T and
        returned transposed (a strided view): that streams the (V, C) matrix once and ran about twice as fast as
        hidden @ W.T at batch 8 with a 49k vocabulary, and 15% faster at batch 1 (the output matmul is the largest
        of a small model's decoding step)."""
        rows = hidden.numel() // hidden.shape[-1]
        if rows > DECODE_ROWS or hidden.is_cuda or hidden.dim() < 2:
            return F.linear(hidden, self.weight)
        flat = hidden.reshape(rows, hidden.shape[-1])
        return (self.weight @ flat.T).T.reshape(*hidden.shape[:-1], -1)
