"""Causal tracing, fast: the reference algorithm's numbers with a fraction of its work.

Three observations remove most of the reference's cost (one full pass of S + 1 rows
per cell):

1. The clean row is the same in every pass, and so is everything the noised rows
   compute before the restored layer: both are computed once (a clean pass and a
   corrupted pass of S rows) and reused.
2. A restored run starts at the first restored layer from the corrupted run's
   residual stream (`start_at_layer`); the blocks before it are not run at all. A
   restored block output is the next block's input, so those runs start one later;
   so do MLP windows, whose first block changes only the restored token's output.
3. Under causal attention a restored state at token t changes nothing before t.
   Restored runs compute only positions t..end, with the corrupted run's keys and
   values for positions < t passed in as a KV cache, and project onto the vocabulary
   only the positions that score the target.

Cells of one token row are batched, with each cell's S noised rows side by side. Where
the blocks can be run by hand (plain rotary attention: Llama, Mistral, Qwen2, Gemma,
Mixtral; joined.py), each cell joins the row's pass at its own entry layer, restorations
are writes between sublayers, and the last block runs only at the scored positions.
Elsewhere the passes go through the bridge: a hook per restored layer writes the clean
state into the rows of the cells that restore that layer, and a pass starts at its
earliest cell's layer, so which cells share a pass is chosen by a cost model (fixed
costs per pass and per block against blocks run for nothing).

flops.py counts the arithmetic against the peer's: on SmolLM2 a quarter of it; joined
passes run exactly a pass per cell's, grouped passes through the bridge about 9% more.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from workbench.batching import cheapest_split
from workbench.hooks.keeping import keeping
from workbench.hooks.kv_cache import check_kv_cache, logits_and_cache, prefix_cache
from workbench.hooks.partial_run import logits_from_layer
from workbench.models import LoadedModel
from workbench.models.shape import parallel_blocks
from workbench.progress import Progress

from .flops import RestoredPass
from .joined import JoinedBlocks, JoinedCell
from .noise import SubjectNoise, subject_noise
from .request import TraceRequest
from .scoring import KINDS, RESTORED_HOOK, restored_layers, target_probability

# The cost of a restored pass through the bridge in units of one row-position through one block: each block
# run adds a fixed cost on top of its rows x positions, and each pass one more (Python,
# hooks, the KV prefix). Measured on SmolLM2 on 2 CPU cores: about 3.5 ms per block and
# 10 ms per pass, against 0.049 ms per row-position-block.
BLOCK_OVERHEAD = 70
PASS_OVERHEAD = 200
MAX_LOGIT_BYTES = 384 << 20  # bound on one pass's logits
# Bound on the largest intermediate of a joined pass (an MLP's hidden layer, or the attention
# scores, kept in float32), which holds every cell of the pass: a long prompt on a big model
# would otherwise take gigabytes per tensor.
MAX_ACTIVATION_BYTES = 1 << 30

logger = logging.getLogger(__name__)


@dataclass
class TraceScores:
    scores: dict[str, np.ndarray]  # kind -> [n_tokens, n_layers] P(target) with that cell restored
    high_score: float  # P(target) on the clean prompt
    low_score: float  # mean P(target) over the noised samples, nothing restored
    noise: float
    samples: int
    seconds: dict[str, float] = field(default_factory=dict)
    passes: list[RestoredPass] = field(default_factory=list)  # the restored passes run, for counting their arithmetic (flops.py)


@dataclass
class _Baselines:
    """What every restored pass reuses: the clean states and the corrupted run."""

    clean: dict[str, torch.Tensor]  # hook name -> [positions, d_model] of the clean run
    corrupted_resid_pre: list[torch.Tensor]  # per layer, then the final output: [S, positions, d_model]
    corrupted_kv: object  # the corrupted run's HF KV cache (S rows)
    corrupted_mlp: list[torch.Tensor] | None  # per layer [S, positions, d_model], when a restored MLP output can be added to the block's output
    block_mlp: object | None  # (layer, residual after attention) -> the block's MLP output, when a block decomposes so
    high: float
    low: float


def _baselines(model: LoadedModel, request: TraceRequest, noise: SubjectNoise, kinds: tuple[str, ...]) -> _Baselines:
    bridge = model.bridge
    device = next(bridge.parameters()).device
    n_layers = model.n_layers
    samples = noise.samples.shape[0]
    ids = torch.tensor([request.sequence], device=device)
    names = [RESTORED_HOOK[kind].format(layer) for kind in kinds for layer in range(n_layers)]
    clean: dict[str, torch.Tensor] = {}
    logits = bridge.run_with_hooks(ids, fwd_hooks=[(name, keeping(clean, name, copy=True)) for name in names], return_type="logits")
    high = float(target_probability(logits, request.target_ids, request.n_tokens - 1)[0])
    clean = {name: value[0] for name, value in clean.items()}

    resid_pre: dict[str, torch.Tensor] = {}
    hooks = [("hook_embed", noise.hook())]
    hooks += [(f"blocks.{layer}.hook_resid_pre", keeping(resid_pre, f"blocks.{layer}.hook_resid_pre", copy=True)) for layer in range(n_layers)]
    hooks.append((f"blocks.{n_layers - 1}.hook_resid_post", keeping(resid_pre, "final", copy=True)))
    parts: dict[str, torch.Tensor] = {}
    # Parallel blocks have no residual between attention and MLP, so no shortcut: nothing to keep.
    if ("mlp" in kinds or "attn" in kinds) and not parallel_blocks(bridge):
        # Every sample's MLP outputs are reused; the other parts serve only the check (one sample).
        for part, rows in (("hook_resid_mid", 1), ("hook_mlp_out", None), ("hook_attn_out", 1)):
            hooks += [(f"blocks.{layer}.{part}", keeping(parts, f"blocks.{layer}.{part}", rows, copy=True)) for layer in range(n_layers)]
    with bridge.hooks(fwd_hooks=hooks):
        logits, kv = logits_and_cache(bridge, ids.repeat(samples, 1))
    low = float(target_probability(logits, request.target_ids, request.n_tokens - 1).mean())
    entering = [resid_pre[f"blocks.{layer}.hook_resid_pre"] for layer in range(n_layers)] + [resid_pre["final"]]
    decomposes = bool(parts) and _blocks_decompose(bridge, parts, entering, n_layers)
    corrupted_mlp = [parts[f"blocks.{layer}.hook_mlp_out"] for layer in range(n_layers)] if decomposes and "mlp" in kinds else None
    block_mlp = _block_mlp(bridge) if decomposes and "attn" in kinds else None
    return _Baselines(clean, entering, kv, corrupted_mlp, block_mlp, high, low)


def _block_mlp(bridge):
    def mlp(layer: int, after_attention: torch.Tensor) -> torch.Tensor:
        block = bridge.blocks[layer]
        if after_attention.ndim == 2:  # [rows, d_model]: expert MLPs (Mixtral) take [batch, pos, d_model] only
            return block.mlp(block.ln2(after_attention[:, None]))[:, 0]
        return block.mlp(block.ln2(after_attention))

    return mlp


def _blocks_decompose(bridge, parts: dict[str, torch.Tensor], entering: list[torch.Tensor], n_layers: int) -> bool:
    """Whether, in the corrupted run, every block is input + attention output = residual
    after attention, and that + MLP(ln2(it)) = output. Only then can a window's first
    block be replaced by arithmetic on the restored token (not so with norms after the
    sublayers, or attention and MLP in parallel)."""
    mlp = _block_mlp(bridge)
    try:
        with torch.no_grad():
            for layer in range(n_layers):
                mid = parts.get(f"blocks.{layer}.hook_resid_mid")
                attn = parts.get(f"blocks.{layer}.hook_attn_out")
                out = parts.get(f"blocks.{layer}.hook_mlp_out")
                if mid is None or attn is None or out is None:
                    return False
                out = out[:1]
                checks = ((entering[layer][:1] + attn, mid), (mid + out, entering[layer + 1][:1]), (mlp(layer, mid), out))
                # Relative to each tensor's scale: recomputing on one sample rounds differently,
                # while a block that does not decompose misses by the size of its outputs.
                if not all(float((a - b).abs().max()) <= 1e-5 + 1e-4 * float(b.abs().max()) for a, b in checks):
                    return False
    except Exception:  # a block whose ln2 or MLP cannot be called alone
        return False
    return True


def _restore_rows(state: torch.Tensor, rows: torch.Tensor):
    """Hook writing the clean state into local position 0 (the restored token) of `rows`."""

    def restore(activation: torch.Tensor, hook=None) -> torch.Tensor:
        activation[rows, 0] = state.to(activation.dtype)
        return activation

    return restore


def _max_cells_per_pass(model: LoadedModel, samples: int, scored_positions: int) -> int:
    return max(1, MAX_LOGIT_BYTES // max(1, samples * scored_positions * int(model.cfg.d_vocab) * 4))


def _max_joined_cells(model: LoadedModel, samples: int, position: int, n_positions: int) -> int:
    """Cells per joined pass whose widest intermediate stays under MAX_ACTIVATION_BYTES: per
    row and position, d_mlp hidden units, or a score per head and key."""
    width = n_positions - position
    per_position = max(int(model.cfg.d_mlp), model.n_heads * n_positions)
    return max(1, MAX_ACTIVATION_BYTES // max(1, samples * width * per_position * 4))


def _group_cells(entries: list[int], rows_per_cell: int, positions: int, n_layers: int, max_cells: int) -> list[tuple[int, int]]:
    """Split cells, sorted by entry layer, into passes [i, j) of least modelled cost.

    A pass starts at its earliest cell's entry, so a cell batched with an earlier one
    runs the blocks in between for nothing; separate passes pay the fixed costs again.
    Dynamic programming over the split points finds the cheapest trade-off.
    """
    def cost(i: int, j: int) -> float:
        return PASS_OVERHEAD + (n_layers - entries[i]) * (BLOCK_OVERHEAD + (j - i) * rows_per_cell * positions)

    return cheapest_split(len(entries), max_cells, cost)


def _entry_layer(kind: str, layer: int, restored: range, base: _Baselines) -> int:
    """The block a cell's restored run starts at. A restored residual stream (a block's
    output) is simply the input of the next block. In the first block of a window only
    the restored token's output changes (the other positions' keys and values come
    from the block's input), so where blocks decompose the run starts after it, with
    that token's output computed from its parts: the corrupted output plus the restored
    MLP difference, or the corrupted input plus the restored attention output plus the
    block's MLP of that."""
    if kind == "resid" or (kind == "mlp" and base.corrupted_mlp is not None) or (kind == "attn" and base.block_mlp is not None):
        return restored.start + 1
    return restored.start


