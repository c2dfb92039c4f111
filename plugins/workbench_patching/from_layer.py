"""Patched runs that start where the patch is: the fast path on TransformerBridge.

Patching a cell at layer L changes nothing the model computes before layer L, and, the
model being causal, nothing at positions before the first one whose clean and corrupted
values differ in that cell (its start: the cell's position, or for a head's activation
at every position the first one that differs). So a patched run enters block L with the
corrupted run's residual stream at positions start.., with the corrupted run's keys and
values of the earlier positions as a KV-cache prefix (as causal tracing's fast path does,
through workbench.hooks.partial_run and kv_cache), and only the last position is
projected onto the vocabulary. Its metric is that of a whole patched pass (the tests
compare this path with the engine seam's on every target) for a fraction of the work.

Rows of one pass may patch cells of several layers and starts: the pass enters at the
earliest layer and position among them, so a cell batched with an earlier one runs blocks
and positions for nothing, and a separate pass pays the fixed costs of a pass and of each
block again. Which cells share a pass is chosen by dynamic programming over a cost model.

The bridge runs the model directly here, not through the engine seam: the seam has no
partial runs, and on a remote engine (NDIF) a pass is a round trip whatever its length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from workbench.batching import cheapest_split
from workbench.engines import Engine, EngineRun, Write
from workbench.engines.base import parse_hook, replace_positions
from workbench.engines.bridge import BridgeEngine
from workbench.hooks.keeping import keeping
from workbench.hooks.kv_cache import KVCacheUnsupported, check_kv_cache, logits_and_cache, prefix_cache
from workbench.hooks.partial_run import logits_from_layer, output_logits

from .patcher import cell_writes
from .targets import PatchTarget

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

# The cost of a pass in units of one row at one position through one block: each block
# run adds a fixed cost (Python, hooks, reading the block's weights) besides its rows x
# positions, and each pass one more (the KV prefix, setting up the run). Fitted to the
# passes of patching runs on SmolLM2 (2 threads, idle CPU; the IOI and Eiffel pairs):
# 1.7-2.9 ms per block and 2.4-8 ms per pass against 0.044-0.053 ms per
# row-position-block. The plan is not sensitive to them: 400 and 40 ran within 5%.
BLOCK_OVERHEAD = 50
PASS_OVERHEAD = 150


def bridge_for_runs_from_layer(engine: Engine) -> TransformerBridge | None:
    """The bridge to run patched passes from their layer on, or None where they cannot: on
    another engine, or where a pass reading a KV-cache prefix is not proven to equal a whole
    pass (kv_cache.check_kv_cache)."""
    if not isinstance(engine, BridgeEngine):
        return None
    try:
        check_kv_cache(engine.bridge)
    except KVCacheUnsupported:
        return None
    return engine.bridge


@dataclass
class CorruptedRun:
    """The corrupted pass, kept for the patched runs: the bridge that ran it, its result as the
    engine seam gives it (last-position logits, the targets' activations), the residual stream
    entering each block [1, pos, d_model] and its keys and values (an HF cache)."""

    bridge: TransformerBridge
    run: EngineRun
    resid_pre: list[torch.Tensor]
    kv: Any


def corrupted_pass(bridge, ids: torch.Tensor, hooks: list[str]) -> CorruptedRun:
    """One pass of the corrupted prompt [1, pos] that reads `hooks` and keeps what patched runs start from."""
    n_layers = len(bridge.blocks)
    kept: dict[str, torch.Tensor] = {}
    entering = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
    # Copies, as causal tracing keeps them: what every later pass starts from must share no
    # storage with tensors the model may still change in place.
    fwd_hooks = [(name, keeping(kept, name, copy=True)) for name in dict.fromkeys(entering + hooks)]
    with bridge.hooks(fwd_hooks=fwd_hooks):
        logits, kv = logits_and_cache(bridge, ids)
    return CorruptedRun(bridge, EngineRun(logits[:, -1:], {name: kept[name] for name in hooks}), [kept[name] for name in entering], kv)


def start_position(target: PatchTarget, cell: tuple[int, ...], clean: torch.Tensor, corrupted: torch.Tensor) -> int:
    """The first position at which patching the cell writes a value the corrupted run does not
    already hold. clean and corrupted are one layer's activation without batch axis."""
    if "position" in target.axes:
        return cell[0]
    index = target.index(cell)
    # A head's slice at every position: [pos, d_head] of hook_z, [query, key] of a pattern.
    # Cells whose slices are equal are never run (patcher.unchanged_cells), so one differs.
    differs = (clean[index] != corrupted[index]).flatten(1).any(1)
    return int(differs.nonzero()[0, 0])


def group_passes(cells: list[tuple[int, int]], n_layers: int, n_positions: int, max_rows: int) -> list[tuple[int, int]]:
    """Split cells (start, layer), sorted, into passes [i, j) of least modelled cost.

    A pass enters at the earliest layer and position among its cells: sorted by start, the
    first cell's start, and the least layer found while extending the pass backwards.
    """
    entry = [n_layers]  # the least layer of the group being costed, kept as it grows backwards

    def cost(i: int, j: int) -> float:
        entry[0] = cells[i][1] if i == j - 1 else min(entry[0], cells[i][1])
        return PASS_OVERHEAD + (n_layers - entry[0]) * (BLOCK_OVERHEAD + (j - i) * (n_positions - cells[i][0]))

    return cheapest_split(len(cells), max_rows, cost)


def planned_passes(cells: list[tuple[int, int]], n_layers: int, n_positions: int, max_rows: int) -> list[tuple[float, int]]:
    """The work of patching cells (start, layer) as Cost counts it: per pass, (the fraction of
    the blocks it runs x its rows, the positions it computes)."""
    cells = sorted(cells)
    work = []
    for i, j in group_passes(cells, n_layers, n_positions, max_rows):
        entry = min(layer for _, layer in cells[i:j])
        work.append(((n_layers - entry) / n_layers * (j - i), n_positions - cells[i][0]))
    return work


def _writer(position_axis: int, write: Write) -> Callable[..., torch.Tensor]:
    def hook(activation: torch.Tensor, hook=None) -> torch.Tensor:
        return replace_positions(activation, position_axis, write)

    return hook


def _local_writes(target: PatchTarget, rows: list[tuple[int, tuple[int, ...]]], clean: dict[int, torch.Tensor], start: int) -> list[tuple[str, Callable[..., torch.Tensor]]]:
    """Hooks writing the cells of a pass that computes positions start.. only: the same writes
    as a whole pass (patcher.cell_writes), on positions counted from start."""
    # Vector hooks are [pos, ...] without batch axis; patterns [head, query, key].
    axis = 1 if target.name == "head_pattern" else 0
    local_clean = {layer: clean[layer].narrow(axis, start, clean[layer].shape[axis] - start) for layer, _ in rows}
    shifted = [(layer, (cell[0] - start, *cell[1:]) if "position" in target.axes else cell) for layer, cell in rows]
    hooks = []
    for name, write in cell_writes(target, shifted, local_clean).items():
        hooks.append((name, _writer(parse_hook(name, len(clean)).position_axis, write)))
    return hooks


def last_position_logits(bridge, residual: torch.Tensor, entry: int, columns: list[int] | None, **pass_kwargs) -> torch.Tensor:
    """[rows, 1, columns] logits at the last position of a pass entering block `entry` (every
    column when None). Projecting a few columns skips reading the whole unembedding, which
    costs a pass about as much as a few blocks do; the family's transform of the logits is
    elementwise, so it applies to columns alike."""
    unembedding = bridge.unembed.original_component
    if columns is None or not isinstance(unembedding, torch.nn.Linear):
        logits = logits_from_layer(bridge, residual, entry, select=lambda normed: normed[:, -1:], **pass_kwargs)
        return logits if columns is None else logits[..., columns]
    kept: dict[str, torch.Tensor] = {}

    def keep_last(normed: torch.Tensor) -> torch.Tensor:
        kept["last"] = normed[:, -1:]
        return normed[:, :0]  # the bridge's own unembedding then projects nothing

    logits_from_layer(bridge, residual, entry, select=keep_last, **pass_kwargs)
    bias = unembedding.bias[columns] if unembedding.bias is not None else None
    return output_logits(bridge, torch.nn.functional.linear(kept["last"], unembedding.weight[columns], bias))


def patched_metrics_from_layer(
    base: CorruptedRun,
    target: PatchTarget,
    cells: list[tuple[int, tuple[int, ...]]],
    clean: dict[int, torch.Tensor],
    corrupted: dict[int, torch.Tensor],
    metric: Callable[[torch.Tensor], torch.Tensor],
    columns: list[int] | None,
    chunk: int,
) -> Iterator[tuple[int, int]]:
    """patcher.patched_metrics' contract, each pass starting at its cells' earliest layer and
    position. corrupted maps each layer to the corrupted activation at the target's hook;
    metric reads logits [rows, 1, columns] of the vocabulary columns given (None: all)."""
    bridge = base.bridge
    n_layers = len(bridge.blocks)
    n_positions = base.resid_pre[0].shape[1]
    starts = [start_position(target, cell, clean[layer], corrupted[layer]) for layer, cell in cells]
    order = sorted(range(len(cells)), key=lambda i: (starts[i], cells[i][0]))
    keys = [(starts[i], cells[i][0]) for i in order]
    values = torch.empty(len(cells), dtype=torch.float64)
    for first, stop in group_passes(keys, n_layers, n_positions, chunk):
        members = order[first:stop]
        rows = [cells[i] for i in members]
        start = keys[first][0]
        entry = min(layer for layer, _ in rows)
        with torch.inference_mode():
            residual = base.resid_pre[entry][:, start:].repeat(len(rows), 1, 1)
            hooks = _local_writes(target, rows, clean, start)
            cache = prefix_cache(base.kv, start, len(rows))
            logits = last_position_logits(bridge, residual, entry, columns, fwd_hooks=hooks, past_key_values=cache)
            values[members] = metric(logits).double().cpu()
        del logits
        yield len(rows), max(layer for layer, _ in rows)
    return values
