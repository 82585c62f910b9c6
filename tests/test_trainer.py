"""The Trainer: schedules, weight decay groups, accumulation, exact resume after SIGKILL, DDP equivalence,
checkpoint integrity, best-checkpoint tracking, the wall-clock budget."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from plmkit.errors import PlmkitError
from plmkit.layers.linear import onednn_available
from plmkit.models.encoder_decoder import Seq2SeqLM, seq2seq_config
from plmkit.training import TrainConfig, build_optimizer, load_recipe, lr_at, param_groups
from plmkit.training.checkpoint import list_checkpoints, save_checkpoint, verify_checkpoint
from plmkit.training.optim import layer_depths
from plmkit.training.tracking import read_metrics
from plmkit.training.trainer import ONEDNN_MATMUL_CACHE

sys.path.insert(0, str(Path(__file__).parent))
from train_tiny import make_trainer, tiny_model  # noqa: E402

SCRIPT = Path(__file__).parent / "train_tiny.py"
needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN")


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl", "train")}


def test_lr_schedules_are_pure_functions_of_the_step():
    kw = dict(base_lr=1.0, warmup=10, total=110)
    assert lr_at(0, **kw) == pytest.approx(0.1) and lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw, schedule="linear") == pytest.approx(0.5)
    assert lr_at(60, **kw, schedule="cosine") == pytest.approx(0.5)
    assert lr_at(35, **kw, schedule="cosine") == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(torch.pi / 4))))
    assert lr_at(110, **kw) == pytest.approx(0.0) and lr_at(110, **kw, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert lr_at(500, **kw, schedule="constant") == 1.0


def test_weight_decay_only_for_matrices():
    model = tiny_model()
    decay, no_decay = param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert any(p is model.encoder.embed.token.weight for p in decay["params"])  # the tied embedding, once


def test_layer_wise_lr_decay_scales_each_layer_in_the_trainer(tmp_path):
    """train.layer_lr_decay=0.5 on 2 layers: head at lr, layer 1 at lr/2, layer 0 at lr/4, embeddings at lr/8. Adam's
    first step moves each weight by its group's rate (times sign of the gradient), so the step taken shows it."""
    model = tiny_model()
    assert [(g["weight_decay"], g["lr_scale"]) for g in param_groups(model, 0.01)] == [(0.01, 1.0), (0.0, 1.0)]
    groups = param_groups(model, 0.01, layer_lr_decay=0.5)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    expected = {"encoder.embed.": 0.125, "encoder.layers.0.": 0.25, "encoder.layers.1.": 0.5, "": 1.0}  # "": heads
    for name, p in model.named_parameters():
        assert scale_of[id(p)] == scale_of_name(name, expected), name

    trainer = make_trainer(str(tmp_path), dropout=0.0, max_steps=1, warmup_steps=0, weight_decay=0.0,
                           clip_grad_norm=None, lr=1e-3, layer_lr_decay=0.5)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.fit()
    for name, p in trainer.model.named_parameters():
        moved = (p.detach() - before[name]).abs().max().item()
        assert moved == pytest.approx(1e-3 * scale_of_name(name, expected), rel=1e-2), name
    with pytest.raises(PlmkitError, match="layer_lr_decay"):
        TrainConfig(layer_lr_decay=0.0)
    # An encoder-decoder: T5's shared token table is an embedding though its name does not say so.
    t5 = Seq2SeqLM(seq2seq_config("t5", vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32))
    depths = layer_depths(t5)
    assert depths["model.shared.weight"] == 0 and depths["model.encoder.final_norm.weight"] == 3
    assert {d for n, d in depths.items() if ".layers.1." in n} == {2}


def scale_of_name(name: str, expected: dict[str, float]) -> float:
    return next(v for k, v in expected.items() if name.startswith(k))


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    """Micro-batches of 2 (4 accumulation steps) give the loss of batches of 8: normalised by the global count of
    masked tokens, not a mean of micro-batch means."""
    a = make_trainer(str(tmp_path / "a"), dropout=0.0, max_steps=4)
    a.fit()
    b = make_trainer(str(tmp_path / "b"), dropout=0.0, max_steps=4, micro_batch_size=2)
    b.fit()
    la, lb = losses(tmp_path / "a"), losses(tmp_path / "b")
    for step in la:
        assert la[step] == pytest.approx(lb[step], abs=1e-5)
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, atol=1e-5, rtol=1e-4)


