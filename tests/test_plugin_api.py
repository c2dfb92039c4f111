"""The plugin API: discovery, versions, broken plugins, parameters, the runner, typed results."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.errors import InputError, WorkbenchError
from workbench.plugin_api import (
    AnalysisContext,
    Bool,
    Choice,
    Float,
    Int,
    IntList,
    PluginError,
    PluginRunError,
    check_compatibility,
    discover_plugins,
    run_analysis,
)
from workbench.plugin_api.params import parse_assignments, resolve_params
from workbench.progress import run_to_completion
from workbench.results import load_results, save_result

PROMPT = "t1 t2 t3 t4 t1 t2 t3"


def write_plugin(folder: Path, package: str, body: str) -> Path:
    # A unique package name per test: Python caches modules by name for the whole process.
    target = folder / f"{package}_{folder.name.replace('-', '_')}"
    target.mkdir(parents=True)
    (target / "__init__.py").write_text(textwrap.dedent(body), encoding="utf-8")
    return target


@pytest.fixture
def broken_plugins(tmp_path):
    """A folder of plugins that fail in every way discovery must survive."""
    write_plugin(tmp_path, "wbtest_import_error", "raise RuntimeError('boom at import')\n")
    write_plugin(
        tmp_path,
        "wbtest_future_api",
        """
        from workbench.plugin_api import Plugin
        plugin = Plugin(id="future", name="Future", api_version="2.0")
        """,
    )
    write_plugin(
        tmp_path,
        "wbtest_not_a_plugin",
        """
        plugin = "just a string"
        """,
    )
    write_plugin(
        tmp_path,
        "wbtest_duplicate",
        """
        from workbench.plugin_api import Plugin
        plugin = Plugin(id="logit-lens", name="Impostor")
        """,
    )
    write_plugin(
        tmp_path,
        "wbtest_raises_at_run",
        """
        from workbench.plugin_api import Analysis, Plugin, Progress

        def run(ctx):
            yield Progress(0, 1, "about to fail")
            raise ZeroDivisionError("plugin bug")

        plugin = Plugin(id="raises-at-run", name="Raises", analysis=Analysis(run=run, needs_prompt=False))
        """,
    )
    return tmp_path


def test_builtins_are_found_through_entry_points():
    registry = discover_plugins()
    record = registry.record("logit-lens")
    assert record is not None and record.ok, record and record.error
    # Same path as a third-party package: the entry point group, not a special case.
    assert record.source.startswith("entry point workbench_logit_lens:plugin")


def test_broken_plugins_are_listed_and_disabled_not_fatal(broken_plugins, monkeypatch):
    monkeypatch.setenv("WORKBENCH_PLUGIN_PATH", str(broken_plugins))
    registry = discover_plugins()
    by_id = {r.id: r for r in registry}
    import_error = next(r for r in registry if r.id.startswith("wbtest_import_error"))
    assert "boom at import" in import_error.error
    assert "RuntimeError" in import_error.details  # the traceback, for details on demand
    assert "2.0" in by_id["future"].error and "upgrade the workbench" in by_id["future"].error
    assert "not a workbench Plugin" in next(r for r in registry if r.id.startswith("wbtest_not_a_plugin")).error
    impostor = [r for r in registry if r.name == "Impostor"][0]
    assert "already used" in impostor.error
    assert registry.get("logit-lens").name == "Logit lens"  # the real one still works
    assert registry.record("raises-at-run").ok
    with pytest.raises(PluginError, match="disabled"):
        registry.get("future")
    with pytest.raises(PluginError, match="No plugin 'nope'"):
        registry.get("nope")


def test_plugin_raising_at_run_time_names_the_plugin(broken_plugins, monkeypatch, lab_model):
    monkeypatch.setenv("WORKBENCH_PLUGIN_PATH", str(broken_plugins))
    registry = discover_plugins()
    plugin = registry.get("raises-at-run")
    with pytest.raises(PluginRunError) as caught:
        run_to_completion(run_analysis(plugin, AnalysisContext(lab_model)))
    assert "raises-at-run" in caught.value.message and "ZeroDivisionError" in caught.value.message
    assert "plugin bug" in caught.value.details
    registry.disable("raises-at-run", caught.value.message)
    with pytest.raises(PluginError, match="disabled"):
        registry.get("raises-at-run")


@pytest.mark.parametrize(
    "declared, ok",
    [("1.0", True), ("1.1", False), ("0.9", False), ("2.0", False), ("one", False)],
)
def test_api_version_compatibility(declared, ok):
    if ok:
        check_compatibility(declared, host=(1, 0))
    else:
        with pytest.raises(PluginError):
            check_compatibility(declared, host=(1, 0))
    check_compatibility("1.0", host=(1, 3))  # older minor on a newer host: fine


def test_parameters_parse_validate_and_name_the_fix():
    params = [
        Int("layer", default=0, minimum=0, maximum=11),
        Float("noise", default=3.0, minimum=0.0),
        Bool("mask_bos", default=False),
        Choice("scale", default="linear", choices=("linear", "log")),
        IntList("positions", minimum=0),
    ]
    values = resolve_params(params, texts=parse_assignments(["layer=3", "noise=0.5", "mask_bos=on", "scale=log", "positions=1,4"]))
    assert values == {"layer": 3, "noise": 0.5, "mask_bos": True, "scale": "log", "positions": (1, 4)}
    assert resolve_params(params) == {"layer": 0, "noise": 3.0, "mask_bos": False, "scale": "linear", "positions": ()}
    for text, accepts in [
        ("layer=12", "from 0 to 11"),
        ("layer=two", "whole number"),
        ("noise=-1", "at least 0"),
        ("mask_bos=maybe", "true or false"),
        ("scale=cubic", "linear, log"),
        ("positions=1,-2", "commas"),
    ]:
        name = text.split("=")[0]
        with pytest.raises(InputError) as caught:
            resolve_params(params, texts=parse_assignments([text]))
        assert repr(name) in caught.value.message and accepts in caught.value.hint
    with pytest.raises(InputError, match="Unknown parameter 'layers'"):
        resolve_params(params, texts={"layers": "1"})
    with pytest.raises(InputError, match="NAME=VALUE"):
        parse_assignments(["layer"])


def test_logit_lens_matches_the_hf_model(lab_model):
    """The lens at the last layer is the model's own output; earlier layers decode with ln_f and lm_head."""
    plugin = discover_plugins().get("logit-lens")
    result = run_to_completion(run_analysis(plugin, AnalysisContext(lab_model, [PROMPT]), {"top_k": 3}))
    hf = lab_model.bridge.original_model
    ids = torch.tensor([lab_model.tokenize(PROMPT)])
    with torch.inference_mode():
        out = hf(ids, output_hidden_states=True)
    probs = out.logits[0].softmax(-1)
    np.testing.assert_array_equal(result.top_ids[-1, :, 0], probs.argmax(-1).numpy())
    np.testing.assert_allclose(result.p_final_top[-1], probs.max(-1).values.numpy(), rtol=1e-5)
    # hidden_states[1] is block 0's output; GPT-2 decodes it with ln_f then the tied lm_head.
    with torch.inference_mode():
        layer0 = hf.lm_head(hf.transformer.ln_f(out.hidden_states[1]))[0].softmax(-1)
    expected = layer0.gather(-1, probs.argmax(-1)[:, None])[:, 0].numpy()
    np.testing.assert_allclose(result.p_final_top[result.layer_names.index("L0")], expected, rtol=1e-4, atol=1e-6)
    assert result.meta.model_fingerprint == lab_model.fingerprint and result.meta.params["top_k"] == 3


