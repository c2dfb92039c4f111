"""The qk-ov analysis: one head's QK and OV circuits on a token set, and whole-model tables.

Weights only: no prompt is run through the model. A prompt, when there is one, only
supplies the "prompt tokens" token set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from workbench.errors import InputError
from workbench.plugin_api import AnalysisContext, Cost, Progress

from . import circuits
from .heads import parse_head
from .result import QKOVResult, head_label

# The heatmaps draw every token of the set; beyond this they stop being readable (and an
# SVG of n² cells grows past what a report should hold).
MAX_TOKENS = 128
TOKEN_SETS = ("auto", "typed", "prompt", "top-norm")
TOP_OUTPUTS = 5  # output tokens listed per source token, over the whole vocabulary
BASELINE_SAMPLES = 64
SAMPLE_SEED = 0

def check_head(model, layer: int, head: int) -> None:
    if not (0 <= layer < model.n_layers and 0 <= head < model.n_heads):
        raise InputError(
            f"Head {layer}.{head} does not exist: {model.name} has layers 0..{model.n_layers - 1} and heads 0..{model.n_heads - 1}.",
            f"choose a head from 0.0 to {model.n_layers - 1}.{model.n_heads - 1}",
        )


def split_token_list(text: str) -> list[str]:
    r"""Comma-separated token strings, kept exactly as written (a leading space is part of a token); "\," is a comma."""
    items, current, escaped = [], [], False
    for char in str(text or ""):
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        current.append("\\")
    items.append("".join(current))
    return [item for item in items if item != ""]


def typed_token_ids(model, text: str) -> list[int]:
    """One token id per comma-separated string; a string that is not exactly one token is an error."""
    ids = []
    for item in split_token_list(text):
        pieces = list(model.tokenizer(item, add_special_tokens=False)["input_ids"])
        if len(pieces) != 1:
            shown = ", ".join(repr(model.tokenizer.decode([p])) for p in pieces) or "nothing"
            raise InputError(
                f"{item!r} is {len(pieces)} tokens for {model.name} ({shown}), not one.",
                "give single tokens separated by commas; a leading space is part of a token, e.g. ' Paris'",
            )
        ids.append(int(pieces[0]))
    return ids


def _unique(ids) -> list[int]:
    seen, out = set(), []
    for token in ids:
        if int(token) not in seen:
            seen.add(int(token))
            out.append(int(token))
    return out


def resolve_token_set(ctx: AnalysisContext, token_set: str, tokens: str, top_k: int) -> tuple[str, list[int]]:
    """(the token set used, its distinct token ids in order)."""
    model = ctx.model
    if token_set not in TOKEN_SETS:
        raise InputError(f"Unknown token set {token_set!r}.", "choose one of " + ", ".join(TOKEN_SETS))
    if token_set == "auto":
        token_set = "typed" if split_token_list(tokens) else ("prompt" if ctx.prompts else "top-norm")
    if token_set == "typed":
        ids = _unique(typed_token_ids(model, tokens))
        if not ids:
            raise InputError("The token set 'typed' needs tokens.", "type tokens separated by commas (CLI: --param tokens=t1,t2,t3)")
    elif token_set == "prompt":
        if not ctx.prompts:
            raise InputError("The token set 'prompt' needs a prompt.", "type a prompt (CLI: --prompt TEXT), or choose another token set")
        ids = _unique(ctx.tokens(0))
    else:
        ids = top_norm_tokens(model, top_k)
    if len(ids) > MAX_TOKENS:
        raise InputError(f"The token set has {len(ids)} distinct tokens; the circuit maps show at most {MAX_TOKENS}.", "use a shorter prompt, fewer typed tokens or a smaller top-k")
    return token_set, ids


def top_norm_tokens(model, k: int) -> list[int]:
    """The k tokens with the largest raw embedding norm ‖W_E[t]‖ (before any folding), special tokens
    (BOS, EOS, padding, unknown) left out: they are rarely what one wants to read a circuit on."""
    with torch.no_grad():
        norms = model.bridge.W_E.detach().float().norm(dim=-1)
    special = [int(t) for t in (getattr(model.tokenizer, "all_special_ids", None) or []) if 0 <= int(t) < norms.shape[0]]
    if special and len(special) < norms.shape[0]:
        norms[special] = -torch.inf
    return [int(i) for i in torch.topk(norms, min(k, norms.shape[0] - len(special))).indices.tolist()]


@dataclass
class HeadCircuits:
    """One head's restricted circuits: what the head picker changes."""

    layer: int
    head: int
    token_ids: list
    token_strings: list
    qk: np.ndarray  # [query token, key token]
    ov: np.ndarray  # [attended token, output token]
    positional_qk: np.ndarray | None  # [query position, key position]
    ov_top_ids: np.ndarray  # [token, TOP_OUTPUTS]
    ov_top_strings: list
    ov_top_values: np.ndarray
    ov_self_rank: np.ndarray  # [token]: how many output tokens get a larger logit than the token itself