def _run(out: Path, overrides: dict, *extra: str, wait: bool = True, env: dict | None = None,
         nproc: int = 1) -> subprocess.Popen:
    """train_tiny.py as a script; with `nproc` > 1 under torchrun (gloo, a free port)."""
    launcher = [] if nproc == 1 else ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    cmd = [sys.executable, *launcher, str(SCRIPT), str(out), json.dumps(overrides), *extra]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if wait:
        proc.output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, proc.output
    return proc


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc: the test runs on Linux, and psutil is not a dependency)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        found.extend(kids := children.get(todo.pop(), []))
        todo.extend(kids)
    return found


def _kill_mid_way(proc: subprocess.Popen, out: Path, after_checkpoint: int, max_steps: int) -> None:
    """SIGKILL the run (every process of it) once a checkpoint at or after step `after_checkpoint` exists and a
    later step is logged, and check that it died between that checkpoint and the end."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        newest = max((c.step for c in list_checkpoints(out)), default=0)
        if newest >= after_checkpoint and max(losses(out), default=0) > newest:
            break
        time.sleep(0.05)
    for pid in [proc.pid, *_descendants(proc.pid)]:  # torchrun's workers are in sessions of their own
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.communicate()
    logged = max(losses(out))
    assert after_checkpoint < logged < max_steps, "the run must be killed after the checkpoint, before the end"
    assert [c.step for c in list_checkpoints(out)][-1] < max_steps


@pytest.mark.parametrize("cpu_matmul", ["aten", pytest.param("onednn", marks=needs_onednn)])
def test_resume_after_sigkill_is_bitwise_identical(tmp_path, cpu_matmul):
    """Kill a run with SIGKILL between checkpoints, resume it: every later step's loss equals the uninterrupted
    run's exactly (model, AdamW state, schedule, dropout RNG and data position all restored), with either backend
    of the CPU matmuls (`layers.linear`)."""
    settings = {"max_steps": 14, "save_every_steps": 3, "keep_last": 2, "dropout": 0.1, "step_sleep": 0.15,
                "cpu_matmul": cpu_matmul}
    _run(tmp_path / "full", settings)
    _kill_mid_way(_run(tmp_path / "killed", settings, wait=False), tmp_path / "killed", 6, 14)
    _run(tmp_path / "killed", settings, "--resume")
    full, resumed = losses(tmp_path / "full"), losses(tmp_path / "killed")
    assert sorted(resumed) == list(range(1, 15))
    assert resumed == full  # bitwise: float equality at every step


def test_ddp_resume_with_dropout_is_bitwise_identical(tmp_path):
    """The same under torchrun with 2 processes and dropout: each rank's own RNG state is saved and restored, so
    the dropout masks after the resume are the uninterrupted run's on every rank."""
    settings = {"max_steps": 8, "save_every_steps": 3, "keep_last": 2, "dropout": 0.1, "step_sleep": 0.15}
    _run(tmp_path / "full", settings, nproc=2)
    _kill_mid_way(_run(tmp_path / "killed", settings, wait=False, nproc=2), tmp_path / "killed", 3, 8)
    _run(tmp_path / "killed", settings, "--resume", nproc=2)
    full, resumed = losses(tmp_path / "full"), losses(tmp_path / "killed")
    assert sorted(resumed) == list(range(1, 9))
    assert resumed == full


def test_corrupt_checkpoint_is_refused_and_the_previous_one_used(tmp_path, caplog):
    out = tmp_path / "run"
    make_trainer(str(out), max_steps=6, save_every_steps=2, keep_last=3).fit()
    ckpts = list_checkpoints(out)
    assert [c.step for c in ckpts] == [2, 4, 6]
    model_file = ckpts[-1].path / "model.safetensors"
    model_file.write_bytes(model_file.read_bytes()[:1000])  # truncated
    with pytest.raises(PlmkitError, match="truncated"):
        verify_checkpoint(ckpts[-1].path)
    resumed = make_trainer(str(out), max_steps=6, save_every_steps=2, keep_last=3)
    with caplog.at_level("WARNING"):
        resumed._resume()
    assert resumed.step == 4
    assert "step-00000006" in caplog.text and "truncated" in caplog.text
    (ckpts[1].path / "optimizer.pt").write_bytes(b"garbage")
    (ckpts[0].path / "manifest.json").unlink()
    with pytest.raises(PlmkitError, match="no intact checkpoint"):
        make_trainer(str(out), max_steps=6)._resume()


