"""Batched activation patching: many patched runs in one forward pass.

`transformer_lens.patching` runs the model once per cell. Here every cell of one layer
becomes one row of a batch of copies of the corrupted prompt, and a single hook patches
row i with cell i of the clean activation, so the rows are exactly the runs TransformerLens
would make (the rows never interact: attention is within a sequence), in a few passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from .targets import PatchTarget

# Logits and activations of one patched pass stay within this; more cells take more passes.
MEMORY_BUDGET_BYTES = 512 << 20
# Beyond a few dozen rows a CPU forward pass gains nothing per row, and cancelling waits for it.
MAX_BATCH = 64


def chunk_size(cfg, n_positions: int, max_batch: int = MAX_BATCH) -> int:
    """Rows per forward pass: the logits, one layer's attention and MLP activations fit the budget."""
    d_mlp = int(getattr(cfg, "d_mlp", None) or 4 * cfg.d_model)
    per_row = 4 * n_positions * (2 * int(cfg.d_vocab) + 3 * int(cfg.n_heads) * n_positions + 4 * d_mlp + 8 * int(cfg.d_model))
    return max(1, min(max_batch, MEMORY_BUDGET_BYTES // per_row))


def unchanged_cells(target: PatchTarget, cells: list[tuple[int, ...]], clean: torch.Tensor, corrupted: torch.Tensor) -> list[bool]:
    """Whether each cell's clean slice equals the corrupted one: patching it changes nothing.

    Before the first differing token the two runs are identical (the model is causal), so on
    an IOI pair most per-position cells need no run at all.
    """
    return [torch.equal(clean[target.index(cell)], corrupted[target.index(cell)]) for cell in cells]


def patched_metrics(
    bridge,
    corrupted_ids: torch.Tensor,
    target: PatchTarget,
    layer: int,
    cells: list[tuple[int, ...]],
    clean: torch.Tensor,
    metric: Callable[[torch.Tensor], torch.Tensor],
    chunk: int,
) -> Iterator[int]:
    """Generator: yields the number of cells finished after each forward pass; returns their metric values.

    corrupted_ids is [1, pos]; clean is the clean activation at the target's hook of this
    layer without its batch axis, on the model's device.
    """
    values = torch.empty(len(cells), dtype=torch.float64)
    hook_name = target.hook_name(layer)
    for start in range(0, len(cells), chunk):
        indices = [target.index(cell) for cell in cells[start : start + chunk]]

        def patch(activation: torch.Tensor, hook, indices=indices) -> torch.Tensor:
            for row, index in enumerate(indices):
                activation[(row, *index)] = clean[index].to(activation.dtype)
            return activation

        with torch.inference_mode():
            rows = corrupted_ids.expand(len(indices), -1)
            logits = bridge.run_with_hooks(rows, fwd_hooks=[(hook_name, patch)], return_type="logits")
            values[start : start + len(indices)] = metric(logits).double().cpu()
        del logits
        yield len(indices)
    return values
