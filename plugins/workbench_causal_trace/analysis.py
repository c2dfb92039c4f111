"""The causal-trace analysis: resolve the request, trace each kind, return a typed result."""

from __future__ import annotations

import time

import numpy as np

from workbench.plugin_api import AnalysisContext, Cost, Progress
from workbench.progress import sub_job

from .engine_trace import cells_and_rows, trace_prompt_on_engine
from .noise import subject_noise
from .reference import trace_reference
from .request import build_request
from .result import CausalTraceResult
from .scoring import KINDS
from .tracing import trace_with_noise


def run(ctx: AnalysisContext, subject: str, target: str, kinds: str, samples: int, noise: float, noise_scale: float, window: int, seed: int, method: str):
    model = ctx.model
    prompt = ctx.prompt
    chosen = KINDS if kinds == "all" else (kinds,)
    if model.engine.name != "bridge":
        # Whole passes with masked writes: the reference's numbers on any engine (engine_trace.py).
        # The clean run predicts the target and, on NDIF, brings the subject's embeddings: 2 jobs in all there.
        request = build_request(model, prompt, ctx.tokens(0), subject, target, predict=False)
        here = not model.engine.remote  # the embeddings are looked up here, as on the bridge

        def noise_of(embeddings):
            return subject_noise(model, request, samples, noise, noise_scale, seed, None if here else embeddings)

        traced, request, corruption = yield from trace_prompt_on_engine(model, request, noise_of, chosen, window, predict=not target)
        scores, seconds, high, low = traced.scores, traced.seconds, traced.high_score, traced.low_score
        method = "batched-reference"
    elif method == "reference":
        request = build_request(model, prompt, ctx.tokens(0), subject, target)
        corruption = subject_noise(model, request, samples, noise, noise_scale, seed)
        yield Progress(0, request.n_tokens * len(chosen), "tracing")
        scores, seconds = {}, {}
        for k, kind in enumerate(chosen):
            started = time.perf_counter()
            offset = k * request.n_tokens
            scores[kind], high, low = yield from sub_job(trace_reference(model, request, corruption, kind, window), offset, request.n_tokens, len(chosen) * request.n_tokens)
            seconds[kind] = time.perf_counter() - started
    else:
        request = build_request(model, prompt, ctx.tokens(0), subject, target)
        corruption = subject_noise(model, request, samples, noise, noise_scale, seed)
        yield Progress(0, request.n_tokens, "tracing")
        traced = yield from trace_with_noise(model, request, corruption, chosen, window)
        scores, seconds, high, low = traced.scores, traced.seconds, traced.high_score, traced.low_score
    return CausalTraceResult(
        tokens=model.str_tokens(request.token_ids),
        subject_range=list(request.subject_range),
        answer=model.tokenizer.decode(request.target_ids),
        answer_tokens=model.str_tokens(request.target_ids),
        high_score=float(high),
        low_score=float(low),
        noise=float(corruption.level),
        samples=samples,
        window=window,
        method=method,
        kinds=list(chosen),
        scores=np.stack([scores[kind] for kind in chosen]).astype(np.float32),
        seconds={kind: round(float(seconds[kind]), 3) for kind in chosen},
    )


def cost(ctx: AnalysisContext, subject: str = "", target: str = "", kinds: str = "all", samples: int = 10, window: int = 10, method: str = "fast", **params) -> Cost:
    """Every (token, layer) cell runs the noised samples. The reference runs the whole prompt
    through every layer per cell, for every token; the fast path skips the tokens before the subject (the
    noise has not reached them), restarts at the restored layer and runs only the positions
    from the restored token on."""
    model = ctx.model
    n_layers = model.n_layers
    request = build_request(model, ctx.prompt, ctx.tokens(0), subject, target, predict=False)
    tokens, first = request.n_tokens, request.subject_range[0]
    chosen = KINDS if kinds == "all" else (kinds,)
    baselines = (samples + 1, tokens)  # the clean run and the noised samples
    if model.engine.name != "bridge":
        # One whole pass per cell and sample, plus a no-restore row per run (engine_trace.py).
        rows = cells_and_rows(model, request, chosen)
        return Cost(((1, len(request.sequence)), (samples * rows, len(request.sequence))), "kinds × layers × samples × tokens² (a whole pass per cell)")
    if method == "reference":
        # Every cell, the clean row with the samples, as in the paper's code.
        return Cost((baselines, (len(chosen) * tokens * n_layers * (samples + 1), tokens)), "kinds × layers × samples × tokens² (one pass of the prompt per cell)")
    # Cell (t, l): the samples × (tokens - t) positions through the layers from the first one
    # restored on (l for the residual, the window's start for MLP and attention outputs).
    half = window // 2
    layers_run = sum((n_layers - (layer if kind == "resid" else max(0, layer - half))) / n_layers for kind in chosen for layer in range(n_layers))
    passes = tuple((samples * layers_run, tokens - t) for t in range(first, tokens))
    return Cost((baselines, *passes), "kinds × layers² × samples × tokens² (suffix passes from each cell)")
