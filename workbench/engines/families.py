"""Where the seam's hook points live in each family's Hugging Face module tree.

One `ModuleMap` per module-tree layout, and nothing else in the nnsight engine knows a
family's module names. Each was checked against the modelling file of the installed
transformers (5.25) and against TransformerBridge's hook points, value by value
(tests/test_engines.py on SmolLM2, the lab model and the zoo's families). In transformers 5
a block returns its hidden states as a tensor, not a tuple; the engine accepts either.

For the block at `blocks[L]`, each hook point is one module's input (its first argument)
or output:

| hook point | where |
|---|---|
| hook_resid_pre | the block's input |
| attn.hook_z | `z`'s input: the attention output projection, heads concatenated [b, p, heads x d_head] |
| attn.hook_pattern | read: `attention`'s output (attn_output, attn_weights), element 1; eager attention only. Written: inside the attention function, at `pattern_source` (below) |
| hook_attn_out | `attn_out`'s output (element 0 when it is the attention module's tuple) |
| hook_resid_mid | `resid_mid`'s input: the first module after attention joins the residual |
| mlp.hook_post | `mlp_proj`'s input: the MLP's output projection (a RankOneEdit adds to its output) |
| hook_mlp_out | `mlp_out`'s output |
| hook_resid_post | the block's output |
| hook_embed | `embed`'s output |
| ln_final.hook_normalized | `final_norm`'s input, normalized without the norm's weight and bias (TransformerBridge's meaning) |

A pattern is not a module's value, so it is written where the eager attention function
computes it: `pattern_source` names the operations nnsight's `.source` reaches it through,
the attention module's call of its attention function and, in that function, the dropout
after the softmax (a no-op at inference) whose output the values are weighted by and which
the module returns as its weights. Every family below computes it so in transformers 5.25.

Families whose sublayer outputs pass a norm before joining the residual (Gemma 2 and 3,
OLMo 2) have hook_attn_out and hook_mlp_out at those norms' outputs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import EngineError


@dataclass(frozen=True)
class ModuleMap:
    """Module paths (dotted, from the causal-LM model) of one module-tree layout. The
    per-block paths (attention .. mlp_out) are relative to a block."""

    layout: str
    blocks: str  # the ModuleList of blocks
    embed: str  # token embedding
    final_norm: str
    unembed: str
    norm: str  # the final norm's kind: "layer" (LayerNorm: centre, then scale) or "rms" (scale only)
    attention: str  # returns (attn_output, attn_weights)
    z: str  # the attention output projection (input: hook_z)
    attn_out: str  # output: hook_attn_out
    resid_mid: str  # input: hook_resid_mid
    mlp_out: str  # output: hook_mlp_out
    mlp_proj: str  # the MLP's output projection (input: mlp.hook_post; a RankOneEdit changes its output)
    # where a pattern is written: operations inside `attention` through nnsight's `.source`
    # (empty: pattern writes are refused)
    pattern_source: tuple[str, ...] = ("attention_interface_1", "nn_functional_dropout_0")


# Llama and the families that kept its module names and its sequential pre-norm block.
LLAMA = ModuleMap(
    layout="llama",
    blocks="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    unembed="lm_head",
    norm="rms",
    attention="self_attn",
    z="self_attn.o_proj",
    attn_out="self_attn",
    resid_mid="post_attention_layernorm",
    mlp_out="mlp",
    mlp_proj="mlp.down_proj",
)

# Norms before and after each sublayer (Gemma 2 and 3).
GEMMA2 = dataclasses.replace(
    LLAMA, layout="gemma2", attn_out="post_attention_layernorm", resid_mid="pre_feedforward_layernorm", mlp_out="post_feedforward_layernorm"
)

# Norms after each sublayer only (OLMo 2): the MLP reads the residual itself.
OLMO2 = dataclasses.replace(LLAMA, layout="olmo2", attn_out="post_attention_layernorm", resid_mid="mlp", mlp_out="post_feedforward_layernorm")

GPT2 = ModuleMap(
    layout="gpt2",
    blocks="transformer.h",
    embed="transformer.wte",
    final_norm="transformer.ln_f",
    unembed="lm_head",
    norm="layer",
    attention="attn",
    z="attn.c_proj",
    attn_out="attn",
    resid_mid="ln_2",
    mlp_out="mlp",
    mlp_proj="mlp.c_proj",
)

# config.model_type -> map: the layouts whose every hook point equals TransformerBridge's.
# Parallel blocks (GPT-NeoX/Pythia, GPT-J) have no hook_resid_mid and fused or shared parts,
# and mixtures of experts route the MLP: they need maps (and tests) of their own.
MODULE_MAPS: dict[str, ModuleMap] = {
    "llama": LLAMA,
    "mistral": LLAMA,
    "qwen2": LLAMA,
    "qwen3": LLAMA,
    "gemma": LLAMA,
    "phi3": LLAMA,
    "gemma2": GEMMA2,
    "gemma3_text": GEMMA2,
    "olmo2": OLMO2,
    "gpt2": GPT2,
}


def module_map_for(config: Any) -> ModuleMap:
    """The module map of a Hugging Face config, or EngineError naming the families known."""
    model_type = getattr(config, "model_type", None)
    found = MODULE_MAPS.get(str(model_type))
    if found is None:
        architecture = (getattr(config, "architectures", None) or [model_type])[0]
        raise EngineError(
            f"The nnsight engine does not know where the hook points of {architecture} ({model_type!r}) are yet.",
            f"it knows {', '.join(sorted(MODULE_MAPS))}; load the model without the 'nnsight:' prefix to run it on TransformerBridge",
        )
    return found
