"""`training.table_adam`: AdamW over a token table's looked-up rows equals torch's dense fused AdamW."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from plmkit.training.lookup_grads import LookupGrads
from plmkit.training.table_adam import TableAdamW


class _Bag(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(300, 8, padding_idx=0)  # row 0: looked up, never a gradient
        self.proj = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.table(ids).mean(1)).logsumexp(-1).sum()


def _optimizer(model: nn.Module, weight_decay: float) -> torch.optim.AdamW:
    return torch.optim.AdamW([{"params": [model.table.weight], "weight_decay": weight_decay},
                              {"params": list(model.proj.parameters()), "weight_decay": 0.0}],
                             lr=1e-2, eps=1e-8, fused=True)


def _batches() -> list[torch.Tensor | None]:
    g = torch.Generator().manual_seed(0)
    # rows from a narrow range first, more of the table later; None: a step in which the table has no gradient
    return [torch.randint(0, 20 + 40 * i, (4, 5), generator=g) if i != 3 else None for i in range(7)]


def _step(model: nn.Module, opt: torch.optim.Optimizer, ids: torch.Tensor | None, lookup: LookupGrads | None,
          table_adam: TableAdamW | None, step: int) -> None:
    for group in opt.param_groups:
        group["lr"] = 1e-2 * (0.9 ** step)
    plain = torch.enable_grad()
    with (lookup.active() if lookup else plain), (table_adam.lookups() if table_adam else torch.enable_grad()):
        if ids is None:  # only the projection learns
            loss = model.proj(torch.ones(2, 8)).sum()
        else:
            loss = model(ids)
        loss.backward()
    # a clipping coefficient folded into the step, as the Trainer does
    opt.grad_scale = torch.tensor(1.7)
    if table_adam:
        table_adam.step()
    else:
        opt.step()
    opt.grad_scale = None
    if lookup:
        lookup.zero_grad(opt)
    else:
        opt.zero_grad(set_to_none=True)


@pytest.mark.parametrize("lazy_decay", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
def test_table_adamw_equals_dense_fused_adamw_and_round_trips_its_state(weight_decay, lazy_decay):
    """Seven steps with new rows appearing, a step without a table gradient, a changing lr and a folded clipping
    scale: the weights equal dense fused AdamW's (with the decay deferred, the rows looked up at each step, and all
    of them once settled), and so do the moments once put in torch's dense form. The dense state taken back (as
    after loading a checkpoint) continues identically, also when the table is changed between steps."""
    torch.manual_seed(0)
    dense_model = _Bag()
    model = _Bag()
    model.load_state_dict(dense_model.state_dict())
    dense_opt, opt = _optimizer(dense_model, weight_decay), _optimizer(model, weight_decay)
    lookup = LookupGrads(model, min_rows=100)
    table_adam = TableAdamW(opt, lookup, lazy_decay=lazy_decay)
    assert [t.param for t in table_adam.tables] == [model.table.weight]
    batches = _batches()
    for i, ids in enumerate(batches[:5]):
        _step(dense_model, dense_opt, ids, None, None, i)
        _step(model, opt, ids, lookup, table_adam, i)
        table = table_adam.tables[0]
        held = table.rows[:table.count]
        torch.testing.assert_close(model.table.weight[held], dense_model.table.weight[held], atol=1e-7, rtol=1e-6)
        # the other rows: as dense AdamW left them but for the decay they owe
        rest = (table.position < 0).nonzero().squeeze(1)
        torch.testing.assert_close(model.table.weight[rest] * table.owed, dense_model.table.weight[rest],
                                   atol=1e-7, rtol=1e-6)
        assert (table.owed < 1.0) == (lazy_decay and weight_decay > 0)
        torch.testing.assert_close(model.proj.weight, dense_model.proj.weight, atol=1e-7, rtol=1e-6)
    table_adam.settle()
    table = table_adam.tables[0]
    assert table.owed == 1.0
    # settling drops the rows with zero moments (row 0, taken in by a lookup), as a checkpoint would not have them
    held = table.rows[:table.count]
    assert 0 not in held.tolist() and bool(table.exp_avg_sq[:table.count].ne(0).any(1).all())
    for a, b in zip(model.parameters(), dense_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-6)
    looked_up = torch.cat([b.flatten() for b in batches[:5] if b is not None]).unique()
    looked_up = looked_up[looked_up != 0]
    assert 0 in torch.cat([b.flatten() for b in batches[:5] if b is not None]).tolist()
    assert table_adam.tables[0].count == looked_up.numel() < 300
    assert model.table.weight not in opt.state  # its moments live in the block
    with table_adam.dense_state():
        mine, ref = opt.state_dict()["state"][0], dense_opt.state_dict()["state"][0]
        assert set(mine) == set(ref) and mine["step"] == ref["step"]
        torch.testing.assert_close(mine["exp_avg"], ref["exp_avg"], atol=1e-9, rtol=1e-6)
        torch.testing.assert_close(mine["exp_avg_sq"], ref["exp_avg_sq"], atol=1e-12, rtol=1e-6)
        saved = opt.state_dict()
    assert model.table.weight not in opt.state
    # a fresh optimizer loads the saved state (torch's own format) and goes on like the dense one
    opt2 = _optimizer(model, weight_decay)
    opt2.load_state_dict(saved)
    table_adam2 = TableAdamW(opt2, lookup, lazy_decay=lazy_decay)
    table_adam2.adopt_state()
    assert model.table.weight not in opt2.state and table_adam2.tables[0].count == looked_up.numel()
    for i, ids in enumerate(batches[5:], start=5):
        _step(dense_model, dense_opt, ids, None, None, i)
        _step(model, opt2, ids, lookup, table_adam2, i)
        # a change to the table between steps (a looked-up row) is seen: the block is read again
        with torch.no_grad():
            for m in (model, dense_model):
                m.table.weight[int(batches[0][0, 0])] += 0.5
    table_adam2.settle()
    for a, b in zip(model.parameters(), dense_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-6)


def test_table_adamw_leaves_other_optimizers_and_devices_to_torch():
    model = _Bag()
    lookup = LookupGrads(model, min_rows=100)
    assert TableAdamW(torch.optim.Adam(model.parameters(), fused=True), lookup).tables == []
    assert TableAdamW(torch.optim.AdamW(model.parameters(), foreach=True), lookup).tables == []
    assert TableAdamW(torch.optim.AdamW(model.parameters(), fused=True, amsgrad=True), lookup).tables == []
    assert len(TableAdamW(torch.optim.AdamW(model.parameters(), fused=True), lookup).tables) == 1


def test_table_mostly_looked_up_goes_back_to_the_dense_step():
    """A step that would hold more than DENSE_SHARE of the table's rows hands the table back to torch's AdamW, its
    decay settled and its moments as dense state; training goes on as the dense optimizer's."""
    from plmkit.training.table_adam import DENSE_SHARE

    torch.manual_seed(0)
    dense_model, model = _Bag(), _Bag()
    model.load_state_dict(dense_model.state_dict())
    dense_opt, opt = _optimizer(dense_model, 0.3), _optimizer(model, 0.3)
    lookup = LookupGrads(model, min_rows=100)
    table_adam = TableAdamW(opt, lookup)
    few = torch.arange(1, 41).view(4, 10)
    most = torch.arange(1, 300).view(13, 23)
    assert most.numel() > DENSE_SHARE * 300 > few.numel()
    for i, ids in enumerate([few, few, most, few]):
        _step(dense_model, dense_opt, ids, None, None, i)
        _step(model, opt, ids, lookup, table_adam, i)
        assert (table_adam.tables == []) == (i >= 2)
    assert model.table.weight in opt.state
    for a, b in zip(model.parameters(), dense_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(opt.state[model.table.weight]["exp_avg_sq"],
                               dense_opt.state[dense_model.table.weight]["exp_avg_sq"], atol=1e-12, rtol=1e-6)
