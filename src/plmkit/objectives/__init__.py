"""Pretraining objectives as pure functions: they corrupt a batch and build its labels; models compute losses."""

from plmkit.objectives.masking import IGNORE_INDEX, mask_tokens, whole_word_mask, word_ids_from_continuation

__all__ = ["IGNORE_INDEX", "mask_tokens", "whole_word_mask", "word_ids_from_continuation"]
