"""What a ROME edit costs before it runs (workbench.plugin_api.Cost): the causal trace that
chooses the layer, the key statistics (unless cached), the v* search and the probes."""

from __future__ import annotations

from workbench.editing.covariance import corpus_sequence_length, statistics_cached, wanted_keys
from workbench.plugin_api import AnalysisContext, Cost

TRACE_SAMPLES = 10  # layer.trace_layer's default
PREFIX_TOKENS = (5, 10)  # short and long sampled prefixes
BACKWARD = 3.0  # a forward and a backward pass cost about three forward passes


def edit_passes(ctx: AnalysisContext, tokens: int, layer: int, corpus: str, hparams: dict) -> list[tuple[float, int]]:
    model = ctx.model
    n_layers = model.n_layers
    passes: list[tuple[float, int]] = []
    if layer == -1:  # a fast causal trace of the MLPs, to find the layer
        rows, layers_run = TRACE_SAMPLES + 1, (n_layers + 1) / 2
        passes += [(rows * layers_run, tokens - t) for t in range(tokens)]
        layer = n_layers // 2
    layer = layer % n_layers
    if not statistics_cached(model, layer, corpus):
        width = corpus_sequence_length(model)  # corpus sequences, run up to the layer
        passes.append((wanted_keys(model) / width * (layer + 1) / n_layers, width))
    short, long = int(hparams.get("short_prefixes", 5)), int(hparams.get("long_prefixes", 5))
    steps = int(hparams.get("v_steps", 20))
    after = (n_layers - layer) / n_layers  # the v* search runs from the edited layer on
    passes += [(steps * BACKWARD * after * short, tokens + PREFIX_TOKENS[0]), (steps * BACKWARD * after * (long + 1), tokens + PREFIX_TOKENS[1])]
    passes += [(4, tokens)]  # probes before and after
    return passes


def cost(ctx: AnalysisContext, layer: int = -1, gen_tokens: int = 20, corpus: str = "", **params) -> Cost:
    tokens = len(ctx.tokens(0)) if ctx.prompts else 16
    passes = edit_passes(ctx, tokens, layer, corpus, params) + [(2 * gen_tokens, tokens + gen_tokens)]
    return Cost(tuple(passes), "layers × samples × tokens² (choosing the layer) + v* steps × prefixes × tokens")


def eval_cost(ctx: AnalysisContext, dataset: str = "", layer: int = -1, max_cases: int = 0, gen_tokens: int = 0, corpus: str = "", **params) -> Cost:
    from .counterfact import load_cases

    cases = load_cases(dataset)
    cases = cases[:max_cases] if max_cases else cases
    passes: list[tuple[float, int]] = []
    for case in cases:
        tokens = len(ctx.model.tokenize(case.request.prompt))
        passes += edit_passes(ctx, tokens, layer, corpus, params)
        passes += [(2 * gen_tokens, tokens + gen_tokens)] if gen_tokens else []
    return Cost(tuple(passes), "cases × (one edit + its probes)")
