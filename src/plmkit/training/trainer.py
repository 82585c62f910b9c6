"""The one Trainer: pretraining and every fine-tuning task use it. It knows no model and no task.

It takes a model, a dataset with a collate function, an objective (loss terms with counts, see
`training.objectives`) and optionally an evaluator, and does the rest: AdamW (decay only for p.dim() >= 2),
warm-up then linear/cosine decay, gradient accumulation normalised over the global batch, clipping, an optional
moving average of the weights (`train.ema_decay`: what is evaluated, kept as best and returned), optional bf16
autocast and torch.compile, DDP (or with `impl.fsdp` FSDP2 sharding) under torchrun, evaluation every N steps
with best-checkpoint tracking, JSONL + TensorBoard metrics, a tqdm bar with tokens/s, a loss-curve PNG, a wall-clock
budget, and atomic checkpoints every N steps or minutes from which `fit(resume=True)` continues bit for bit (each
rank's dropout RNG included, so a resumed distributed run repeats the uninterrupted one).

Under FSDP the model is sharded in place, so `trainer.model` is no plain module during training; everything that
leaves the trainer still is: checkpoints and the `save_model` directories hold the full weights, the evaluator gets
a full copy on every rank (parameters only, gathered for the evaluation: the evaluators give ranks unequal numbers
of batches, which sharded forwards cannot take), and after `fit()` rank 0's `trainer.model` is a plain CPU module
with the trained weights (other ranks keep the sharded one).
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from plmkit.errors import PlmkitError
from plmkit.layers.linear import cpu_matmul_backend, onednn_matmuls
from plmkit.training.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    load_optimizer_state,
    load_weights,
    read_trainer_state,
    restore_rng,
    resume_latest,
    rng_state,
    save_checkpoint,
    verify_checkpoint,
)
from plmkit.training.config import ImplConfig, TrainConfig
from plmkit.training.data import Collate, ExampleStream
from plmkit.training.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_object,
    full_model_state,
    full_optimizer_state,
    init_distributed,
    load_full_state,
    materialize,
    meta_copy,
    optimizer_state_by_name,
    set_gradient_sync,
    shard_model,
)
from plmkit.training.lookup_grads import LookupGrads
from plmkit.training.memory import bound_onednn_primitive_cache, release_free_memory
from plmkit.training.objectives import Objective
from plmkit.training.optim import (
    build_optimizer,
    clip_grad_norm,
    grad_norm_and_coef,
    lr_at,
    scale_grads,
    set_lr,
    unscales_in_step,
)
from plmkit.training.table_adam import TableAdamW
from plmkit.training.tracking import MetricsLog, plot_loss_curve

log = logging.getLogger(__name__)

# oneDNN's primitive cache under oneDNN matmuls: an SST-2 epoch of length-grouped batches of 32 has ~33 row counts
# (multiples of 64), each ~14 primitives (4 matmul shapes forward, 8 backward, GELU both ways), ~0.3 MB a primitive
ONEDNN_MATMUL_CACHE = 512

Evaluator = Callable[[nn.Module], dict[str, float]]


@dataclass
class TrainResult:
    step: int
    stopped_by: str  # "max_steps" | "max_minutes"
    train_loss: float | None
    eval_metrics: dict[str, float] = field(default_factory=dict)
    best_metric: float | None = None
    best_step: int | None = None
    elapsed_s: float = 0.0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """`Trainer(model, train, eval...).fit()`; see the module docstring.

    `evaluator(model) -> {name: value}` runs in eval mode under inference mode; `save_model(model, dir)` writes a
    usable model directory (the best one by `train.best_metric` goes to `<output_dir>/best`). `lengths` (one per
    example) turns on length-grouped batches.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, *, train_data: Sequence[Any], collate: Collate,
                 objective: Objective, evaluator: Evaluator | None = None,
                 save_model: Callable[[nn.Module, Path], Any] | None = None, impl: ImplConfig | None = None,
                 lengths: Sequence[int] | None = None) -> None:
        self.config, self.impl = config, impl or ImplConfig()
        self.device = resolve_device(self.impl.device)
        if self.impl.num_threads:
            torch.set_num_threads(self.impl.num_threads)
        self.dist: DistInfo = init_distributed(self.device.type)
        self.sharded = self.impl.fsdp and self.dist.enabled  # FSDP instead of DDP
        # oneDNN for the training step's fp32 matmuls (`layers.linear`); not under FSDP (DTensor weights),
        # torch.compile (which picks its own kernels) or autocast (whose bf16 matmuls are torch's)
        self.onednn = (self.device.type == "cpu" and not self.sharded and not self.impl.compile
                       and self.impl.precision == "fp32" and cpu_matmul_backend(self.impl.cpu_matmul) == "onednn")
        if self.device.type == "cpu":
            # before the first forward. Unpadded batches are a new shape each step: a small cache keeps memory flat;
            # under oneDNN matmuls rows are rounded up to a multiple, and the cache holds all of an epoch's shapes
            bound_onednn_primitive_cache(ONEDNN_MATMUL_CACHE if self.onednn else 16)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        torch.manual_seed(config.seed)  # dropout's RNG; data order and masking have their own seeds
        if self.impl.fsdp and not self.dist.enabled:
            log.warning("impl.fsdp applies under torchrun with more than one process; training unsharded")
        self._skeleton: nn.Module | None = None
        if self.sharded:
            self._skeleton = meta_copy(model)  # the plain frame that gathered full weights go into
            model = shard_model(model, self.device, self.dist)  # moves each shard to the device
        else:
            model = model.to(self.device)
        self.model = model  # the raw model (sharded in place under FSDP): what is saved, evaluated and returned
        self.stream = ExampleStream(train_data, collate, config.batch_size, seed=config.seed,
                                    micro_batch_size=config.micro_batch_size, rank=self.dist.rank,
                                    world_size=self.dist.world_size, lengths=lengths)
        self.objective, self.evaluator, self.save_model = objective, evaluator, save_model
        self.optimizer = build_optimizer(self.model, config)
        self.ema: AveragedModel | None = None
        if config.ema_decay:
            if self.sharded:
                raise PlmkitError("train.ema_decay is not supported with impl.fsdp (the average would need sharding "
                                  "too); train without one of them")
            # Parameters only: buffers (position ids, ...) are not trained. The first update copies the weights.
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay),
                                     use_buffers=False)
        # Large token tables keep their gradient between steps (see `training.lookup_grads`); DDP and FSDP reduce
        # gradients themselves and torch.compile traces the dense lookup, so there it stays off.
        self.lookup_grads = LookupGrads(self.model, enabled=not self.dist.enabled and not self.impl.compile)
        # and on CPU their AdamW runs over the rows looked up so far, the rest only decaying (`training.table_adam`);
        # a moving average reads every row at every step, so with one the decay is not deferred
        self.table_adam = TableAdamW(self.optimizer, self.lookup_grads, lazy_decay=self.ema is None)
        self.forward_model: nn.Module = self.model
        if self.dist.enabled and not self.sharded:
            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            self.forward_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if self.impl.compile:
            self.forward_model = torch.compile(self.forward_model)
        self.output_dir = Path(config.output_dir)
        self.step = 0
        self.tokens_seen = 0
        self.best: tuple[float, int] | None = None
        self._elapsed_before = 0.0

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False) -> TrainResult:
        cfg, main = self.config, self.dist.is_main
        if resume:
            self._resume()
        elif main and list_checkpoints(self.output_dir):
            raise PlmkitError(f"{self.output_dir} already has checkpoints; pass --resume to continue that run, "
                              "or choose another train.output_dir")
        metrics = MetricsLog(self.output_dir, tensorboard=self.impl.tensorboard,
                             resume_step=self.step if resume else None) if main else None
        start = self._start = time.monotonic()
        last_save = start
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                   disable=not (main and self.impl.progress))
        stopped_by, last_loss, eval_metrics = "max_steps", None, {}
        window_tokens, window_start = 0, time.monotonic()
        try:
            while self.step < cfg.max_steps:
                stats = self._train_step()
                self.step += 1
                if self.device.type == "cpu" and self.impl.release_memory_every and \
                        self.step % self.impl.release_memory_every == 0:
                    release_free_memory()
                self.tokens_seen += stats["tokens"]
                window_tokens += stats["tokens"]
                last_loss = stats["loss"]
                now = time.monotonic()
                if main and (self.step % cfg.log_every == 0 or self.step == cfg.max_steps):
                    tok_s = window_tokens / max(now - window_start, 1e-9)
                    record = {k: v for k, v in stats.items() if k != "tokens"}
                    record.update(tokens_per_s=round(tok_s, 1), epoch=round(self.stream.epoch_at(self.step), 4),
                                  elapsed_s=round(self._elapsed_before + now - start, 2))
                    metrics.write(self.step, "train", record)
                    bar.set_postfix(loss=f"{last_loss:.4f}", tok_s=f"{tok_s:,.0f}", refresh=False)
                    window_tokens, window_start = 0, now
                bar.update(1)
                # The budget covers the whole run: time before a resume counts too.
                out_of_time = cfg.max_minutes is not None and \
                    self._elapsed_before + now - start >= cfg.max_minutes * 60
                last_step = self.step == cfg.max_steps or out_of_time
                if self.evaluator is not None and (last_step or (cfg.eval_every and self.step % cfg.eval_every == 0)):
                    eval_metrics = self._evaluate(metrics)
                if (cfg.save_every_steps and self.step % cfg.save_every_steps == 0) or last_step or \
                        (cfg.save_every_minutes and now - last_save >= cfg.save_every_minutes * 60):
                    self._save(self._elapsed_before + time.monotonic() - start)
                    last_save = time.monotonic()
                if out_of_time and self.step < cfg.max_steps:
                    stopped_by = "max_minutes"
                    log.info("stopping at step %d: train.max_minutes=%s reached", self.step, cfg.max_minutes)
                    break
        except KeyboardInterrupt:
            log.warning("interrupted at step %d; saving a checkpoint to resume from", self.step)
            self._save(self._elapsed_before + time.monotonic() - start)
            raise
        finally:
            bar.close()
            if metrics is not None:
                metrics.close()
            self.table_adam.settle()  # what leaves the trainer has every row's decay
        elapsed = self._elapsed_before + time.monotonic() - start
        if main:
            plot_loss_curve(self.output_dir / "metrics.jsonl", self.output_dir / "loss.png",
                            title=f"{self.output_dir.name}: {self.step} steps")
        if self.sharded:
            self._unshard_for_return()
        if self.ema is not None:  # what leaves the trainer is the average, as what was evaluated
            with torch.no_grad():
                for mine, averaged in zip(self.model.parameters(), self.ema.module.parameters(), strict=True):
                    mine.copy_(averaged)
        barrier(self.dist)
        return TrainResult(self.step, stopped_by, last_loss, eval_metrics,
                           self.best[0] if self.best else None, self.best[1] if self.best else None, elapsed)

    def _train_step(self) -> dict[str, float]:
        cfg = self.config
        self.model.train()
        micro_batches = self.stream.batches(self.step)
        local_counts = [self.objective.counts(b) for b in micro_batches]
        names = sorted({k for c in local_counts for k in c})
        tokens = sum(int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel()
                     for b in micro_batches)
        totals = torch.tensor([sum(c.get(k, 0) for c in local_counts) for k in names] + [tokens], dtype=torch.float64)
        totals = all_reduce_sum(totals, self.dist).tolist()
        global_counts, tokens = dict(zip(names, totals[:-1], strict=True)), int(totals[-1])
        term_sums = torch.zeros(len(names), dtype=torch.float64)
        with self.lookup_grads.active(), self.table_adam.lookups():
            self._forward_backward(micro_batches, local_counts, names, global_counts, term_sums)
        term_sums = all_reduce_sum(term_sums, self.dist).tolist()
        lr = lr_at(self._schedule_step(), base_lr=cfg.lr, warmup=cfg.warmup, total=cfg.max_steps, schedule=cfg.schedule,
                   min_lr_ratio=cfg.min_lr_ratio)
        set_lr(self.optimizer, lr)
        grad_norm = None
        if cfg.clip_grad_norm:
            grad_norm = self._clip_gradients(cfg.clip_grad_norm)
        self.table_adam.step()  # optimizer.step(), the token tables' rows apart
        self.optimizer.grad_scale = None  # a clipping coefficient folded into this step (see `_clip_gradients`)
        self.lookup_grads.zero_grad(self.optimizer)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        stats = {"loss": sum(term_sums), "lr": lr, "tokens": tokens}
        if len(names) > 1 or names != ["loss"]:
            stats.update({f"{name}_loss": v for name, v in zip(names, term_sums, strict=True)})
        if grad_norm is not None:
            stats["grad_norm"] = grad_norm
        if not math.isfinite(stats["loss"]):
            raise PlmkitError(f"step {self.step}: the loss is {stats['loss']}; lower train.lr or check the data")
        return stats

    def _forward_backward(self, micro_batches: list[dict[str, torch.Tensor]], local_counts: list[dict[str, int]],
                          names: list[str], global_counts: dict[str, float], term_sums: torch.Tensor) -> None:
        """Forward and backward of each micro-batch, its loss terms weighted by their share of the global counts
        (`term_sums` gets each term's weighted value)."""
        for i, (batch, counts) in enumerate(zip(micro_batches, local_counts, strict=True)):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            # oneDNN is chosen in the forward (`layers.linear`): its autograd nodes run their backward through it too
            with self._gradient_sync(i == len(micro_batches) - 1), self._autocast(), onednn_matmuls(self.onednn):
                losses = self.objective(self.forward_model, batch)
                loss = 0.0
                for j, name in enumerate(names):
                    if counts.get(name, 0) == 0 or global_counts[name] == 0:
                        continue  # e.g. a micro-batch with no masked token: its term is absent, not NaN
                    weight = counts[name] / global_counts[name]
                    loss = loss + losses[name] * weight
                    term_sums[j] += float(losses[name].detach()) * weight
                # DDP and FSDP average gradients over ranks; the weights above already sum to 1 over all ranks.
                loss = loss * self.dist.world_size
            if isinstance(loss, torch.Tensor):
                loss.backward()

    def _clip_gradients(self, max_norm: float) -> float:
        """Clip to total 2-norm `max_norm`; returns the norm. Sharded gradients (DTensors) take torch's own.

        A fused torch optimizer divides each gradient by `optimizer.grad_scale` as its step reads it (the hook of
        `torch.amp.GradScaler`), so the clipping coefficient goes there, as 1 / coefficient, rather than into a
        pass of its own over every gradient (1.5 ms a step for all-MiniLM-L6-v2 on 2 CPU cores). The step leaves
        the gradients divided, as clipping would have."""
        if self.sharded:
            return float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        params, rows = list(self.model.parameters()), self.lookup_grads.written_rows()
        if not unscales_in_step(self.optimizer):
            return clip_grad_norm(params, max_norm, rows=rows)
        norm, coef = grad_norm_and_coef(params, max_norm, rows)
        if coef is not None:
            if math.isfinite(norm):
                self.optimizer.grad_scale = (1.0 / coef).to(torch.float32)
            else:  # a coefficient of 0: scale explicitly (NaN stays NaN), as torch's clipping does
                scale_grads(params, coef, rows)
        return norm

    def _schedule_step(self) -> int:
        """The step the schedule is at: the optimizer step, or with `schedule_by_time` the step that the elapsed
        share of the time budget corresponds to, when that is further along (never during warm-up)."""
        cfg = self.config
        if not cfg.schedule_by_time or self.step < cfg.warmup:
            return self.step
        elapsed = self._elapsed_before + time.monotonic() - self._start
        by_time = cfg.warmup + elapsed / (cfg.max_minutes * 60) * (cfg.max_steps - cfg.warmup)
        return max(self.step, min(cfg.max_steps, int(by_time)))

    def _gradient_sync(self, sync: bool) -> contextlib.AbstractContextManager:
        """Reduce gradients over ranks only on the last accumulation micro-batch: DDP's `no_sync` on the others,
        FSDP2's `set_requires_gradient_sync` (which stays set until changed)."""
        if self.sharded:
            set_gradient_sync(self.model, sync)
            return contextlib.nullcontext()
        if self.dist.enabled and not sync:
            return self.forward_model.no_sync()
        return contextlib.nullcontext()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.impl.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ evaluation, checkpoints
    def _evaluate(self, metrics: MetricsLog | None) -> dict[str, float]:
        self.table_adam.settle()  # the token tables' deferred decay (see `training.table_adam`)
        # With train.ema_decay the moving average is evaluated and kept as the best, not the current weights.
        model = self._full_model(self.device) if self.sharded else self.ema.module if self.ema is not None \
            else self.model
        model.eval()
        with torch.inference_mode(), self._autocast():
            values = self.evaluator(model)
        self.model.train()
        if metrics is not None:
            metrics.write(self.step, "eval", values)
            log.info("step %d eval: %s", self.step, ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
        key = self.config.best_metric
        if key is not None:
            if key not in values:
                raise PlmkitError(f"train.best_metric {key!r} is not among the evaluation metrics: "
                                  f"{', '.join(values)}")
            better = self.best is None or (values[key] > self.best[0] if self.config.best_mode == "max"
                                           else values[key] < self.best[0])
            if better:
                self.best = (values[key], self.step)
                if self.dist.is_main and self.save_model is not None:
                    self._save_best(model)
        return values

    def _full_model(self, device: torch.device | str, *, rank0_only: bool = False) -> nn.Module | None:
        """Under FSDP, a plain module with the full current weights (collective). `rank0_only`: gathered to rank 0's
        CPU for writing (None elsewhere); otherwise on every rank's `device`."""
        state = full_model_state(self.model, cpu_offload=rank0_only)
        if rank0_only and not self.dist.is_main:
            return None
        return materialize(self._skeleton, device, state)

    def _unshard_for_return(self) -> None:
        """After an FSDP fit, rank 0's `self.model` becomes a plain CPU module with the trained weights, so that the
        caller can save it as it would an unsharded one (`trainer.model.save_pretrained(...)` on rank 0)."""
        plain = self._full_model("cpu", rank0_only=True)
        if plain is not None:
            self.model = plain.train()

    def _save_best(self, model: nn.Module) -> None:
        final = self.output_dir / "best"
        tmp = self.output_dir / ".best.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.save_model(model, tmp)
        old = self.output_dir / ".best.old"
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)

    def _save(self, elapsed: float) -> None:
        """A checkpoint from every rank's state (collective): rank 0 writes the full weights and optimizer state
        and the RNG states of all ranks."""
        rng_states = all_gather_objects(rng_state(), self.dist)
        model, optimizer = self.model, self.optimizer
        if self.sharded:
            model = self._full_model("cpu", rank0_only=True)
            optimizer = full_optimizer_state(self.model, self.optimizer)
        if self.dist.is_main:
            state = {"tokens_seen": self.tokens_seen, "elapsed_s": elapsed,
                     "best": list(self.best) if self.best else None}
            with self.table_adam.dense_state():  # the token tables' moments, in torch's dense form
                save_checkpoint(self.output_dir, self.step, model, optimizer, state, keep_last=self.config.keep_last,
                                rng_states=rng_states, ema=self.ema)
        barrier(self.dist)

    def _resume(self) -> None:
        found = resume_latest(self.output_dir, self._load_sharded if self.sharded else self._load)
        if found is None:
            raise PlmkitError(f"{self.output_dir}: no intact checkpoint to resume from")
        ckpt, state = found
        self.step, self.tokens_seen = state["step"], state.get("tokens_seen", 0)
        self._elapsed_before = state.get("elapsed_s", 0.0)
        self.best = tuple(state["best"]) if state.get("best") else None
        log.info("resumed from %s (step %d)", ckpt.path, self.step)

    def _load(self, path: Path) -> dict[str, Any]:
        state = load_checkpoint(path, self.model, self.optimizer, rank=self.dist.rank,
                                world_size=self.dist.world_size, ema=self.ema)
        self.table_adam.adopt_state()
        return state

    def _load_sharded(self, path: Path) -> dict[str, Any]:
        """Load a (plain) checkpoint into the FSDP model: rank 0 verifies it and reads the full weights and optimizer
        state, all ranks learn whether that worked (so they skip a damaged checkpoint together), then rank 0
        broadcasts the states and every rank keeps its shards (collective)."""
        model_state: dict[str, torch.Tensor] = {}
        optimizer_state: dict[str, Any] = {}
        error = None
        if self.dist.is_main:
            try:
                verify_checkpoint(path)
                plain = materialize(self._skeleton, "cpu")
                load_weights(path, plain)
                model_state = plain.state_dict()
                optimizer_state = optimizer_state_by_name(load_optimizer_state(path), self.model, self.optimizer)
            except PlmkitError as e:
                error = str(e)
        error = broadcast_object(error, self.dist)
        if error is not None:
            raise PlmkitError(error)
        load_full_state(self.model, self.optimizer, model_state, optimizer_state)
        restore_rng(path, self.dist.rank, self.dist.world_size)
        return read_trainer_state(path)