def _entering_residual(kind: str, entry: int, restored: range, base: _Baselines, position: int) -> torch.Tensor:
    """The residual [samples, positions from the restored token, d_model] a cell's run enters
    its entry block with: the corrupted run's, and where the entry is after the cell's first
    restored block (which is then not run), that block's restored effect at the token."""
    residual = base.corrupted_resid_pre[entry][:, position:].clone()
    if entry > restored.start:
        name = RESTORED_HOOK[kind].format(entry - 1)
        if kind == "resid":
            residual[:, 0] = base.clean[name][position]
        elif kind == "mlp":
            residual[:, 0] += base.clean[name][position] - base.corrupted_mlp[entry - 1][:, position]
        else:
            after_attention = base.corrupted_resid_pre[entry - 1][:, position] + base.clean[name][position]
            residual[:, 0] = after_attention + base.block_mlp(entry - 1, after_attention)
    return residual


def _joined_cell(kind: str, entry: int, restored: range, base: _Baselines, position: int) -> JoinedCell:
    part = None if kind == "resid" else kind  # a restored block output is a later block's input: no write
    writes = {(layer, part): base.clean[RESTORED_HOOK[kind].format(layer)][position] for layer in restored if layer >= entry} if part else {}
    return JoinedCell(entry, _entering_residual(kind, entry, restored, base, position), writes)