def test_fresh_run_refuses_to_overwrite_checkpoints(tmp_path):
    make_trainer(str(tmp_path), max_steps=2).fit()
    with pytest.raises(PlmkitError, match="--resume"):
        make_trainer(str(tmp_path), max_steps=2).fit()


def test_keep_last_and_atomic_layout(tmp_path):
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters())
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, opt, {}, keep_last=2)
    assert [c.step for c in list_checkpoints(tmp_path)] == [2, 3]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_evaluation_best_checkpoint_and_time_budget(tmp_path):
    calls = []

    def evaluator(model):
        calls.append(model.training)
        return {"score": [0.5, 0.9, 0.7][len(calls) - 1]}

    saved = []
    trainer = make_trainer(str(tmp_path), max_steps=6, eval_every=2, best_metric="score", evaluator=evaluator)
    trainer.save_model = lambda model, path: (path.mkdir(parents=True), saved.append(path.name))
    result = trainer.fit()
    assert calls == [False, False, False]  # evaluated in eval mode
    assert (result.best_metric, result.best_step) == (0.9, 4)
    assert (tmp_path / "best").is_dir() and len(saved) == 2
    assert [r["score"] for r in read_metrics(tmp_path / "metrics.jsonl", "eval")] == [0.5, 0.9, 0.7]
    assert (tmp_path / "loss.png").stat().st_size > 1000

    budget = make_trainer(str(tmp_path / "budget"), max_steps=10_000, max_minutes=0.02, step_sleep=0.05)
    result = budget.fit()
    assert result.stopped_by == "max_minutes" and 1 <= result.step < 10_000
    assert list_checkpoints(tmp_path / "budget")[-1].step == result.step  # saved where it stopped


def test_train_config_validation_and_overrides(tmp_path):
    with pytest.raises(PlmkitError, match="schedule"):
        TrainConfig(schedule="exp")
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text("train:\n  max_steps: 5\n", encoding="utf-8")
    recipe = load_recipe(recipe_file, ["train.max_steps=7", "train.lr=5e-4", "data.inputs=[a.txt, b.txt]"],
                         sections=("train", "data"))
    assert recipe == {"train": {"max_steps": 7, "lr": 5e-4}, "data": {"inputs": ["a.txt", "b.txt"]}}
    with pytest.raises(PlmkitError, match="unknown section"):
        load_recipe(recipe_file, ["trian.lr=1"], sections=("train",))
    with pytest.raises(PlmkitError, match="section.key=value"):
        load_recipe(recipe_file, ["max_steps"])


def test_ddp_two_processes_match_one_process(tmp_path):
    """torchrun with 2 CPU processes (gloo), 4 examples each, follows the loss trajectory of one process with
    batches of 8 (dropout off: the two set-ups draw dropout masks from different generators)."""
    settings = {"max_steps": 5, "dropout": 0.0}
    _run(tmp_path / "single", settings)
    assert "rank 1 trains DistributedDataParallel" in _run(tmp_path / "ddp", settings, nproc=2).output
    single, ddp = losses(tmp_path / "single"), losses(tmp_path / "ddp")
    assert sorted(ddp) == sorted(single) == [1, 2, 3, 4, 5]
    for step in single:
        assert ddp[step] == pytest.approx(single[step], abs=1e-5)
    a = torch.load(list_checkpoints(tmp_path / "single")[-1].path / "optimizer.pt", weights_only=True)
    b = torch.load(list_checkpoints(tmp_path / "ddp")[-1].path / "optimizer.pt", weights_only=True)
    torch.testing.assert_close(a["state"][0]["exp_avg"], b["state"][0]["exp_avg"], atol=1e-6, rtol=1e-4)


