"""Metrics equal scikit-learn, scipy and seqeval on random inputs; SQuAD EM/F1 behave as the official script."""

from __future__ import annotations

import random

import numpy as np
import pytest

from plmkit.evaluation.metrics import accuracy, entity_scores, f1_binary, matthews_corrcoef, pearson, spearman
from plmkit.evaluation.squad import exact_match_score, f1_score, normalize_answer, squad_scores

sklearn_metrics = pytest.importorskip("sklearn.metrics")
scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_equal_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    labels, preds = rng.integers(0, 2, n), rng.integers(0, 2, n)
    assert accuracy(preds, labels) == pytest.approx(sklearn_metrics.accuracy_score(labels, preds))
    assert f1_binary(preds, labels) == pytest.approx(sklearn_metrics.f1_score(labels, preds))
    assert f1_binary(preds, labels, pos_label=0) == pytest.approx(sklearn_metrics.f1_score(labels, preds, pos_label=0))
    assert matthews_corrcoef(preds, labels) == pytest.approx(sklearn_metrics.matthews_corrcoef(labels, preds))
    multi_labels, multi_preds = rng.integers(0, 4, n), rng.integers(0, 4, n)
    assert matthews_corrcoef(multi_preds, multi_labels) == pytest.approx(
        sklearn_metrics.matthews_corrcoef(multi_labels, multi_preds))


def test_degenerate_cases_match_sklearn() -> None:
    labels, constant = [0, 1, 1, 0], [1, 1, 1, 1]
    assert matthews_corrcoef(constant, labels) == sklearn_metrics.matthews_corrcoef(labels, constant) == 0.0
    assert f1_binary([0, 0], [0, 0]) == sklearn_metrics.f1_score([0, 0], [0, 0], zero_division=0) == 0.0
    assert matthews_corrcoef([2, 2], [2, 2]) == 0.0
    with pytest.raises(ValueError, match="3 predictions but 2 labels"):
        accuracy([1, 0, 1], [1, 0])


@pytest.mark.parametrize("seed", range(3))
def test_correlations_equal_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    gold = rng.uniform(0, 5, 200).round(1)  # ties, as STS-B scores have
    preds = gold + rng.normal(0, 1.5, 200)
    assert pearson(preds, gold) == pytest.approx(scipy_stats.pearsonr(preds, gold)[0])
    assert spearman(preds, gold) == pytest.approx(scipy_stats.spearmanr(preds, gold)[0])
    assert spearman(preds.tolist(), gold.tolist()) == pytest.approx(spearman(preds, gold))


def _random_tags(rng: random.Random, length: int) -> list[str]:
    tags = []
    for _ in range(length):
        tag = rng.choice(["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
        tags.append(tag)
    return tags


@pytest.mark.parametrize("seed", range(3))
def test_entity_scores_equal_seqeval_strict(seed: int) -> None:
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    rng = random.Random(seed)
    lengths = [rng.randint(1, 12) for _ in range(50)]
    gold = [_random_tags(rng, n) for n in lengths]
    pred = [_random_tags(rng, n) for n in lengths]
    scores = entity_scores(gold, pred)
    strict = {"mode": "strict", "scheme": IOB2}
    assert scores["f1"] == pytest.approx(f1_score(gold, pred, **strict))
    assert scores["precision"] == pytest.approx(precision_score(gold, pred, **strict))
    assert scores["recall"] == pytest.approx(recall_score(gold, pred, **strict))
    assert scores["accuracy"] == pytest.approx(accuracy_score(gold, pred))


def test_entity_scores_are_strict() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    # The PER entity is right; "I-LOC" alone is not a valid IOB2 entity in strict mode, so LOC is missed.
    scores = entity_scores(gold, [["B-PER", "I-PER", "O", "I-LOC"]])
    assert (scores["precision"], scores["recall"]) == (1.0, 0.5)
    # A wrong boundary is a miss and a false positive.
    assert entity_scores(gold, [["B-PER", "O", "O", "B-LOC"]])["f1"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="sentence 0: 4 gold tags but 3 predicted"):
        entity_scores(gold, [["O", "O", "O"]])


def test_squad_normalisation_and_scores() -> None:
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("an apple, a pear and the fig") == "apple pear and fig"
    assert exact_match_score("The Eiffel Tower", "Eiffel tower") == 1.0
    assert exact_match_score("Eiffel Tower in Paris", "Eiffel tower") == 0.0
    assert f1_score("the cat sat", "cat sat on the mat") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert f1_score("a", "the") == 0.0  # both normalise to nothing: no common token
    assert f1_score("Denver Broncos", "Broncos") == pytest.approx(2 / 3)
    scores = squad_scores({"q1": "Denver Broncos", "q2": "1973"},
                          {"q1": ["Broncos", "Denver Broncos", "the Broncos"], "q2": ["October 1973"], "q3": ["x"]})
    assert scores["exact_match"] == pytest.approx(100 / 3)  # q1 exact (max over answers), q2 partial, q3 missing
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0) / 3)
