"""Unpadding's pack and unpack: values and gradients equal to plain indexing, zeros at padded positions."""

import pytest
import torch

from plmkit.layers.packing import Packing


def _mask(lengths: list[int], T: int) -> torch.Tensor:
    return (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()


@pytest.mark.parametrize("lengths", [[5, 3, 1, 4], [4, 4, 4, 4], [1, 5, 2, 5]], ids=["ragged", "full", "leading"])
def test_pack_unpack_match_indexing_with_gradients(lengths):
    torch.manual_seed(0)
    B, T, C = len(lengths), 5, 6
    mask = _mask(lengths, T)
    packing = Packing.from_mask(mask)
    real = mask.bool().reshape(-1)

    x = torch.randn(int(real.sum()), C, requires_grad=True)
    grid = packing.unpack(x)
    expected = torch.zeros(B * T, C)
    expected[real] = x.detach()
    assert torch.equal(grid, expected.view(B, T, C))
    upstream = torch.randn(B, T, C)
    (grid * upstream).sum().backward()
    assert torch.equal(x.grad, upstream.reshape(B * T, C)[real])

    y = torch.randn(B, T, C, requires_grad=True)
    packed = packing.pack(y)
    assert torch.equal(packed, y.detach().reshape(B * T, C)[real])
    upstream = torch.randn_like(packed)
    (packed * upstream).sum().backward()
    expected = torch.zeros(B * T, C)
    expected[real] = upstream
    assert torch.equal(y.grad, expected.view(B, T, C))


def test_unpack_zeroes_padding_whatever_the_gather_read():
    """A padded position gathers some real row before it is zeroed: a NaN there must not leak into the grid."""
    mask = _mask([2, 1], 3)
    x = torch.tensor([[1.0], [float("nan")], [3.0]])
    grid = Packing.from_mask(mask).unpack(x)
    assert torch.equal(torch.isnan(grid).reshape(-1), torch.tensor([False, True, False, False, False, False]))
    assert grid.reshape(-1)[[2, 4, 5]].eq(0).all()
