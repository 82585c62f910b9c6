"""`layers.linear`: oneDNN's matmuls give nn.Linear's values and gradients; outside the context Linear is nn.Linear;
"auto" picks by the CPU; packed rows rounded up to a multiple change no real token's value or gradient."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from plmkit.config import ModelConfig
from plmkit.errors import PlmkitError
from plmkit.layers import linear as linear_mod
from plmkit.layers.linear import Linear, cpu_matmul_backend, onednn_available, onednn_matmuls, row_multiple
from plmkit.models.encoder import Encoder
from plmkit.training import ImplConfig

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN")


def _grads(module: nn.Module, x: torch.Tensor, upstream: torch.Tensor) -> list[torch.Tensor]:
    module.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    out = module(x)
    (out * upstream).sum().backward()
    return [out.detach(), x.grad] + [p.grad for p in module.parameters()]


@needs_onednn
@pytest.mark.parametrize("shape", [(40, 48), (3, 7, 48)], ids=["2d", "3d"])
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_linear_matches_nn_linear(shape, bias):
    torch.manual_seed(0)
    layer = Linear(48, 96, bias=bias)
    x = torch.randn(*shape)
    upstream = torch.randn(*shape[:-1], 96)
    expected = _grads(layer, x, upstream)
    with onednn_matmuls():
        got = _grads(layer, x, upstream)
    assert len(got) == (4 if bias else 3)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_onednn_linear_float64_equals_and_gradcheck_path():
    """A wrong backward layout (a transposed product) shows as an error far above rounding; here against F.linear on
    a non-square layer and an input that is a non-contiguous view."""
    torch.manual_seed(1)
    weight, b = torch.randn(5, 3, requires_grad=True), torch.randn(5, requires_grad=True)
    x = torch.randn(3, 8).t().requires_grad_(True)  # (8, 3), non-contiguous
    with onednn_matmuls():
        y = linear_mod.linear(x, weight, b)
        assert y.grad_fn is not None and "OneDNN" in type(y.grad_fn).__name__
    torch.testing.assert_close(y, F.linear(x, weight, b), rtol=1e-5, atol=1e-5)
    upstream = torch.randn(8, 5)
    got = torch.autograd.grad((y * upstream).sum(), (x, weight, b))
    expected = torch.autograd.grad((F.linear(x, weight, b) * upstream).sum(), (x, weight, b))
    for a, e in zip(got, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


def test_linear_outside_the_context_is_nn_linear_to_the_bit():
    torch.manual_seed(0)
    ours, theirs = Linear(32, 16), nn.Linear(32, 16)
    theirs.load_state_dict(ours.state_dict())
    x, upstream = torch.randn(10, 32), torch.randn(10, 16)
    for a, b in zip(_grads(ours, x, upstream), _grads(theirs, x, upstream), strict=True):
        assert torch.equal(a, b)
    assert row_multiple() == 1
    with onednn_matmuls(False):
        assert row_multiple() == 1
        y = ours(x)
        assert y.grad_fn is not None and "OneDNN" not in type(y.grad_fn).__name__
    with onednn_matmuls():
        assert row_multiple() == linear_mod.ROW_MULTIPLE
        wide = ours.to(torch.float64)(x.double())  # not fp32: torch's own matmul
        assert "OneDNN" not in type(wide.grad_fn).__name__
        assert torch.equal(wide, F.linear(x.double(), ours.weight, ours.bias))
    assert row_multiple() == 1


def test_cpu_matmul_backend_choice(monkeypatch):
    with pytest.raises(PlmkitError, match="impl.cpu_matmul: unknown 'mkl'; choose from: auto, onednn, aten"):
        cpu_matmul_backend("mkl")
    with pytest.raises(PlmkitError, match="impl.cpu_matmul: unknown 'mkl'; choose from: auto, onednn, aten"):
        ImplConfig(cpu_matmul="mkl")
    assert cpu_matmul_backend("aten") == "aten"
    monkeypatch.setattr(linear_mod, "onednn_available", lambda: True)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(linear_mod, "_cpu_vendor", lambda: "AuthenticAMD")
    assert cpu_matmul_backend("auto") == "onednn"
    monkeypatch.setattr(linear_mod, "_cpu_vendor", lambda: "GenuineIntel")
    assert cpu_matmul_backend("auto") == "aten"  # MKL has its AVX-512 kernels there
    assert cpu_matmul_backend("onednn") == "onednn"
    monkeypatch.setattr(linear_mod, "_cpu_vendor", lambda: "AuthenticAMD")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert cpu_matmul_backend("auto") == "aten"  # both libraries run AVX2 kernels there
    monkeypatch.setattr(linear_mod, "onednn_available", lambda: False)
    with pytest.raises(PlmkitError, match="has no oneDNN"):
        cpu_matmul_backend("onednn")


def _tiny_encoder() -> Encoder:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=99, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37,
                         max_position_embeddings=64, hidden_dropout=0.0, attention_dropout=0.0)
    return Encoder(config).train()


@needs_onednn
@pytest.mark.parametrize("lengths", [[7, 3, 5], [6, 6, 6]], ids=["padded", "full"])
def test_encoder_under_onednn_rounds_rows_and_keeps_values_and_gradients(lengths, monkeypatch):
    """Rows rounded up to a multiple (11 here, so the 15 and 18 real tokens become 22 rows) reach the matmuls; the
    real positions' outputs and every gradient are those of the plain run."""
    monkeypatch.setattr(linear_mod, "ROW_MULTIPLE", 11)
    encoder = _tiny_encoder()
    T = max(lengths)
    ids = torch.randint(1, 99, (len(lengths), T))
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
    upstream = torch.randn(len(lengths), T, 32)
    rows_seen = []
    hook = encoder.layers[0].mlp.in_proj.register_forward_hook(
        lambda module, args, out: rows_seen.append(args[0].shape[:-1].numel()))

    def run() -> list[torch.Tensor]:
        encoder.zero_grad(set_to_none=True)
        out = encoder(ids, mask).last_hidden_state
        (out * upstream).sum().backward()
        return [out.detach()] + [p.grad for p in encoder.parameters()]

    expected = run()
    with onednn_matmuls():
        got = run()
    hook.remove()
    real = sum(lengths)
    assert rows_seen == [real, 22]
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