def test_time_driven_schedule_reaches_the_end_of_decay(tmp_path):
    trainer = make_trainer(str(tmp_path), max_steps=1000, max_minutes=0.03, step_sleep=0.05, warmup_steps=1,
                           schedule_by_time=True)
    result = trainer.fit()
    assert result.stopped_by == "max_minutes"
    lrs = [r["lr"] for r in read_metrics(tmp_path / "metrics.jsonl", "train")]
    assert lrs[-1] < 0.25 * 1e-3  # decayed by the clock although only a few of the 1000 steps ran
    with pytest.raises(PlmkitError, match="max_minutes"):
        TrainConfig(schedule_by_time=True)


def test_compiled_training_saves_plain_names(tmp_path, monkeypatch):
    """With impl.compile the forward runs through torch.compile's wrapper, but checkpoints hold the raw model's
    names (no `_orig_mod.`) and load into an uncompiled model. (The eager backend keeps the test fast; the wrapper
    and its names are the same as inductor's.)"""
    import functools

    from safetensors import safe_open

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    trainer = make_trainer(str(tmp_path), max_steps=2, dropout=0.0, compile=True)
    assert type(trainer.forward_model).__name__ == "OptimizedModule"
    trainer.fit()
    ckpt = list_checkpoints(tmp_path)[-1].path / "model.safetensors"
    with safe_open(str(ckpt), framework="pt") as f:
        keys = list(f.keys())
    assert keys and not any("_orig_mod" in k for k in keys)
    assert set(keys) == set(tiny_model().state_dict())


def test_fsdp_matches_one_process_saves_plain_weights_and_resumes(tmp_path):
    """torchrun with 2 CPU processes and impl.fsdp (FSDP2 over gloo), with accumulation, clipping and evaluation on
    unequal shares of held-out batches: the losses, gradient norms and held-out metrics are one process's with the
    same global batch within 1e-5; checkpoints and the best and final model directories hold plain full weights
    (loaded into unsharded models here); and a resume from the middle checkpoint repeats the later steps."""
    from safetensors import safe_open

    from plmkit.models.bert import BertForPreTraining
    from plmkit.training.checkpoint import load_checkpoint

    settings = {"max_steps": 6, "dropout": 0.0, "micro_batch_size": 2, "save_every_steps": 3, "keep_last": 3,
                "eval_every": 3, "best_metric": "mlm_loss", "best_mode": "min", "evaluate": True}
    single = make_trainer(str(tmp_path / "single"), **settings)
    single.fit()
    run = _run(tmp_path / "fsdp", {**settings, "fsdp": True}, nproc=2)
    assert "rank 0 trains FSDPBertForPreTraining" in run.output and "rank 1 trains FSDP" in run.output

    def records(run: str, split: str) -> list[dict]:
        return list(read_metrics(tmp_path / run / "metrics.jsonl", split))

    compared = {"train": ("loss", "grad_norm", "mlm_loss", "nsp_loss"), "eval": ("mlm_loss", "nsp_accuracy")}
    for split, keys in compared.items():
        one, two = records("single", split), records("fsdp", split)
        assert [r["step"] for r in one] == [r["step"] for r in two] and one
        for a, b in zip(one, two, strict=True):
            for key in keys:
                assert b[key] == pytest.approx(a[key], abs=1e-5), (split, a["step"], key)

    last = list_checkpoints(tmp_path / "fsdp")[-1].path
    with safe_open(str(last / "model.safetensors"), framework="pt") as f:
        assert set(f.keys()) == set(tiny_model().state_dict())
    plain = tiny_model(dropout=0.0, seed=1)
    optimizer = build_optimizer(plain, single.config)
    load_checkpoint(last, plain, optimizer)
    for (name, a), b in zip(single.model.state_dict().items(), plain.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4, msg=name)
    one, two = single.optimizer.state_dict()["state"], optimizer.state_dict()["state"]
    assert sorted(one) == sorted(two) == list(range(len(list(plain.parameters()))))
    for i in one:
        torch.testing.assert_close(two[i]["exp_avg"], one[i]["exp_avg"], atol=1e-6, rtol=1e-4)
    references = {"model": single.model, "best": BertForPreTraining.from_pretrained(tmp_path / "single" / "best")}
    for name, reference in references.items():
        saved = BertForPreTraining.from_pretrained(tmp_path / "fsdp" / name)
        for a, b in zip(reference.state_dict().values(), saved.state_dict().values(), strict=True):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)

    # Truncate the last checkpoint of a copy: all ranks skip it together and resume from step 3.
    shutil.copytree(tmp_path / "fsdp", tmp_path / "resumed")
    damaged = tmp_path / "resumed" / "checkpoints" / last.name / "model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    run = _run(tmp_path / "resumed", {**settings, "fsdp": True}, "--resume", nproc=2)
    assert f"skipping checkpoint {last.name}" in run.output and "truncated" in run.output
    assert losses(tmp_path / "resumed") == losses(tmp_path / "fsdp")


