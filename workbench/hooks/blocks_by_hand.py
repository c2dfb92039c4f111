"""A model's later blocks run one by one, by hand, with each MLP only where it is needed.

ROME's v* search runs the blocks after the edited one forward and backward about twenty
times per edit, on a dozen rows of which it reads the logits at a few positions. Two
things the bridge's pass cannot leave out are left out here:

- The MLP (three quarters of a block's arithmetic) at positions nothing that is read
  depends on. A position reaches later blocks only through attention, that is only the
  positions after it in its own row: behind a row's last read position nothing is needed
  (the KL prompt of v*, read at its subject and padded to the longest row, is most of
  such a row), and the last block's MLP is needed only where logits are read. Attention
  still runs at every position: a query that is read needs the keys and values of every
  position before it.
- The bridge's wrapping of the model and of each block (its hook points, the filtering of
  arguments, the HF model's mask and rotary set-up on every pass).

A block is run as the bridge's own submodules compute it, x + attn(ln1(x)), then
x + mlp(ln2(x)), with the arguments the model hands the block taken from a pass of the
model itself (block_arguments). The positions where the MLP runs are gathered into one
matrix together with the residual the MLP output is added to, and scattered back after it:
a row of a matrix product does not depend on the other rows (MKL on a CPU, given a dozen
rows), and the backward pass sums each position's gradient in the same order as the whole
block does, so the logits and gradients come out bit for bit those of the bridge's pass
(plugins/workbench_rome/tests/test_rome.py). That the blocks are such sequential pre-norm blocks is not
assumed: the caller compares a run by hand with the bridge's pass once per model and layer
(workbench.editing.delta_pass) and uses the bridge where they differ (Gemma 2's norms after
attention and MLP, parallel blocks, attention that wants other arguments than the block).
"""

from __future__ import annotations

from typing import Any

import torch

from ..job_context import raise_if_cancelled
from .partial_run import run_blocks, skipping_blocks_before

_PARTS = ("ln1", "attn", "ln2", "mlp")


def _hooked(blocks) -> bool:
    """Whether a hook is registered on a hook point of these blocks (a run by hand skips the
    blocks' own hook points and hands the MLP gathered positions)."""
    for block in blocks:
        for module in block.modules():
            if getattr(module, "fwd_hooks", None) or getattr(module, "bwd_hooks", None):
                return True
    return False


def block_arguments(bridge, start: int, residual: torch.Tensor, **forward_kwargs) -> tuple[list[dict[str, Any]], str | None] | None:
    """The keyword arguments the model hands blocks start.. in a pass that enters block
    `start` with `residual` [batch, pos, d_model]; forward_kwargs (past_key_values,
    attention_mask, position_ids) go to the bridge's forward as in that pass. Every block
    is the identity in the pass, and it ends after the last one: it costs the model's set-up
    of masks and positions.

    Returns (one dict per block, without the cache; the name under which the blocks receive
    the cache passed as past_key_values, or None without one). None when these blocks
    cannot be run by hand: a block without ln1/attn/ln2/mlp, a hook on one of them, or a
    cache that does not reach the blocks as it was passed.
    """
    from transformers.cache_utils import Cache

    blocks = list(bridge.blocks)[start:]
    if not blocks or not all(isinstance(getattr(block, part, None), torch.nn.Module) for block in blocks for part in _PARTS) or _hooked(blocks):
        return None
    cache = forward_kwargs.get("past_key_values")
    captured: list[dict[str, Any] | None] = [None] * len(blocks)

    def grab(index: int):
        def hook(_module, args, kwargs):
            captured[index] = dict(kwargs, hidden_states=args[0] if args else kwargs.get("hidden_states"))

        return hook

    handles = [block.register_forward_pre_hook(grab(index), with_kwargs=True) for index, block in enumerate(blocks)]
    try:
        with torch.no_grad(), skipping_blocks_before(bridge, len(bridge.blocks)):
            run_blocks(bridge, residual, start_at_layer=start, return_type=None, **forward_kwargs)
    finally:
        for handle in handles:
            handle.remove()
    arguments, names = [], set()
    for kwargs in captured:
        if kwargs is None or kwargs.pop("hidden_states", None) is None:
            return None
        for name, value in list(kwargs.items()):
            if cache is not None and value is cache:
                names.add(name)
                del kwargs[name]
            elif isinstance(value, Cache):  # a cache the model made for itself would grow on every run
                return None
        arguments.append(kwargs)
    if cache is not None and len(names) != 1:
        return None
    return arguments, next(iter(names), None)


def _norm(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the bridge's norm returns, without its hook points: on its native path with no
    hook registered it computes the hooks' values (scale, normalized) and then returns the HF
    module's own output, which this computes alone."""
    module = getattr(norm, "original_component", None)
    if getattr(norm, "use_native_layernorm_autograd", False) and isinstance(module, torch.nn.Module):
        out = module(x)
        return out if out.dtype == x.dtype else out.to(x.dtype)
    return norm(x)


class BlocksByHand:
    """Blocks start.. of a bridge, run on the residual entering block `start` with the
    arguments block_arguments took from a pass of the same shape."""

    def __init__(self, bridge, start: int, arguments: list[dict[str, Any]], cache_name: str | None):
        self.blocks = list(bridge.blocks)[start:]
        self.arguments = arguments
        self.cache_name = cache_name

    def run(self, x: torch.Tensor, cache, mlp_rows: list[torch.Tensor | None]) -> torch.Tensor:
        """The residual leaving the last block. cache: a new HF cache of the prefix for each
        run (the blocks append to it). mlp_rows: per block, the positions [batch * pos] where
        its MLP runs (None: everywhere, none: nowhere); elsewhere the block adds attention alone."""
        for block, arguments, rows in zip(self.blocks, self.arguments, mlp_rows):
            raise_if_cancelled()  # what the GUI's interrupt hook on every block does
            if self.cache_name is not None:
                arguments = {**arguments, self.cache_name: cache}
            attended = block.attn(hidden_states=_norm(block.ln1, x), **arguments)
            x = x + (attended[0] if isinstance(attended, tuple) else attended)
            if rows is None:
                x = x + block.mlp(_norm(block.ln2, x))
            elif len(rows):
                flat = x.reshape(-1, x.shape[-1])
                gathered = flat.index_select(0, rows)
                x = flat.index_copy(0, rows, gathered + block.mlp(_norm(block.ln2, gathered))).view_as(x)
        return x