def _bridge_pass(model: LoadedModel, base: _Baselines, chunk: list, position: int, samples: int, first_scored: int) -> torch.Tensor:
    """The logits of a chunk of cells (sorted by entry layer) in one pass through the bridge,
    from the first cell's entry layer on; a hook per restored layer writes the clean state."""
    bridge = model.bridge
    start = chunk[0][0]
    residual = base.corrupted_resid_pre[start][:, position:].repeat(len(chunk), 1, 1)
    restore_at: dict[str, list[int]] = {}
    for index, (entry, kind_index, _, restored) in enumerate(chunk):
        kind = KINDS[kind_index]
        if entry == start:
            residual[index * samples : (index + 1) * samples] = _entering_residual(kind, entry, restored, base, position)
        for layer in restored:
            if layer >= start:
                restore_at.setdefault(RESTORED_HOOK[kind].format(layer), []).append(index)
    hooks = []
    for name, indices in restore_at.items():
        rows = torch.tensor([i * samples + s for i in indices for s in range(samples)], device=residual.device)
        hooks.append((name, _restore_rows(base.clean[name][position], rows)))
    # The corrupted run's keys and values before the restored token, one copy per cell
    # (rows are cell-major, sample-minor).
    cache = prefix_cache(base.corrupted_kv, position, len(chunk)) if start < model.n_layers else None
    return logits_from_layer(bridge, residual, start, fwd_hooks=hooks, past_key_values=cache, select=lambda normed: normed[:, first_scored:])


