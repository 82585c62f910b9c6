"""The bidirectional Transformer encoder (BERT's backbone), built from a `ModelConfig`."""

from __future__ import annotations

import torch
from torch import nn

from plmkit.config import ModelConfig
from plmkit.errors import PlmkitError
from plmkit.layers import Embeddings, FeedForward, Packing, SelfAttention, TransformerBlock
from plmkit.layers.linear import row_multiple
from plmkit.outputs import EncoderOutput


def build_block(config: ModelConfig) -> TransformerBlock:
    """Wire one layer from the config: the block itself knows nothing of configs."""
    return TransformerBlock(
        attn=SelfAttention(config.hidden_size, config.num_heads, config.attention_dropout),
        mlp=FeedForward(config.hidden_size, config.intermediate_size, config.activation),
        attn_norm=nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps),
        mlp_norm=nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps),
        dropout=config.hidden_dropout,
        norm_position=config.norm_position,
    )


# What the encoder implements of the fields a decoder varies; anything else would be silently ignored.
ENCODER_VALUES = {"causal": False, "position_embedding": "learned", "norm": "layernorm", "mlp": "standard",
                  "bias": True}


def check_encoder_config(config: ModelConfig) -> None:
    wrong = [f"{k}={getattr(config, k)!r}" for k, v in ENCODER_VALUES.items() if getattr(config, k) != v]
    if config.kv_heads != config.num_heads:
        wrong.append(f"num_kv_heads={config.num_kv_heads}")
    if wrong:
        raise PlmkitError(f"config: the encoder (BERT) does not implement {', '.join(wrong)}; decoder settings are "
                          "for plmkit.CausalLM")


def padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, T) of 1 = token, 0 = padding -> boolean (B, 1, 1, T) for SDPA, True where a key may be attended.

    An all-ones mask becomes None, so unpadded batches take SDPA's fastest path.
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask.bool()[:, None, None, :]


class Encoder(nn.Module):
    """Embeddings, `num_layers` Transformer blocks and (pre-LN only) a final norm.

    `unpad` is a speed setting, not part of the model: with it on (the default), a padded batch runs its
    token-wise layers on real tokens only (see `plmkit.layers.packing`) and returns zeros at padded positions;
    real positions are unchanged. Off, padded positions get the values `transformers` computes for them.
    """

    def __init__(self, config: ModelConfig, unpad: bool = True) -> None:
        super().__init__()
        check_encoder_config(config)
        self.config = config
        self.unpad = unpad
        self.embed = Embeddings(config.vocab_size, config.hidden_size, config.max_position_embeddings,
                                config.type_vocab_size, config.layer_norm_eps, config.hidden_dropout,
                                config.pad_token_id)
        self.layers = nn.ModuleList(build_block(config) for _ in range(config.num_layers))
        # Pre-LN leaves the residual stream unnormalised; post-LN already ends in a norm.
        self.final_norm = (nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
                           if config.norm_position == "pre" else None)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False,
                first_token_only: bool = False) -> EncoderOutput:
        """input_ids (B, T) -> last_hidden_state (B, T, C).

        `first_token_only`: the caller reads only position 0 of the last layer (a [CLS] pooler); the last layer
        then computes that position alone, (B, 1, C) (its keys and values still come from every token; with 6
        layers this skips about a seventh of the work). The values are the same as position 0 of the full output.
        """
        if first_token_only and (output_hidden_states or output_attentions):
            raise ValueError("first_token_only gives the last layer's first position only; it cannot return every "
                             "layer's hidden states or attentions")
        x = self.embed(input_ids, token_type_ids, position_ids)
        mask = padding_mask(attention_mask)
        # Unpadded when there is padding; and under oneDNN matmuls also a full batch whose token count is no
        # multiple of the rows they want (see `layers.linear`), so that its shapes are ones seen before.
        multiple = row_multiple()
        packing = None
        if self.unpad and attention_mask is not None and (mask is not None or input_ids.numel() % multiple):
            packing = Packing.from_mask(attention_mask, multiple)
        query_rows = self._first_rows(input_ids, attention_mask, packing) if first_token_only else None
        if packing is not None:
            x = packing.pack(x)  # (rows, C): the N real tokens, rounded up
        unpack = packing.unpack if packing is not None else (lambda t: t)
        hidden_states = [unpack(x)] if output_hidden_states else None
        attentions = [] if output_attentions else None
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x, weights = layer(x, mask, output_attentions, packing, query_rows if i == last else None)
            if hidden_states is not None:
                hidden_states.append(unpack(x))
            if attentions is not None:
                attentions.append(weights)
        if self.final_norm is not None:
            x = self.final_norm(x)
            if hidden_states is not None:
                hidden_states[-1] = unpack(x)
        if query_rows is not None:
            return EncoderOutput(last_hidden_state=x.unsqueeze(1))
        if first_token_only:
            return EncoderOutput(last_hidden_state=unpack(x)[:, :1])
        return EncoderOutput(last_hidden_state=unpack(x),
                             hidden_states=tuple(hidden_states) if hidden_states is not None else None,
                             attentions=tuple(attentions) if attentions is not None else None)

    @staticmethod
    def _first_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    packing: Packing | None) -> torch.Tensor | None:
        """The row of each sequence's position 0 in the layers' flattened input: b * T, or with packing the count
        of real tokens before it. None where position 0 is padding somewhere (left-padded batches: unpadded, that
        position's output is the zero the full path returns, so the full path runs)."""
        B, T = input_ids.shape
        if packing is None:
            return torch.arange(B, device=input_ids.device) * T
        if not bool(attention_mask[:, 0].all()):
            return None
        lengths = attention_mask.sum(dim=1)
        return lengths.cumsum(0) - lengths
