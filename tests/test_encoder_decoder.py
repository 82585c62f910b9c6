"""The encoder-decoder: Hugging Face T5 and BART parity both ways, the KV cache, generation, label shifting."""

from __future__ import annotations

import pytest
import torch

import plmkit
from plmkit.errors import PlmkitError
from plmkit.models.encoder_decoder import Seq2SeqLM, seq2seq_config, shift_tokens_right

transformers = pytest.importorskip("transformers")

ATOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared CPU two threads wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SIZES = dict(vocab_size=99, d_model=32, num_heads=4)
HF_MODELS = {
    "t5": lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
        **SIZES, d_kv=8, d_ff=37, num_layers=2, relative_attention_num_buckets=8, relative_attention_max_distance=16,
        decoder_start_token_id=0, attn_implementation="eager")),
    "t5-gated-3dec": lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
        **SIZES, d_kv=8, d_ff=37, num_layers=2, num_decoder_layers=3, feed_forward_proj="gated-gelu",
        tie_word_embeddings=False, decoder_start_token_id=0, attn_implementation="sdpa")),  # T5 v1.1: no scaling
    "bart": lambda: transformers.BartForConditionalGeneration(transformers.BartConfig(
        vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64,
        forced_eos_token_id=None, attn_implementation="eager")),
    "bart-scaled-relu": lambda: transformers.BartForConditionalGeneration(transformers.BartConfig(
        vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=64,
        scale_embedding=True, activation_function="relu", forced_eos_token_id=None, attn_implementation="sdpa")),
}


def randomize(hf: torch.nn.Module, std: float) -> torch.nn.Module:
    """Larger random weights than the init's (norms near 1, biases and the logits bias non-zero): every weight then
    matters to the logits, and greedy and beam search choose different, varied tokens."""
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.normal_(1.0, 0.1)
            else:
                p.normal_(0.0, 0.1 if name.endswith("bias") else std)
        if hasattr(hf, "final_logits_bias"):
            hf.final_logits_bias.normal_(0.0, 0.1)
    return hf.eval()


@pytest.fixture(scope="module", params=list(HF_MODELS))
def pair(request, tmp_path_factory):
    """(name, transformers model, plmkit model loaded from its saved directory)."""
    torch.manual_seed(0)
    # T5 does not scale its attention scores: smaller weights keep them (and fp32 rounding) moderate.
    hf = randomize(HF_MODELS[request.param](), 0.2 if request.param.startswith("t5") else 0.4)
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    ours = plmkit.from_pretrained(path)
    assert isinstance(ours, Seq2SeqLM)
    return request.param, hf, ours


def batch(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, 99, (3, 9), generator=g)
    attention_mask = torch.ones(3, 9, dtype=torch.long)
    attention_mask[1, 6:] = 0
    attention_mask[2, 2:] = 0
    labels = torch.randint(3, 99, (3, 6), generator=g)
    labels[1, 4:] = -100
    decoder_attention_mask = (labels != -100).long()
    return dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                decoder_attention_mask=decoder_attention_mask)


def test_logits_and_loss_match_transformers(pair):
    _, hf, ours = pair
    inputs = batch()
    with torch.no_grad():
        theirs, mine = hf(**inputs), ours(**inputs)
    torch.testing.assert_close(mine.logits, theirs.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(mine.loss, theirs.loss, atol=ATOL, rtol=0)
    torch.testing.assert_close(mine.encoder_last_hidden_state, theirs.encoder_last_hidden_state, atol=ATOL, rtol=0)


def test_saved_model_loads_in_transformers(pair, tmp_path):
    _, hf, ours = pair
    ours.save_pretrained(tmp_path)
    back, info = type(hf).from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    inputs = batch(2)
    with torch.no_grad():
        torch.testing.assert_close(back.eval()(**inputs).logits, ours(**inputs).logits, atol=ATOL, rtol=0)
    again = Seq2SeqLM.from_pretrained(tmp_path)
    assert again.config == ours.config


def test_cached_decoding_equals_full(pair):
    _, _, ours = pair
    inputs = batch(3)
    decoder_ids = shift_tokens_right(inputs["labels"], ours.config.pad_token_id, ours.config.decoder_start_token_id)
    with torch.no_grad():
        full = ours(inputs["input_ids"], inputs["attention_mask"], decoder_input_ids=decoder_ids).logits
        encoded = ours.model.encode(inputs["input_ids"], inputs["attention_mask"])
        cache = ours.new_cache()
        first = ours(attention_mask=inputs["attention_mask"], decoder_input_ids=decoder_ids[:, :2], cache=cache,
                     encoder_outputs=encoded)
        steps = [first.logits]
        for t in range(2, decoder_ids.shape[1]):
            steps.append(ours(attention_mask=inputs["attention_mask"], decoder_input_ids=decoder_ids[:, t:t + 1],
                              cache=cache, encoder_outputs=encoded).logits)
    assert cache.length == decoder_ids.shape[1]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generation_matches_transformers(pair, num_beams):
    name, hf, ours = pair
    inputs = batch(4)
    kwargs = dict(max_new_tokens=7, num_beams=num_beams)
    # transformers 5.24 sizes T5's decoder cache by num_layers, not num_decoder_layers (IndexError with 3 vs 2).
    theirs_cache = name != "t5-gated-3dec"
    with torch.no_grad():
        theirs = hf.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"], do_sample=False,
                             use_cache=theirs_cache, **kwargs)
    mine = ours.generate(inputs["input_ids"], inputs["attention_mask"], **kwargs)
    assert mine.tolist() == theirs.tolist()
    assert len({tuple(row) for row in mine.tolist()}) > 1  # the source matters: the test can tell rows apart
    if num_beams == 1:
        uncached = ours.generate(inputs["input_ids"], inputs["attention_mask"], use_cache=False, **kwargs)
        assert uncached.tolist() == mine.tolist()


