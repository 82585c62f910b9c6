"""AdamW over the rows of a large token table that training has looked up; the other rows only decay.

torch's AdamW updates every row of a (V, C) token table at every step. A row that no batch has looked up yet has a
zero gradient and zero moments, so its update is the weight decay alone, p <- p (1 - lr wd), and its moments stay
zero. Fine-tuning looks up a fraction of the vocabulary (SST-2: 11.6k of all-MiniLM-L6-v2's 30.5k rows in a whole
epoch, fewer early on), and torch's fused AdamW kernel costs about 0.6 ns an element on 2 CPU cores whatever the
element holds (its square root and two divisions bound it, not memory). The word table is half of that model's
parameters, so it was half of the optimizer's 14.6 ms a step.

`TableAdamW.step()` is `optimizer.step()` with each such table done apart:
- the rows looked up so far are gathered into a compact block, which holds their moments, and the fused kernel
  (`torch._fused_adamw_`, the op `torch.optim.AdamW(fused=True)` runs) updates that block with the table's
  parameter group's settings and step count; the block is written back over the rows it holds;
- the rows not looked up yet owe their decay: one factor per table, the product of (1 - lr wd) since they were last
  settled. A forward within `lookups()` first settles the rows it looks up (multiplies them by that factor, and
  takes them into the block, with zero moments, so that their step is the kernel's from now on), and `settle()`
  multiplies all the others before anything else reads the table (the Trainer's evaluation, checkpoints, the end
  of training). With `lazy_decay=False` the whole table is multiplied at every step instead (the Trainer's choice
  when it keeps a moving average of the weights, which reads every row at every step).
The result is the dense step's: the same kernel on the same numbers for the looked-up rows, and for the others the
decay the kernel would have applied, as one product (equal to the step-by-step product within float rounding).

The block holds the looked-up rows' values between steps, and is read from the table again whenever the table's
version counter shows an in-place change since the block was written back (weights loaded, or changed under
`torch.no_grad()`; not through `.data`, which bypasses the counter). The moments live in the block; `dense_state()`
puts them into the optimizer's state in torch's dense form while a checkpoint is written, and `adopt_state()` takes
a loaded dense state back into the block, so checkpoints are those of plain torch AdamW in both directions. Settling
also drops from the block the rows whose moments are both zero (a row looked up with an exactly zero gradient), so
the block after a settle is exactly what `adopt_state()` rebuilds from a checkpoint, and a resumed run continues bit
for bit.

Measured on 2 CPU cores (one step's lookup, backward and update of the table alone, 400 rows looked up, weight
decay on; `torch.optim.AdamW(fused=True)` against this): all-MiniLM-L6-v2's 30,522 x 384 word table with 10.4k rows
looked up before (the mean over an SST-2 epoch), 6.8 ms dense, 5.5 ms with the decay at every step, 4.2 ms
deferred; a 119,547 x 768 table (multilingual BERT's) with 15k rows looked up, 58.3, 31.4 and 15.1 ms.

Once a step would take more than `DENSE_SHARE` (70%) of a table's rows into its block, the table goes back to the
optimizer (its decay settled, its moments as torch's dense state): the gather, write-back and bookkeeping then
cost more than the rows saved. Fine-tuning stays under it; pretraining with an untied table soon passes it.

It applies to the tables of `training.lookup_grads` (row-sparse gradients, single-process eager training) whose
optimizer is torch's fused AdamW on the CPU, without amsgrad or maximize. On a GPU the dense step costs little.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import nn

from plmkit.training.lookup_grads import LookupGrads

DENSE_SHARE = 0.7  # a table with more of its rows looked up goes back to the dense step (about the break-even)


class _Table:
    """One table's looked-up rows (in the order first seen): their values, their moments, and a gradient block."""

    def __init__(self, module: nn.Embedding, group: int) -> None:
        self.module, self.param = module, module.weight
        self.group = group  # the index of its parameter group (`load_state_dict` replaces the groups)
        self.owed = 1.0  # the decay the rows outside the block have not had yet
        self.synced = -1  # the table's `_version` when the block last equalled its rows
        self.step = torch.zeros((), dtype=torch.float32)  # as torch's fused AdamW keeps it
        self.stepped = False
        self.reset()

    def reset(self) -> None:
        rows, width = self.param.shape
        self.count = 0
        self.position = torch.full((rows,), -1, dtype=torch.long)  # row -> its place in the block, or -1
        self.rows = torch.empty(0, dtype=torch.long)
        self.exp_avg = self.exp_avg_sq = self.block = self.grad = self.param.new_zeros(0, width)

    def add_rows(self, new: torch.Tensor) -> None:
        """Append rows not seen before (unique), with zero moments; capacity grows by doubling."""
        n, width = new.numel(), self.param.shape[1]
        if self.count + n > self.rows.numel():
            capacity = min(self.param.shape[0], max(2 * self.rows.numel(), self.count + n, 1024))
            rows = torch.empty(capacity, dtype=torch.long)
            rows[:self.count] = self.rows[:self.count]
            self.rows = rows
            grown = []
            for old in (self.exp_avg, self.exp_avg_sq, self.block):
                block = self.param.new_zeros(capacity, width)
                block[:self.count] = old[:self.count]
                grown.append(block)
            self.exp_avg, self.exp_avg_sq, self.block = grown
            self.grad = self.param.new_zeros(capacity, width)  # zero between steps: nothing to carry over
        with torch.no_grad():
            torch.index_select(self.param, 0, new, out=self.block[self.count:self.count + n])
        self.rows[self.count:self.count + n] = new
        self.position[new] = torch.arange(self.count, self.count + n)
        self.count += n

    def dense_state(self) -> dict[str, torch.Tensor]:
        """torch AdamW's state for the whole table: the held rows' moments, zeros elsewhere."""
        exp_avg, exp_avg_sq = torch.zeros_like(self.param), torch.zeros_like(self.param)
        exp_avg.index_copy_(0, self.rows[:self.count], self.exp_avg[:self.count])
        exp_avg_sq.index_copy_(0, self.rows[:self.count], self.exp_avg_sq[:self.count])
        return {"step": self.step.clone(), "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}

    def hold(self, rows: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor) -> None:
        """Hold exactly `rows` (unique), with these moments (a row each); their values are read from the table, so
        the block is in sync with it."""
        self.reset()
        self.add_rows(rows)
        self.exp_avg[:rows.numel()], self.exp_avg_sq[:rows.numel()] = exp_avg, exp_avg_sq
        self.synced = self.param._version

    @contextlib.contextmanager
    def changing(self) -> Iterator[None]:
        """Around an in-place change to the table that leaves the block's rows as the block has them (or reads them
        into it): a block in sync before stays in sync."""
        synced = self.synced == self.param._version
        yield
        if synced:
            self.synced = self.param._version


def _moving(exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor) -> torch.Tensor:
    """The rows whose moments are not both zero (a row with both zero updates as one never looked up)."""
    return ((exp_avg != 0).any(1) | (exp_avg_sq != 0).any(1)).nonzero().squeeze(1)


class TableAdamW:
    """`step()`: `optimizer.step()`, with the large token tables' AdamW over their looked-up rows (see the module)."""

    def __init__(self, optimizer: torch.optim.Optimizer, lookup_grads: LookupGrads, lazy_decay: bool = True) -> None:
        self.optimizer, self.lookup_grads, self.lazy_decay = optimizer, lookup_grads, lazy_decay
        self.tables: list[_Table] = []
        if not isinstance(optimizer, torch.optim.AdamW):
            return
        for module in lookup_grads.tables:
            p = module.weight
            groups = [i for i, g in enumerate(optimizer.param_groups) if any(q is p for q in g["params"])]
            group = optimizer.param_groups[groups[0]] if len(groups) == 1 else {}
            if (group and p.device.type == "cpu" and p.dim() == 2 and group.get("fused") and not group.get("amsgrad")
                    and not group.get("maximize") and not group.get("capturable")
                    and not group.get("differentiable")):
                self.tables.append(_Table(module, groups[0]))

    @contextlib.contextmanager
    def lookups(self) -> Iterator[None]:
        """Within the block, a table's forward first settles the decay owed by the rows it looks up."""
        hooks = [t.module.register_forward_pre_hook(functools.partial(self._settle_rows, t)) for t in self.tables]
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()

    @torch.no_grad()
    def _settle_rows(self, table: _Table, module: nn.Module, args: tuple) -> None:
        if table.owed == 1.0 or not args or not isinstance(args[0], torch.Tensor):
            return
        ids = args[0].reshape(-1).unique()
        new = ids[table.position[ids] < 0]
        if new.numel():
            with table.changing():
                table.param.index_copy_(0, new, table.param.index_select(0, new).mul_(table.owed))
                table.add_rows(new)

    @torch.no_grad()
    def settle(self) -> None:
        """Give every row outside the blocks the decay it owes (before anything but a forward within `lookups()`
        reads the tables), and drop from the blocks the rows whose moments are both zero."""
        for table in self.tables:
            k, p = table.count, table.param
            held = table.rows[:k]
            if table.owed != 1.0:
                with table.changing():
                    values = p.index_select(0, held)
                    p.mul_(table.owed)
                    p.index_copy_(0, held, values)
                table.owed = 1.0
            moving = _moving(table.exp_avg[:k], table.exp_avg_sq[:k])
            if moving.numel() < k:
                table.hold(held[moving], table.exp_avg[moving], table.exp_avg_sq[moving])

    def step(self) -> None:
        if not self.tables:
            self.optimizer.step()
            return
        written = self.lookup_grads.written_rows()
        taken = []
        for table in list(self.tables):
            grad = table.param.grad
            if grad is None:
                continue  # no gradient this step: torch's step leaves the parameter alone, decay included
            rows = written.get(table.param)
            if rows is None:  # a dense gradient came in: every row
                rows = torch.arange(table.param.shape[0])
            new = rows[table.position[rows] < 0]  # looked up for the first time
            if table.count + new.numel() > DENSE_SHARE * table.param.shape[0]:
                self._release(table)  # most rows are looked up: torch's dense step is cheaper from here on
                continue
            taken.append((table, grad, rows, new))
            table.param.grad = None  # the optimizer's own step skips it
        try:
            self.optimizer.step()
        finally:
            for table, grad, *_ in taken:
                table.param.grad = grad
        for table, grad, rows, new in taken:
            self._step_table(table, grad, rows, new)

    @torch.no_grad()
    def _step_table(self, table: _Table, grad: torch.Tensor, rows: torch.Tensor, new: torch.Tensor) -> None:
        grad_scale = getattr(self.optimizer, "grad_scale", None)
        found_inf = getattr(self.optimizer, "found_inf", None)
        if found_inf is not None and bool(found_inf):
            return  # the fused kernel skips a step with inf/NaN gradients (GradScaler): so does the decay
        if new.numel():
            table.add_rows(new)
        k, places, p = table.count, table.position[rows], table.param
        block, g = table.block[:k], table.grad[:k]
        if table.synced != p._version:  # the table changed since the block was written back: read it again
            torch.index_select(p, 0, table.rows[:k], out=block)
        g.index_copy_(0, places, grad.index_select(0, rows))
        group = self.optimizer.param_groups[table.group]
        lr, weight_decay = float(group["lr"]), float(group["weight_decay"])
        beta1, beta2 = group["betas"]
        table.step += 1
        table.stepped = True
        if weight_decay and self.lazy_decay:
            table.owed *= 1 - lr * weight_decay  # owed by the rows not looked up yet
        elif weight_decay:
            p.mul_(1 - lr * weight_decay)  # the rows not looked up yet; the others are overwritten below
        torch._fused_adamw_([block], [g], [table.exp_avg[:k]], [table.exp_avg_sq[:k]], [], [table.step], lr=lr,
                            beta1=float(beta1), beta2=float(beta2), weight_decay=weight_decay,
                            eps=float(group["eps"]), amsgrad=False, maximize=False, grad_scale=grad_scale,
                            found_inf=None)
        p.index_copy_(0, table.rows[:k], block)
        table.synced = p._version
        if grad_scale is not None:  # the kernel leaves the gradient divided by the scale, as torch's step does
            grad.index_copy_(0, rows, g.index_select(0, places))
        g.index_fill_(0, places, 0.0)

    @torch.no_grad()
    def _release(self, table: _Table) -> None:
        """Hand a table back to the optimizer: its decay settled, its moments as torch's dense state."""
        self.settle()
        if table.stepped:
            self.optimizer.state[table.param] = table.dense_state()
        self.tables.remove(table)

    @contextlib.contextmanager
    def dense_state(self) -> Iterator[None]:
        """Within the block, the optimizer's state holds each stepped table's moments in torch's dense form (for
        `optimizer.state_dict()`), and the tables are settled (their weights final too)."""
        self.settle()
        added = []
        for table in self.tables:
            if not table.stepped or table.param in self.optimizer.state:
                continue
            self.optimizer.state[table.param] = table.dense_state()
            added.append(table.param)
        try:
            yield
        finally:
            for p in added:
                self.optimizer.state.pop(p, None)

    def adopt_state(self) -> None:
        """Take the tables' dense state out of the optimizer (e.g. just loaded from a checkpoint) into the blocks:
        the rows whose moments are not both zero."""
        for i, old in enumerate(self.tables):
            self.tables[i] = table = _Table(old.module, old.group)
            state = self.optimizer.state.pop(table.param, None)
            if not state:
                continue
            rows = _moving(state["exp_avg"], state["exp_avg_sq"])
            table.hold(rows, state["exp_avg"].index_select(0, rows), state["exp_avg_sq"].index_select(0, rows))
            table.step = state["step"].detach().to(torch.float32).clone().reshape(())
            table.stepped = True
