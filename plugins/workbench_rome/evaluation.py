"""rome-eval: ROME on every case of a CounterFact-format file, each edit measured and then
undone exactly (bit for bit, checked) before the next one."""

from __future__ import annotations

import contextlib
import time

import numpy as np

from workbench.editing.covariance import key_statistics
from workbench.editing.edits import applied_temporarily
from workbench.editing.engine_edit import check_engine_edit, compute_edit_on_engine, intervention
from workbench.editing.prompts import greedy_continuation, target_probabilities
from workbench.editing.rome import RomeHparams, compute_edit
from workbench.editing.target import check_layer
from workbench.engines import BridgeEngine
from workbench.plugin_api import AnalysisContext, Progress
from workbench.progress import sub_job

from .counterfact import Case, load_cases
from .eval_result import RomeEvalResult
from .fluency import fluency

# Cases whose causal trace picks the layer when the layer is -1 (one trace per case is too slow).
TRACED_CASES = 3


def case_metrics(model, case: Case, edits=()) -> dict:
    """ES/PS/NS and EM/PM/NM of one case on the model as it is now (the edited one), or with
    `edits` applied as interventions."""
    r = case.request
    prompts = [r.prompt] + case.paraphrases + case.neighbours
    # One call for both targets: it runs each prompt once when a target is a single token.
    both = np.asarray(target_probabilities(model, prompts * 2, [r.target_new] * len(prompts) + [r.target_true] * len(prompts), edits=edits))
    new, true = both[: len(prompts)], both[len(prompts) :]
    para = slice(1, 1 + len(case.paraphrases))
    neigh = slice(1 + len(case.paraphrases), len(prompts))
    out = {"ES": float(new[0] > true[0]), "EM": float(new[0] - true[0])}
    out["PS"] = float(np.mean(new[para] > true[para])) if case.paraphrases else None
    out["PM"] = float(np.mean(new[para] - true[para])) if case.paraphrases else None
    out["NS"] = float(np.mean(true[neigh] > new[neigh])) if case.neighbours else None
    out["NM"] = float(np.mean(true[neigh] - new[neigh])) if case.neighbours else None
    return out


def auto_layer(ctx: AnalysisContext, cases: list[Case]):
    """Generator: the median of the traced MLP peaks of the first cases."""
    from .layer import trace_layer

    layers = []
    for case in cases[:TRACED_CASES]:
        trace = yield from trace_layer(ctx, case.request)
        layers.append(trace.layer)
    return int(np.median(layers)), layers


def run(
    ctx: AnalysisContext,
    dataset: str = "",
    layer: int = -1,
    max_cases: int = 0,
    gen_tokens: int = 0,
    corpus: str = "",
    **hparams,  # the v* search and prefix parameters, as RomeHparams names them
):
    model = ctx.model
    cases = load_cases(dataset)
    if max_cases:
        cases = cases[:max_cases]
    hp = RomeHparams(**hparams)
    total = len(cases) + 2
    traced: list = []
    if layer == -1:
        layer, traced = yield from sub_job(auto_layer(ctx, cases), 0, 1.0, total)
    check_layer(model, layer)
    # TransformerBridge: each edit goes into the weights and is undone; other engines: an intervention.
    in_weights = isinstance(model.engine, BridgeEngine)
    if not in_weights:
        check_engine_edit(model, layer)
    stats = yield from sub_job(key_statistics(model, layer, corpus=corpus), 1, 1.0, total)
    fingerprint = model.fingerprint
    rows, fluencies = [], []
    for index, case in enumerate(cases):
        started = time.perf_counter()
        compute = compute_edit if in_weights else compute_edit_on_engine
        computation = yield from sub_job(compute(model, case.request, layer, stats.second_moment, hp), 2 + index, 1.0, total)
        edits = () if in_weights else (intervention(computation.edit),)
        with applied_temporarily(model, computation.edit) if in_weights else contextlib.nullcontext():
            metrics = case_metrics(model, case, edits)
            if gen_tokens:
                prompts = case.generation_prompts[:2] or [case.request.prompt]
                fluencies.append(float(np.mean([fluency(greedy_continuation(model, p, gen_tokens, edits=edits)) for p in prompts])))
        # The edit is off again: the next case starts from the same weights.
        assert model.fingerprint == fingerprint, "the model's fingerprint did not come back after an edit was undone"
        rows.append({"case_id": case.case_id, **metrics, "seconds": round(time.perf_counter() - started, 3)})
        yield Progress(3 + index, total, f"case {index + 1} of {len(cases)}: ES {metrics['ES']:.0f}, PS {metrics['PS'] if metrics['PS'] is not None else float('nan'):.2f}, NS {metrics['NS'] if metrics['NS'] is not None else float('nan'):.2f}")
    return RomeEvalResult(
        cases=rows,
        layer=layer,
        traced_layers=traced,
        fluency=float(np.mean(fluencies)) * 100 if fluencies else None,
        keys_corpus=stats.corpus,
        n_keys=stats.n_keys,
        seconds_keys=stats.seconds,
        dataset=str(dataset),
    )
