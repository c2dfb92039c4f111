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

# One copy of how the model's own logits are made, kept with the bridge engine; imported here by its
# old name for the passes below and the analyses that decode residuals.
from ..engines.bridge import decode_residual, output_logits

__all__ = ["decode_residual", "logits_from_layer", "output_logits", "run_blocks", "select_hook", "skipping_blocks_before"]


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


class _BlocksDone(Exception):
    """Raised after the last block of a pass run for what it leaves in caches and hooks."""


def run_blocks(bridge, *args, **kwargs) -> None:
    """bridge(*args, **kwargs) up to the end of its last block, for what the pass leaves in
    caches and hooks: the final norm and the unembedding (113 MB of weights to stream for
    SmolLM2, even for one position) are not run."""

    def stop(_module, _args, _output):
        raise _BlocksDone

    handle = bridge.blocks[len(bridge.blocks) - 1].register_forward_hook(stop)
    try:
        bridge(*args, **kwargs)
    except _BlocksDone:
        pass
    finally:
        handle.remove()


def select_hook(select: Callable[[torch.Tensor], torch.Tensor]):
    """A hook for `unembed.hook_in` that keeps only the positions whose logits are wanted:
    projecting every position onto the vocabulary costs as much as several blocks."""
    return ("unembed.hook_in", lambda activation, hook=None: select(activation))


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
