"""The locally built tiny GGUF (tests/support/make_gguf.py) loads back exactly through transformers."""

import numpy as np
import pytest
import torch

try:  # repo root on sys.path (python -m pytest, or a pythonpath setting)
    from tests.support.make_gguf import llama_cpp_permute, write_tiny_llama_gguf
except ImportError:  # plain `pytest` with rootdir-prepend puts tests/ itself on sys.path
    from support.make_gguf import llama_cpp_permute, write_tiny_llama_gguf

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Attention heads move information between positions.",
    "unseen wörds, émojis 🙂 and   spaces\n\ttabs 98765",
    "<|im_start|>user\nHello there<|im_end|>\n",
]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # Tiny matmuls on a busy 2-core box: OpenMP with 2 threads costs ~16 ms per linear, 1 thread ~10 us.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama-f32.gguf"
    ref = write_tiny_llama_gguf(path, seed=0)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded_model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    loaded_tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return ref, loaded_model, loaded_tok


def test_permutation_is_inverted_by_transformers_loader():
    # Documents which loader code the writer mirrors; the exact-weights test below is the real guard.
    utils = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    LlamaTensorProcessor = getattr(utils, "LlamaTensorProcessor", None)
    if LlamaTensorProcessor is None:
        pytest.skip("transformers no longer has the legacy LlamaTensorProcessor")

    w = np.arange(16 * 32, dtype=np.float32).reshape(16, 32)  # K of 2 kv heads x head_dim 8
    permuted = llama_cpp_permute(w, 4, 2)
    assert not np.array_equal(permuted, w)
    back = LlamaTensorProcessor(config={})._reverse_permute_weights(permuted, 4, 2)
    np.testing.assert_array_equal(back, w)


def test_config_round_trip(built):
    ref, loaded, _ = built
    a, b = ref["config"], loaded.config
    for key in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings",
        "bos_token_id", "eos_token_id", "pad_token_id",
    ):
        assert getattr(a, key) == getattr(b, key), key
    assert b.num_key_value_heads < b.num_attention_heads  # grouped-query attention is exercised
    assert b.rope_parameters["rope_theta"] == a.rope_parameters["rope_theta"]
    assert loaded.dtype == torch.float32


def test_weights_round_trip_exactly(built):
    ref, loaded, _ = built
    got = loaded.state_dict()
    assert set(got) == set(ref["state_dict"])
    for name, tensor in ref["state_dict"].items():
        assert torch.equal(got[name], tensor), name


def test_logits_match(built):
    ref, loaded, _ = built
    tok = ref["tokenizer"]
    for text in TEXTS:
        ids = torch.tensor([tok(text)["input_ids"]])
        with torch.no_grad():
            expected = ref["model"](ids).logits
            actual = loaded(ids).logits
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_tokenizer_matches(built):
    ref, _, loaded_tok = built
    tok = ref["tokenizer"]
    assert loaded_tok.get_vocab() == tok.get_vocab()
    for text in TEXTS:
        expected = tok(text)["input_ids"]
        assert loaded_tok(text)["input_ids"] == expected, text
        assert loaded_tok.decode(expected) == tok.decode(expected) == text
    assert "<|im_end|>" in loaded_tok.all_special_tokens
    for attr in ("bos_token", "eos_token", "unk_token", "pad_token"):
        assert getattr(loaded_tok, attr) == getattr(tok, attr), attr
    messages = [{"role": "user", "content": "Hi"}]
    assert loaded_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    )
