"""Running the model from one block's input, for passes that change only later layers.

Causal tracing restores states and ROME optimises an MLP output: what the model computes
before the changed layer is the same on every pass, so such passes start at that layer
from a residual stream computed once. The bridge's own `start_at_layer` still executes
the earlier blocks and discards their output; here they are not run at all.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch


@contextmanager
def skipping_blocks_before(bridge, start: int):
    """Run the blocks before `start` as the identity while the context is open."""
    skipped = list(bridge.blocks)[:start]
    for block in skipped:
        # Set in the instance __dict__: BlockBridge forwards attribute writes to the HF module.
        block.__dict__["forward"] = _identity
    try:
        yield
    finally:
        for block in skipped:
            block.__dict__.pop("forward", None)


def _identity(hidden_states=None, *args, **kwargs):
    return hidden_states if hidden_states is not None else kwargs["hidden_states"]


def select_hook(select: Callable[[torch.Tensor], torch.Tensor]):
    """A hook for `unembed.hook_in` that keeps only the positions whose logits are wanted:
    projecting every position onto the vocabulary costs as much as several blocks."""
    return ("unembed.hook_in", lambda activation, hook=None: select(activation))


def decode_residual(bridge, residual: torch.Tensor) -> torch.Tensor:
    """Logits of a residual stream [batch, pos, d_model] made the way the model's own output
    is: final norm, unembedding, then the family's transform of the logits (Gemma 2's final
    soft cap, Granite's and Cohere's scaling), which TransformerLens applies after the
    unembedding module, so `unembed(ln_final(x))` alone misses it. A residual read back from
    the store (float32) is cast to the model's dtype first (bfloat16 and float16 models)."""
    residual = residual.to(next(bridge.parameters()).dtype)
    return output_logits(bridge, bridge.unembed(bridge.ln_final(residual)))


def output_logits(bridge, logits: torch.Tensor) -> torch.Tensor:
    """The family's transform of the unembedding's output (identity for most families)."""
    transform = getattr(getattr(bridge, "adapter", None), "apply_output_logits_transform", None)
    if transform is not None:
        return transform(logits)
    cap = getattr(bridge.cfg, "output_logits_soft_cap", None)  # TransformerLens before the adapter hook
    return torch.tanh(logits / cap) * cap if cap and cap > 0 else logits


def logits_from_layer(
    bridge,
    residual: torch.Tensor,
    start: int,
    *,
    fwd_hooks=(),
    past_key_values=None,
    select: Callable[[torch.Tensor], torch.Tensor] | None = None,
    **forward_kwargs,
) -> torch.Tensor:
    """Logits of a pass that enters block `start` with `residual` [batch, pos, d_model].

    start == n_layers runs only the final norm and the unembedding (no hook runs then).
    select maps the unembedding's input [batch, pos, d_model] to the positions whose
    logits are wanted (see select_hook). forward_kwargs (attention_mask, position_ids)
    go to the bridge's forward.
    """
    if start >= len(bridge.blocks):
        normed = bridge.ln_final(residual)
        return output_logits(bridge, bridge.unembed(select(normed) if select is not None else normed))
    hooks = list(fwd_hooks)
    if select is not None:
        hooks.append(select_hook(select))
    with skipping_blocks_before(bridge, start), bridge.hooks(fwd_hooks=hooks):
        return bridge(residual, start_at_layer=start, past_key_values=past_key_values, return_type="logits", **forward_kwargs)
