"""Build a tiny random Llama model and write it as an F32 GGUF file, for tests.

Nothing is downloaded: the tokenizer is a byte-level BPE trained in memory on a few sentences, the
model is a randomly initialised ``LlamaForCausalLM``, and the file is written with ``gguf.GGUFWriter``
in the layout llama.cpp's ``convert_hf_to_gguf.py`` produces, so that

    AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)

load it back exactly (weights bit-identical, same tokenization).

Layout notes (what transformers' GGUF loader expects for ``general.architecture == "llama"``):

* tensor names are llama.cpp's (``token_embd``, ``blk.N.attn_q`` ...). Numpy arrays are written in
  the PyTorch ``(out_features, in_features)`` order; GGUF records the dims reversed and the reader
  hands back the same numpy shape.
* llama.cpp permutes the rows of ``q_proj``/``k_proj`` (per head: interleaved rotary pairs instead of
  HF's rotate-half halves). transformers' ``LlamaTensorProcessor._reverse_permute_weights`` undoes
  that on load, so we apply llama.cpp's forward ``permute`` here (for K with ``n_head_kv`` heads).
* ``output.weight`` is only written for untied embeddings; its absence is what makes the loader set
  ``tie_word_embeddings=True``.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

__all__ = ["write_tiny_llama_gguf", "TRAINING_TEXT", "SPECIAL_TOKENS", "llama_cpp_permute"]

TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Interpretability means looking inside the model to see what it computes.",
    "Attention heads move information between token positions.",
    "The residual stream carries features from layer to layer.",
    "Hello world! Hello there, how are you today?",
    "Numbers like 123 and 4567 are split into digits.",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
]

# Same first three specials as SmolLM2 (ids 0, 1, 2): endoftext=unk/bos... see below.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def llama_cpp_permute(weights: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute`` (convert_hf_to_gguf.py) for Q/K projection rows."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _train_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Same pre-tokenizer/decoder as transformers' GPT2Tokenizer, which the GGUF "gpt2" converter builds.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAINING_TEXT, trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    return tok, hf_tok


def _vocab_and_merges(tok) -> tuple[list[str], list[str]]:
    model = json.loads(tok.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    tokens = [None] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    assert all(t is not None for t in tokens), "token ids are not contiguous"
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, merges


def write_tiny_llama_gguf(
    path: pathlib.Path,
    *,
    seed: int = 0,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 64,
    vocab_size: int = 320,
    max_position_embeddings: int = 128,
    rope_theta: float = 10000.0,
    rms_norm_eps: float = 1e-5,
    tie_word_embeddings: bool = True,
) -> dict:
    """Write a tiny random Llama model + byte-level BPE tokenizer to ``path`` as an F32 GGUF.

    Returns ``{"path", "model", "tokenizer", "config", "state_dict"}``: the in-memory
    ``LlamaForCausalLM`` (eval mode, float32), the ``PreTrainedTokenizerFast`` it pairs with, its
    ``LlamaConfig`` and a detached copy of its state dict, for comparison with what loads back.
    """
    import gguf
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = pathlib.Path(path)
    # GGUF stores these as float32: use the float32-representable values so both configs agree exactly.
    rms_norm_eps = float(np.float32(rms_norm_eps))
    rope_theta = float(np.float32(rope_theta))
    raw_tok, hf_tok = _train_tokenizer(vocab_size)
    tokens, merges = _vocab_and_merges(raw_tok)
    n_vocab = len(tokens)
    special_ids = {t: tokens.index(t) for t in SPECIAL_TOKENS}

    config = LlamaConfig(
        vocab_size=n_vocab,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=hidden_size // num_attention_heads,
        max_position_embeddings=max_position_embeddings,
        rms_norm_eps=rms_norm_eps,
        rope_theta=rope_theta,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=special_ids["<|im_start|>"],
        eos_token_id=special_ids["<|im_end|>"],
        pad_token_id=special_ids["<|im_end|>"],
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):  # ones by default: perturb so mis-mapped norms would show
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=gen))
            elif name == "model.embed_tokens.weight":
                param.copy_(0.5 * torch.randn(param.shape, generator=gen))
    head_dim = config.head_dim

    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}

    writer = gguf.GGUFWriter(str(path), arch="llama")
    # --- general / hyperparameters (llama.* keys read by transformers' GGUF_CONFIG_MAPPING["llama"])
    writer.add_name("tiny-random-llama")  # must not contain "mistral" (loader would switch arch)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(max_position_embeddings)
    writer.add_embedding_length(hidden_size)
    writer.add_block_count(num_hidden_layers)
    writer.add_feed_forward_length(intermediate_size)
    writer.add_head_count(num_attention_heads)
    writer.add_head_count_kv(num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)  # -> config.head_dim
    writer.add_rope_freq_base(rope_theta)
    writer.add_layer_norm_rms_eps(rms_norm_eps)
    writer.add_vocab_size(n_vocab)
    # --- tokenizer (tokenizer.ggml.*)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt2")  # not in transformers' split table -> GPT2Tokenizer's ByteLevel default
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if t in special_ids else gguf.TokenType.NORMAL for t in tokens]
    )
    writer.add_token_merges(merges)
    writer.add_bos_token_id(special_ids["<|im_start|>"])
    writer.add_eos_token_id(special_ids["<|im_end|>"])
    writer.add_unk_token_id(special_ids["<|endoftext|>"])
    writer.add_pad_token_id(special_ids["<|im_end|>"])
    writer.add_add_bos_token(False)
    writer.add_add_space_prefix(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    # --- tensors, F32, in llama.cpp naming and layout
    def put(name: str, t: torch.Tensor) -> None:
        writer.add_tensor(name, np.ascontiguousarray(t.numpy().astype(np.float32)))

    put("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(num_hidden_layers):
        p = f"model.layers.{i}."
        put(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        q = sd[p + "self_attn.q_proj.weight"].numpy()
        k = sd[p + "self_attn.k_proj.weight"].numpy()
        put(f"blk.{i}.attn_q.weight", torch.from_numpy(llama_cpp_permute(q, num_attention_heads, num_attention_heads)))
        put(f"blk.{i}.attn_k.weight", torch.from_numpy(llama_cpp_permute(k, num_attention_heads, num_key_value_heads)))
        put(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        put(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        put(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        put(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        put(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        put(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    put("output_norm.weight", sd["model.norm.weight"])
    if not tie_word_embeddings:
        put("output.weight", sd["lm_head.weight"])

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    return {"path": path, "model": model, "tokenizer": hf_tok, "config": config, "state_dict": sd}
