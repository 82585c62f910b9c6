"""Masked-LM corruption (80/10/10, whole-word) and masked-only decoding, which must give the full-vocab loss."""

from __future__ import annotations

import pytest
import torch

import plmkit
from plmkit.objectives import IGNORE_INDEX, mask_tokens, whole_word_mask, word_ids_from_continuation

V, MASK, CLS, SEP, PAD = 1000, 4, 2, 3, 0
SPECIAL_IDS = [PAD, 1, CLS, SEP, MASK]


def make_batch(batch: int = 64, seq: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] tokens [SEP] tokens [SEP] [PAD]... with random lengths; returns input_ids and the special mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (batch, seq), generator=g)
    lengths = torch.randint(seq // 2, seq + 1, (batch,), generator=g)
    for b, n in enumerate(lengths.tolist()):
        ids[b, 0], ids[b, n // 2], ids[b, n - 1] = CLS, SEP, SEP
        ids[b, n:] = PAD
    return ids, torch.isin(ids, torch.tensor(SPECIAL_IDS))


def corrupt(fn=mask_tokens, seed: int = 1, **kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    ids, special = make_batch()
    masked, labels = fn(ids, special, **kwargs, vocab_size=V, mask_token_id=MASK,
                        generator=torch.Generator().manual_seed(seed))
    return ids, special, masked, labels


def check_split(ids, special, masked, labels) -> None:
    selected = labels != IGNORE_INDEX
    assert not (selected & special).any(), "special tokens and padding are never selected"
    assert torch.equal(labels[selected], ids[selected]), "labels are the original ids"
    assert torch.equal(masked[~selected], ids[~selected]), "unselected positions are untouched"
    frac = selected.sum() / (~special).sum()
    assert abs(frac.item() - 0.15) < 0.015, frac
    n = selected.sum()
    to_mask = (masked[selected] == MASK).sum() / n
    unchanged = (masked[selected] == ids[selected]).sum() / n
    assert abs(to_mask.item() - 0.8) < 0.03 and abs(unchanged.item() - 0.1) < 0.025, (to_mask, unchanged)
    random = masked[selected & (masked != MASK) & (masked != ids)]
    assert abs(len(random) / n.item() - 0.1) < 0.025
    assert not torch.isin(random, torch.tensor(SPECIAL_IDS)).any(), "random replacements avoid special ids"


def test_mask_tokens_80_10_10():
    check_split(*corrupt())


def test_mask_tokens_explicit_special_ids():
    ids, special, masked, labels = corrupt(special_ids=[1])  # [UNK] = 1 never appears in the batch
    check_split(ids, special, masked, labels)


def test_mask_tokens_is_deterministic():
    _, _, m1, l1 = corrupt(seed=7)
    _, _, m2, l2 = corrupt(seed=7)
    _, _, m3, _ = corrupt(seed=8)
    assert torch.equal(m1, m2) and torch.equal(l1, l2)
    assert not torch.equal(m1, m3)


def random_words(special: torch.Tensor, seed: int = 2) -> torch.Tensor:
    """Word ids for words of ~1-4 sub-tokens, numbered from 0 in each segment (as a tokenizer's word_ids are for
    sentence pairs), -1 at special positions."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.rand(special.shape, generator=g) < 0.45
    words = torch.full(special.shape, -1)
    for b in range(special.shape[0]):
        word = -1
        for t in range(special.shape[1]):
            if special[b, t]:
                word = -1 if t > 0 else word  # [CLS] / [SEP]: the next segment numbers its words from 0
            else:
                word += int(starts[b, t] or word < 0)
                words[b, t] = word
    return words


def test_whole_word_mask_never_splits_a_word():
    ids, special = make_batch()
    words = random_words(special)
    masked, labels = whole_word_mask(ids, special, words, vocab_size=V, mask_token_id=MASK,
                                     generator=torch.Generator().manual_seed(3))
    check_split(ids, special, masked, labels)
    selected = labels != IGNORE_INDEX
    same_word = (words[:, 1:] == words[:, :-1]) & ~special[:, 1:] & ~special[:, :-1]
    assert same_word.float().mean() > 0.3, "the batch must have multi-token words"
    assert torch.equal(selected[:, 1:][same_word], selected[:, :-1][same_word]), "a word is masked whole or not"
    # word 0 of the first and of the second segment are different words, masked independently
    first = torch.stack([selected[b, words[b] == 0][0] for b in range(len(ids))])
    last = torch.stack([selected[b, words[b] == 0][-1] for b in range(len(ids))])
    assert (first != last).any()


def test_word_ids_from_continuation():
    special = torch.tensor([[True, False, False, False, True, False, True]])
    cont = torch.tensor([[False, False, True, False, False, True, False]])  # [CLS] a ##b c [SEP] ##d [PAD]
    assert word_ids_from_continuation(cont, special).tolist() == [[-1, 0, 0, 1, -1, 2, -1]]


# ---------------------------------------------------------------------------------------------- masked-only decoding
def tiny(cls):
    config = plmkit.ModelConfig.from_hf_dict(dict(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                                  num_attention_heads=4, intermediate_size=37,
                                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    torch.manual_seed(0)
    return cls(config).eval()


def tiny_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 99, (3, 11), generator=g)
    attention_mask = torch.ones_like(ids)
    attention_mask[1, 7:] = 0
    masked, labels = mask_tokens(ids, attention_mask == 0, vocab_size=99, mask_token_id=MASK, mlm_probability=0.3,
                                 generator=g)
    return masked, attention_mask, labels


@pytest.mark.parametrize("cls", [plmkit.BertForMaskedLM, plmkit.BertForPreTraining])
def test_masked_only_loss_equals_full_loss(cls):
    model = tiny(cls)
    ids, attention_mask, labels = tiny_batch()
    extra = {"next_sentence_label": torch.tensor([0, 1, 0])} if cls is plmkit.BertForPreTraining else {}
    full = model(ids, attention_mask, labels=labels, **extra)
    fast = model(ids, attention_mask, labels=labels, **extra, masked_only=True)
    logits = "prediction_logits" if cls is plmkit.BertForPreTraining else "logits"
    n = int((labels != IGNORE_INDEX).sum())
    assert getattr(full, logits).shape == (3, 11, 99) and getattr(fast, logits).shape == (n, 99)
    torch.testing.assert_close(getattr(fast, logits), getattr(full, logits)[labels != IGNORE_INDEX])
    torch.testing.assert_close(fast.loss, full.loss, atol=1e-6, rtol=0)
    no_logits = model(ids, attention_mask, labels=labels, **extra, return_logits=False)
    assert getattr(no_logits, logits) is None
    torch.testing.assert_close(no_logits.loss, full.loss, atol=1e-6, rtol=0)
    # and the same gradients (the fused loss's, including the output bias's, twice: its scratch buffer is reused)
    model.train()  # dropout is 0 in `tiny`, so every pass sees the same network
    grads = []
    for options in ({}, {"masked_only": True}, {"return_logits": False}, {"return_logits": False}):
        model.zero_grad()
        model(ids, attention_mask, labels=labels, **extra, **options).loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for reference, *others in zip(*grads, strict=True):
        for other in others:
            torch.testing.assert_close(other, reference, atol=1e-6, rtol=1e-5)


def test_masked_only_needs_labels():
    model = tiny(plmkit.BertForMaskedLM)
    with pytest.raises(ValueError, match="needs labels"):
        model(torch.randint(5, 99, (1, 4)), masked_only=True)
    with pytest.raises(ValueError, match="needs labels"):
        model(torch.randint(5, 99, (1, 4)), return_logits=False)


def test_cpu_dropout_matches_nn_dropout_in_distribution_and_gradient():
    """plmkit's CPU dropout keeps each element with probability 1 - p (p rounded to a multiple of 1/32768), scales by
    1 / (1 - p) with that same p, and its gradient is the same mask; seeded, it repeats exactly."""
    from plmkit.layers.dropout import LEVELS, Dropout, dropout

    x = torch.ones(401, 501, requires_grad=True)  # an odd count: the last 32-bit draw is half used
    torch.manual_seed(0)
    y = dropout(x, 0.1)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.005
    # both 16-bit halves of each draw are used, and each is uniform: even and odd positions keep alike
    flat = kept.flatten()[:-1].view(-1, 2).float().mean(0)
    assert (flat - 0.9).abs().max().item() < 0.005
    rounded = round(0.1 * LEVELS) / LEVELS
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - rounded)))
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())
    torch.manual_seed(0)
    assert torch.equal(dropout(x.detach(), 0.1), y.detach())
    # a p that 15 bits cannot hold within 0.1% takes the float mask, exact to 2^-24
    z = dropout(torch.ones(2000, 1000), 0.001)
    assert abs((z == 0).float().mean().item() - 0.001) < 0.0002
    torch.testing.assert_close(z[z != 0], torch.full_like(z[z != 0], 1 / 0.999))
    layer = Dropout(0.3).eval()
    assert layer(x) is x and dropout(x, 0.0) is x


def test_dropout_add_is_residual_plus_the_same_dropout():
    """`dropout_add` draws the mask `dropout` would from the same seed, adds the residual in one op, and its gradients
    are the mask for x and the identity for the residual; in eval mode it is a plain sum."""
    from plmkit.layers.dropout import Dropout, dropout, dropout_add

    g = torch.Generator().manual_seed(1)
    x = torch.randn(37, 64, generator=g, requires_grad=True)
    r = torch.randn(37, 64, generator=g, requires_grad=True)
    torch.manual_seed(3)
    y = dropout_add(x, r, 0.1)
    torch.manual_seed(3)
    ref = r.detach() + dropout(x.detach(), 0.1)
    torch.testing.assert_close(y, ref)
    y.backward(torch.full_like(y, 2.0))
    kept = (ref - r.detach()) != 0
    torch.testing.assert_close(x.grad, torch.where(kept, 2.0 / (1 - round(0.1 * 32768) / 32768), 0.0))
    torch.testing.assert_close(r.grad, torch.full_like(r, 2.0))
    layer = Dropout(0.1).eval()
    assert torch.equal(layer.add(x, r), r + x)


def test_fused_cross_entropy_equals_torch():
    from plmkit.heads.losses import cross_entropy

    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(37, 1000, generator=g) * 3).requires_grad_()
    target = torch.randint(0, 1000, (37,), generator=g)
    ours = cross_entropy(logits, target)
    (grad_ours,) = torch.autograd.grad(ours * 2.5, logits)
    ref = torch.nn.functional.cross_entropy(logits, target)
    (grad_ref,) = torch.autograd.grad(ref * 2.5, logits)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grad_ours, grad_ref, atol=1e-7, rtol=1e-5)
