"""How a family's blocks are put together, asked of the loaded model in one place.

Analyses must not branch on family names: they ask here. The answers come from the
bridge's hook points, which TransformerLens builds from each family's adapter, so a new
family with a known shape needs no change in the analyses.
"""

from __future__ import annotations


def has_hook(bridge, name: str) -> bool:
    """Whether the bridge has this hook point (legacy aliases included)."""
    return name in bridge.hook_dict


def parallel_blocks(bridge) -> bool:
    """Attention and MLP read the same block input (GPT-NeoX/Pythia, GPT-J): there is no
    residual between them, so no `hook_resid_mid`."""
    return not has_hook(bridge, "blocks.0.hook_resid_mid")


def residual_before_mlp(bridge, layer: int) -> list[str]:
    """Hook points whose sum is the residual a block's MLP output is added to: the residual
    after attention in a sequential block; the block's input plus the attention output in a
    parallel one."""
    if parallel_blocks(bridge):
        return [f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.hook_attn_out"]
    return [f"blocks.{layer}.hook_resid_mid"]


def expert_count(bridge) -> int:
    """How many expert MLPs a router chooses from (Mixtral, Qwen-MoE, OLMoE); 0 for a dense MLP."""
    if not has_hook(bridge, "blocks.0.mlp.hook_router_scores"):
        return 0
    config = getattr(bridge, "original_model", None)
    config = getattr(config, "config", None)
    for name in ("num_local_experts", "num_experts", "n_routed_experts"):
        count = getattr(config, name, None)
        if isinstance(count, int) and count > 0:
            return count
    return int(getattr(bridge.cfg, "num_experts", 0) or 0) or 1
