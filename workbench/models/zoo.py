"""The model zoo: one tiny model per family researchers use, built here with random weights.

No model hub is reachable from every machine we run on, yet every analysis must be shown to
work on GPT-2, Pythia, Llama, Gemma, Qwen, … So each family is built from its own
`transformers` config class with small sizes and the family's real features switched on
(grouped-query heads, sliding windows, soft-capping, parallel blocks, fused projections,
experts), seeded random weights, and saved as an ordinary Hugging Face folder. The folder
then loads through the same path as a user's checkpoint folder (`zoo:<family>` is a spec
for it), so nothing here is a second loading path.

Every zoo model uses the embedded SmolLM2 tokenizer, so prompts such as "The Eiffel Tower
is located in the city of" tokenise into real words on every family. Weights are drawn
with a larger spread than the families' training-time initialisers, so attention is peaked
and the next-token distribution is not flat: the analyses' numbers are then sensitive to
mistakes, which is the point of the zoo.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError

ZOO_VERSION = 1  # bump when a family's recipe changes: the cached folders are rebuilt
ZOO_PREFIX = "zoo:"
SEED = 1234
INIT_STD = 0.25  # spread of the random weights (see the module's docstring)

# Small sizes shared by most families: 2-4 layers, d_model 64, 4 heads of 16 dims.
_COMMON: dict[str, Any] = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=256)
_WINDOW = 4  # sliding windows shorter than the test prompts, so the window really cuts


@dataclass(frozen=True)
class Family:
    """One family of the zoo: how to make its config, what it exercises, which real
    checkpoints its adapter is meant for."""

    name: str
    config_class: str  # a class in transformers
    model_class: str  # the causal-LM class in transformers
    settings: Callable[[], dict[str, Any]]
    features: str  # what the family switches on that others do not
    checkpoints: tuple[str, ...] = field(default_factory=tuple)  # real models it stands for


def _llama_like(**extra: Any) -> Callable[[], dict[str, Any]]:
    return lambda: dict(_COMMON, num_key_value_heads=2, head_dim=16, **extra)


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in [
        Family(
            "gpt2", "GPT2Config", "GPT2LMHeadModel",
            lambda: dict(n_embd=64, n_layer=3, n_head=4, n_positions=256, n_inner=128, tie_word_embeddings=True),
            "Conv1D weights [in, out], fused c_attn, learned absolute positions, LayerNorm with bias, tied embeddings",
            ("gpt2", "gpt2-medium", "gpt2-xl", "distilgpt2"),
        ),
        Family(
            "pythia", "GPTNeoXConfig", "GPTNeoXForCausalLM",
            lambda: dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=256,
                         use_parallel_residual=True, tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}),
            "parallel attention and MLP, rotary on a quarter of each head's dims, fused query_key_value, untied embed_out",
            ("EleutherAI/pythia-70m", "EleutherAI/pythia-160m", "EleutherAI/pythia-410m", "EleutherAI/pythia-1.4b"),
        ),
        Family(
            "gptj", "GPTJConfig", "GPTJForCausalLM",
            lambda: dict(n_embd=64, n_layer=3, n_head=4, n_positions=256, n_inner=128, rotary_dim=8, tie_word_embeddings=False),
            "parallel attention and MLP sharing one LayerNorm, interleaved rotary on the first dims",
            ("EleutherAI/gpt-j-6b",),
        ),
        Family(
            "llama", "LlamaConfig", "LlamaForCausalLM", _llama_like(tie_word_embeddings=False),
            "RMSNorm, SwiGLU MLP, RoPE, grouped-query attention (2 KV heads for 4 query heads)",
            ("meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.1-8B", "HuggingFaceTB/SmolLM2-135M"),
        ),
        Family(
            "mistral", "MistralConfig", "MistralForCausalLM", _llama_like(sliding_window=_WINDOW, tie_word_embeddings=False),
            f"a sliding attention window ({_WINDOW} tokens here) on every layer, GQA",
            ("mistralai/Mistral-7B-v0.1",),
        ),
        Family(
            "qwen2", "Qwen2Config", "Qwen2ForCausalLM",
            lambda: dict(_COMMON, num_key_value_heads=2, tie_word_embeddings=True),
            "biases on q, k and v, GQA, tied embeddings",
            ("Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-1.5B", "Qwen/Qwen2.5-3B"),
        ),
        Family(
            "qwen3", "Qwen3Config", "Qwen3ForCausalLM", _llama_like(tie_word_embeddings=True),
            "per-head RMSNorm on q and k before RoPE, no q/k/v bias, GQA",
            ("Qwen/Qwen3-0.6B", "Qwen/Qwen3-1.7B"),
        ),
        Family(
            "gemma", "GemmaConfig", "GemmaForCausalLM", _llama_like(tie_word_embeddings=True),
            "RMSNorm scaled by (1 + w), embeddings times √d_model, GeGLU MLP",
            ("google/gemma-2b",),
        ),
        Family(
            "gemma2", "Gemma2Config", "Gemma2ForCausalLM",
            _llama_like(num_hidden_layers=4, sliding_window=_WINDOW, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                        query_pre_attn_scalar=16, tie_word_embeddings=True,
                        layer_types=["sliding_attention", "full_attention"] * 2),
            "norms before and after attention and MLP, attention and final-logit soft-capping, alternating sliding and global layers",
            ("google/gemma-2-2b", "google/gemma-2-9b"),
        ),
        Family(
            "gemma3", "Gemma3TextConfig", "Gemma3ForCausalLM",
            _llama_like(num_hidden_layers=4, sliding_window=_WINDOW, query_pre_attn_scalar=16, tie_word_embeddings=True,
                        layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"]),
            "q/k norms, local and global layers with different RoPE bases, pre- and post-norms",
            ("google/gemma-3-270m", "google/gemma-3-1b-pt"),
        ),
        Family(
            "olmo2", "Olmo2Config", "Olmo2ForCausalLM", lambda: dict(_COMMON, num_key_value_heads=4, tie_word_embeddings=False),
            "norms on the sublayer outputs before they join the residual, q/k norms over all heads",
            ("allenai/OLMo-2-0425-1B",),
        ),
        Family(
            "phi3", "Phi3Config", "Phi3ForCausalLM", lambda: dict(_COMMON, num_key_value_heads=2, tie_word_embeddings=False, pad_token_id=0),
            "fused qkv_proj and gate_up_proj",
            ("microsoft/Phi-3-mini-4k-instruct",),
        ),
        Family(
            "mixtral", "MixtralConfig", "MixtralForCausalLM",
            _llama_like(num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=False),
            "a router over 4 expert MLPs (top-2) instead of one MLP",
            ("mistralai/Mixtral-8x7B-v0.1",),
        ),
    ]
}


def zoo_root() -> Path:
    from ..paths import cache_dir

    return cache_dir() / "zoo" / f"v{ZOO_VERSION}"


def zoo_folder(family: str) -> Path:
    return zoo_root() / _family(family).name


def _family(name: str) -> Family:
    if name not in FAMILIES:
        raise ModelLoadError(f"No zoo family {name!r}.", f"zoo families: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def build_zoo_model(family: str, folder: Path | None = None) -> Path:
    """The family's tiny model as a Hugging Face folder, built once and then reused."""
    spec = _family(family)
    folder = folder or zoo_folder(family)
    if (folder / "zoo.json").is_file():
        return folder
    import torch
    import transformers

    from .gguf_cache import convert_gguf, embedded_gguf_path

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(convert_gguf(embedded_gguf_path())), local_files_only=True)
    settings = dict(spec.settings())
    settings.setdefault("vocab_size", len(tokenizer))
    settings.setdefault("bos_token_id", tokenizer.bos_token_id)
    settings.setdefault("eos_token_id", tokenizer.eos_token_id)
    config = getattr(transformers, spec.config_class)(initializer_range=INIT_STD, **settings)
    config.architectures = [spec.model_class]
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = getattr(transformers, spec.model_class)(config).eval()
        _spread_norm_weights(model)
    partial = folder.with_name(folder.name + f".partial-{os.getpid()}")
    partial.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / "zoo.json").write_text(
        json.dumps({"family": spec.name, "zoo_version": ZOO_VERSION, "seed": SEED, "transformers": transformers.__version__, "features": spec.features}, indent=1),
        encoding="utf-8",
    )
    try:
        partial.rename(folder)
    except OSError:  # another process built it first
        import shutil

        shutil.rmtree(partial, ignore_errors=True)
        if not (folder / "zoo.json").is_file():
            raise
    return folder


def _spread_norm_weights(model) -> None:
    """Norm weights start at exactly 1 (or 0 for Gemma's 1 + w); a random spread makes a
    missing or misplaced norm change the numbers instead of passing unnoticed."""
    import torch

    generator = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            owner = name.lower().rsplit(".", 2)[-2] if "." in name else ""
            if parameter.ndim == 1 and ("norm" in owner or owner in ("ln_1", "ln_2", "ln_f")):
                parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))