def test_results_round_trip_through_hdf5_with_provenance(lab_model, tmp_path):
    registry = discover_plugins()
    result = run_to_completion(run_analysis(registry.get("logit-lens"), AnalysisContext(lab_model, [PROMPT])))
    path = tmp_path / "results.h5"
    save_result(path, result, title="first")
    save_result(path, result, title="second")
    loaded = load_results(path, registry.result_class)
    assert [info.id for info, _ in loaded] == ["result-0001", "result-0002"]
    info, again = loaded[0]
    assert info.kind == "logit-lens/lens" and info.title == "first"
    np.testing.assert_array_equal(again.p_final_top, result.p_final_top)
    assert again.top_strings == result.top_strings and again.layer_names == result.layer_names
    assert again.meta.model_fingerprint == lab_model.fingerprint and again.meta.prompts == [PROMPT]
    assert again.report().figures[0].svg.startswith("<svg")


def test_analysis_reuses_the_activation_store(lab_model, tmp_path):
    from workbench.capture import capture_activations

    store = tmp_path / "acts.h5"
    run_to_completion(capture_activations(lab_model, [PROMPT], ["residual"], store))
    plugin = discover_plugins().get("logit-lens")
    fresh = run_to_completion(run_analysis(plugin, AnalysisContext(lab_model, [PROMPT])))
    reused = run_to_completion(run_analysis(plugin, AnalysisContext(lab_model, [PROMPT], store_path=store)))
    assert not fresh.meta.reused_activations and reused.meta.reused_activations
    np.testing.assert_allclose(reused.p_final_top, fresh.p_final_top, rtol=1e-6)
    other = run_to_completion(run_analysis(plugin, AnalysisContext(lab_model, ["t5 t6"], store_path=store)))
    assert not other.meta.reused_activations  # a prompt the store does not hold is computed


def test_bad_prompts_fail_before_work(lab_model):
    plugin = discover_plugins().get("logit-lens")
    with pytest.raises(WorkbenchError, match="needs a prompt"):
        run_to_completion(run_analysis(plugin, AnalysisContext(lab_model, [])))
    with pytest.raises(InputError, match="empty"):
        run_to_completion(run_analysis(plugin, AnalysisContext(lab_model, ["   "])))
    with pytest.raises(InputError, match="reads at most 64"):
        run_to_completion(run_analysis(plugin, AnalysisContext(lab_model, [" ".join(["t1"] * 80)])))
