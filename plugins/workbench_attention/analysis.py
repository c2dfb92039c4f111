"""Attention maps: every head's pattern summarised, one head (or a layer's mean) in full.

Patterns are read one layer at a time: from the activation store when it holds them
(nothing is recomputed), otherwise from one forward pass. The result keeps what the
report and the panel's first view need (a <= 32x32 thumbnail and a few numbers per
head, the selected pattern in full); the panel reads any other head lazily from the
store, one chunk per head.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench.errors import InputError
from workbench.hooks import HookCatalog
from workbench.plugin_api import AnalysisContext, Progress

from .patterns import AVERAGES, SCALES, THUMBNAIL_SIZE, block_average, block_edges, first_column_blocks, head_statistics, position_labels, resolve_position
from .result import AttentionResult
from .store_access import pattern_hooks

# Reading every layer's patterns in one go costs layers * heads * n^2 * 4 bytes (1.1 GB
# for 1,024 tokens on SmolLM2). Above this budget an uncached prompt is summarised
# layer by layer inside a single forward pass instead.
IN_MEMORY_BUDGET_BYTES = 256 << 20


class _Accumulator:
    """Sums what the result keeps, layer by layer, over one or more prompts."""

    def __init__(self, n_layers: int, n_heads: int, length: int, layer: int, head: int, mean_of_layer: bool):
        self.length = length
        self.size = min(THUMBNAIL_SIZE, length)
        self.layer, self.head, self.mean_of_layer = layer, head, mean_of_layer
        self.thumbnails = np.zeros((n_layers, n_heads, self.size, self.size), dtype=np.float64)
        self.first_column = np.zeros((n_layers, n_heads, self.size), dtype=np.float64)
        self.stats: dict[str, np.ndarray] = {}
        self.selected = np.zeros((length, length), dtype=np.float64)
        self.n_heads = n_heads
        self.layers_seen: set[int] = set()

    def add(self, layer: int, patterns: np.ndarray) -> None:
        patterns = np.asarray(patterns, dtype=np.float32)
        if patterns.ndim != 3 or patterns.shape[0] != self.n_heads:
            raise ValueError(f"layer {layer} pattern has shape {patterns.shape}, expected [{self.n_heads}, n, n]")
        # Causal: the first `length` rows only read the first `length` sources, so cutting
        # a longer prompt to a shared length leaves every kept row a full distribution.
        patterns = patterns[:, : self.length, : self.length]
        self.thumbnails[layer] += block_average(patterns, self.size)
        self.first_column[layer] += first_column_blocks(patterns, self.size)
        for name, values in head_statistics(patterns).items():
            self.stats.setdefault(name, np.zeros(self.thumbnails.shape[:2]))[layer] += values
        if layer == self.layer:
            self.selected += patterns.mean(0) if self.mean_of_layer else patterns[self.head]
        self.layers_seen.add(layer)


def _ensure_stored(ctx: AnalysisContext, index: int, hooks: list[str], step: int = 0, total: int = 1):
    """Generator: capture the patterns into ctx's store when asked to fill it; returns whether stored."""
    found = ctx.stored(hooks, index)
    if found is not None:
        found[0].close()
        return True
    if not (ctx.fill_store and ctx.store_path is not None):
        return False
    from workbench.capture import capture_activations

    job = capture_activations(ctx.model, [ctx.prompts[index]], hooks, ctx.store_path, prepend_bos=ctx.prepend_bos)
    while True:
        try:
            progress = next(job)
        except StopIteration:
            break
        yield Progress(step, total, f"capturing attention patterns into the store ({progress.message})")
    found = ctx.stored(hooks, index)
    if found is not None:
        found[0].close()
    return found is not None


def _stream_patterns(ctx: AnalysisContext, index: int, hooks: list[str], consume) -> None:
    """One forward pass that hands each layer's patterns to consume(layer, [heads, n, n]) and keeps none."""
    specs = HookCatalog(ctx.model.bridge).resolve(hooks)

    def make_hook(layer: int):
        def summarise(tensor, hook):
            consume(layer, tensor[0].detach().float().cpu().numpy())

        return summarise

    ids = torch.tensor([ctx.tokens(index)], device=ctx.device)
    with torch.inference_mode():
        ctx.model.bridge.run_with_hooks(ids, fwd_hooks=[(spec.canonical, make_hook(spec.layer)) for spec in specs], return_type=None)


