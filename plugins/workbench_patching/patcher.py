"""Batched activation patching: many patched runs in one forward pass, on any engine.

`transformer_lens.patching` runs the model once per cell. Here every cell becomes one row
of a batch of copies of the corrupted prompt, and one masked write per layer (the engine
seam's `Write(value, mask=...)`) puts the clean value into row i at cell i only, so the
rows are exactly the runs TransformerLens would make (the rows never interact: attention
is within a sequence). A pass holds up to `chunk` rows, taken from consecutive layers of
one target, so a target costs about cells / chunk passes, not one per layer: on a remote
engine each pass is a round trip. On TransformerBridge the runs start at their cell's layer
and position instead (from_layer.py), with these masked writes on the positions they run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from workbench.engines import Engine, RunRequest, Write

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


def cell_writes(target: PatchTarget, rows: list[tuple[int, tuple[int, ...]]], clean: dict[int, torch.Tensor]) -> dict[str, Write]:
    """The writes of one pass whose row i patches cell rows[i] = (layer, cell): per layer, the
    clean activation (without batch axis) with a mask that is True in row i at that cell only."""
    writes: dict[str, Write] = {}
    masks: dict[int, torch.Tensor] = {}
    for row, (layer, cell) in enumerate(rows):
        index = target.index(cell)
        if layer not in masks:
            value = clean[layer]
            # The mask spans the axes a cell indexes; the rest broadcast (a cell takes them whole).
            masks[layer] = torch.zeros((len(rows), *value.shape[: len(index)]) + (1,) * (value.dim() - len(index)), dtype=torch.bool, device=value.device)
        masks[layer][(row, *index)] = True
    for layer, mask in masks.items():
        writes[target.hook_name(layer)] = Write(clean[layer].unsqueeze(0), None, mask)
    return writes


def patched_metrics(
    engine: Engine,
    corrupted_ids: torch.Tensor,
    target: PatchTarget,
    cells: list[tuple[int, tuple[int, ...]]],
    clean: dict[int, torch.Tensor],
    metric: Callable[[torch.Tensor], torch.Tensor],
    chunk: int,
) -> Iterator[tuple[int, int]]:
    """Generator: after each forward pass yields (cells finished in it, the layer of its last
    cell); returns the metric values of every cell.

    cells are (layer, cell) of one target; corrupted_ids is [1, pos]; clean maps each layer
    to the clean activation at the target's hook without its batch axis, on the model's device.
    """
    values = torch.empty(len(cells), dtype=torch.float64)
    starts = list(range(0, len(cells), chunk))
    # On NDIF every pass of the target is one job; here the passes run one at a time.
    batches = [starts] if engine.remote else [[start] for start in starts]
    for batch in batches:
        requests = []
        for start in batch:
            rows = cells[start : start + chunk]
            requests.append(RunRequest(corrupted_ids.expand(len(rows), -1), writes=cell_writes(target, rows, clean), logit_positions=[-1]))
        with torch.inference_mode():
            outs = engine.run_many(requests)
            for start, out in zip(batch, outs):
                values[start : start + chunk] = metric(out.logits).double().cpu()
        del outs
        for start in batch:
            rows = cells[start : start + chunk]
            yield len(rows), rows[-1][0]
    return values
