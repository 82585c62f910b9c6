"""A tiny, seeded masked-LM + NSP training run for the trainer's tests (run in-process or as a script, also under
torchrun): random token sequences, BERT with hidden 32 and 2 layers, per-example seeded masking.

    python tests/train_tiny.py OUTPUT_DIR '{"max_steps": 8, ...}' [--resume]

Besides TrainConfig's keys the JSON takes `dropout`, `step_sleep` (seconds per collated micro-batch), `fsdp`
(impl.fsdp), and `evaluate` (held-out masked-LM evaluation every `eval_every` steps, the best model to
OUTPUT_DIR/best, the final one to OUTPUT_DIR/model, as pretraining does).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from plmkit.config import ModelConfig
from plmkit.models.bert import BertForPreTraining
from plmkit.objectives import mask_tokens
from plmkit.training import ImplConfig, PretrainingObjective, TrainConfig, Trainer
from plmkit.training.pretrain import mlm_evaluator

VOCAB, PAD, CLS, SEP, MASK = 99, 0, 1, 2, 3


class RandomPairs:
    """n examples of [CLS] A [SEP] B [SEP] with lengths 6..20 and random NSP labels, fixed by `seed`."""

    def __init__(self, n: int = 96, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.rows = []
        for _ in range(n):
            a, b = (int(x) for x in torch.randint(2, 9, (2,), generator=g))
            ids = [CLS, *torch.randint(5, VOCAB, (a,), generator=g).tolist(), SEP,
                   *torch.randint(5, VOCAB, (b,), generator=g).tolist(), SEP]
            self.rows.append({"input_ids": ids, "token_type_ids": [0] * (a + 2) + [1] * (b + 1),
                              "next_sentence_label": int(torch.randint(0, 2, (1,), generator=g))})

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def collate(examples: list[dict], seeds: list[int]) -> dict[str, torch.Tensor]:
    T = max(len(e["input_ids"]) for e in examples)
    out = {k: torch.full((len(examples), T), PAD) for k in ("input_ids", "token_type_ids", "labels")}
    out["attention_mask"] = torch.zeros(len(examples), T, dtype=torch.long)
    for i, (e, seed) in enumerate(zip(examples, seeds, strict=True)):
        ids = torch.tensor([e["input_ids"]])
        special = ids < 5
        masked, labels = mask_tokens(ids, special, vocab_size=VOCAB, mask_token_id=MASK, mlm_probability=0.3,
                                     special_ids=[PAD, CLS, SEP, MASK], generator=torch.Generator().manual_seed(seed))
        n = ids.shape[1]
        out["input_ids"][i, :n], out["labels"][i, :n] = masked[0], labels[0]
        out["labels"][i, n:] = -100
        out["token_type_ids"][i, :n] = torch.tensor(e["token_type_ids"])
        out["attention_mask"][i, :n] = 1
    out["next_sentence_label"] = torch.tensor([e["next_sentence_label"] for e in examples])
    return out


def tiny_model(dropout: float = 0.1, seed: int = 0) -> BertForPreTraining:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                         max_position_embeddings=64, hidden_dropout=dropout, attention_dropout=dropout)
    model = BertForPreTraining(config)
    model.init_weights()
    return model


def held_out_evaluator(trainer_of: Callable[[], Trainer]) -> Callable:
    """pretraining's masked-LM evaluator on 20 other pairs in batches of 8: 3 batches, so 2 ranks get unequal
    numbers of them."""
    held_out = RandomPairs(20, seed=1)
    return lambda model: mlm_evaluator(held_out, collate, 8, None, trainer_of().dist)(model)


def make_trainer(output_dir: str, dropout: float = 0.1, step_sleep: float = 0.0, evaluator=None,
                 compile: bool = False, fsdp: bool = False, evaluate: bool = False, cpu_matmul: str = "auto",
                 **train: object) -> Trainer:
    train = {"batch_size": 8, "max_steps": 8, "lr": 1e-3, "warmup_steps": 2, "log_every": 1, **train}
    config = TrainConfig(output_dir=output_dir, **train)

    def slow_collate(examples, seeds):
        time.sleep(step_sleep)
        return collate(examples, seeds)

    trainer = None
    if evaluate:
        evaluator = held_out_evaluator(lambda: trainer)
    trainer = Trainer(tiny_model(dropout), config, train_data=RandomPairs(), collate=slow_collate,
                      objective=PretrainingObjective(), evaluator=evaluator,
                      save_model=(lambda m, d: m.save_pretrained(d)) if evaluate else None,
                      impl=ImplConfig(progress=False, tensorboard=False, num_threads=1, compile=compile, fsdp=fsdp,
                                      cpu_matmul=cpu_matmul))
    return trainer


if __name__ == "__main__":
    out_dir, overrides = sys.argv[1], json.loads(sys.argv[2])
    trainer = make_trainer(out_dir, **overrides)
    print(f"rank {trainer.dist.rank} trains {type(trainer.forward_model).__name__}", flush=True)
    trainer.fit(resume="--resume" in sys.argv)
    if overrides.get("evaluate") and trainer.dist.is_main:
        trainer.model.save_pretrained(Path(out_dir) / "model")  # as pretrain() saves its final model