def _trace_token_row(
    model: LoadedModel,
    request: TraceRequest,
    base: _Baselines,
    kinds: tuple[str, ...],
    position: int,
    window: int,
    samples: int,
    blocks: JoinedBlocks | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float], list[RestoredPass]]:
    """P(target) for the cells (position, every layer) of every kind, the seconds spent on
    each kind, and the passes run. The kinds share passes: their cells at one token need
    the same positions and KV prefix, and more cells to choose from make groups that waste less.
    A pass's time is charged to the kinds in proportion to their cells in it. blocks: the
    blocks by hand, when the trace found them to give the bridge's numbers (joined.py)."""
    n_layers = model.n_layers
    cells = []
    for kind in kinds:
        for layer in range(n_layers):
            restored = restored_layers(kind, layer, n_layers, window)
            cells.append((_entry_layer(kind, layer, restored, base), KINDS.index(kind), layer, restored))
    cells.sort()
    positions = len(request.sequence) - position
    max_cells = _max_cells_per_pass(model, samples, len(request.target_ids))
    first_scored = request.n_tokens - 1 - position
    row_scores = {kind: np.zeros(n_layers, dtype=np.float32) for kind in kinds}
    seconds = {kind: 0.0 for kind in kinds}
    passes = []
    if blocks is not None:
        # Cells join the pass at their own entry layer, so grouping wastes nothing: one pass per
        # row, split only to bound the logits and the intermediates.
        step = min(max_cells, _max_joined_cells(model, samples, position, len(request.sequence)))
        groups = [(first, min(first + step, len(cells))) for first in range(0, len(cells), step)]
    else:
        groups = _group_cells([c[0] for c in cells], samples, positions, n_layers, max_cells)
    for first, stop in groups:
        started = time.perf_counter()
        chunk = cells[first:stop]
        if blocks is not None:
            logits = blocks.logits([_joined_cell(KINDS[k], entry, restored, base, position) for entry, k, _, restored in chunk], first_scored)
        else:
            logits = _bridge_pass(model, base, chunk, position, samples, first_scored)
        probability = target_probability(logits, request.target_ids, 0)
        per_cell = probability.view(len(chunk), samples).mean(-1)
        for (_, kind_index, layer, _), value in zip(chunk, per_cell.tolist()):
            row_scores[KINDS[kind_index]][layer] = value
        elapsed = time.perf_counter() - started
        for _, kind_index, _, _ in chunk:
            seconds[KINDS[kind_index]] += elapsed / len(chunk)
        passes.append(RestoredPass(position, tuple(cell[0] for cell in chunk), samples, logits.shape[1], joined=blocks is not None))
    return row_scores, seconds, passes


def causal_trace(
    model: LoadedModel,
    token_ids: list[int],
    subject_range: tuple[int, int],
    target_ids: list[int],
    kinds=KINDS,
    samples: int = 10,
    noise: float | None = None,
    window: int = 10,
    seed: int = 1,
    noise_scale: float = 3.0,
):
    """Generator: yields Progress per token row (all kinds together); returns TraceScores.

    noise: the noise level; None or 0 takes noise_scale × the std of the subject's embeddings.
    """
    request = TraceRequest(list(token_ids), tuple(subject_range), list(target_ids))
    corruption = subject_noise(model, request, samples, noise or 0.0, noise_scale, seed)
    if model.engine.name != "bridge":  # whole passes with writes, on any engine
        from .engine_trace import trace_on_engine  # it builds on this module's TraceScores

        return (yield from trace_on_engine(model, request, corruption, tuple(kinds), window))
    return (yield from trace_with_noise(model, request, corruption, tuple(kinds), window))


def trace_with_noise(model: LoadedModel, request: TraceRequest, noise: SubjectNoise, kinds: tuple[str, ...], window: int = 10):
    samples = noise.samples.shape[0]
    scores = {kind: np.zeros((request.n_tokens, model.n_layers), dtype=np.float32) for kind in kinds}
    # Before the corrupted pass: it is the pass whose cache later passes read.
    check_kv_cache(model.bridge)
    with torch.inference_mode():
        started = time.perf_counter()
        base = _baselines(model, request, noise, kinds)
        # The clean and corrupted passes serve every kind; each kind is charged its share.
        seconds = {kind: (time.perf_counter() - started) / len(kinds) for kind in kinds}
        passes: list[RestoredPass] = []
        by_hand: bool | None = None  # whether blocks by hand give the bridge's numbers: checked on the first row traced
        for position in range(request.n_tokens):
            if position < request.subject_range[0]:
                # The noise starts at the subject: earlier states are the same in both runs.
                for kind in kinds:
                    scores[kind][position] = base.low
            else:
                blocks = None
                if by_hand is not False:
                    blocks = JoinedBlocks.for_token(model.bridge, base.corrupted_resid_pre, base.corrupted_kv, position)
                    if by_hand is None:
                        by_hand = blocks is not None and blocks.check(base.corrupted_resid_pre, request.n_tokens - 1 - position)
                        if not by_hand:
                            logger.info("causal tracing runs its restored passes through the bridge: blocks by hand do not give its numbers here")
                    blocks = blocks if by_hand else None
                rows, spent, ran = _trace_token_row(model, request, base, kinds, position, window, samples, blocks)
                passes += ran
                for kind in kinds:
                    scores[kind][position] = rows[kind]
                    seconds[kind] += spent[kind]
            yield Progress(position + 1, request.n_tokens, f"token {position + 1} of {request.n_tokens} ({', '.join(kinds)})")
    return TraceScores(scores, base.high, base.low, noise.level, samples, seconds, passes)
