"""Evaluation: metrics (`metrics`, `squad`) and the streaming task evaluator (`evaluate`)."""

from plmkit.evaluation.evaluate import evaluate, evaluate_similarity

__all__ = ["evaluate", "evaluate_similarity"]