def test_sampling_is_seeded_and_cache_independent(pair):
    _, _, ours = pair
    inputs = batch(8)

    def sample(use_cache: bool) -> list[list[int]]:
        g = torch.Generator().manual_seed(3)
        return ours.generate(inputs["input_ids"], inputs["attention_mask"], max_new_tokens=6, do_sample=True,
                             top_k=20, temperature=0.8, generator=g, use_cache=use_cache).tolist()

    assert sample(True) == sample(False)


class CharTokenizer:
    """Just enough of a tokenizer: one id per letter."""

    eos_token_id = pad_token_id = None

    def encode(self, text: str) -> list[int]:
        return [3 + ord(c) - ord("a") for c in text]


def test_generation_from_text_prompts(pair):
    _, _, ours = pair
    tok = CharTokenizer()
    texts = ["hello", "abc", "generation"]
    rows = [tok.encode(t) + [ours.config.eos_token_id] for t in texts]  # prompts become eos-terminated sources
    ids = torch.full((3, 11), ours.config.pad_token_id)
    mask = torch.zeros(3, 11, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
    expected = ours.generate(ids, mask, max_new_tokens=5, num_beams=2)
    assert ours.generate(prompts=texts, tokenizer=tok, max_new_tokens=5, num_beams=2).tolist() == expected.tolist()
    with pytest.raises(PlmkitError, match="either input_ids or prompts"):
        ours.generate(max_new_tokens=5)


def test_generation_stops_at_eos_like_transformers():
    """A model whose eos is likely: rows finish at different steps and are padded, as transformers pads them."""
    torch.manual_seed(0)
    hf = HF_MODELS["bart"]().eval()
    with torch.no_grad():
        hf.final_logits_bias[0, hf.config.eos_token_id] = 2.5
    ours = Seq2SeqLM(seq2seq_config("bart", vocab_size=99, hidden_size=32, num_layers=2, num_heads=4,
                                    intermediate_size=37, max_position_embeddings=64), init=False)
    from plmkit.interop.hf_seq2seq import FORMATS, convert_from_hf

    convert_from_hf(ours, hf.state_dict(), FORMATS["bart"])
    ours.eval()
    inputs = batch(5)
    for num_beams in (1, 3):
        with torch.no_grad():
            theirs = hf.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"], do_sample=False,
                                 max_new_tokens=10, num_beams=num_beams)
        mine = ours.generate(inputs["input_ids"], inputs["attention_mask"], max_new_tokens=10, num_beams=num_beams)
        assert mine.tolist() == theirs.tolist()
        assert (mine == hf.config.eos_token_id).any()


def test_bart_base_model_checkpoint_loads():
    """facebook/bart-base is saved as BartModel: no `model.` prefix, no final_logits_bias, no lm_head."""
    torch.manual_seed(0)
    hf = randomize(HF_MODELS["bart"](), 0.4)
    with torch.no_grad():
        hf.final_logits_bias.zero_()
    ours = Seq2SeqLM(seq2seq_config("bart", vocab_size=99, hidden_size=32, num_layers=2, num_heads=4,
                                    intermediate_size=37, max_position_embeddings=64), init=False)
    from plmkit.interop.hf_seq2seq import FORMATS, convert_from_hf

    convert_from_hf(ours, hf.model.state_dict(), FORMATS["bart"])
    inputs = batch(7)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(**inputs).logits, hf(**inputs).logits, atol=ATOL, rtol=0)