def test_fsdp_units_and_plain_copies_of_every_model_family():
    """The blocks FSDP shards one by one are the models' layer stacks, and a full copy built from the pre-sharding
    skeleton is the model again: same weights, same outputs, the tied output embedding still tied."""
    from plmkit.models.decoder import CausalLM, decoder_config
    from plmkit.models.encoder_decoder import Seq2SeqLM, seq2seq_config
    from plmkit.training.distributed import materialize, meta_copy, transformer_blocks

    torch.manual_seed(0)
    gpt = CausalLM(decoder_config("gpt2", vocab_size=99, hidden_size=32, num_layers=3, num_heads=4,
                                  intermediate_size=64, max_position_embeddings=64)).eval()
    t5 = Seq2SeqLM(seq2seq_config("t5", vocab_size=99, hidden_size=32, num_layers=2, num_heads=4,
                                  intermediate_size=37, max_position_embeddings=64))
    bert = tiny_model()
    assert transformer_blocks(bert) == list(bert.encoder.layers)
    assert transformer_blocks(gpt) == list(gpt.decoder.layers)
    assert len(transformer_blocks(t5)) == 4 and all(b in set(t5.modules()) for b in transformer_blocks(t5))

    skeleton = meta_copy(gpt)
    assert all(p.is_meta for p in skeleton.parameters())
    copy = materialize(skeleton, "cpu", gpt.state_dict()).eval()
    assert all(p.is_meta for p in skeleton.parameters())  # the skeleton stays empty for the next copy
    assert copy.lm_head.weight is copy.decoder.embed.token.weight
    ids = torch.randint(0, 99, (2, 7))
    torch.testing.assert_close(copy(ids).logits, gpt(ids).logits, rtol=0, atol=0)


def test_rng_states_per_rank_and_across_world_sizes(caplog):
    """A checkpoint's RNG states are one per rank; an old single-state file is rank 0's; another world size warns
    and reuses the saved states in turn."""
    from plmkit.training.checkpoint import rng_state_for_rank

    states = [{"torch": torch.tensor([r])} for r in range(2)]
    assert [rng_state_for_rank(states, r, 2)["torch"].item() for r in range(2)] == [0, 1]
    assert not caplog.records
    with caplog.at_level("WARNING"):
        assert [rng_state_for_rank(states, r, 3)["torch"].item() for r in range(3)] == [0, 1, 0]
    assert "2 process(es) but this run has 3" in caplog.text
    assert rng_state_for_rank(states[1], 0, 1)["torch"].item() == 1
    with pytest.raises(PlmkitError, match="no RNG state"):
        rng_state_for_rank([], 0, 1)


def test_fsdp_without_torchrun_trains_unsharded(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        trainer = make_trainer(str(tmp_path), max_steps=1, fsdp=True)
    assert "impl.fsdp applies under torchrun" in caplog.text and not trainer.sharded
    assert type(trainer.forward_model).__name__ == "BertForPreTraining"


def _sentences(n: int) -> list[dict]:
    """n random token sentences of 3-8 ids below 99, labelled alternately."""
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(1, 99, (int(k),), generator=g), "labels": i % 2}
            for i, k in enumerate(torch.randint(3, 9, (n,), generator=g))]


def _pad_collate(examples: list[dict], seeds) -> dict[str, torch.Tensor]:
    T = max(len(e["input_ids"]) for e in examples)
    ids, mask = torch.zeros(len(examples), T, dtype=torch.long), torch.zeros(len(examples), T, dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, :len(e["input_ids"])], mask[i, :len(e["input_ids"])] = e["input_ids"], 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([e["labels"] for e in examples])}


