"""Plugin API 1.1 queries, headless: a drill-down gives what the analysis gives when asked
directly, reads the store instead of running the model, checks the model once and merges
provenance; bad queries are clear errors before any work."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from workbench.errors import InputError
from workbench.models.loading import load_hf_model
from workbench.plugin_api import AnalysisContext, PluginError, discover_plugins, run_query, summary_json
from workbench.progress import Progress, run_to_completion
from workbench.store import ActivationStore
from workbench_attention.tests.test_attention import LAB_PROMPT, analyse, hf_attentions


@pytest.fixture(scope="module")
def plugins():
    return discover_plugins()


@pytest.fixture(scope="module")
def lab_hf():
    _, model, _ = load_hf_model("lab:induction")
    model.set_attn_implementation("eager")
    return model


def query(plugin, ctx, result, name, **params):
    return run_to_completion(run_query(plugin, name, ctx, result, params))


def test_attention_head_query_reads_the_store_and_equals_the_analysis(plugins, lab_model, lab_hf, tmp_path):
    attention = plugins.get("attention")
    store = tmp_path / "acts.h5"
    first, ctx = analyse(attention, lab_model, [LAB_PROMPT], store_path=store, fill_store=True, layer=0, head=0)
    with ActivationStore(store) as opened:
        n_runs = len(opened.runs())
    ctx = AnalysisContext(lab_model, [LAB_PROMPT], store_path=store, fill_store=True)
    answer = query(attention, ctx, first, "pattern", layer=1, head=1)
    direct, _ = analyse(attention, lab_model, [LAB_PROMPT], layer=1, head=1)
    np.testing.assert_allclose(answer.pattern, direct.pattern, atol=1e-6)
    # ... and with Hugging Face's own eager attention (the induction head of the lab model).
    np.testing.assert_allclose(answer.pattern, hf_attentions(lab_hf, lab_model.tokenize(LAB_PROMPT))[1, 1], atol=1e-5)
    assert (answer.layer, answer.head) == (1, 1)
    assert answer.thumbnails is first.thumbnails  # the overview is the run's, not recomputed
    assert ctx.reused_activations  # read from the store ...
    with ActivationStore(store) as opened:
        assert len(opened.runs()) == n_runs  # ... which captured nothing new
    meta = answer.meta
    assert meta.query == "pattern" and meta.params["layer"] == 1 and meta.params["head"] == 1
    assert meta.params["scale"] == first.meta.params["scale"]  # the rest of the provenance is the run's
    assert meta.model_fingerprint == lab_model.fingerprint and meta.prompts == [LAB_PROMPT]
    assert summary_json(answer)["query"] == "pattern"


def test_attention_query_without_a_store_runs_the_model(plugins, lab_model):
    attention = plugins.get("attention")
    first, _ = analyse(attention, lab_model, [LAB_PROMPT])
    ctx = AnalysisContext(lab_model, [LAB_PROMPT])
    layer_mean = query(attention, ctx, first, "pattern", layer=1, average="layer")
    direct, _ = analyse(attention, lab_model, [LAB_PROMPT], layer=1, average="layer")
    np.testing.assert_allclose(layer_mean.pattern, direct.pattern, atol=1e-6)
    assert not ctx.reused_activations


def test_attention_query_averages_prompts_and_compares_like_the_analysis(plugins, lab_model, tmp_path):
    attention = plugins.get("attention")
    prompts = [LAB_PROMPT, "t7 t8 t9 t7 t8 t9 t7"]
    store = tmp_path / "acts.h5"
    first, _ = analyse(attention, lab_model, prompts, store_path=store, fill_store=True)
    ctx = AnalysisContext(lab_model, prompts, store_path=store, fill_store=True)
    averaged = query(attention, ctx, first, "pattern", layer=1, head=2, average="prompts", compare_prompt="t3 t4 t3 t4")
    direct, _ = analyse(attention, lab_model, prompts, layer=1, head=2, average="prompts", compare_prompt="t3 t4 t3 t4")
    np.testing.assert_allclose(averaged.pattern, direct.pattern, atol=1e-6)
    assert averaged.str_tokens == direct.str_tokens and averaged.n_prompts == 2
    np.testing.assert_allclose(averaged.compare_pattern, direct.compare_pattern, atol=1e-6)
    assert averaged.compare_str_tokens == direct.compare_str_tokens


def test_qk_ov_head_query_equals_the_analysis_on_that_head(plugins, lab_model):
    qk_ov = plugins.get("qk-ov")
    ctx = AnalysisContext(lab_model, [])
    first = run_to_completion(qk_ov_run(qk_ov, ctx, head="0.0", token_set="top-norm", top_k=8))
    answer = query(qk_ov, ctx, first, "head", head="1.1")
    direct = run_to_completion(qk_ov_run(qk_ov, ctx, head="1.1", token_set="top-norm", top_k=8))
    np.testing.assert_allclose(answer.qk, direct.qk, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(answer.ov, direct.ov, rtol=1e-5, atol=1e-6)
    assert answer.token_ids == direct.token_ids
    np.testing.assert_array_equal(answer.copying_score, first.copying_score)  # the tables stay
    assert answer.meta.query == "head" and answer.meta.params["head"] == "1.1"
    assert answer.meta.params["token_set"] == "top-norm"  # not the query's "shown"


def qk_ov_run(plugin, ctx, **params):
    from workbench.plugin_api import run_analysis

    return run_analysis(plugin, ctx, params)


def test_a_result_of_another_model_is_refused_before_any_work(plugins, lab_model):
    attention = plugins.get("attention")
    first, _ = analyse(attention, lab_model, [LAB_PROMPT])
    first.meta = dataclasses.replace(first.meta, model_fingerprint="0" * 32, model_name="gpt2")
    job = run_query(attention, "pattern", AnalysisContext(lab_model, [LAB_PROMPT]), first, {"layer": 1})
    with pytest.raises(InputError, match="This result is from gpt2") as caught:
        next(job)
    assert "load the result's model" in caught.value.hint


@pytest.mark.parametrize(
    "name, params, error, text",
    [
        ("nope", {}, PluginError, "has no query 'nope'"),
        ("pattern", {"layer": 7}, InputError, "no layer 7"),
        ("pattern", {"head": -1}, InputError, "head"),
        ("pattern", {"average": "heads"}, InputError, "average"),
    ],
)
def test_bad_queries_are_one_line_errors(plugins, lab_model, name, params, error, text):
    attention = plugins.get("attention")
    first, _ = analyse(attention, lab_model, [LAB_PROMPT])
    with pytest.raises(error, match=text):
        run_to_completion(run_query(attention, name, AnalysisContext(lab_model, [LAB_PROMPT]), first, params))


def test_a_cancelled_query_leaves_the_capture_interrupted_and_the_store_usable(plugins, lab_model, tmp_path):
    attention = plugins.get("attention")
    first, _ = analyse(attention, lab_model, [LAB_PROMPT])  # no store: the query must capture
    store = tmp_path / "acts.h5"
    ctx = AnalysisContext(lab_model, [LAB_PROMPT], store_path=store, fill_store=True)
    job = run_query(attention, "pattern", ctx, first, {"layer": 1, "head": 1})
    while not store.exists():  # up to the capture's first batch, before its run is finished
        assert isinstance(next(job), Progress)
    job.close()  # what Cancel does
    with ActivationStore(store) as opened:
        runs = opened.runs()
        assert len(runs) == 1 and not runs[0].complete  # interrupted, never served
    # A new query then captures again and answers.
    answer = run_to_completion(run_query(attention, "pattern", ctx, first, {"layer": 1, "head": 1}))
    assert answer.pattern.shape == first.pattern.shape
