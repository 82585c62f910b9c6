"""The causal decoder: Hugging Face GPT-2 and Llama parity both ways, the causal mask, the loss, the config."""

from __future__ import annotations

import pytest
import torch

import plmkit
from plmkit.heads.lm import causal_lm_loss, fused_linear_cross_entropy
from plmkit.models.decoder import CausalLM, decoder_config

transformers = pytest.importorskip("transformers")

ATOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared CPU two threads wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


HF_CONFIGS = {
    "gpt2": lambda: transformers.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                            attn_implementation="eager", bos_token_id=1, eos_token_id=2),
    "gpt2-relu-untied": lambda: transformers.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                                        n_inner=48, activation_function="relu",
                                                        tie_word_embeddings=False, attn_implementation="sdpa",
                                                        bos_token_id=1, eos_token_id=2),
    "llama-gqa": lambda: transformers.LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=64,
                                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                  max_position_embeddings=64, rope_theta=100000.0, bos_token_id=1,
                                                  eos_token_id=2, attn_implementation="eager"),
    "llama-mha-tied-bias": lambda: transformers.LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=48,
                                                            num_hidden_layers=2, num_attention_heads=4,
                                                            num_key_value_heads=4, max_position_embeddings=64,
                                                            tie_word_embeddings=True, attention_bias=True,
                                                            mlp_bias=True, rms_norm_eps=1e-5, bos_token_id=1,
                                                            eos_token_id=2),
}


def hf_model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(HF_CONFIGS[name]()).eval()
    with torch.no_grad():  # non-trivial norm and bias values, so that a swapped weight cannot hide
        for pname, p in model.named_parameters():
            if "ln" in pname or "norm" in pname or pname.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def make_inputs(batch: int = 3, seq: int = 9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 99, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, 6:] = 0  # right padding
    mask[2, :3] = 0  # left padding
    return ids, mask


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_hf_to_plmkit_logits_and_loss(tmp_path, name):
    hf = hf_model(name)
    hf.save_pretrained(tmp_path)
    ours = CausalLM.from_pretrained(tmp_path)
    assert not ours.training
    ids, mask = make_inputs()
    labels = ids.masked_fill(mask == 0, -100)
    labels[2, 3] = -100  # predicted from a padding position: nobody's business either
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(input_ids=ids).logits, atol=ATOL, rtol=1e-5)
        theirs, mine = hf(input_ids=ids, attention_mask=mask, labels=labels), ours(ids, mask, labels=labels)
    real = mask.bool()  # padded positions are nobody's business; real ones must agree
    torch.testing.assert_close(mine.logits[real], theirs.logits[real], atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(mine.loss, theirs.loss, atol=ATOL, rtol=1e-5)
    # Position ids given explicitly, as generation passes them for left-padded rows.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        mine = ours(ids, mask, position_ids=positions).logits
    torch.testing.assert_close(mine[real], theirs[real], atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_plmkit_to_hf_round_trip(tmp_path, name):
    config = {"gpt2": decoder_config("gpt2", vocab_size=99, hidden_size=32, num_layers=2, num_heads=4,
                                     intermediate_size=128, max_position_embeddings=64),
              "gpt2-relu-untied": decoder_config("gpt2", vocab_size=99, hidden_size=32, num_layers=2, num_heads=4,
                                                 intermediate_size=48, activation="relu", tie_word_embeddings=False,
                                                 max_position_embeddings=64),
              "llama-gqa": decoder_config("llama", vocab_size=99, hidden_size=32, num_layers=2, num_heads=4,
                                          num_kv_heads=2, intermediate_size=64, rope_theta=100000.0,
                                          max_position_embeddings=64),
              "llama-mha-tied-bias": decoder_config("llama", vocab_size=99, hidden_size=32, num_layers=2, num_heads=4,
                                                    intermediate_size=48, tie_word_embeddings=True, bias=True,
                                                    max_position_embeddings=64)}[name]
    torch.manual_seed(3)
    ours = CausalLM(config).eval()
    ours.save_pretrained(tmp_path)
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert type(hf).__name__ == ("GPT2LMHeadModel" if name.startswith("gpt2") else "LlamaForCausalLM")
    ids, mask = make_inputs()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, mask).logits[mask.bool()], hf.eval()(input_ids=ids, attention_mask=mask)
                                   .logits[mask.bool()], atol=ATOL, rtol=1e-5)
    again = CausalLM.from_pretrained(tmp_path)  # and back into plmkit, bit for bit
    assert again.config == ours.config
    assert isinstance(plmkit.from_pretrained(tmp_path), CausalLM)  # the package-level loader tells it from BERT
    for (key, a), (_, b) in zip(ours.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), key


