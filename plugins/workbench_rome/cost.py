"""What a ROME edit costs before it runs (workbench.plugin_api.Cost): the causal trace that
chooses the layer, the key statistics (unless cached), k*, the v* search and the probes."""

from __future__ import annotations

from workbench.editing.covariance import corpus_sequence_length, statistics_cached, wanted_keys
from workbench.editing.prompts import last_subject_token, target_ids
from workbench.errors import InputError
from workbench.plugin_api import AnalysisContext, Cost

TRACE_SAMPLES = 10  # layer.trace_layer's default
PREFIX_TOKENS = (5, 10)  # short and long sampled prefixes
# A forward and a backward pass cost about two forward passes: the weights are frozen, so the
# backward pass computes only the gradients of the activations (one product per weight).
BACKWARD = 2.0


def search_tokens(model, template: str, subject: str, target_new: str) -> int | None:
    """Positions a v* step runs per prompt: from the subject's last token to the last
    target token it predicts (the positions before it are cached); None when the request
    cannot be read (the run then says why)."""
    if "{}" not in template or not subject or not target_new:
        return None
    prompt = template.replace("{}", subject, 1)
    try:
        ids, last = last_subject_token(model, prompt, template.index("{}") + len(subject))
        return len(ids) - last + len(target_ids(model, prompt, target_new)) - 1
    except InputError:
        return None


def edit_passes(ctx: AnalysisContext, tokens: int, layer: int, corpus: str, hparams: dict, searched: int | None = None, probes: int = 2) -> list[tuple[float, int]]:
    """tokens: the prompt's; searched: search_tokens (tokens when unknown); probes: prompt passes measuring the edit."""
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
    contexts = [(short, tokens + PREFIX_TOKENS[0]), (long, tokens + PREFIX_TOKENS[1]), (1, tokens)]
    passes += [(n * (layer + 1) / n_layers, width) for n, width in contexts]  # k*: up to the edited layer
    passes += [(n, width) for n, width in contexts] + [(1, tokens)]  # the search's cache of each prompt and the KL prompt
    # Each step: the prompts and the KL prompt, from the edited layer on, from the subject's last token on.
    passes.append((steps * BACKWARD * (n_layers - layer) / n_layers * (short + long + 2), searched or tokens))
    passes.append((probes, tokens))
    return passes


def cost(ctx: AnalysisContext, layer: int = -1, gen_tokens: int = 20, corpus: str = "", **params) -> Cost:
    tokens = len(ctx.tokens(0)) if ctx.prompts else 16
    subject, template = str(params.get("subject", "")), str(params.get("template", ""))
    if not template and ctx.prompts and subject and subject in ctx.prompts[0]:
        template = ctx.prompts[0].replace(subject, "{}", 1)
    searched = search_tokens(ctx.model, template, subject, str(params.get("target_new", "")))
    probes = 2 * (1 + sum(len(str(params.get(k, "")).replace("|", "\n").splitlines()) for k in ("paraphrases", "neighbours")))  # before and after
    passes = edit_passes(ctx, tokens, layer, corpus, params, searched, probes) + [(2 * gen_tokens, tokens + gen_tokens)]
    return Cost(tuple(passes), "layers × samples × tokens² (choosing the layer) + v* steps × prefixes × tokens")


def eval_cost(ctx: AnalysisContext, dataset: str = "", layer: int = -1, max_cases: int = 0, gen_tokens: int = 0, corpus: str = "", **params) -> Cost:
    from .counterfact import load_cases

    cases = load_cases(dataset)
    cases = cases[:max_cases] if max_cases else cases
    passes: list[tuple[float, int]] = []
    for case in cases:
        r = case.request
        tokens = len(ctx.model.tokenize(r.prompt))
        probes = 1 + len(case.paraphrases) + len(case.neighbours)  # after the edit, both targets in one pass
        passes += edit_passes(ctx, tokens, layer, corpus, params, search_tokens(ctx.model, r.template, r.subject, r.target_new), probes)
        passes += [(2 * gen_tokens, tokens + gen_tokens)] if gen_tokens else []
    return Cost(tuple(passes), "cases × (one edit + its probes)")
