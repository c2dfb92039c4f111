"""Causal tracing on the engine seam: the reference algorithm's numbers from plain runs
with writes, so it runs on every engine (nnsight here, and NDIF).

The fast path (tracing.py) starts passes at a layer and reuses a KV cache, which only
TransformerBridge offers. This path asks the seam for whole forward passes instead, and
batches differently from the reference to need few of them:

- One run per noise sample, not per cell. Each row of a run is one cell (token, layer,
  kind); the subject noise of that sample is written into every row's embeddings, and the
  clean state of each restored hook is written into the rows whose cell restores it, at the
  cell's token only (a masked write). A cell's score is its rows' P(target) averaged over
  the samples' runs, as the reference averages its S noised rows.
- A row with nothing restored gives the corrupted P(target) of that sample.
- Every write's value broadcasts over the rows ([1, positions, d_model]), so what a run
  uploads does not grow with its rows: on NDIF the whole trace is one job of S runs.

Cells at tokens before the subject are not run: the noise has not reached them, so they
score the corrupted P(target), as in the fast path.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np
import torch

from workbench.engines import RunRequest, Write
from workbench.models import LoadedModel
from workbench.progress import Progress

from .noise import SubjectNoise
from .request import TraceRequest
from .scoring import KINDS, RESTORED_HOOK, restored_layers, target_probability
from .tracing import TraceScores

TOKENS_PER_RUN = 16384  # rows × positions of one run, bounding its activations
LOGIT_BYTES_PER_RUN = 256 << 20  # a whole pass computes the logits of every position, then keeps the scored ones


def _cells(request: TraceRequest, kinds: tuple[str, ...], n_layers: int) -> list[tuple[str, int, int]]:
    """(kind, token, layer) of every cell the noise can reach, then the no-restore row."""
    tokens = range(request.subject_range[0], request.n_tokens)
    return [(kind, token, layer) for kind in kinds for token in tokens for layer in range(n_layers)]


def _rows_per_run(model: LoadedModel, request: TraceRequest) -> int:
    by_tokens = TOKENS_PER_RUN // len(request.sequence)
    by_logits = LOGIT_BYTES_PER_RUN // (4 * len(request.sequence) * int(model.cfg.d_vocab))
    return max(2, min(by_tokens, by_logits))


def cells_and_rows(model: LoadedModel, request: TraceRequest, kinds: tuple[str, ...]) -> int:
    """The rows of one sample's runs: a row per cell, and one no-restore row per run."""
    cells = len(_cells(request, kinds, model.n_layers))
    per_run = _rows_per_run(model, request) - 1
    return cells + -(-cells // per_run)


def _restore_writes(cells: list[tuple[str, int, int]], clean: dict[str, torch.Tensor], n_layers: int, window: int, width: int) -> dict[str, Write]:
    """One masked write per restored hook: the clean state, in the rows (cells) that restore
    that hook, at their token. A last row restores nothing."""
    masks: dict[str, torch.Tensor] = {}
    for row, (kind, token, layer) in enumerate(cells):
        for restored in restored_layers(kind, layer, n_layers, window):
            name = RESTORED_HOOK[kind].format(restored)
            mask = masks.setdefault(name, torch.zeros(len(cells) + 1, width, 1, dtype=torch.bool))
            mask[row, token] = True
    return {name: Write(clean[name], None, mask) for name, mask in masks.items()}


def trace_on_engine(model: LoadedModel, request: TraceRequest, noise: SubjectNoise, kinds: tuple[str, ...] = KINDS, window: int = 10):
    """Generator: yields Progress per run; returns TraceScores (seconds not split by kind)."""
    traced, _, _ = yield from trace_prompt_on_engine(model, request, noise, kinds, window)
    return traced


def trace_prompt_on_engine(
    model: LoadedModel,
    request: TraceRequest,
    noise: SubjectNoise | Callable[[torch.Tensor], SubjectNoise],
    kinds: tuple[str, ...] = KINDS,
    window: int = 10,
    predict: bool = False,
):
    """Generator: yields Progress per run; returns (TraceScores, the request, the noise).

    The clean run is the first job and brings what the trace needs besides its states, so
    on NDIF the whole trace is 2 jobs: `predict` takes the target as the model's top next
    token from its logits (the request's target is then a one-token stand-in), and `noise`,
    when a function, is made from the subject's embeddings as the clean run computed them
    (hook_embed at the subject)."""
    engine = model.engine
    n_layers = model.n_layers
    sequence = torch.tensor([request.sequence])
    width = sequence.shape[1]
    scored = list(range(request.n_tokens - 1, request.n_tokens - 1 + len(request.target_ids)))
    started = time.perf_counter()
    names = [RESTORED_HOOK[kind].format(layer) for kind in kinds for layer in range(n_layers)]
    with torch.inference_mode():  # no autograd graph: it would hold every row's activations
        clean_run = engine.run(sequence, reads=dict.fromkeys(["hook_embed", *names]), logit_positions=scored)
    assert clean_run.logits is not None
    if predict:
        request = dataclasses.replace(request, target_ids=[int(clean_run.logits[0, -1].argmax())])
    high = float(target_probability(clean_run.logits, request.target_ids, 0)[0])
    clean = clean_run.activations
    start, end = request.subject_range
    if not isinstance(noise, SubjectNoise):
        noise = noise(clean["hook_embed"][0, start:end])
    samples = noise.samples.shape[0]
    noised_embeddings = []
    for sample in range(samples):
        embedding = clean["hook_embed"].clone()
        embedding[0, start:end] += noise.samples[sample].to(embedding.device, embedding.dtype)
        noised_embeddings.append(embedding)

    cells = _cells(request, kinds, n_layers)
    per_run = _rows_per_run(model, request) - 1  # and the no-restore row
    chunks = [cells[i : i + per_run] for i in range(0, len(cells), per_run)]
    runs = [(chunk_index, sample) for chunk_index in range(len(chunks)) for sample in range(samples)]
    totals = [torch.zeros(len(chunk) + 1, dtype=torch.float64) for chunk in chunks]
    writes_of_chunk = [_restore_writes(chunk, clean, n_layers, window, width) for chunk in chunks]

    def request_of(chunk_index: int, sample: int) -> RunRequest:
        rows = sequence.expand(len(chunks[chunk_index]) + 1, -1)
        writes = {"hook_embed": Write(noised_embeddings[sample]), **writes_of_chunk[chunk_index]}
        return RunRequest(rows, writes=writes, logit_positions=scored)

    # A remote engine gets every run in one job; here each run is a step of progress.
    batches = [runs] if engine.remote else [[run] for run in runs]
    done = 0
    yield Progress(0, len(runs), f"tracing {len(cells)} cells × {samples} samples in {len(runs)} runs")
    for batch in batches:
        with torch.inference_mode():
            outputs = engine.run_many([request_of(chunk_index, sample) for chunk_index, sample in batch])
            for (chunk_index, _), out in zip(batch, outputs):
                totals[chunk_index] += target_probability(out.logits, request.target_ids, 0).double().cpu()
        done += len(batch)
        yield Progress(done, len(runs), f"run {done} of {len(runs)}")

    low = float(sum(total[-1] for total in totals) / (samples * len(chunks)))
    scores = {kind: np.full((request.n_tokens, n_layers), low, dtype=np.float32) for kind in kinds}
    for chunk, total in zip(chunks, totals):
        for (kind, token, layer), value in zip(chunk, (total[:-1] / samples).tolist()):
            scores[kind][token, layer] = value
    seconds = time.perf_counter() - started
    return TraceScores(scores, high, low, noise.level, samples, {kind: seconds / len(kinds) for kind in kinds}), request, noise
