"""Where a frozen encoder keeps what a task needs: a linear probe on every layer.

For a single-sentence GLUE task (CoLA by default), each layer's [CLS] vector and its mean over the real tokens are
computed once with the encoder frozen; a logistic regression (scikit-learn, standardised features, balanced
classes) is trained on the training set's vectors and scored on dev with the task's main metric. Layer 0 is the
embeddings. A diagnostic, not a bar: it tells whether a checkpoint's top layers still hold the signal that
fine-tuning a head on them must find (see RESULTS.md, CoLA).

    .venv/bin/python benchmarks/layer_probe.py [--task cola] [--model DIR]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from plmkit.similarity import mean_pooling


def layer_vectors(model, tokenizer, texts: list[str], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """([CLS] of every layer, mean of every layer), each (len(texts), layers + 1, hidden)."""
    cls, mean = [], []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=128,
                            return_tensors="pt")
            states = model(enc["input_ids"], attention_mask=enc["attention_mask"],
                           output_hidden_states=True).hidden_states
            cls.append(torch.stack([h[:, 0] for h in states], 1))
            mean.append(torch.stack([mean_pooling(h, enc["attention_mask"]) for h in states], 1))
    return torch.cat(cls).numpy(), torch.cat(mean).numpy()


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from plmkit.data.tokenizer import load_tokenizer
    from plmkit.evaluation.metrics import CLASSIFICATION_METRICS
    from plmkit.interop.hub import offline_model_dir
    from plmkit.models.bert import BertModel
    from plmkit.tasks import get_task

    default_data = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="cola")
    parser.add_argument("--model", default=str(offline_model_dir()))
    parser.add_argument("--data-dir", default=os.environ.get("PLMKIT_DATA", str(default_data)))
    args = parser.parse_args()

    task = get_task(args.task)
    model, tokenizer = BertModel.from_pretrained(args.model).eval(), load_tokenizer(args.model)
    splits = {s: task.read(args.data_dir, s) for s in ("train", "dev")}
    labels = sorted({e.label for e in splits["train"]})
    y = {s: np.array([labels.index(e.label) for e in ex]) for s, ex in splits.items()}
    vectors = {s: layer_vectors(model, tokenizer, [e.text for e in ex]) for s, ex in splits.items()}
    metric = CLASSIFICATION_METRICS[task.main_metric]
    print(f"{args.task} dev {task.main_metric} of a linear probe per layer ({args.model})")
    print("layer  [CLS]   mean")
    for layer in range(vectors["train"][0].shape[1]):
        scores = []
        for kind in (0, 1):
            train, dev = vectors["train"][kind][:, layer], vectors["dev"][kind][:, layer]
            scaler = StandardScaler().fit(train)
            probe = LogisticRegression(max_iter=2000, class_weight="balanced").fit(scaler.transform(train), y["train"])
            scores.append(metric(probe.predict(scaler.transform(dev)), y["dev"]))
        print(f"{layer:5d}  {scores[0]:.3f}  {scores[1]:.3f}")


if __name__ == "__main__":
    main()