def head_circuits(model, weights: circuits.CircuitWeights, layer: int, head: int, token_ids: list[int], positional: int = 0) -> HeadCircuits:
    """The restricted circuits of one head; positional > 0 adds the positional QK term over that many positions."""
    check_head(model, layer, head)
    ids = list(token_ids)
    pos = None
    if positional:
        check_positional(model, weights)
        pos = circuits.positional_qk(weights, layer, head, min(int(positional), weights.W_pos.shape[0])).astype(np.float32)
    top_ids, top_values, self_rank = circuits.ov_top_outputs(weights, layer, head, ids, k=TOP_OUTPUTS)
    return HeadCircuits(
        layer=layer,
        head=head,
        token_ids=ids,
        token_strings=[model.token_text(i) for i in ids],
        qk=circuits.restricted_qk(weights, layer, head, ids, ids).astype(np.float32),
        ov=circuits.restricted_ov(weights, layer, head, ids, ids).astype(np.float32),
        positional_qk=pos,
        ov_top_ids=top_ids.astype(np.int64),
        ov_top_strings=[[model.token_text(int(t)) for t in row] for row in top_ids],
        ov_top_values=top_values.astype(np.float32),
        ov_self_rank=self_rank.astype(np.int64),
    )


def check_positional(model, weights: circuits.CircuitWeights) -> None:
    if weights.W_pos is not None:
        return
    if weights.rotary:
        raise InputError(
            f"{model.name} uses rotary position embeddings (RoPE): positions rotate queries and keys instead of adding a learned vector, so there is no positional QK term.",
            "turn 'positional' off",
        )
    raise InputError(f"{model.name} has no learned position embeddings (positional_embedding_type={weights.positional_embedding_type!r}).", "turn 'positional' off")