def test_training_gradients_match_hf(tmp_path):
    """Backward through the fused QKV / gate-up and the tied head equals transformers' separate projections."""
    hf = hf_model("llama-mha-tied-bias")
    hf.save_pretrained(tmp_path)
    ours = CausalLM.from_pretrained(tmp_path).train()
    hf.train()
    ids, mask = make_inputs()
    hf(input_ids=ids, labels=ids).loss.backward()
    ours(ids, labels=ids).loss.backward()
    theirs = hf.model.layers[0]
    grad_q, grad_k, _ = ours.decoder.layers[0].attn.qkv_proj.weight.grad.split([32, 32, 32])
    torch.testing.assert_close(grad_k, theirs.self_attn.k_proj.weight.grad, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(ours.decoder.layers[0].mlp.in_proj.weight.grad[48:], theirs.mlp.up_proj.weight.grad,
                               atol=ATOL, rtol=1e-4)
    # The tied lookup's gradient is sparse while the head is in the loss; the accumulated .grad is dense.
    assert not ours.decoder.embed.token.weight.grad.is_sparse and ours.decoder.embed.token.sparse is False
    torch.testing.assert_close(ours.decoder.embed.token.weight.grad, hf.model.embed_tokens.weight.grad, atol=ATOL,
                               rtol=1e-4)


def test_fused_loss_equals_plain_loss_and_gradients():
    torch.manual_seed(0)
    config = decoder_config("gpt2", vocab_size=101, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                            max_position_embeddings=32, hidden_dropout=0.0, attention_dropout=0.0)
    model = CausalLM(config).train()
    ids = torch.randint(0, 101, (3, 11))
    labels = ids.clone()
    labels[0, :4] = -100
    plain = model(ids, labels=labels)
    plain.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    fused = model(ids, labels=labels, return_logits=False)
    assert fused.logits is None
    fused.loss.backward()
    torch.testing.assert_close(fused.loss, plain.loss, atol=1e-6, rtol=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], atol=1e-6, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    # A step trained twice reuses the head's scratch buffer: same loss and gradients again.
    model.zero_grad()
    again = model(ids, labels=labels, return_logits=False)
    again.loss.backward()
    assert model.lm_head._scratch.tensor is not None and again.loss.item() == fused.loss.item()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], atol=1e-6, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    hidden = torch.randn(2, 5, 8)
    weight = torch.randn(13, 8)
    labels = torch.randint(0, 13, (2, 5))
    with torch.no_grad():  # the no-grad path, in chunks smaller than the batch
        torch.testing.assert_close(fused_linear_cross_entropy(hidden, weight, labels, chunk_size=3),
                                   causal_lm_loss(hidden @ weight.T, labels))


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_causal_mask_future_tokens_never_change_earlier_logits(style):
    torch.manual_seed(0)
    model = CausalLM(decoder_config(style, vocab_size=50, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2
                                    if style == "llama" else None, intermediate_size=64,
                                    max_position_embeddings=32)).eval()
    ids = torch.randint(0, 50, (2, 10))
    changed = ids.clone()
    changed[:, 6:] = torch.randint(0, 50, (2, 4))
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
        # the same through an explicit (padding) mask path
        mask = torch.ones_like(ids)
        mask[1, :2] = 0
        c, d = model(ids, mask).logits, model(changed, mask).logits
    torch.testing.assert_close(a[:, :6], b[:, :6], atol=0, rtol=0)
    torch.testing.assert_close(c[:, :6], d[:, :6], atol=0, rtol=0)
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_cache_forward_equals_full_forward():
    """Prefill in two blocks, then token by token: the same logits as one pass over everything."""
    torch.manual_seed(0)
    model = CausalLM(decoder_config("llama", vocab_size=50, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=1,
                                    intermediate_size=64)).eval()
    ids = torch.randint(0, 50, (2, 12))
    with torch.no_grad():
        full = model(ids).logits
        cache = model.new_cache(max_length=4)  # smaller than needed: the cache grows
        parts = [model(ids[:, :5], cache=cache).logits, model(ids[:, 5:9], cache=cache).logits]
        parts += [model(ids[:, i:i + 1], cache=cache).logits for i in range(9, 12)]
    assert cache.length == 12
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_config_validation_and_round_trip(tmp_path):
    config = decoder_config("llama", vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                            intermediate_size=48, rope_theta=5e5, eos_token_id=[2, 3])
    config.save(tmp_path / "decoder.yaml")
    assert plmkit.ModelConfig.from_file(tmp_path / "decoder.yaml") == config
    assert config.kv_heads == 2 and plmkit.ModelConfig().kv_heads == 12
    for bad, message in [(dict(num_kv_heads=3), "num_kv_heads must be a positive integer that divides"),
                         (dict(norm="batchnorm"), "unknown norm 'batchnorm'; choose from: layernorm, rmsnorm"),
                         (dict(mlp="moe"), "unknown mlp 'moe'; choose from: standard, gated"),
                         (dict(position_embedding="alibi"), "unknown position_embedding 'alibi'"),
                         (dict(rope_theta=0.0), "rope_theta must be > 0"),
                         (dict(hidden_size=36, num_heads=12), "rotary positions need an even head_dim")]:
        with pytest.raises(plmkit.PlmkitError, match=message):
            config.replace(**bad)
    with pytest.raises(plmkit.PlmkitError, match="causal=True"):
        CausalLM(plmkit.ModelConfig(hidden_size=32, num_heads=4))
    with pytest.raises(plmkit.PlmkitError, match="encoder"):
        plmkit.BertModel(config.replace(type_vocab_size=2, norm_position="post"))