def _classifier(dropout: float) -> torch.nn.Module:
    """A 2-layer BERT classifier over a 99-token vocabulary (its word table kept by `lookup_grads` at MIN_ROWS 90)."""
    from plmkit import BertForSequenceClassification, ModelConfig

    return BertForSequenceClassification(ModelConfig(
        vocab_size=99, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37, hidden_dropout=dropout,
        attention_dropout=dropout, num_labels=2, max_position_embeddings=64))


@pytest.mark.parametrize("min_rows", [90, 1])
def test_kept_lookup_gradient_trains_as_the_dense_one(tmp_path, monkeypatch, min_rows):
    """The token table's gradient kept between steps (sparse lookups added into it, the written rows zeroed in place,
    `training.lookup_grads`) trains as autograd's fresh dense one does: the same weights and Adam moments after 4
    steps with clipping (dropout off). Afterwards the kept buffer is all zeros again. With min_rows 1 the position
    and segment tables are kept too; their gradients come in dense (the encoder slices those weights), which
    zeroes the whole buffer. The tables' AdamW runs over their looked-up rows (`training.table_adam`) in the kept
    run, torch's dense fused AdamW in the other."""
    import plmkit.training.lookup_grads as lookup_grads
    from plmkit.training import SupervisedObjective, Trainer

    data = _sentences(16)

    def run(name: str, min_rows: int) -> Trainer:
        monkeypatch.setattr(lookup_grads, "MIN_ROWS", min_rows)
        torch.manual_seed(0)
        model = _classifier(dropout=0.0)
        config = TrainConfig(output_dir=str(tmp_path / name), max_steps=4, batch_size=4, lr=1e-2, clip_grad_norm=0.5,
                             log_every=1)
        trainer = Trainer(model, config, train_data=data, collate=_pad_collate, objective=SupervisedObjective())
        trainer.fit()
        return trainer

    kept, dense = run("kept", min_rows), run("dense", 10**9)
    tables = [m.num_embeddings for m in kept.lookup_grads.tables]
    assert tables == ([99] if min_rows == 90 else [99, 64, 2]) and not dense.lookup_grads.tables
    for a, b in zip(kept.model.parameters(), dense.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    table = kept.model.encoder.embed.token.weight
    # the kept tables' AdamW runs over their looked-up rows (`training.table_adam`); their moments in dense form:
    # (tables with dense gradients, position and segment, go back to the optimizer at once: every row looked up)
    held = [id(t.param) for t in kept.table_adam.tables]
    assert held == [id(table)] or (min_rows == 1 and id(kept.model.encoder.embed.position.weight) not in held)
    with kept.table_adam.dense_state():
        torch.testing.assert_close(kept.optimizer.state[table]["exp_avg_sq"],
                                   dense.optimizer.state[dense.model.encoder.embed.token.weight]["exp_avg_sq"])
    assert table.grad is None and not any(b.any() for b in kept.lookup_grads._buffers)
    assert losses(tmp_path / "kept") == pytest.approx(losses(tmp_path / "dense"), abs=1e-6)


@pytest.mark.parametrize("max_norm", [1e-3, 1e3])
@pytest.mark.parametrize("with_rows", [False, True])
def test_clip_grad_norm_equals_torch(max_norm, with_rows):
    """Clipped (norm above max_norm) and unclipped (the scale of 1 skipped), the gradients and the returned norm are
    torch's; also when a table's gradient is given as zero outside some rows (read and scaled there only)."""
    from plmkit.training.optim import clip_grad_norm

    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(*shape)) for shape in ((5, 3), (7,), (2,))]
    for p in params[:2]:
        p.grad = torch.randn_like(p)
    rows = torch.tensor([1, 3])
    params[0].grad[[0, 2, 4]] = 0.0
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for p, c in zip(params, copies, strict=True):
        c.grad = None if p.grad is None else p.grad.clone()
    norm = clip_grad_norm(params, max_norm, rows={params[0]: rows} if with_rows else None)
    expected = float(torch.nn.utils.clip_grad_norm_(copies, max_norm))
    assert norm == pytest.approx(expected)
    for p, c in zip(params[:2], copies[:2], strict=True):
        torch.testing.assert_close(p.grad, c.grad)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim")
