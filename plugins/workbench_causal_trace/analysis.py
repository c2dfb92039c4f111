"""The causal-trace analysis: resolve the request, trace each kind, return a typed result."""

from __future__ import annotations

import time

import numpy as np

from workbench.plugin_api import AnalysisContext, Progress
from workbench.progress import sub_job

from .noise import subject_noise
from .reference import trace_reference
from .request import build_request
from .result import CausalTraceResult
from .scoring import KINDS
from .tracing import trace_with_noise


def run(ctx: AnalysisContext, subject: str, target: str, kinds: str, samples: int, noise: float, noise_scale: float, window: int, seed: int, method: str):
    model = ctx.model
    prompt = ctx.prompt
    request = build_request(model, prompt, ctx.tokens(0), subject, target)
    chosen = KINDS if kinds == "all" else (kinds,)
    corruption = subject_noise(model, request, samples, noise, noise_scale, seed)
    yield Progress(0, request.n_tokens * (len(chosen) if method == "reference" else 1), "tracing")
    if method == "reference":
        scores, seconds = {}, {}
        for k, kind in enumerate(chosen):
            started = time.perf_counter()
            offset = k * request.n_tokens
            scores[kind], high, low = yield from sub_job(trace_reference(model, request, corruption, kind, window), offset, request.n_tokens, len(chosen) * request.n_tokens)
            seconds[kind] = time.perf_counter() - started
    else:
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
