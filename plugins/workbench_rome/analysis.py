"""The rome analysis: edit one fact in the context's model (in place, on its edit stack) and
measure what changed. The model stays edited: other panels then see the edited model."""

from __future__ import annotations

import time

import numpy as np
import torch

from workbench.editing import EditStack
from workbench.editing.covariance import key_statistics
from workbench.editing.engine_edit import check_engine_edit, compute_edit_on_engine, intervention
from workbench.editing.prompts import EditRequest, greedy_continuation, make_request, target_ids, target_probabilities, target_text
from workbench.editing.rome import RomeHparams, compute_edit
from workbench.editing.target import check_layer
from workbench.engines import BridgeEngine
from workbench.errors import InputError
from workbench.plugin_api import AnalysisContext, Progress
from workbench.progress import sub_job

from .result import RomeEditResult


def split_prompts(text: str) -> list[str]:
    """Prompts written one per line or separated by '|'."""
    parts = []
    for line in (text or "").replace("|", "\n").splitlines():
        if line.strip():
            parts.append(line.strip())
    return parts


@torch.no_grad()
def current_answer(model, prompt: str, n_tokens: int) -> tuple[list[int], str]:
    """The model's greedy answer of n_tokens after prompt."""
    ids = model.tokenize(prompt)
    out = model.engine.extend([ids], max(1, n_tokens))[0, len(ids) :].tolist()
    return out, model.tokenizer.decode(out)


def resolve_true_target(model, request: EditRequest) -> EditRequest:
    """Fill target_true with the model's answer when empty, and refuse a 'new' target it already gives."""
    prompt = request.prompt
    new_ids = target_ids(model, prompt, request.target_new)
    answer_ids, answer = current_answer(model, prompt, len(new_ids))
    if answer_ids == new_ids:
        raise InputError(
            f"{model.name} already answers '{prompt}' with '{request.target_new.strip()}'.",
            "choose a new target that differs from the model's current answer",
        )
    if not request.target_true:
        request.target_true = model.tokenizer.decode(answer_ids[:1])
    elif target_ids(model, prompt, request.target_true) == new_ids:
        raise InputError("The new target is the same as the true target.", "give a different new target")
    return request


def choose_layer(ctx: AnalysisContext, request: EditRequest, layer: int):
    """Generator: (layer, LayerTrace or None). -1 asks the causal trace for the MLP peak."""
    if layer != -1:
        return check_layer(ctx.model, layer), None
    from .layer import trace_layer

    trace = yield from trace_layer(ctx, request)
    return trace.layer, trace


def run(
    ctx: AnalysisContext,
    subject: str = "",
    template: str = "",
    target_new: str = "",
    target_true: str = "",
    layer: int = -1,
    paraphrases: str = "",
    neighbours: str = "",
    gen_tokens: int = 20,
    corpus: str = "",
    **hparams,  # the v* search and prefix parameters, as RomeHparams names them
):
    model = ctx.model
    request = make_request(subject, target_new, template=template, prompt=ctx.prompts[0] if ctx.prompts else "", target_true=target_true)
    request = resolve_true_target(model, request)
    hp = RomeHparams(**hparams)

    yield Progress(0, 4, "choosing the layer" if layer == -1 else "measuring before the edit")
    layer, trace = yield from choose_layer(ctx, request, layer)

    # TransformerBridge: the edit goes into the weights, and the model stays edited. Other
    # engines: the edit is an intervention on the runs that measure it (on NDIF the hosted
    # weights cannot change), and the model is left as it was.
    in_weights = isinstance(model.engine, BridgeEngine)
    if not in_weights:
        check_engine_edit(model, layer)
    prompt = request.prompt
    probes = [("prompt", prompt)] + [("paraphrase", p) for p in split_prompts(paraphrases)] + [("neighbour", p) for p in split_prompts(neighbours)]
    probe_prompts = [p for _, p in probes]

    def measure(edits=()) -> np.ndarray:
        # One call for both targets: it runs each prompt once when a target is a single token.
        both = target_probabilities(model, probe_prompts * 2, [request.target_new] * len(probes) + [request.target_true] * len(probes), edits=edits)
        return np.stack([both[: len(probes)], both[len(probes) :]], axis=1).astype(np.float32)

    gen_prompts = [prompt] + [p for k, p in probes if k == "paraphrase"][:1]
    p_before = measure()
    gens_before = [greedy_continuation(model, p, gen_tokens) for p in gen_prompts] if gen_tokens else []

    yield Progress(1, 4, f"key statistics of layer {layer}")
    stats = yield from sub_job(key_statistics(model, layer, corpus=corpus), 1, 1.0, 4)
    started = time.perf_counter()
    compute = compute_edit if in_weights else compute_edit_on_engine
    computation = yield from sub_job(compute(model, request, layer, stats.second_moment, hp), 2, 1.0, 4)
    edit = computation.edit
    edits = ()
    if in_weights:
        EditStack.of(model).apply(edit)
    else:
        edits = (intervention(edit),)
        edit.fingerprint_before = edit.fingerprint_after = model.fingerprint
    seconds_edit = time.perf_counter() - started

    yield Progress(3, 4, "measuring after the edit")
    p_after = measure(edits)
    gens_after = [greedy_continuation(model, p, gen_tokens, edits=edits) for p in gen_prompts] if gen_tokens else []
    return RomeEditResult(
        subject=request.subject,
        template=request.template,
        target_new=target_text(prompt, request.target_new),
        target_true=target_text(prompt, request.target_true),
        layer=layer,
        layer_source="causal trace" if trace is not None else "user",
        weight_name=edit.weight_name,
        u_norm=float(np.linalg.norm(edit.left)),
        right_norm=float(np.linalg.norm(edit.right)),
        delta_norm=float(np.linalg.norm(computation.v_star - computation.v0)),
        v0_norm=float(np.linalg.norm(computation.v0)),
        k_norm=float(np.linalg.norm(computation.k_star)),
        probe_prompts=probe_prompts,
        probe_kinds=[k for k, _ in probes],
        p_before=p_before,
        p_after=p_after,
        losses=computation.losses,
        target_prob=computation.target_prob,
        generation_prompts=gen_prompts if gen_tokens else [],
        generations_before=gens_before,
        generations_after=gens_after,
        n_contexts=len(computation.contexts),
        contexts=computation.contexts,
        keys_corpus=stats.corpus,
        n_keys=stats.n_keys,
        seconds_keys=stats.seconds,
        seconds_edit=seconds_edit,
        fingerprint_before=edit.fingerprint_before,
        fingerprint_after=edit.fingerprint_after,
        trace_scores=trace.mlp_scores if trace is not None else np.zeros((0, 0), dtype=np.float32),
        trace_tokens=trace.str_tokens if trace is not None else [],
        trace_subject=list(trace.subject_range) if trace is not None else [],
        trace_high=trace.high if trace is not None else 0.0,
        trace_low=trace.low if trace is not None else 0.0,
        applied_as="weights" if in_weights else "intervention",
    )