def test_release_free_memory_returns_freed_heap_pages():
    """Freed heap chunks below a live one stay resident (glibc trims only the heap's top); release_free_memory gives
    them back."""
    import ctypes

    from plmkit.training.memory import release_free_memory

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def rss_mb() -> float:
        status = Path("/proc/self/status").read_text()
        return int(next(x for x in status.splitlines() if x.startswith("VmRSS:")).split()[1]) / 1024

    chunks = [libc.malloc(100_000) for _ in range(1000)]  # 100 MB in heap-sized chunks
    for c in chunks:
        ctypes.memset(c, 1, 100_000)
    for c in chunks[:-1]:
        libc.free(c)
    before = rss_mb()
    assert release_free_memory()
    assert rss_mb() < before - 50
    libc.free(chunks[-1])


_ONEDNN_PROBE = """
import ctypes, sys, torch, torch.nn.functional as F
if sys.argv[1] == "capped":
    from plmkit.training.memory import bound_onednn_primitive_cache
    assert bound_onednn_primitive_cache()
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
x = torch.randn(400, 64, requires_grad=True)
F.gelu(x[:10]).sum().backward()
before = libc.mallinfo2().uordblks
for n in range(50, 350):  # 300 token counts, as 300 steps of unpadded batches
    F.gelu(x[:n]).sum().backward()
print(libc.mallinfo2().uordblks - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallinfo2")
def test_capped_onednn_cache_keeps_the_heap_flat_over_new_shapes():
    """GELU on 300 new shapes: with oneDNN's default cache every shape's primitive stays on the heap (megabytes, in
    small blocks amid the activations); capped, the heap in use stays where it was. Each run is a fresh process,
    since oneDNN reads the capacity once."""
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY",
                                                           "DNNL_PRIMITIVE_CACHE_CAPACITY")}
    grown = {mode: int(subprocess.run([sys.executable, "-c", _ONEDNN_PROBE, mode], env=env, capture_output=True,
                                      text=True, check=True).stdout.split()[-1]) for mode in ("default", "capped")}
    assert grown["default"] > 5_000_000, grown  # the probe sees the growth it guards against
    assert grown["capped"] < 2_000_000, grown


def test_cpu_trainer_caps_onednn_cache_unless_the_user_set_it(tmp_path, monkeypatch):
    from plmkit.training.memory import ONEDNN_CACHE_ENV

    monkeypatch.delenv(ONEDNN_CACHE_ENV, raising=False)
    monkeypatch.delenv("DNNL_PRIMITIVE_CACHE_CAPACITY", raising=False)
    make_trainer(str(tmp_path / "a"), max_steps=1, cpu_matmul="aten")
    assert os.environ[ONEDNN_CACHE_ENV] == "16"
    if onednn_available():  # rows rounded to a multiple: few shapes, and all of an epoch's fit
        monkeypatch.delenv(ONEDNN_CACHE_ENV)
        assert make_trainer(str(tmp_path / "c"), max_steps=1, cpu_matmul="onednn").onednn
        assert os.environ[ONEDNN_CACHE_ENV] == str(ONEDNN_MATMUL_CACHE)
    monkeypatch.setenv(ONEDNN_CACHE_ENV, "300")
    make_trainer(str(tmp_path / "b"), max_steps=1)
    assert os.environ[ONEDNN_CACHE_ENV] == "300"


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_ema_of_weights_is_evaluated_kept_and_resumed(tmp_path, caplog):
    """train.ema_decay: training itself is unchanged (same losses), the model left after training is the moving
    average of the weights after each step, the evaluator sees that average, and a run resumed from a checkpoint
    ends with the same weights and average as the uninterrupted one."""
    settings = dict(dropout=0.1, max_steps=3, schedule="constant", warmup_steps=0)
    after = []  # the plain run's weights after 1, 2 and 3 steps (a constant rate: a k-step run is a prefix)
    for k in (1, 2, 3):
        plain = make_trainer(str(tmp_path / f"plain{k}"), **{**settings, "max_steps": k})
        plain.fit()
        after.append(_weights(plain.model))
    expected = {k: after[0][k] for k in after[0]}
    for w in after[1:]:
        expected = {k: 0.75 * expected[k] + 0.25 * w[k] for k in expected}

    seen = []
    ema = make_trainer(str(tmp_path / "ema"), **settings, ema_decay=0.75, eval_every=3,
                       evaluator=lambda m: (seen.append(_weights(m)), {"n": 1.0})[1])
    ema.fit()
    assert losses(tmp_path / "ema") == losses(tmp_path / "plain3")  # the average does not change training
    final = _weights(ema.model)
    for k in expected:
        torch.testing.assert_close(final[k], expected[k], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(seen[-1][k], expected[k], rtol=1e-6, atol=1e-7)
    assert not torch.equal(final["encoder.embed.token.weight"], after[2]["encoder.embed.token.weight"])

    # Resume from step 3 of a 6-step run: the same weights and average at the end as without the interruption.
    settings = dict(dropout=0.1, max_steps=6, save_every_steps=3, ema_decay=0.75)
    full = make_trainer(str(tmp_path / "full"), **settings)
    full.fit()
    step3 = list_checkpoints(tmp_path / "full")[0]
    assert step3.step == 3 and (step3.path / "ema.safetensors").is_file()
    shutil.copytree(step3.path, tmp_path / "resumed" / "checkpoints" / step3.path.name)
    resumed = make_trainer(str(tmp_path / "resumed"), **settings)
    resumed.fit(resume=True)
    assert losses(tmp_path / "resumed") == {k: v for k, v in losses(tmp_path / "full").items() if k > 3}
    for k, v in _weights(full.model).items():
        assert torch.equal(_weights(resumed.model)[k], v), k

    # A checkpoint without the average cannot resume a run that keeps one, and says why.
    make_trainer(str(tmp_path / "noema"), max_steps=2, save_every_steps=2).fit()
    with pytest.raises(PlmkitError, match="no intact checkpoint"), caplog.at_level("WARNING"):
        make_trainer(str(tmp_path / "noema"), max_steps=4, ema_decay=0.9).fit(resume=True)
    assert "step-00000002" in caplog.text and "has no ema.safetensors; the run was saved without train.ema_decay" \
        in caplog.text
    with pytest.raises(PlmkitError, match="ema_decay must be in"):
        TrainConfig(ema_decay=1.0)


def test_table_adam_checkpoint_resumes_bitwise(tmp_path, monkeypatch):
    """With the token table's AdamW over its looked-up rows (`training.table_adam`), the checkpoint holds torch's
    dense optimizer state, and a run resumed from it ends with exactly the uninterrupted run's weights."""
    import plmkit.training.lookup_grads as lookup_grads
    from plmkit.training import SupervisedObjective, Trainer
    from plmkit.training.checkpoint import load_optimizer_state

    monkeypatch.setattr(lookup_grads, "MIN_ROWS", 90)
    data = _sentences(24)

    def trainer(name: str) -> Trainer:
        torch.manual_seed(0)
        model = _classifier(dropout=0.1)
        config = TrainConfig(output_dir=str(tmp_path / name), max_steps=6, batch_size=4, lr=1e-2, clip_grad_norm=0.5,
                             log_every=1, save_every_steps=3, weight_decay=0.1)
        return Trainer(model, config, train_data=data, collate=_pad_collate, objective=SupervisedObjective())

    full = trainer("full")
    assert len(full.table_adam.tables) == 1
    full.fit()
    step3 = list_checkpoints(tmp_path / "full")[0]
    state = load_optimizer_state(step3.path)["state"]
    table = full.model.encoder.embed.token.weight
    ordered = [p for group in full.optimizer.param_groups for p in group["params"]]  # the state_dict's keys
    index = [i for i, p in enumerate(ordered) if p is table][0]
    assert state[index]["exp_avg_sq"].shape == table.shape and int(state[index]["step"]) == 3
    shutil.copytree(step3.path, tmp_path / "resumed" / "checkpoints" / step3.path.name)
    resumed = trainer("resumed")
    resumed.fit(resume=True)
    assert losses(tmp_path / "resumed") == {k: v for k, v in losses(tmp_path / "full").items() if k > 3}
    for k, v in _weights(full.model).items():
        assert torch.equal(_weights(resumed.model)[k], v), k
