"""Beam search with `transformers`' semantics (its vectorised `_beam_search`), so both find the same sequences.

Each step scores every continuation of the K running beams by its summed log-probability and keeps the best
`max(2, 1 + #eos) * K` candidates. Candidates among the top K that end (eos, a stop string, the length limit) become
finished hypotheses, scored sum_logprobs / generated_length ** length_penalty; the best K that do not end keep
running. The search stops when no running beam can beat the worst of K finished ones (`early_stopping=False`,
`transformers`' heuristic), as soon as K are finished (`True`), or only when that is impossible (`"never"`).
"""

from __future__ import annotations

from typing import Any

import torch

from plmkit.generation.generate import StopStrings, positions_from_mask
from plmkit.generation.logits import constrain
from plmkit.generation.logits import repetition_penalty as apply_repetition_penalty

NEG = -1.0e9  # "impossible", as transformers writes it (finite, so sums stay ordered)


def _take(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """t (B, N, ...) gathered along dim 1 at index (B, M) -> (B, M, ...)."""
    while index.dim() < t.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(t, index, dim=1)


@torch.inference_mode()
def beam_search(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *, num_beams: int,
                max_new_tokens: int, length_penalty: float = 1.0, early_stopping: bool | str = False,
                repetition_penalty: float = 1.0, eos_ids: list[int] | tuple[int, ...] = (), pad: int | None = None,
                stop: StopStrings | None = None, use_cache: bool = True,
                constraints: dict | None = None) -> torch.Tensor:
    """input_ids (B, T), attention_mask (B, T) or None -> (B, T + n): the best hypothesis of each row, padded.

    `num_beams=1` is a valid (if slow) greedy search; with `early_stopping=True` it returns greedy's tokens.
    """
    B, T = input_ids.shape
    K, device = num_beams, input_ids.device
    if max_new_tokens == 0:
        return input_ids
    max_length = T + max_new_tokens
    keep = max(2, 1 + len(eos_ids)) * K
    top_k_mask = torch.arange(keep, device=device) < K
    eos = torch.tensor(list(eos_ids), dtype=torch.long, device=device)
    fill = pad if pad is not None else (eos_ids[0] if eos_ids else 0)

    running = input_ids.new_full((B, K, max_length), fill)
    running[:, :, :T] = input_ids[:, None]
    sequences = running.clone()  # finished hypotheses, best first
    generated = torch.zeros(B, K, dtype=torch.long, device=device)  # their generated lengths
    running_scores = torch.zeros(B, K, device=device)
    running_scores[:, 1:] = NEG  # all beams start equal: only the first one's continuations count at first
    scores = torch.full((B, K), NEG, device=device)
    finished = torch.zeros(B, K, dtype=torch.bool, device=device)
    improvable = torch.ones(B, 1, dtype=torch.bool, device=device)

    mask = None
    if attention_mask is not None:
        mask = attention_mask.new_ones(B, max_length)
        mask[:, :T] = attention_mask
        mask = mask.repeat_interleave(K, dim=0)  # (B*K, L)
    positions = positions_from_mask(mask) if mask is not None else None
    cache = model.new_cache(max_length) if use_cache else None
    batch_offset = torch.arange(B, device=device)[:, None] * K

    cur = T
    while True:
        flat = running[:, :, :cur].reshape(B * K, cur)
        start = cache.length if cache is not None else 0
        logits = model(flat[:, start:], attention_mask=mask[:, :cur] if mask is not None else None,
                       position_ids=positions[:, start:cur] if positions is not None else None, cache=cache,
                       logits_to_keep=1).logits[:, -1].float()
        log_probs = torch.log_softmax(logits, dim=-1)
        log_probs = apply_repetition_penalty(log_probs, flat, repetition_penalty,
                                             mask[:, :cur] if mask is not None else None)
        if constraints:
            log_probs = constrain(log_probs, flat, length=cur, max_length=max_length, **constraints)
        V = log_probs.shape[-1]
        log_probs = (log_probs.view(B, K, V) + running_scores[:, :, None]).view(B, K * V)

        # The best `keep` continuations over all beams.
        cand_scores, cand_index = torch.topk(log_probs, keep, dim=-1)  # (B, keep)
        cand_beam, cand_token = cand_index // V, cand_index % V
        cand_seqs = _take(running, cand_beam)  # (B, keep, L)
        cand_seqs[:, :, cur] = cand_token
        ends = torch.isin(cand_token, eos) if eos.numel() else torch.zeros_like(cand_token, dtype=torch.bool)
        if cur + 1 >= max_length:
            ends = torch.ones_like(ends)
        if stop is not None:
            ends |= stop(cand_seqs[:, :, :cur + 1].reshape(B * keep, -1)).view(B, keep).to(device)

        # The best K that go on.
        go_on = cand_scores + ends.float() * NEG
        chosen = torch.topk(go_on, K, dim=-1).indices  # (B, K)
        running, running_scores = _take(cand_seqs, chosen), _take(go_on, chosen)
        origin = (_take(cand_beam, chosen) + batch_offset).view(-1)  # (B*K,) rows of the previous step

        # Candidates in the top K that ended join the finished ones if they score better.
        just_ended = ends & top_k_mask[None]
        normed = cand_scores / ((cur + 1 - T) ** length_penalty)
        full = finished.all(dim=-1, keepdim=True) & (early_stopping is True)
        normed = normed + full.float() * NEG + (~improvable).float() * NEG + (~just_ended).float() * NEG
        merged_scores = torch.cat([scores, normed], dim=1)
        best = torch.topk(merged_scores, K, dim=-1).indices
        sequences = _take(torch.cat([sequences, cand_seqs], dim=1), best)
        generated = _take(torch.cat([generated, torch.full_like(cand_token, cur + 1 - T)], dim=1), best)
        finished = _take(torch.cat([finished, just_ended], dim=1), best)
        scores = _take(merged_scores, best)

        if cache is not None:
            cache.reorder(origin)
        cur += 1
        # Can a running beam still beat the worst finished hypothesis? (transformers' heuristic)
        length = max_length - T if early_stopping == "never" and length_penalty > 0 else cur - T
        best_possible = running_scores[:, :1] / (length ** length_penalty)
        worst = torch.where(finished, scores.min(dim=1, keepdim=True).values, NEG)
        improvable = improvable & (best_possible > worst).any(dim=-1, keepdim=True)
        if not (bool(improvable.any()) and not (bool(finished.all()) and early_stopping is True)
                and not bool(ends.all())):
            break
    out_length = T + int(generated[:, 0].max())
    return sequences[:, 0, :out_length]
