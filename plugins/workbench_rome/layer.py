"""Choosing the edited layer from a causal trace: where restoring the MLP output at the
subject's last token brings back the most of the answer's probability (rome #27)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.editing.prompts import EditRequest, subject_span, target_ids
from workbench.errors import InputError
from workbench.plugin_api import AnalysisContext, PluginError


@dataclass
class LayerTrace:
    layer: int
    mlp_scores: np.ndarray  # [token, layer] P(answer) with the MLP window restored
    str_tokens: list
    subject_range: tuple  # [start, end) token indices
    high: float  # clean P(answer)
    low: float  # corrupted P(answer)


def trace_layer(ctx: AnalysisContext, request: EditRequest, samples: int = 10, seed: int = 1):
    """Generator: yields the trace's Progress, returns LayerTrace with the proposed layer.

    The trace is the causal-trace plugin's public `causal_trace` (this plugin declares
    requires=["causal-trace"]), not an import of its internals."""
    model = ctx.model
    try:
        causal_trace = ctx.provided("causal-trace", "causal_trace")
    except PluginError as exc:
        raise InputError(f"Choosing the layer automatically needs the causal-trace plugin: {exc.message}", "set the layer yourself (param layer=N)") from None
    prompt = request.prompt
    start = request.template.index("{}")
    ids, s0, s1 = subject_span(model, prompt, start, start + len(request.subject))
    answer = target_ids(model, prompt, request.target_true) if request.target_true else []
    trace = yield from causal_trace(model, ids, (s0, s1), answer[:1] if answer else [], kinds=("mlp",), samples=samples, seed=seed)
    scores = np.asarray(trace.scores["mlp"], dtype=np.float32)
    layer = int(np.argmax(scores[s1 - 1]))
    return LayerTrace(layer, scores, model.str_tokens(ids), (s0, s1), float(trace.high_score), float(trace.low_score))
