"""Self-attention's one-query-per-sequence path (the [CLS]-only last layer) against keys and values formed
explicitly: the same outputs, attention weights and gradients, with attention dropout drawing the same mask."""

import math

import pytest
import torch

from plmkit.layers import Packing, SelfAttention
from plmkit.layers.dropout import dropout


def explicit_rows(attn: SelfAttention, x, mask, packing, rows):
    """softmax(q Kᵀ / √d) V for the rows' queries, K and V projected from every token (the textbook form)."""
    qkv = attn.qkv_proj(x)
    grid = packing.unpack(qkv) if packing is not None else qkv
    B, T, C3 = grid.shape
    H, D = attn.num_heads, attn.head_dim
    _, k, v = grid.view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)  # (B, H, T, D)
    q = qkv.reshape(-1, C3).index_select(0, rows)[:, :C3 // 3].view(B, H, 1, D)
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1)
    y = dropout(weights, attn.dropout, attn.training) @ v  # (B, H, 1, D)
    return attn.out_proj(y.reshape(B, C3 // 3)), weights


@pytest.mark.parametrize("layout", ["packed", "grid", "grid-shared-mask"])
@pytest.mark.parametrize("train", [True, False])
def test_query_rows_equal_explicit_keys_and_values(layout, train):
    """Packed tokens with a padding mask; a full grid without a mask; a full grid with one (1, 1, 1, T) mask that
    broadcasts over the batch."""
    padded = layout == "packed"
    torch.manual_seed(0)
    attn = SelfAttention(hidden_size=24, num_heads=4, dropout=0.3).double().train(train)
    with torch.no_grad():
        attn.qkv_proj.bias.normal_()  # nonzero key and value biases: the path folds them in algebraically
    lengths = torch.tensor([5, 2, 7]) if padded else torch.tensor([7, 7, 7])
    B, T, C = 3, 7, 24
    attention_mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    packing = Packing.from_mask(attention_mask) if padded else None
    mask = attention_mask.bool()[:, None, None, :] if padded else None
    if layout == "grid-shared-mask":
        mask = (torch.arange(T) != 3)[None, None, None, :]
    x = torch.randn(int(lengths.sum()) if padded else B * T, C, dtype=torch.float64, requires_grad=True)
    x_in = x if padded else x.view(B, T, C)
    rows = lengths.cumsum(0) - lengths if padded else torch.arange(B) * T

    torch.manual_seed(1)
    out, weights = attn(x_in, mask, True, packing, rows)
    grads = torch.autograd.grad(out.square().sum(), [x, *attn.parameters()])
    torch.manual_seed(1)
    ref_out, ref_weights = explicit_rows(attn, x_in, mask, packing, rows)
    ref_grads = torch.autograd.grad(ref_out.square().sum(), [x, *attn.parameters()])

    assert out.shape == (B, C) and weights.shape == (B, 4, 1, T)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(weights, ref_weights)
    if padded:
        assert (weights[1, :, :, 2:] == 0).all()  # padded keys get no weight
    if layout == "grid-shared-mask":
        assert (weights[..., 3] == 0).all()
    for name, g, r in zip(["x", *(n for n, _ in attn.named_parameters())], grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, msg=lambda m, name=name: f"{name}: {m}")
    # the key bias only shifts every score of a query alike, so the softmax takes no gradient through it
    assert grads[2][C:2 * C].abs().max() < 1e-12
