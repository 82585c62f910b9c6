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
    """mean CE(hidden @ weight.T, targets), with both gradients computed chunk by chunk in the forward pass.

    Each chunk's logits are computed transposed, (V, n) = weight @ hidden_chunk.T, into one reused buffer: with a
    small hidden size (K = C) that product runs about twice as fast on CPU as hidden @ weight.T into a fresh
    (n, V) tensor. `buffer` (at least V * min(chunk_size, N) elements) is scratch space the caller may keep
    between calls: a fresh 100 MB allocation is fresh pages, and faulting them in cost ~30 ms a step on CPU.
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,  # noqa: ANN001
                chunk_size: int, buffer: torch.Tensor | None) -> torch.Tensor:
        N, V = hidden.shape[0], weight.shape[0]
        n_valid = (targets != IGNORE_INDEX).sum()
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.empty_like(weight) if ctx.needs_input_grad[1] else None
        total = hidden.new_zeros((), dtype=torch.float32)
        if buffer is None:
            buffer = hidden.new_empty(V * min(chunk_size, N))
        for start in range(0, N, chunk_size):
            h, t = hidden[start:start + chunk_size], targets[start:start + chunk_size]
            n = h.shape[0]
            valid = t != IGNORE_INDEX
            t = t.clamp(min=0)
            cols = torch.arange(n, device=h.device)
            logits = torch.mm(weight, h.T.contiguous(), out=buffer[:V * n].view(V, n))  # (V, n)
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
        # Kept on ctx, not saved for backward: backward hands them over and drops its reference, so autograd can
        # adopt them as .grad instead of copying (V, C) floats.
        ctx.grads = (grad_hidden, grad_weight)
        return total / n_valid

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # noqa: ANN205
        grad_hidden, grad_weight = ctx.grads
        del ctx.grads
        if bool(grad_output == 1):  # the usual case (loss.backward()): no pass over the (V, C) gradient
            return grad_hidden, grad_weight, None, None, None
        return (grad_hidden * grad_output if grad_hidden is not None else None,
                grad_weight * grad_output if grad_weight is not None else None, None, None, None)


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                               chunk_size: int = 512, buffer: torch.Tensor | None = None) -> torch.Tensor:
    """hidden (B, T, C), weight (V, C), labels (B, T) unshifted -> the same loss as `causal_lm_loss` on
    hidden @ weight.T, computed `chunk_size` positions at a time (`buffer`: optional reusable scratch space of at
    least V * chunk_size elements, same dtype and device)."""
    hidden = hidden.reshape(-1, hidden.shape[-1])
    targets = shift_labels(labels).reshape(-1)
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(hidden, weight, targets, chunk_size, buffer)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_size):
        logits = (hidden[start:start + chunk_size] @ weight.T).float()
        total += F.cross_entropy(logits, targets[start:start + chunk_size], ignore_index=IGNORE_INDEX,
                                 reduction="sum")
    return total / (targets != IGNORE_INDEX).sum()


class LMHead(nn.Module):
    """hidden (B, T, C) -> logits (B, T, V) = hidden @ W.T, with no bias (GPT-2, Llama).

    With `tied_embedding` W *is* the token embedding matrix (no copy); otherwise the head owns `proj`.
    """

    def __init__(self, hidden_size: int, vocab_size: int, tied_embedding: nn.Embedding | None = None) -> None:
        super().__init__()
        # A plain attribute, not a submodule: the embedding is registered (and saved) by its owner.
        self._tied = [tied_embedding] if tied_embedding is not None else None
        self.proj = None if tied_embedding is not None else nn.Linear(hidden_size, vocab_size, bias=False)
        self._scratch: torch.Tensor | None = None  # the fused loss's (V * chunk) buffer, kept between steps

    @property
    def weight(self) -> torch.Tensor:
        return self._tied[0].weight if self._tied is not None else self.proj.weight

    @property
    def is_tied(self) -> bool:
        return self._tied is not None

    def _scratch_for(self, hidden: torch.Tensor, chunk_size: int) -> torch.Tensor | None:
        """The fused loss's scratch buffer, kept on the head while training (allocated once, reused every step)."""
        if not (torch.is_grad_enabled() and self.training):
            return None
        n = self.weight.shape[0] * min(chunk_size, hidden.numel() // hidden.shape[-1])
        s = self._scratch
        if s is None or s.numel() < n or s.dtype != hidden.dtype or s.device != hidden.device:
            self._scratch = s = hidden.new_empty(n)
        return s

    def forward(self, hidden: torch.Tensor, labels: torch.Tensor | None = None, return_logits: bool = True,
                chunk_size: int = 512) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Returns (logits or None, loss or None).

        `return_logits=False` (with labels) computes the loss with `fused_linear_cross_entropy` and no logits:
        the same value and gradients, in a fraction of the memory. Every position is still scored.
        """
        if labels is not None and not return_logits:
            return None, fused_linear_cross_entropy(hidden, self.weight, labels, chunk_size,
                                                    self._scratch_for(hidden, chunk_size))
        logits = F.linear(hidden, self.weight)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return logits, loss
