"""Masked-LM head: transform (dense + activation + LayerNorm), then a decoder tied to the input embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from plmkit.heads.lm import ScratchBuffer, linear_cross_entropy
from plmkit.heads.losses import cross_entropy
from plmkit.layers import get_activation

IGNORE_INDEX = -100
LOSS_CHUNK = 1024  # rows of the fused loss at a time: BERT's ~15% masked positions of a batch in one or a few


class MaskedLMHead(nn.Module):
    """Scores every vocabulary entry at each position.

    With `tied_embedding` the decoder weight *is* the token embedding matrix (no copy, as BERT); otherwise the
    head owns a `decoder` of its own. `bias` is the per-token output bias.
    """

    def __init__(self, hidden_size: int, vocab_size: int, activation: str, layer_norm_eps: float,
                 tied_embedding: nn.Embedding | None = None) -> None:
        super().__init__()
        self.transform = nn.Linear(hidden_size, hidden_size)
        self.act = get_activation(activation)
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        # A plain attribute, not a submodule: the embedding is registered (and saved) by its owner.
        self._tied = [tied_embedding] if tied_embedding is not None else None
        self.decoder = None if tied_embedding is not None else nn.Linear(hidden_size, vocab_size, bias=False)
        self._scratch = ScratchBuffer()  # `return_logits=False`'s (V * chunk) buffer, kept between training steps

    @property
    def decoder_weight(self) -> torch.Tensor:
        return self._tied[0].weight if self._tied is not None else self.decoder.weight

    @property
    def is_tied(self) -> bool:
        return self._tied is not None

    def forward(self, hidden: torch.Tensor, labels: torch.Tensor | None = None, masked_only: bool = False,
                return_logits: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """hidden (B, T, C) -> logits (B, T, V); loss = cross-entropy over positions whose label is not -100.

        With `masked_only` (labels required), only the labelled positions are decoded: logits are (N, V) for the
        N positions where labels != -100, in row-major (batch, then position) order. The loss is the same mean
        over the same positions, but the head's matmuls and the softmax shrink from B*T rows to N (~15%).
        `return_logits=False` (labels required; implies `masked_only`) computes that loss with
        `linear_cross_entropy` and returns no logits: the same value and gradients without the (N, V) logits,
        their log-softmax or their gradient, and with the logits computed transposed (faster on CPU). Training
        wants it.
        """
        if masked_only or not return_logits:
            if labels is None:
                raise ValueError("masked_only decoding needs labels: they say which positions to decode")
            index = labels.reshape(-1).ne(IGNORE_INDEX).nonzero().squeeze(1)  # (N,)
            hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, index)  # (N, C)
            labels = labels.reshape(-1).index_select(0, index)  # (N,)
        h = self.norm(self.act(self.transform(hidden)))
        if not return_logits:
            buffer = self._scratch.for_loss(h, self.bias.shape[0], LOSS_CHUNK, self.training)
            return None, linear_cross_entropy(h, self.decoder_weight, labels, self.bias, LOSS_CHUNK, buffer)
        logits = F.linear(h, self.decoder_weight, self.bias)
        loss = None
        if labels is not None and masked_only:
            loss = cross_entropy(logits, labels)  # every row is a labelled position: the fused loss applies
        elif labels is not None:
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)
        return logits, loss
