"""plmkit's Trainer takes the optimisation steps the `transformers` Trainer takes, given the same batches: a tiny
BERT for question answering (dropout off), fused AdamW with weight decay on matrices, linear decay, gradient
clipping. Where a fine-tuning result differs between the two (the SQuAD benchmark), this rules out the step itself.

In float64 every weight agrees to 1e-10 after 5 steps; with TrainConfig's own adam_eps (1e-6, not transformers'
1e-8) they would differ by most of a step. Not covered: warm-up, where plmkit's first step takes lr / warmup_steps
and transformers' takes 0, so transformers runs one step behind until the warm-up ends.
"""

from __future__ import annotations

import pytest
import torch

from plmkit.models import BertForQuestionAnswering
from plmkit.training import SupervisedObjective, TrainConfig, Trainer
from plmkit.training.tracking import read_metrics

transformers = pytest.importorskip("transformers")

HF_CONFIG = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=64)
STEPS, BATCH, LENGTH = 5, 4, 12


def qa_features(n: int) -> list[dict[str, torch.Tensor]]:
    """Unpadded windows of one length (plmkit returns zeros at padded positions where transformers computes
    values, so padded batches would differ in the logits the loss sees there), the answer span inside."""
    g = torch.Generator().manual_seed(0)
    features = []
    for _ in range(n):
        start = int(torch.randint(1, LENGTH - 3, (1,), generator=g))
        features.append({"input_ids": torch.randint(1, 99, (LENGTH,), generator=g),
                         "token_type_ids": (torch.arange(LENGTH) >= 4).long(),
                         "attention_mask": torch.ones(LENGTH, dtype=torch.long),
                         "start_positions": torch.tensor(start),
                         "end_positions": torch.tensor(start + int(torch.randint(0, 3, (1,), generator=g)))})
    return features


def stack(features: list[dict[str, torch.Tensor]], seeds: list[int] | None = None) -> dict[str, torch.Tensor]:
    return {key: torch.stack([f[key] for f in features]) for key in features[0]}


def test_training_steps_match_the_transformers_trainer(tmp_path):
    torch.manual_seed(0)
    hf = transformers.BertForQuestionAnswering(transformers.BertConfig(**HF_CONFIG))
    hf.save_pretrained(tmp_path / "start")
    ours = BertForQuestionAnswering.from_pretrained(tmp_path / "start")
    # float64: Adam's first steps move each weight by about the learning rate in the sign of its gradient, so in
    # float32 a weight whose gradient is near zero can go either way on rounding alone
    ours, hf = ours.double(), hf.double()
    start = {name: value.clone() for name, value in hf.state_dict().items()}
    data = qa_features(STEPS * BATCH)
    settings = dict(lr=1e-3, weight_decay=0.1, clip_grad_norm=0.5, adam_eps=1e-8)
    trainer = Trainer(ours, TrainConfig(output_dir=str(tmp_path / "plmkit"), max_steps=STEPS, batch_size=BATCH,
                                        log_every=1, **settings),
                      train_data=data, collate=stack, objective=SupervisedObjective("start_positions"))
    order = [data[int(i)] for i in trainer.stream.order(0)]  # the same batches, in plmkit's order, for both
    trainer.fit()

    class InOrder(transformers.Trainer):
        def _get_train_sampler(self, *args, **kwargs):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), max_steps=STEPS, per_device_train_batch_size=BATCH,
        learning_rate=settings["lr"], weight_decay=settings["weight_decay"], max_grad_norm=settings["clip_grad_norm"],
        adam_epsilon=settings["adam_eps"],
        lr_scheduler_type="linear", warmup_steps=0, optim="adamw_torch_fused", use_cpu=True, save_strategy="no",
        report_to=[], disable_tqdm=True, logging_steps=1, dataloader_num_workers=0, seed=0)
    hf_trainer = InOrder(model=hf, args=args, train_dataset=order, data_collator=stack)
    hf_trainer.train()

    records = hf_trainer.state.log_history[:-1]  # one record a step, then the summary
    mine = read_metrics(tmp_path / "plmkit" / "metrics.jsonl", "train")
    assert [r["step"] for r in mine] == [r["step"] for r in records] == list(range(1, STEPS + 1))
    for a, b in zip(mine, records, strict=True):
        assert a["lr"] == pytest.approx(b["learning_rate"], rel=1e-12)
        # transformers logs the loss as a float32
        assert (a["loss"], a["grad_norm"]) == pytest.approx((b["loss"], b["grad_norm"]), rel=1e-7)
    # clipping fired (plmkit folds its coefficient into the fused AdamW step; transformers scales the gradients)
    assert sum(r["grad_norm"] > settings["clip_grad_norm"] for r in mine) >= 2
    ours.save_pretrained(tmp_path / "plmkit-after")  # in transformers' names, through plmkit's interop map
    after = transformers.BertForQuestionAnswering.from_pretrained(tmp_path / "plmkit-after",
                                                                  dtype=torch.float64).state_dict()
    theirs = hf.state_dict()
    for name, value in theirs.items():
        torch.testing.assert_close(after[name], value, atol=1e-10, rtol=1e-9, msg=lambda m, n=name: f"{n}: {m}")
    assert min(float((theirs[n] - start[n]).abs().max()) for n in theirs if n.endswith("weight")) > 1e-4  # they moved
