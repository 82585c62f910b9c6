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


def test_pack_unpack_under_torch_compile():
    """Traced by torch.compile (eager backend: the tracer, not a compiler; `nonzero` captured rather than a graph
    break, so the whole round trip is traced), the plain-ops path gives the same values and gradients."""
    torch.manual_seed(0)
    mask = _mask([3, 1, 2], 4)
    x = torch.randn(6, 5, requires_grad=True)
    weight = torch.randn(3, 4, 5)

    def round_trip(x, mask):
        packing = Packing.from_mask(mask)
        grid = packing.unpack(x * 2)
        return packing.pack(grid * weight).pow(2).sum()

    eager = round_trip(x, mask)
    (grad_eager,) = torch.autograd.grad(eager, x)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        traced = torch.compile(round_trip, backend="eager")(x, mask)
    (grad_traced,) = torch.autograd.grad(traced, x)
    torch.testing.assert_close(traced, eager)
    torch.testing.assert_close(grad_traced, grad_eager)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "traced"])
def test_rows_rounded_up_are_zero_and_get_no_gradient(compiled):
    """With `row_multiple`, the packed rows past the N real tokens are zeros; unpacking never reads them (a NaN
    there stays out of the grid) and gives them zero gradient; the real rows are those of the plain packing."""
    torch.manual_seed(0)
    mask = _mask([3, 1, 2], 4)  # 6 real tokens -> 8 rows
    plain, rounded = Packing.from_mask(mask), Packing.from_mask(mask, row_multiple=4)
    assert (plain.rows, rounded.rows) == (6, 8)
    y = torch.randn(3, 4, 5, requires_grad=True)
    upstream = torch.randn(8, 5)

    def pack(packing, y):
        if not compiled:
            return packing.pack(y)
        torch._dynamo.reset()
        with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
            return torch.compile(lambda t: packing.pack(t), backend="eager")(y)

    packed = pack(rounded, y)
    assert packed.shape == (8, 5) and torch.equal(packed[:6], plain.pack(y)) and packed[6:].eq(0).all()
    (grad,) = torch.autograd.grad((packed * upstream).sum(), y)
    (expected,) = torch.autograd.grad((plain.pack(y) * upstream[:6]).sum(), y)
    assert torch.equal(grad, expected)

    x = torch.randn(8, 5)
    x[6:] = float("nan")
    x.requires_grad_(True)
    grid = rounded.unpack(x)
    assert torch.equal(grid, plain.unpack(x[:6]))
    (grad,) = torch.autograd.grad((grid * torch.randn_like(grid)).sum(), x)
    assert grad[6:].eq(0).all()
