"""Restored passes in which each cell joins at its own entry layer, the blocks run by hand.

Through the bridge, the cells of one token row batched in a pass all start at the
earliest entry among them, so a cell batched with an earlier one runs the blocks in
between for nothing (about a tenth of the fast path's arithmetic on SmolLM2), and the
cost model trades that waste against the fixed costs of more passes. Here the pass is a
loop over the blocks that the cells' rows join when it reaches their entry layer, so
every cell runs exactly its own blocks, and one pass serves the whole token row. The
last block computes its queries, output projection and MLP at the scored positions
alone, and restorations are writes between the sublayers instead of hooks.

The blocks are those of workbench.hooks.blocks_by_hand (plain rotary attention, op for
op as TransformerLens computes it), with the arguments the model hands them taken from
one pass of the model. That this gives the bridge's numbers is not assumed: before a
trace uses it, a run of the corrupted rows through every block by hand must end where
the bridge's corrupted run ended (`JoinedBlocks.check`); otherwise the trace runs its
passes through the bridge.
"""

from __future__ import annotations

import torch

from workbench.hooks.blocks_by_hand import attention_by_hand, block_arguments, is_plain_rotary_attention, norm_by_hand, takes_plain_arguments
from workbench.hooks.kv_cache import empty_cache, kv_tensors, prefix_cache
from workbench.hooks.partial_run import output_logits
from workbench.job_context import Interrupted, raise_if_cancelled

# How far the residual leaving the last block, by hand, may be from the bridge's (relative to
# its largest entry): the same arithmetic on other batch shapes rounds differently.
_TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}
_HALF_TOLERANCE = 1e-2


class _TiledPrefix:
    """The corrupted run's keys and values before the restored token, for each cell's rows
    (cell-major, sample-minor): what an HF cache's update returns, for a batch that grows as
    cells join."""

    def __init__(self, tensors: list[tuple[torch.Tensor, torch.Tensor]], position: int):
        self.tensors = [(keys[:, :, :position], values[:, :, :position]) for keys, values in tensors]
        self.position = position

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.position == 0:
            return keys, values
        prefix_keys, prefix_values = self.tensors[layer]
        copies = keys.shape[0] // prefix_keys.shape[0]
        return torch.cat([prefix_keys.repeat(copies, 1, 1, 1), keys], 2), torch.cat([prefix_values.repeat(copies, 1, 1, 1), values], 2)


class JoinedCell:
    """A cell's rows: the residual entering its entry layer [samples, positions, d_model], and
    its writes: (layer, "attn" or "mlp") -> the clean output at the restored token [d_model]."""

    def __init__(self, entry: int, residual: torch.Tensor, writes: dict[tuple[int, str], torch.Tensor]):
        self.entry, self.residual, self.writes = entry, residual, writes


class JoinedBlocks:
    """Every block of a model, run by hand on the positions from one restored token on."""

    def __init__(self, bridge, arguments: list[dict], corrupted_kv, position: int):
        self.bridge = bridge
        self.blocks = list(bridge.blocks)
        self.arguments = arguments
        self.prefix = _TiledPrefix(kv_tensors(corrupted_kv), position)

    @classmethod
    def for_token(cls, bridge, corrupted_resid_pre: list[torch.Tensor], corrupted_kv, position: int) -> JoinedBlocks | None:
        """The blocks for restored runs at `position`, or None when they cannot run by hand:
        attention other than plain rotary, a hook on a block, or masks that differ by row."""
        blocks = list(bridge.blocks)
        if not blocks or not all(is_plain_rotary_attention(getattr(block, "attn", None)) for block in blocks):
            return None
        residual = corrupted_resid_pre[0][:, position:]
        found = block_arguments(bridge, 0, residual, past_key_values=prefix_cache(corrupted_kv, position) or empty_cache())
        if found is None:
            return None
        arguments = []
        for block, given in zip(blocks, found[0]):
            if not takes_plain_arguments(given, block.attn.original_component.head_dim):
                return None
            mask = given["attention_mask"]
            # No padding: every row's mask is the same, and one row of it serves any batch.
            if not bool((mask == mask[:1]).all()) or any(t.shape[0] != 1 for t in given["position_embeddings"]):
                return None
            arguments.append({**given, "attention_mask": mask[:1]})
        return cls(bridge, arguments, corrupted_kv, position)

    def check(self, corrupted_resid_pre: list[torch.Tensor], first_scored: int) -> bool:
        """Whether the corrupted rows, run through every block by hand, leave the last block
        where the bridge's corrupted run left it, at the scored positions."""
        position = self.prefix.position
        try:
            got = self.residual_out([JoinedCell(0, corrupted_resid_pre[0][:, position:], {})], first_scored)
        except Interrupted:
            raise
        except Exception:  # noqa: BLE001 - any failure by hand means: use the bridge
            return False
        expected = corrupted_resid_pre[-1][:, position + first_scored :]
        scale = float(expected.abs().max().clamp(min=1e-6))
        tolerance = _TOLERANCE.get(expected.dtype, _HALF_TOLERANCE)
        return got.shape == expected.shape and bool(torch.isfinite(got).all()) and float((got - expected).abs().max()) <= tolerance * scale

    def logits(self, cells: list[JoinedCell], first_scored: int) -> torch.Tensor:
        """The logits [rows, scored positions, vocab] of the cells' rows, in the cells' order
        (which must be by entry layer)."""
        normed = self.bridge.ln_final(self.residual_out(cells, first_scored))
        return output_logits(self.bridge, self.bridge.unembed(normed))

    def residual_out(self, cells: list[JoinedCell], first_scored: int) -> torch.Tensor:
        """The residual leaving the last block [rows, scored positions, d_model]."""
        last = len(self.blocks) - 1
        x: torch.Tensor | None = None
        joined: list[JoinedCell] = []
        for layer, (block, arguments) in enumerate(zip(self.blocks, self.arguments)):
            joining = [cell for cell in cells if cell.entry == layer]
            if joining:
                x = torch.cat(([x] if x is not None else []) + [cell.residual for cell in joining])
                joined += joining
            if x is None:
                continue
            raise_if_cancelled()  # what the GUI's interrupt hook on every block does
            rows, width, d_model = x.shape
            scored_from = first_scored if layer == last else 0  # the last block's outputs: the scored positions alone
            queries = None
            if scored_from:
                queries = (torch.arange(rows, device=x.device)[:, None] * width + torch.arange(scored_from, width, device=x.device)).flatten()
            normed = norm_by_hand(block.ln1, x.reshape(rows * width, d_model))
            attended = attention_by_hand(block, arguments, self.prefix, normed, None, queries, (rows, width)).view(rows, width - scored_from, d_model)
            self._write(attended, joined, layer, "attn", scored_from)
            middle = x[:, scored_from:] + attended
            out = block.mlp(norm_by_hand(block.ln2, middle))
            self._write(out, joined, layer, "mlp", scored_from)
            x = middle + out
        late = [cell.residual[:, first_scored:] for cell in cells if cell.entry >= len(self.blocks)]  # restored after the last block
        parts = ([x] if x is not None else []) + late
        return torch.cat(parts)

    @staticmethod
    def _write(output: torch.Tensor, joined: list[JoinedCell], layer: int, part: str, scored_from: int) -> None:
        """The clean output at the restored token (local position 0) into the rows of the cells
        that restore this sublayer; beyond the scored positions it reaches nothing."""
        if scored_from:
            return
        row = 0
        for cell in joined:
            samples = cell.residual.shape[0]
            state = cell.writes.get((layer, part))
            if state is not None:
                output[row : row + samples, 0] = state.to(output.dtype)
            row += samples
