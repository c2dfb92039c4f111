"""Plugin API 1.1: requires/provides, `plugins --validate`, activation access through the
context, and plugins written for 1.0 still loading and running."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import run_cli
from tests.test_plugin_api import PROMPT, write_plugin
from workbench.capture import capture_activations
from workbench.plugin_api import API_VERSION, AnalysisContext, PluginError, discover_plugins, run_analysis
from workbench.plugin_api.validate import validate_plugin
from workbench.progress import run_to_completion

RESID = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


def test_host_is_1_2_and_the_builtins_declare_their_dependency():
    assert API_VERSION == (1, 2)  # 1.2 (issue 21) added Analysis.engines and ctx.engine; 1.1 plugins run unchanged
    registry = discover_plugins()
    rome = registry.get("rome")
    assert rome.requires == ["causal-trace"]
    trace = registry.provided("causal-trace", "causal_trace")
    from workbench_causal_trace.tracing import causal_trace

    assert trace is causal_trace


@pytest.fixture
def dependent_plugins(tmp_path):
    write_plugin(
        tmp_path,
        "wbtest_provider",
        """
        from workbench.plugin_api import Plugin

        def double(x):
            return 2 * x

        plugin = Plugin(id="provider", name="Provider", api_version="1.1", provides={"double": double})
        """,
    )
    write_plugin(
        tmp_path,
        "wbtest_user",
        """
        from workbench.plugin_api import Analysis, Int, Plugin, Result
        from dataclasses import dataclass

        @dataclass
        class Doubled(Result):
            kind = "wbtest/doubled"
            value: int

        def run(ctx, x=1):
            return Doubled(ctx.provided("provider", "double")(x))

        plugin = Plugin(id="user", name="User", api_version="1.1", requires=["provider"], result_types=[Doubled],
                        analysis=Analysis(run=run, params=[Int("x", default=1)], needs_prompt=False))
        """,
    )
    write_plugin(
        tmp_path,
        "wbtest_orphan",
        """
        from workbench.plugin_api import Plugin
        plugin = Plugin(id="orphan", name="Orphan", api_version="1.1", requires=["not-installed"])
        """,
    )
    write_plugin(
        tmp_path,
        "wbtest_grandchild",
        """
        from workbench.plugin_api import Plugin
        plugin = Plugin(id="grandchild", name="Grandchild", api_version="1.1", requires=["orphan"])
        """,
    )
    return tmp_path


def test_requires_are_met_or_the_plugin_is_disabled_saying_why(dependent_plugins, monkeypatch, lab_model):
    monkeypatch.setenv("WORKBENCH_PLUGIN_PATH", str(dependent_plugins))
    registry = discover_plugins()
    user = registry.get("user")
    result = run_to_completion(run_analysis(user, AnalysisContext(lab_model, plugins=registry), {"x": 21}))
    assert result.value == 42
    assert registry.record("orphan").error == "needs plugin 'not-installed', which is not installed"
    assert "needs plugin 'orphan', which is disabled" in registry.record("grandchild").error  # a chain fails as a whole
    with pytest.raises(PluginError, match="provides no 'triple'"):
        registry.provided("provider", "triple")


def test_a_plugin_requiring_itself_or_declaring_a_query_twice_is_refused():
    from workbench.plugin_api import Plugin, Query

    with pytest.raises(PluginError, match="requires itself"):
        Plugin(id="loop", name="Loop", requires=["loop"])
    with pytest.raises(PluginError, match="query name twice"):
        Plugin(id="twice", name="Twice", queries=[Query("a", run=print), Query("a", run=print)])


@pytest.mark.slow
def test_validate_finds_bad_references_and_signatures(tmp_path, monkeypatch):
    write_plugin(
        tmp_path,
        "wbtest_sloppy",
        """
        from workbench.plugin_api import Analysis, Int, Plugin, Query

        def run(ctx, renamed=1, *, needed_too):
            pass

        def ask(ctx):
            pass

        plugin = Plugin(
            id="sloppy", name="Sloppy", api_version="1.1",
            analysis=Analysis(run=run, params=[Int("steps", default=1)]),
            queries=[Query("ask", run=ask, params=[Int("k", default=1)]), Query("gone", run="wbtest_nowhere:fn")],
            result_types=["wbtest_nowhere:Result"],
            panel="wbtest_nowhere.panel:Panel",
        )
        """,
    )
    monkeypatch.setenv("WORKBENCH_PLUGIN_PATH", str(tmp_path))
    problems = validate_plugin(discover_plugins().get("sloppy"))
    text = "\n".join(problems)
    assert "does not accept the declared parameter(s) steps" in text
    assert "requires needed_too, which the plugin does not declare" in text
    assert "query 'ask' takes 1 positional argument(s); the runner passes ctx, result first" in text
    assert "query 'gone' 'wbtest_nowhere:fn' does not import: ModuleNotFoundError" in text
    assert "result type 'wbtest_nowhere:Result' does not import" in text
    assert "panel 'wbtest_nowhere.panel:Panel' does not import" in text
    for plugin in discover_plugins().enabled():
        if plugin.id != "sloppy":
            assert validate_plugin(plugin) == [], plugin.id  # every built-in (panels imported too)

    cli = run_cli("plugins", "--validate", env={"WORKBENCH_PLUGIN_PATH": str(tmp_path), "QT_QPA_PLATFORM": "offscreen"})
    assert cli.returncode == 1, cli.stderr
    assert "sloppy: PROBLEMS" in cli.stdout and "attention: ok" in cli.stdout
    assert "Traceback" not in cli.stdout + cli.stderr


def test_a_plugin_written_for_1_0_still_loads_and_runs(tmp_path, monkeypatch, lab_model):
    write_plugin(
        tmp_path,
        "wbtest_old",
        """
        import numpy as np
        from dataclasses import dataclass
        from workbench.plugin_api import Analysis, Plugin, Result

        @dataclass
        class Norms(Result):
            kind = "wbtest/norms"
            norms: list
            from_store: bool

        def run(ctx):
            hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
            found = ctx.stored(hooks)          # 1.0: (store, hit) that the caller closes
            if found is not None:
                found[0].close()
            acts = ctx.activations(hooks)
            return Norms([float(np.linalg.norm(acts[h])) for h in hooks], found is not None)

        plugin = Plugin(id="old-norms", name="Old norms", api_version="1.0", analysis=Analysis(run=run), result_types=[Norms])
        """,
    )
    monkeypatch.setenv("WORKBENCH_PLUGIN_PATH", str(tmp_path))
    registry = discover_plugins()
    assert registry.record("old-norms").ok
    store = tmp_path / "acts.h5"
    run_to_completion(capture_activations(lab_model, [PROMPT], RESID, store))
    ctx = AnalysisContext(lab_model, [PROMPT], store_path=store)
    result = run_to_completion(run_analysis(registry.get("old-norms"), ctx))
    assert result.from_store and ctx.reused_activations
    _, cache = lab_model.bridge.run_with_cache(torch.tensor([lab_model.tokenize(PROMPT)]), names_filter=RESID)
    np.testing.assert_allclose(result.norms, [float(cache[h][0].norm()) for h in RESID], rtol=1e-5)


def test_activations_by_layer_reads_the_store_one_hook_at_a_time_and_closes_it(lab_model, tmp_path):
    store = tmp_path / "acts.h5"
    ctx = AnalysisContext(lab_model, [PROMPT], store_path=store, fill_store=True)
    held = run_to_completion(ctx.ensure_stored(RESID))
    assert held and not ctx.reused_activations
    walk = ctx.activations_by_layer(RESID)
    name, first = next(walk)
    assert name == RESID[0] and ctx.reused_activations
    walk.close()  # stopping early closes the file: a writer may append at once
    run_to_completion(capture_activations(lab_model, ["t5 t6"], RESID, store))
    fresh = AnalysisContext(lab_model, [PROMPT])  # no store: one pass
    computed = dict(fresh.activations_by_layer(RESID))
    np.testing.assert_array_equal(first, computed[RESID[0]])
    assert not fresh.reused_activations


def test_half_precision_store_is_skipped_when_full_precision_is_asked_for(lab_model, tmp_path):
    store = tmp_path / "half.h5"
    run_to_completion(capture_activations(lab_model, [PROMPT], RESID, store, storage_dtype="float16"))
    ctx = AnalysisContext(lab_model, [PROMPT], store_path=store)
    exact = ctx.activations(RESID, min_itemsize=4)
    assert not ctx.reused_activations and exact[RESID[1]].dtype == np.float32
    rounded = ctx.activations(RESID)
    assert ctx.reused_activations
    np.testing.assert_allclose(rounded[RESID[1]], exact[RESID[1]], rtol=1e-2, atol=1e-2)


@pytest.mark.slow
def test_run_with_a_query_from_the_command_line(tmp_path):
    out = tmp_path / "q.json"
    cli = run_cli(
        "run", "attention", "--model", "lab:induction", "--prompt", "t1 t2 t3 t4 t1 t2 t3",
        "--query", "pattern", "--query-param", "layer=1", "--query-param", "head=1", "--json", str(out), "--quiet",
    )
    assert cli.returncode == 0, cli.stderr
    summary = json.loads(out.read_text())
    assert summary["query"] == "pattern" and summary["selected"]["label"] == "L1H1"
    bad = run_cli("run", "attention", "--model", "lab:induction", "--prompt", "t1", "--query", "nope")
    assert bad.returncode == 2 and "has no query 'nope'" in bad.stderr and "Traceback" not in bad.stderr
    assert "loading" not in bad.stderr  # refused before the model loads