def test_unsupported_hf_configs_are_named(tmp_path):
    from plmkit.interop.hf_seq2seq import bart_config_from_hf, t5_config_from_hf

    with pytest.raises(PlmkitError, match="normalize_before"):
        bart_config_from_hf({"model_type": "bart", "normalize_before": True})
    with pytest.raises(PlmkitError, match="unknown key 'rope_theta'"):
        bart_config_from_hf({"model_type": "bart", "rope_theta": 1.0})
    with pytest.raises(PlmkitError, match="d_kv"):
        t5_config_from_hf({"model_type": "t5", "d_model": 32, "num_heads": 4, "d_kv": 16})
    assert bart_config_from_hf({"model_type": "bart", "extra_pos_embeddings": 2, "classif_dropout": 0.1}).logits_bias


def test_untied_t5_cannot_be_saved_for_transformers(tmp_path):
    model = Seq2SeqLM(seq2seq_config("t5", vocab_size=99, hidden_size=32, num_layers=1, num_heads=4,
                                     intermediate_size=37, tie_word_embeddings=False))
    with pytest.raises(PlmkitError, match="tie_word_embeddings=False"):
        model.save_pretrained(tmp_path)


def test_shift_tokens_right():
    labels = torch.tensor([[5, 6, 7, 1], [8, 9, -100, -100]])
    assert shift_tokens_right(labels, pad_token_id=0, decoder_start_token_id=2).tolist() == [[2, 5, 6, 7],
                                                                                                [2, 8, 9, 0]]
    hf = transformers.T5ForConditionalGeneration(transformers.T5Config(**SIZES, d_kv=8, d_ff=37, num_layers=1,
                                                                       decoder_start_token_id=0))
    assert shift_tokens_right(labels, 0, 0).tolist() == hf._shift_right(labels).tolist()
    bart = transformers.models.bart.modeling_bart.shift_tokens_right(labels, 1, 2)
    assert shift_tokens_right(labels, 1, 2).tolist() == bart.tolist()


def test_built_from_config_trains_one_step():
    torch.manual_seed(0)
    for style in ("t5", "bart"):
        model = Seq2SeqLM(seq2seq_config(style, vocab_size=99, hidden_size=32, num_layers=2, num_heads=4,
                                         intermediate_size=37, max_position_embeddings=64))
        inputs = batch(6)
        loss = model(**inputs).loss
        loss.backward()
        assert torch.isfinite(loss) and model.model.shared.weight.grad is not None


def test_config_fields_validate_and_keep_defaults():
    base = plmkit.ModelConfig()
    assert not base.is_encoder_decoder and base.decoder_layers == base.num_layers and base.scale_attention
    with pytest.raises(PlmkitError, match="num_decoder_layers"):
        seq2seq_config("t5", num_decoder_layers=0)
    with pytest.raises(PlmkitError, match="relative_attention_num_buckets"):
        seq2seq_config("t5", relative_attention_num_buckets=-1)
    with pytest.raises(PlmkitError, match="encoder-decoders"):
        plmkit.ModelConfig(position_embedding="relative")
    with pytest.raises(PlmkitError, match="unknown encoder-decoder style"):
        seq2seq_config("pegasus")
    config = seq2seq_config("bart", num_decoder_layers=3)
    assert plmkit.ModelConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("num_beams", [1, 3])
def test_checkpoint_generation_config_is_applied_like_transformers(tmp_path, num_beams):
    """BART checkpoints carry generation settings (forced BOS/EOS, no repeated n-grams, a minimum length): loaded
    from the directory, plmkit generates what `transformers` generates with the same generation config."""
    torch.manual_seed(0)
    hf = randomize(HF_MODELS["bart"](), 0.4).eval()
    hf.generation_config.update(forced_bos_token_id=0, forced_eos_token_id=2, no_repeat_ngram_size=2, min_length=6,
                                num_beams=num_beams, early_stopping=num_beams > 1)
    with torch.no_grad():
        hf.final_logits_bias[0, hf.config.eos_token_id] = 3.0  # eos likely: min_length and forced EOS matter
    hf.save_pretrained(tmp_path)
    ours = plmkit.from_pretrained(tmp_path)
    assert ours.generation_defaults["no_repeat_ngram_size"] == 2
    inputs = batch(7)
    with torch.no_grad():
        theirs = hf.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=10)
    mine = ours.generate(inputs["input_ids"], inputs["attention_mask"], max_new_tokens=10)
    assert mine.tolist() == theirs.tolist()
    assert (mine[:, 1] == 0).all()  # the forced BOS
    for row in mine.tolist():  # no bigram twice
        bigrams = [tuple(row[i:i + 2]) for i in range(len(row) - 1) if row[i + 1] != hf.config.pad_token_id]
        assert len(bigrams) == len(set(bigrams))
