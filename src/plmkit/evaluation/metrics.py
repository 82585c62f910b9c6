"""Task metrics, equal to scikit-learn's, scipy's and seqeval's (tested on random inputs).

Classification and correlation metrics are fractions in [0, 1] (or [-1, 1]), as those libraries give them; SQuAD's
exact match and F1 (`plmkit.evaluation.squad`) are percentages, as the official script prints them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def accuracy(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Fraction of predictions equal to the label."""
    preds, labels = _pair(preds, labels)
    return float((preds == labels).mean())


def f1_binary(preds: Sequence[int], labels: Sequence[int], pos_label: int = 1) -> float:
    """F1 of the positive class (scikit-learn's `f1_score(average="binary")`; 0.0 when undefined)."""
    preds, labels = _pair(preds, labels)
    tp = int(((preds == pos_label) & (labels == pos_label)).sum())
    predicted, actual = int((preds == pos_label).sum()), int((labels == pos_label).sum())
    return 0.0 if predicted + actual == 0 else 2 * tp / (predicted + actual)


def matthews_corrcoef(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Matthews correlation for any number of classes (scikit-learn's formula; 0.0 when undefined)."""
    preds, labels = _pair(preds, labels)
    classes, inverse = np.unique(np.concatenate([labels, preds]), return_inverse=True)
    y_true, y_pred = inverse[:len(labels)], inverse[len(labels):]
    confusion = np.zeros((len(classes), len(classes)), dtype=np.float64)
    np.add.at(confusion, (y_true, y_pred), 1)
    t_sum, p_sum = confusion.sum(axis=1), confusion.sum(axis=0)
    correct, samples = np.trace(confusion), confusion.sum()
    cov_ytyp = correct * samples - np.dot(t_sum, p_sum)
    cov_ypyp = samples**2 - np.dot(p_sum, p_sum)
    cov_ytyt = samples**2 - np.dot(t_sum, t_sum)
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / np.sqrt(cov_ytyt * cov_ypyp))


def pearson(preds: Sequence[float], labels: Sequence[float]) -> float:
    """Pearson correlation (scipy.stats.pearsonr)."""
    from scipy.stats import pearsonr

    preds, labels = _pair(preds, labels, dtype=np.float64)
    return float(pearsonr(preds, labels)[0])


def spearman(preds: Sequence[float], labels: Sequence[float]) -> float:
    """Spearman rank correlation (scipy.stats.spearmanr)."""
    from scipy.stats import spearmanr

    preds, labels = _pair(preds, labels, dtype=np.float64)
    return float(spearmanr(preds, labels)[0])


def entity_scores(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level precision, recall and F1 (seqeval, IOB2 scheme, strict mode: an entity counts only when its
    type and both ends are right), plus token accuracy. Each argument is one tag list per sentence."""
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    true_tags, pred_tags = [list(t) for t in true_tags], [list(p) for p in pred_tags]
    for i, (t, p) in enumerate(zip(true_tags, pred_tags, strict=True)):
        if len(t) != len(p):
            raise ValueError(f"sentence {i}: {len(t)} gold tags but {len(p)} predicted")
    strict = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    return {"precision": float(precision_score(true_tags, pred_tags, **strict)),
            "recall": float(recall_score(true_tags, pred_tags, **strict)),
            "f1": float(f1_score(true_tags, pred_tags, **strict)),
            "accuracy": float(accuracy_score(true_tags, pred_tags))}


def _pair(preds: Sequence, labels: Sequence, dtype: type = np.int64) -> tuple[np.ndarray, np.ndarray]:
    preds, labels = np.asarray(preds, dtype=dtype).reshape(-1), np.asarray(labels, dtype=dtype).reshape(-1)
    if preds.shape != labels.shape:
        raise ValueError(f"{len(preds)} predictions but {len(labels)} labels")
    if not len(preds):
        raise ValueError("no predictions to score")
    return preds, labels


# Metrics of predicted vs gold values, by the name a task reports them under.
CLASSIFICATION_METRICS: dict[str, Callable[..., float]] = {
    "accuracy": accuracy, "f1": f1_binary, "mcc": matthews_corrcoef, "pearson": pearson, "spearman": spearman,
}
