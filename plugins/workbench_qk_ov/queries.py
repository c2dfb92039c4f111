"""The QK/OV plugin's follow-up query: another head's restricted circuits on a result
already computed (the tables of every head stay). Weights only: no forward pass."""

from __future__ import annotations

from workbench.errors import InputError
from workbench.plugin_api import AnalysisContext, Progress

from .heads import parse_head
from .result import QKOVResult, head_label

SHOWN = "shown"  # token_set: the result's own token set


def head(ctx: AnalysisContext, result: QKOVResult, head: str = "", token_set: str = SHOWN, tokens: str = "", top_k: int = 24, positional: int = -1):
    """The result with head (LAYER.HEAD; empty: the result's head) drawn on the result's
    token set, or on another one; positional -1 keeps the result's positional term."""
    from . import circuits
    from .analysis import check_head, head_circuits, resolve_token_set

    model = ctx.model
    layer, index = parse_head(head) or (result.layer, result.head)
    check_head(model, layer, index)
    if positional < 0:
        positional = 0 if result.positional_qk is None else int(result.positional_qk.shape[0])
    yield Progress(0, 2, f"circuits of {head_label(layer, index)}")
    weights = circuits.circuit_weights(model.bridge, fold_ln=result.fold_ln)
    if token_set == SHOWN:
        used, ids, params = result.token_set, result.token_ids, {}
    else:
        used, ids = resolve_token_set(ctx, token_set, tokens, top_k)
        params = {"token_set": token_set, "tokens": tokens, "top_k": top_k, "positional": positional}
    if not ids:
        raise InputError("The result has no token set to draw the head on.", "choose a token set (token_set=typed, prompt or top-norm)")
    yield Progress(1, 2, f"circuits of {head_label(layer, index)}")
    circuit = head_circuits(model, weights, layer, index, ids, positional=positional)
    return result.with_head(circuit, used, params)
