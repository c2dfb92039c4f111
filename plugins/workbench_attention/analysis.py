"""Attention maps: every head's pattern summarised, one head (or a layer's mean) in full.

Patterns are read one layer at a time: from the activation store when it holds them
(nothing is recomputed), otherwise from one forward pass. The result keeps what the
report and the panel's first view need (a <= 32x32 thumbnail and a few numbers per
head, the selected pattern in full); the panel reads any other head lazily from the
store, one chunk per head.
"""

from __future__ import annotations

import numpy as np

from workbench.errors import InputError
from workbench.hooks.names import pattern_hooks
from workbench.plugin_api import AnalysisContext, Cost, Progress
from workbench.progress import sub_job

from .patterns import AVERAGES, SCALES, THUMBNAIL_SIZE, block_average, block_edges, first_column_blocks, head_statistics, position_labels, resolve_position
from .result import AttentionResult


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


def read_patterns(ctx: AnalysisContext, index: int, hooks: list[str], consume, step: int, total: int):
    """Generator: feed every layer's patterns of prompt `index` to consume(layer, patterns), yielding progress.

    The context hands them out one layer at a time: from the store when it holds them
    (captured into it first when the context fills it), else from one forward pass.
    """
    yield from sub_job(ctx.ensure_stored(hooks, index), step, 0, total, "capturing attention patterns into the store")
    for layer, (_, patterns) in enumerate(ctx.activations_by_layer(hooks, index)):
        consume(layer, patterns)
        yield Progress(step + layer + 1, total, f"summarised layer {layer}")


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
        other = ctx.for_prompts([compare_prompt])
        other_tokens = other.tokens(0)
        yield Progress(step, total, "reading the second prompt")
        yield from sub_job(other.ensure_stored(hooks, 0), step, 0, total, "capturing the second prompt's patterns")
        other_patterns = np.asarray(other.activations([hooks[layer]])[hooks[layer]], dtype=np.float32)  # only this layer
        yield Progress(step + n_layers, total, "read the second prompt")
        result.compare_prompt = compare_prompt
        result.compare_str_tokens = model.str_tokens(other_tokens)
        result.compare_pattern = (other_patterns.mean(0) if average == "layer" else other_patterns[head]).astype(np.float32)
        # The same destination index when the second prompt has it, else its last token.
        result.compare_destination = dest if dest < len(other_tokens) else len(other_tokens) - 1
    return result


def cost(ctx: AnalysisContext, **params) -> Cost:
    """One forward pass of the prompt; the patterns it stores grow as layers × heads × tokens²."""
    return Cost(((1, len(ctx.tokens(0))),), "tokens + layers × heads × tokens² (the patterns)")
