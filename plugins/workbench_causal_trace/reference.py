"""Causal tracing exactly as the reference code does it (kmeng01/rome, `trace_with_patch`).

One forward pass per cell with a batch of S + 1: row 0 runs clean, rows 1..S carry
the subject noise, and row 0's state at the restored (token, layer) is copied into
rows 1..S within the same pass. 3·(T·L + 2) passes for all three kinds. Kept as
the baseline the fast path is checked and timed against.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from workbench.models import LoadedModel
from workbench.progress import Progress

from .noise import SubjectNoise
from .request import TraceRequest
from .scoring import RESTORED_HOOK, restored_layers, target_probability


def _copy_clean_row(position: int):
    def restore(activation: torch.Tensor, hook=None) -> torch.Tensor:
        activation[1:, position] = activation[0, position]
        return activation

    return restore


def traced_run(model: LoadedModel, request: TraceRequest, noise: SubjectNoise, restore: list[tuple[str, int]]) -> tuple[float, float]:
    """(P(target) of the clean row, mean P(target) over the noised rows) with the given
    (hook name, position) states copied from the clean row into the noised rows."""
    bridge = model.bridge
    samples = noise.samples.shape[0]
    device = next(bridge.parameters()).device
    ids = torch.tensor([request.sequence] * (samples + 1), device=device)
    hooks = [("hook_embed", noise.hook(rows=slice(1, None)))]
    hooks += [(name, _copy_clean_row(position)) for name, position in restore]
    logits = bridge.run_with_hooks(ids, fwd_hooks=hooks, return_type="logits")
    probability = target_probability(logits, request.target_ids, request.n_tokens - 1)
    return float(probability[0]), float(probability[1:].mean())


def trace_reference(model: LoadedModel, request: TraceRequest, noise: SubjectNoise, kind: str, window: int = 10):
    """Generator: yields Progress per token row; returns (scores [T, L], clean P, corrupted P)."""
    n_layers = model.n_layers
    with torch.inference_mode():
        high, low = traced_run(model, request, noise, [])
        scores = np.zeros((request.n_tokens, n_layers), dtype=np.float32)
        for position in range(request.n_tokens):
            for layer in range(n_layers):
                names = [RESTORED_HOOK[kind].format(j) for j in restored_layers(kind, layer, n_layers, window)]
                _, scores[position, layer] = traced_run(model, request, noise, [(name, position) for name in names])
            yield Progress(position + 1, request.n_tokens, f"{kind}: token {position + 1} of {request.n_tokens}")
    return scores, high, low


def timed(job):
    """Drive a trace generator to completion; (its return value, seconds)."""
    started = time.perf_counter()
    try:
        while True:
            next(job)
    except StopIteration as stop:
        return stop.value, time.perf_counter() - started
