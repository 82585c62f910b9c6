"""Fine-tuning objectives beyond a head's own loss: R-Drop's two dropout passes and the gap between them."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import plmkit
from plmkit.errors import PlmkitError
from plmkit.training import TrainConfig
from plmkit.training.objectives import RDropObjective, SupervisedObjective, prediction_gap

TINY = dict(vocab_size=99, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37)


def test_prediction_gap_is_the_symmetric_kl_or_the_squared_difference():
    torch.manual_seed(0)
    p, q = torch.randn(7, 5), torch.randn(7, 5)
    log_p, log_q = F.log_softmax(p, -1), F.log_softmax(q, -1)
    kl = lambda a, b: F.kl_div(b, a, log_target=True, reduction="batchmean")  # noqa: E731  KL(a | b)
    assert torch.allclose(prediction_gap(p, q, torch.zeros(7, dtype=torch.long)), 0.5 * (kl(log_p, log_q)
                                                                                          + kl(log_q, log_p)))
    # Multi-label: each of the 5 labels a Bernoulli, i.e. a 2-way softmax over logits (0, x); summed over labels.
    two_way = lambda x: F.log_softmax(torch.stack([torch.zeros_like(x), x], -1), -1)  # noqa: E731
    per_label = 0.5 * (F.kl_div(two_way(q), two_way(p), log_target=True, reduction="none")
                       + F.kl_div(two_way(p), two_way(q), log_target=True, reduction="none")).sum(-1)
    assert torch.allclose(prediction_gap(p, q, torch.rand(7, 5)), per_label.sum(-1).mean())
    assert torch.allclose(prediction_gap(p[:, :1], q[:, :1], torch.rand(7)), F.mse_loss(p[:, :1], q[:, :1]))
    assert prediction_gap(p, p.clone(), torch.zeros(7, dtype=torch.long)) == 0


def _batch(rows: int = 6, length: int = 9) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[0, 5:] = 0
    return {"input_ids": torch.randint(5, 99, (rows, length), generator=g) * mask, "attention_mask": mask,
            "labels": torch.randint(0, 2, (rows,), generator=g)}


def test_rdrop_runs_each_example_twice_with_different_dropout():
    torch.manual_seed(0)
    model = plmkit.BertForSequenceClassification(plmkit.ModelConfig(**TINY)).train()
    batch = _batch()
    objective = RDropObjective(alpha=2.0)
    assert objective.counts(batch) == {"task": 6, "rdrop": 6}
    # Without dropout the two passes agree: no gap, and the loss is the plain one.
    model.eval()
    losses = objective(model, batch)
    assert losses["rdrop"] == 0
    assert torch.allclose(losses["task"], SupervisedObjective()(model, batch)["loss"], atol=1e-6)
    # With dropout they differ; the gap is alpha times that of the two halves of one doubled pass.
    model.train()
    torch.manual_seed(3)
    losses = objective(model, batch)
    torch.manual_seed(3)
    logits = model(**{k: torch.cat([v, v]) for k, v in batch.items()}).logits
    assert losses["rdrop"] > 0
    assert torch.allclose(losses["rdrop"], 2.0 * prediction_gap(*logits.chunk(2), batch["labels"]))
    losses["task"].add(losses["rdrop"]).backward()  # the gap trains the model too
    assert model.classifier.proj.weight.grad.abs().sum() > 0


def test_rdrop_compares_labelled_tokens_only():
    labels = torch.tensor([[-100, 1, 0, -100], [-100, 2, -100, -100]])
    logits = torch.randn(2, 4, 3)
    noise = torch.randn(2, 4, 3) * labels.eq(-100).unsqueeze(-1)  # differs only where there is no label

    def model(input_ids, labels):
        return SimpleNamespace(logits=torch.cat([logits, logits + noise]), loss=torch.tensor(0.5))

    objective = RDropObjective(alpha=1.0)
    batch = {"input_ids": torch.ones(2, 4, dtype=torch.long), "labels": labels}
    assert objective.counts(batch) == {"task": 3, "rdrop": 3}
    assert objective(model, batch)["rdrop"] == 0
    noise[0, 1] += 1.0  # now a labelled token differs
    assert objective(model, batch)["rdrop"] > 0


def test_finetune_with_rdrop_logs_the_term_and_refuses_other_heads(tmp_path):
    from plmkit.training.finetune import finetune

    torch.manual_seed(0)
    model_dir = tmp_path / "tiny"
    plmkit.BertForSequenceClassification(plmkit.ModelConfig(**TINY)).save_pretrained(model_dir)
    (model_dir / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                                                   + [f"w{i}" for i in range(94)]) + "\n", encoding="utf-8")
    rng = random.Random(0)
    rows = ["sentence\tlabel"] + [f"{' '.join(rng.choices(['w1', 'w2', 'w3'], k=5))}\t{i % 2}" for i in range(24)]
    for split in ("train", "dev"):
        (tmp_path / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    recipe = {"task": {"name": "tsv", "text_column": "sentence"}, "model": str(model_dir),
              "data": {"data_dir": str(tmp_path), "epochs": 1},
              "train": {"output_dir": str(tmp_path / "out"), "batch_size": 8, "rdrop_alpha": 1.0, "log_every": 1},
              "impl": {"progress": False, "tensorboard": False}}
    finetune(recipe)
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("split") == "train"]
    assert len(train) == 3 and all(r["rdrop_loss"] > 0 for r in train)
    assert all(r["loss"] == pytest.approx(r["task_loss"] + r["rdrop_loss"]) for r in train)
    with pytest.raises(PlmkitError, match="train.rdrop_alpha is for sequence-classification and "
                                          "token-classification tasks, not question-answering"):
        finetune({**recipe, "task": {"name": "squad"}})
    with pytest.raises(PlmkitError, match="train.rdrop_alpha must be >= 0"):
        TrainConfig(rdrop_alpha=-1.0)