def test_hf_config_errors_name_the_key(tmp_path):
    from plmkit.interop.hf_decoder import gpt2_config_from_hf, llama_config_from_hf

    with pytest.raises(plmkit.PlmkitError, match="unknown key 'sliding_window'"):
        llama_config_from_hf({"model_type": "llama", "sliding_window": 4096})
    with pytest.raises(plmkit.PlmkitError, match="rope_type 'yarn' is not supported"):
        llama_config_from_hf({"model_type": "llama", "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}})
    with pytest.raises(plmkit.PlmkitError, match="scale_attn_by_inverse_layer_idx=True is not supported"):
        gpt2_config_from_hf({"model_type": "gpt2", "scale_attn_by_inverse_layer_idx": True})
    hf_model("gpt2").save_pretrained(tmp_path)
    from safetensors.torch import load_file, save_file

    state = load_file(tmp_path / "model.safetensors")
    state["transformer.h.0.attn.extra.weight"] = torch.zeros(2)
    del state["transformer.h.1.mlp.c_fc.bias"]
    state["transformer.wpe.weight"] = state["transformer.wpe.weight"][:10]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(plmkit.PlmkitError) as err:
        CausalLM.from_pretrained(tmp_path)
    message = str(err.value)
    assert "1 missing keys: transformer.h.1.mlp.c_fc.bias" in message
    assert "1 unexpected keys: transformer.h.0.attn.extra.weight" in message
    assert "transformer.wpe.weight (10, 32) vs expected (64, 32)" in message
    gqa_gpt2 = decoder_config("gpt2", vocab_size=99, hidden_size=32, num_layers=1, num_heads=4, num_kv_heads=2,
                              intermediate_size=64)
    with pytest.raises(plmkit.PlmkitError, match="no Hugging Face format holds this decoder"):
        CausalLM(gqa_gpt2).save_pretrained(tmp_path / "out")
