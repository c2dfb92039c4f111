"""Cost estimates (workbench.plugin_api.cost): each analysis' stated forward passes against
the work it really does, counted at the MLPs, and the runner's question before a long job."""

import pytest

import workbench.plugin_api.runner as runner
from workbench.models import load_model
from workbench.plugin_api import AnalysisContext, LongJobError, discover_plugins, estimate_cost, run_analysis
from workbench.progress import run_to_completion

PROMPT = "t1 t2 t3 t4 t5 t6 t1 t2 t3"
CORRUPTED = "t7 t8 t9 t4 t5 t6 t1 t2 t3"
CASES = [
    ("logit-lens", [PROMPT], {}),
    ("attention", [PROMPT], {}),
    ("induction", [], {"batch": 4, "length": 10}),
    ("patching", [PROMPT, CORRUPTED], {}),
    ("causal-trace", [PROMPT], {"subject": "t2 t3", "samples": 3, "window": 1}),
    ("causal-trace", [PROMPT], {"subject": "t2 t3", "samples": 3, "method": "reference", "kinds": "mlp"}),
]


@pytest.fixture(scope="module")
def model():
    return load_model("lab:induction")


class TokenCounter:
    """Tokens through the model, in whole-model passes: rows × positions at every MLP, over layers."""

    def __init__(self, model):
        self.layers = model.n_layers
        self.tokens = 0
        mlps = [m for m in model.bridge.original_model.modules() if type(m).__name__.endswith("MLP")]
        assert len(mlps) == self.layers
        self.handles = [m.register_forward_pre_hook(self._count) for m in mlps]

    def _count(self, module, args):
        self.tokens += args[0].shape[:-1].numel()

    @property
    def passes_tokens(self) -> float:
        return self.tokens / self.layers

    def close(self):
        for handle in self.handles:
            handle.remove()


@pytest.mark.parametrize(("plugin_id", "prompts", "params"), CASES, ids=[f"{c[0]}-{c[2].get('method', '')}" for c in CASES])
def test_stated_cost_matches_the_work_done(model, plugin_id, prompts, params):
    plugin = discover_plugins().get(plugin_id)
    ctx = AnalysisContext(model, prompts)
    found = run_to_completion(estimate_cost(plugin, ctx, params))  # measures the rate first: before counting
    counter = TokenCounter(model)
    try:
        run_to_completion(run_analysis(plugin, ctx, params, go_on=True))
    finally:
        counter.close()
    ratio = found.cost.forward_tokens / counter.passes_tokens
    assert 0.75 <= ratio <= 1.5, f"{plugin_id}: stated {found.cost.forward_tokens:.0f} tokens, did {counter.passes_tokens:.0f} ({ratio:.2f}x)"
    assert found.seconds is not None and found.seconds > 0 and found.cost.growth


def test_a_long_job_stops_before_any_work_and_runs_when_told_to(model, monkeypatch):
    plugin = discover_plugins().get("patching")
    ctx = AnalysisContext(model, [PROMPT, CORRUPTED])
    monkeypatch.setattr(runner, "TRIVIAL_FLOPS", 0.0, raising=False)
    monkeypatch.setattr("workbench.plugin_api.cost.TRIVIAL_FLOPS", 0.0)
    monkeypatch.setattr(runner, "LONG_JOB_SECONDS", 1e-9)
    run_to_completion(estimate_cost(plugin, ctx, {}))  # the rate is measured once per model
    counter = TokenCounter(model)
    try:
        with pytest.raises(LongJobError) as caught:
            run_to_completion(run_analysis(plugin, ctx, {}))
        assert counter.tokens == 0
        message = str(caught.value)
        assert "forward passes" in message and "--yes" in message and "Run anyway" in message
        result = run_to_completion(run_analysis(plugin, ctx, {}, go_on=True))
        assert result is not None and counter.tokens > 0
    finally:
        counter.close()


def test_every_builtin_analysis_states_its_cost():
    for record in discover_plugins().records:
        plugin = record.plugin
        if plugin is not None and plugin.analysis is not None:
            assert plugin.analysis.cost is not None, plugin.id
