"""The attention plugin's follow-up query: another head, a layer's mean, the mean over
prompts, or the same on a second prompt, of a result already computed (headless).

One head costs one read from the activation store (a chunk of one head of one prompt).
What the store lacks is captured into it first when the context fills it (every layer's
patterns, so the next switches are reads too), else computed with one forward pass.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import numpy as np

from workbench.errors import InputError
from workbench.hooks.names import pattern_hooks
from workbench.plugin_api import AnalysisContext, Progress

from .patterns import AVERAGES, position_labels
from .result import AttentionResult
from .store_access import StoredPatterns

# Stores opened by recent queries (per file and model): their index of prompts and their
# small cache of recent heads survive from one head switch to the next.
_OPEN: OrderedDict[tuple, StoredPatterns] = OrderedDict()
_TOKENS: OrderedDict[tuple, tuple[list[int], list[str]]] = OrderedDict()


def _stored_patterns(ctx: AnalysisContext) -> StoredPatterns | None:
    if ctx.store_path is None:
        return None
    key = (str(ctx.store_path), ctx.model.fingerprint, ctx.model.n_layers)
    if key not in _OPEN:
        _OPEN[key] = StoredPatterns(ctx.store_path, ctx.model.fingerprint, ctx.model.n_layers)
        while len(_OPEN) > 4:
            _OPEN.popitem(last=False)
    _OPEN.move_to_end(key)
    return _OPEN[key]


def forget_recent_heads() -> None:
    """Drop the cache of recently read heads (benchmarks time real reads)."""
    for stored in _OPEN.values():
        stored.forget_recent()


def _tokens(ctx: AnalysisContext, index: int) -> tuple[list[int], list[str]]:
    """Token ids and strings of prompt `index` (cached: a 1,024-token prompt is not tokenized per switch)."""
    key = (ctx.model.fingerprint, ctx.prepend_bos, ctx.prompts[index])
    if key not in _TOKENS:
        ids = ctx.tokens(index)
        _TOKENS[key] = (ids, ctx.model.str_tokens(ids))
        while len(_TOKENS) > 64:
            _TOKENS.popitem(last=False)
    return _TOKENS[key]


def _one(ctx: AnalysisContext, index: int, layer: int, head: int | None, step: int, total: int):
    """Generator: prompt `index`'s pattern of one head ([n, n]) or a layer's mean over heads."""
    ids, _ = _tokens(ctx, index)
    hooks = pattern_hooks(ctx.model.n_layers)
    stored = _stored_patterns(ctx)

    def read():
        if stored is None:
            return None
        values = stored.layer(ids, layer) if head is None else stored.head(ids, layer, head)
        return None if values is None else (values.mean(0) if head is None else values)

    found = read()
    if found is None and ctx.fill_store and stored is not None:
        yield Progress(step, total, "capturing every layer's patterns into the store")
        if (yield from ctx.ensure_stored(hooks, index)):
            found = read()
    if found is not None:
        ctx.note_reuse()
        return np.asarray(found, dtype=np.float32)
    yield Progress(step, total, "running the model")
    patterns = ctx.activations([hooks[layer]], index)[hooks[layer]]
    return np.asarray(patterns.mean(0) if head is None else patterns[head], dtype=np.float32)


def pattern(ctx: AnalysisContext, result: AttentionResult, layer: int = 0, head: int = 0, average: str = "none", compare_prompt: str = ""):
    """The result with another selection: layer/head (or the layer's mean, or the mean over
    the context's prompts) and, when compare_prompt is given, the same on that prompt."""
    if not 0 <= layer < result.n_layers:
        raise InputError(f"The result has layers 0..{result.n_layers - 1}; there is no layer {layer}.", f"choose a layer from 0 to {result.n_layers - 1}")
    if not 0 <= head < result.n_heads:
        raise InputError(f"The result has heads 0..{result.n_heads - 1}; there is no head {head}.", f"choose a head from 0 to {result.n_heads - 1}")
    if average not in AVERAGES:
        raise InputError(f"Unknown average {average!r}.", f"choose one of {', '.join(AVERAGES)}")
    if not ctx.prompts:
        raise InputError("The attention query needs the result's prompt.", "run the analysis on a prompt first")
    which = None if average == "layer" else head
    indices = list(range(len(ctx.prompts))) if average == "prompts" else [0]
    compare_prompt = compare_prompt.strip()
    total = len(indices) + (1 if compare_prompt else 0)
    patterns = []
    for step, index in enumerate(indices):
        patterns.append((yield from _one(ctx, index, layer, which, step, total)))
        yield Progress(step + 1, total, f"read prompt {index + 1} of {len(indices)}")
    strings = [_tokens(ctx, i)[1] for i in indices]
    if len(patterns) == 1:
        main, labels = patterns[0], strings[0]
    else:  # position by position over the prompts' shared length, as the analysis averages
        length = min(p.shape[0] for p in patterns)
        main = np.mean([p[:length, :length] for p in patterns], axis=0).astype(np.float32)
        labels = position_labels(strings, length)
    compare = dict(compare_prompt="", compare_str_tokens=[], compare_pattern=np.zeros((0, 0), dtype=np.float32), compare_destination=-1)
    if compare_prompt:
        other = ctx.for_prompts([compare_prompt])
        other_pattern = yield from _one(other, 0, layer, which, total - 1, total)
        destination = min(result.destination, other_pattern.shape[0] - 1)
        compare = dict(compare_prompt=compare_prompt, compare_str_tokens=_tokens(other, 0)[1], compare_pattern=other_pattern, compare_destination=destination)
        yield Progress(total, total, "read the second prompt")
    return dataclasses.replace(
        result,
        layer=layer,
        head=head,
        average=average,
        pattern=main,
        str_tokens=list(labels),
        n_prompts=len(indices),
        destination=min(result.destination, main.shape[0] - 1),
        **compare,
    )