def run(
    ctx: AnalysisContext,
    head: str = "",
    token_set: str = "auto",
    tokens: str = "",
    top_k: int = 24,
    fold_ln: bool = True,
    positional: int = 0,
    self_top_tokens: int = 4096,
):
    model = ctx.model
    chosen = parse_head(head)
    if chosen is not None:
        check_head(model, *chosen)
    started = time.perf_counter()
    n_layers, n_heads = model.n_layers, model.n_heads
    modes = circuits.COMPOSITION_MODES
    total = 3 + n_layers * n_heads + len(modes) * (n_layers - 1) + 1
    step = 0
    # Bad input fails here, before the slow whole-model tables.
    resolved_set, token_ids = resolve_token_set(ctx, token_set, tokens, top_k)
    yield Progress(step, total, "reading the weights")
    weights = circuits.circuit_weights(model.bridge, fold_ln=fold_ln)
    if positional:
        check_positional(model, weights)
    step += 1
    yield Progress(step, total, "OV spectra")
    ov_eig = circuits.ov_eigenvalues(weights)
    step += 1
    yield Progress(step, total, "QK spectra")
    qk_eig = circuits.qk_eigenvalues(weights)
    copying = circuits.copying_score(ov_eig)
    qk_copying = circuits.copying_score(qk_eig)
    step += 1
    sample = circuits.self_top_sample(weights.d_vocab, self_top_tokens, seed=SAMPLE_SEED)
    self_top = np.zeros((n_layers, n_heads), dtype=np.float64)
    for layer, index in circuits.iter_heads(n_layers, n_heads):
        yield Progress(step, total, f"self-top fraction, {head_label(layer, index)}")
        self_top[layer, index] = float(circuits.ov_self_top(weights, layer, index, tokens=sample).mean())
        step += 1
    comp: dict[str, np.ndarray] = {}
    for mode in modes:
        yield Progress(step, total, f"{mode.upper()}-composition")
        scores = np.zeros((n_layers, n_heads, n_layers, n_heads), dtype=np.float32)
        for source_layer, row in circuits.composition_rows(weights, mode):
            scores[source_layer] = row
            step += 1
            yield Progress(step, total, f"{mode.upper()}-composition")
        comp[mode] = scores
    baseline_mean, baseline_std = circuits.random_composition_baseline(weights.d_model, weights.d_head, BASELINE_SAMPLES, seed=SAMPLE_SEED)
    seconds_tables = time.perf_counter() - started
    if chosen is None:  # the most copying head: the natural first head to look at
        flat = int(np.argmax(copying))
        chosen = (flat // n_heads, flat % n_heads)
    yield Progress(step, total, f"circuits of {head_label(*chosen)}")
    circuit = head_circuits(model, weights, chosen[0], chosen[1], token_ids, positional=positional)
    return QKOVResult(
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=weights.n_kv_heads,
        d_model=weights.d_model,
        d_head=weights.d_head,
        d_vocab=weights.d_vocab,
        fold_ln=bool(fold_ln),
        rotary=weights.rotary,
        positional_embedding_type=weights.positional_embedding_type,
        layer=circuit.layer,
        head=circuit.head,
        token_set=resolved_set,
        token_ids=circuit.token_ids,
        token_strings=circuit.token_strings,
        qk=circuit.qk,
        ov=circuit.ov,
        positional_qk=circuit.positional_qk,
        ov_top_ids=circuit.ov_top_ids,
        ov_top_strings=circuit.ov_top_strings,
        ov_top_values=circuit.ov_top_values,
        ov_self_rank=circuit.ov_self_rank,
        ov_eig_real=ov_eig.real.astype(np.float32),
        ov_eig_imag=ov_eig.imag.astype(np.float32),
        qk_eig_real=qk_eig.real.astype(np.float32),
        qk_eig_imag=qk_eig.imag.astype(np.float32),
        copying_score=copying.astype(np.float32),
        qk_copying_score=qk_copying.astype(np.float32),
        ov_self_top_fraction=self_top.astype(np.float32),
        self_top_tokens=int(weights.d_vocab if sample is None else len(sample)),
        composition_q=comp.get("q"),
        composition_k=comp.get("k"),
        composition_v=comp.get("v"),
        baseline_mean=baseline_mean,
        baseline_std=baseline_std,
        baseline_samples=BASELINE_SAMPLES,
        seconds_tables=round(seconds_tables, 3),
    )


def cost(ctx: AnalysisContext, top_k: int = 24, self_top_tokens: int = 4096, **params) -> Cost:
    """No forward pass: products of each head's weight matrices, restricted to token sets,
    plus the composition scores between every pair of heads in different layers."""
    cfg = ctx.model.cfg
    n_layers, n_heads, d_model = int(cfg.n_layers), int(cfg.n_heads), int(cfg.d_model)
    d_head = int(getattr(cfg, "d_head", d_model // n_heads))
    per_head = 4.0 * (min(self_top_tokens, int(cfg.d_vocab)) + top_k) * d_model * d_head
    composition = 3 * 2.0 * (n_layers * n_heads) ** 2 / 2 * d_head * d_model * d_head
    return Cost((), "layers × heads × (tokens shown) weight products + (layers × heads)² compositions", extra_flops=n_layers * n_heads * per_head + composition)