def read_patterns(ctx: AnalysisContext, index: int, hooks: list[str], consume, step: int, total: int):
    """Generator: feed every layer's patterns of prompt `index` to consume(layer, patterns), yielding progress.

    From the store (one layer in memory at a time) when it holds them, else all at once
    when that fits the budget, else streamed from one forward pass.
    """
    stored = yield from _ensure_stored(ctx, index, hooks, step, total)
    n = len(ctx.tokens(index))
    if stored:
        found = ctx.stored(hooks, index)
        if found is not None:
            store, hit = found
            ctx.reused_activations = True
            try:
                for layer, hook in enumerate(hooks):  # one layer in memory at a time
                    consume(layer, hit.run.read(hook, hit.prompt))
                    yield Progress(step + layer + 1, total, f"read layer {layer} from the store")
            finally:
                store.close()
            return
    n_heads = ctx.model.n_heads
    if len(hooks) * n_heads * n * n * 4 <= IN_MEMORY_BUDGET_BYTES:
        yield Progress(step, total, "running the model")
        acts = ctx.activations(hooks, index)
        for layer, hook in enumerate(hooks):
            consume(layer, acts[hook])
        yield Progress(step + len(hooks), total, "summarised every layer")
        return
    yield Progress(step, total, "running the model (layer by layer)")
    _stream_patterns(ctx, index, hooks, consume)
    yield Progress(step + len(hooks), total, "summarised every layer")


def run(
    ctx: AnalysisContext,
    layer: int = 0,
    head: int = 0,
    destination: int = -1,
    mask_first_token: bool = False,
    scale: str = "linear",
    average: str = "none",
    compare_prompt: str = "",
):
    model = ctx.model
    n_layers, n_heads, n_kv_heads = model.n_layers, model.n_heads, model.n_kv_heads
    if not 0 <= layer < n_layers:
        raise InputError(f"{model.name} has layers 0..{n_layers - 1}; there is no layer {layer}.", f"choose a layer from 0 to {n_layers - 1}")
    if not 0 <= head < n_heads:
        raise InputError(f"{model.name} has heads 0..{n_heads - 1}; there is no head {head}.", f"choose a head from 0 to {n_heads - 1}")
    if scale not in SCALES or average not in AVERAGES:
        raise InputError(f"Unknown option scale={scale!r} / average={average!r}.", f"scale: {', '.join(SCALES)}; average: {', '.join(AVERAGES)}")
    hooks = pattern_hooks(n_layers)
    indices = list(range(len(ctx.prompts))) if average == "prompts" else [0]
    token_lists = [ctx.tokens(i) for i in indices]
    length = min(len(t) for t in token_lists)
    dest = resolve_position(destination, length)
    compare = compare_prompt.strip() != ""
    total = len(indices) * n_layers + (n_layers if compare else 0) + 1

    acc = _Accumulator(n_layers, n_heads, length, layer, head, average == "layer")
    step = 0
    for index in indices:
        yield from read_patterns(ctx, index, hooks, acc.add, step, total)
        step += n_layers
    if len(acc.layers_seen) != n_layers:
        raise RuntimeError(f"patterns arrived for layers {sorted(acc.layers_seen)} only")
    count = float(len(indices))
    str_lists = [model.str_tokens(t) for t in token_lists]
    labels = str_lists[0][:length] if len(indices) == 1 else position_labels(str_lists, length)

    result = AttentionResult(
        str_tokens=labels,
        tokens=[int(t) for t in token_lists[0][:length]],
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        layer=layer,
        head=head,
        destination=dest,
        mask_first_token=bool(mask_first_token),
        scale=scale,
        average=average,
        n_prompts=len(indices),
        causal=getattr(model.cfg, "attention_dir", "causal") == "causal",
        thumbnails=(acc.thumbnails / count).astype(np.float32),
        thumbnail_edges=block_edges(length, acc.size),
        thumbnail_first_column=(acc.first_column / count).astype(np.float32),
        entropy_bits=(acc.stats["entropy_bits"] / count).astype(np.float32),
        first_token_weight=(acc.stats["first_token_weight"] / count).astype(np.float32),
        previous_token_weight=(acc.stats["previous_token_weight"] / count).astype(np.float32),
        max_weight=(acc.stats["max_weight"] / count).astype(np.float32),
        pattern=(acc.selected / count).astype(np.float32),
    )

    if compare:
        # The same head (or layer mean) on a second prompt, read like the first.
        other = AnalysisContext(model, [compare_prompt], prepend_bos=ctx.prepend_bos, store_path=ctx.store_path, fill_store=ctx.fill_store)
        other_tokens = other.tokens(0)
        yield Progress(step, total, "reading the second prompt")
        yield from _ensure_stored(other, 0, hooks, step, total)
        other_patterns = np.asarray(other.activations([hooks[layer]])[hooks[layer]], dtype=np.float32)  # only this layer
        yield Progress(step + n_layers, total, "read the second prompt")
        ctx.reused_activations = ctx.reused_activations or other.reused_activations
        result.compare_prompt = compare_prompt
        result.compare_str_tokens = model.str_tokens(other_tokens)
        result.compare_pattern = (other_patterns.mean(0) if average == "layer" else other_patterns[head]).astype(np.float32)
        # The same destination index when the second prompt has it, else its last token.
        result.compare_destination = dest if dest < len(other_tokens) else len(other_tokens) - 1
    return result
