"""Issue 21's second slice: attention maps, activation caching, activation patching and
induction scores give the same numbers through `nnsight:<spec>` as through TransformerBridge,
run the way the app and the command line run them (the plugin runner, `capture_activations`);
what the nnsight engine cannot do is refused in one line; and each analysis makes few engine
runs (on NDIF each run is a queued job), counted here on the lab model and, in
benchmarks/bench_engines.py, on SmolLM2's 30 layers.

"Relative difference" is max |nnsight - bridge| / max |bridge| over an array (float32), every
float array and number of a result compared; everything else must be equal.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py
import numpy as np
import pytest

from workbench.capture import capture_activations
from workbench.errors import EngineError
from workbench.plugin_api import AnalysisContext, discover_plugins, run_analysis
from workbench.progress import run_to_completion

TOLERANCE = 1e-4
LAB_PROMPTS = ["t1 t2 t3 t4 t5 t6 t7 t8 t5", "t1 t2 t3 t4 t5 t9 t7 t8 t5"]  # the patching tests' value pair
EIFFEL = "The Eiffel Tower is located in the city of"
ROME = "The Colosseum is located in the city of"  # the same length as EIFFEL on SmolLM2
IOI = ("When John and Mary went to the store, John gave a drink to", "When John and Mary went to the store, Mary gave a drink to")


def relative(ours: np.ndarray, theirs: np.ndarray) -> float:
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    if ours.size == 0:
        return 0.0
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    ours, theirs = np.nan_to_num(ours), np.nan_to_num(theirs)
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30))


def compare_results(ours, theirs, ignored: tuple[str, ...] = ()) -> dict[str, float]:
    """The relative difference of every float field of two results (arrays and numbers; timings
    and the `ignored` fields left out); every other field must be equal."""
    differences = {}
    for field in dataclasses.fields(theirs):
        if field.name == "meta" or field.name.startswith("seconds") or field.name in ignored:
            continue
        a, b = getattr(ours, field.name), getattr(theirs, field.name)
        if isinstance(b, np.ndarray) and b.dtype.kind == "f" or isinstance(b, float):
            differences[field.name] = relative(a, b)
        elif isinstance(b, np.ndarray):
            assert np.array_equal(a, b), field.name
        else:
            assert a == b, field.name
    return differences


def run_on(plugin_id: str, model, prompts, **params):
    plugin = discover_plugins().get(plugin_id)
    return run_to_completion(run_analysis(plugin, AnalysisContext(model, list(prompts)), params))


class RunCounter:
    """Counts a model's engine jobs: each `run`, or `run_many` of several runs, is one (a
    round trip on NDIF)."""

    def __init__(self, monkeypatch, model):
        self.count = 0
        real = model.engine._run_many

        def counted(*args, **kwargs):
            self.count += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(model.engine, "_run_many", counted)

    def take(self) -> int:
        count, self.count = self.count, 0
        return count


def check_both(plugin_id, bridge_model, nnsight_model, prompts, label, ignored: tuple[str, ...] = (), **params):
    theirs = run_on(plugin_id, bridge_model, prompts, **params)
    ours = run_on(plugin_id, nnsight_model, prompts, **params)
    assert ours.meta.model_fingerprint == theirs.meta.model_fingerprint and ours.meta.model_spec.startswith("nnsight:")
    differences = compare_results(ours, theirs, ignored)
    print(f"\n{label} {plugin_id} {params}: relative differences " + ", ".join(f"{k} {v:.2g}" for k, v in differences.items()))
    assert differences and max(differences.values()) <= TOLERANCE, differences
    return ours, theirs


# -- attention maps ----------------------------------------------------------------------------


@pytest.mark.parametrize("params", [dict(layer=1, head=1, compare_prompt="t5 t6 t7 t5"), dict(layer=0, head=2, average="layer"), dict(average="prompts", layer=1, head=0)])
def test_lab_attention_equals_the_bridge(lab_model, nnsight_lab, params):
    ours, _ = check_both("attention", lab_model, nnsight_lab, LAB_PROMPTS, "lab:induction", **params)
    assert ours.pattern.shape == (10, 10)


def test_lab_attention_query_and_the_store(lab_model, nnsight_lab, tmp_path):
    """On nnsight too a context that fills a store captures every layer's patterns into it,
    and the next head is a read from it."""
    plugin = discover_plugins().get("attention")
    for model in (lab_model, nnsight_lab):
        store = tmp_path / f"{model.engine.name}.h5"
        ctx = AnalysisContext(model, LAB_PROMPTS[:1], store_path=store, fill_store=True)
        result = run_to_completion(run_analysis(plugin, ctx, {"layer": 1, "head": 1}))
        assert store.exists()
        from workbench.plugin_api import run_query

        again = AnalysisContext(model, LAB_PROMPTS[:1], store_path=store, fill_store=True)
        other = run_to_completion(run_query(plugin, "pattern", again, result, {"layer": 0, "head": 2}))
        assert again.reused_activations and other.pattern.shape == (10, 10)


# -- activation caching -------------------------------------------------------------------------


def stored_datasets(path: Path) -> dict[str, tuple]:
    """Every dataset of a store's run: (values, chunks, dtype, attributes other than the
    canonical name, which is TransformerLens' own name on the bridge)."""
    found = {}
    with h5py.File(path) as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                attrs = {k: str(v) for k, v in obj.attrs.items() if k != "canonical_name"}
                found[name] = (obj[()], obj.chunks, obj.dtype, attrs)

        f.visititems(visit)
    return found


def compare_stores(ours: Path, theirs: Path) -> float:
    a, b = stored_datasets(ours), stored_datasets(theirs)
    assert set(a) == set(b)
    worst = 0.0
    for name, (values, chunks, dtype, attrs) in b.items():
        assert a[name][1:] == (chunks, dtype, attrs), name
        if "/checksums/" in f"/{name}":
            continue  # checksums of floats that may differ in the last bits
        if values.dtype.kind == "f":
            worst = max(worst, relative(a[name][0], values))
        else:
            assert np.array_equal(a[name][0], values), name
    return worst


def capture_both(bridge_model, nnsight_model, prompts, hooks, tmp_path, **options) -> float:
    paths = []
    tmp_path.mkdir(parents=True, exist_ok=True)
    for model in (bridge_model, nnsight_model):
        path = tmp_path / f"{model.engine.name}.h5"
        run_to_completion(capture_activations(model, prompts, hooks, path, **options))
        paths.append(path)
    return compare_stores(paths[1], paths[0])


def test_lab_capture_stores_the_bridges_arrays(lab_model, nnsight_lab, tmp_path, monkeypatch):
    prompts = LAB_PROMPTS + ["t1 t9 t1", "t3 t4 t5 t3 t4"]
    worst = capture_both(lab_model, nnsight_lab, prompts, "residual,attention,heads,attn-out,mlp", tmp_path, batch_size=3)
    print(f"\nlab:induction capture (11 hooks, 4 prompts, batches of 3): relative difference {worst:.2g}")
    assert worst <= TOLERANCE
    # float16 storage: the same rounding of the same values
    worst16 = capture_both(lab_model, nnsight_lab, prompts[:2], "residual", tmp_path / "f16", storage_dtype="float16")
    assert worst16 <= 1e-3


def test_capture_runs_in_chunks_of_hooks_within_the_budget(lab_model, nnsight_lab, tmp_path, monkeypatch):
    import workbench.capture as capture

    counter = RunCounter(monkeypatch, nnsight_lab)
    prompts = LAB_PROMPTS + ["t1 t9 t1"]
    run_to_completion(capture_activations(nnsight_lab, prompts, "residual,attention", tmp_path / "one.h5", batch_size=2))
    assert counter.take() == 2  # one run per batch: no probe pass, every hook at once
    # a budget of one residual hook of the first batch (2 x 10 tokens): a run per hook there,
    # one for the second batch (1 x 4 tokens), and the same arrays
    monkeypatch.setattr(capture, "CAPTURE_BUDGET_BYTES", 4 * 2 * 10 * 128)
    run_to_completion(capture_activations(nnsight_lab, prompts, "residual,attention", tmp_path / "many.h5", batch_size=2))
    assert counter.take() == 5 + 1
    assert compare_stores(tmp_path / "many.h5", tmp_path / "one.h5") == 0.0


def test_cache_command_on_the_nnsight_engine(tmp_path, capsys):
    from workbench.cli.main import main

    assert main(["cache", "--model", "nnsight:lab:induction", "--prompt", LAB_PROMPTS[0], "--hooks", "residual", "--out", str(tmp_path / "store.h5")]) == 0
    assert "wrote run-" in capsys.readouterr().out
    with h5py.File(tmp_path / "store.h5") as f:
        run = f["runs"][next(iter(f["runs"]))]
        assert run.attrs["engine"] == "nnsight"


# -- activation patching --------------------------------------------------------------------------


# On the bridge patched runs start at their cell's layer and position (workbench_patching/from_layer.py),
# batched otherwise: the numbers are compared, not the passes.
PATCHING_PASSES = ("patched_passes",)


def test_lab_patching_every_target_equals_the_bridge(lab_model, nnsight_lab, monkeypatch):
    ours, theirs = check_both("patching", lab_model, nnsight_lab, LAB_PROMPTS, "lab:induction", PATCHING_PASSES, targets="everything", max_batch=13)
    assert ours.cells_run == theirs.cells_run > 0
    assert np.argmax(ours.head_out) == np.argmax(theirs.head_out) == 1 * 4 + 1  # L1H1, the induction head


def test_patching_a_target_the_engine_cannot_write_is_refused_in_one_line(nnsight_lab, monkeypatch):
    engine = nnsight_lab.engine
    monkeypatch.setattr(engine, "modules", dataclasses.replace(engine.modules, pattern_source=()))
    with pytest.raises(EngineError) as caught:
        run_on("patching", nnsight_lab, LAB_PROMPTS)  # "all" holds head_pattern
    assert caught.value.message.startswith("Activation patching cannot patch head_pattern on the nnsight engine")
    assert "targets=resid_pre,attn_out,mlp_out,head_out" in caught.value.hint and "\n" not in caught.value.message
    run_on("patching", nnsight_lab, LAB_PROMPTS, targets="head_out")  # the others run


# -- induction heads --------------------------------------------------------------------------------


def test_lab_induction_scores_and_ablations_equal_the_bridge(lab_model, nnsight_lab, monkeypatch):
    ours, theirs = check_both("induction", lab_model, nnsight_lab, [], "lab:induction", batch=6, top_n=2)
    assert ours.ablated_heads == theirs.ablated_heads and [1, 1] in ours.ablated_heads  # L1H1
    # reads split over runs when they pass the budget: the same numbers
    import workbench_induction.analysis as induction

    monkeypatch.setattr(induction, "READ_BUDGET_BYTES", 1)
    counter = RunCounter(monkeypatch, nnsight_lab)
    split = run_on("induction", nnsight_lab, [], batch=6, top_n=2, ablation="zero")
    assert counter.take() == 4 + 2 * len(split.ablated_heads)  # a run per read: 2 layers x (pattern, hook_z), then 2 patterns per ablation
    assert relative(split.induction, ours.induction) <= 1e-12 and relative(split.ablated_loss_curves[:, 0], ours.ablated_loss_curves[:, 0]) <= 1e-12


# -- causal tracing ------------------------------------------------------------------------------------


def check_traces(bridge_model, nnsight_model, prompt, subject, label, **params):
    """The bridge's fast path against whole passes with masked writes on the nnsight engine
    (engine_trace.py): the scores and both baselines."""
    theirs = run_on("causal-trace", bridge_model, [prompt], subject=subject, **params)
    ours = run_on("causal-trace", nnsight_model, [prompt], subject=subject, **params)
    assert (theirs.method, ours.method) == ("fast", "batched-reference") and ours.tokens == theirs.tokens and ours.answer == theirs.answer
    differences = {name: relative(getattr(ours, name), getattr(theirs, name)) for name in ("scores", "high_score", "low_score", "noise")}
    print(f"\n{label} causal trace {params}: relative differences " + ", ".join(f"{k} {v:.2g}" for k, v in differences.items()))
    assert max(differences.values()) <= TOLERANCE, differences
    return ours, theirs


def test_lab_causal_trace_equals_the_bridge(lab_model, nnsight_lab, monkeypatch):
    counter = RunCounter(monkeypatch, nnsight_lab)
    ours, _ = check_traces(lab_model, nnsight_lab, LAB_PROMPTS[0], "t2 t3", "lab:induction", samples=3)
    # the clean run (it predicts the target), then one run per sample (the 48 cells, 3 kinds × 8 tokens from the subject on × 2 layers, fit one run)
    assert counter.take() == 1 + 3 and ours.scores.shape == (3, 10, 2)  # BOS and 9 tokens
    check_traces(lab_model, nnsight_lab, LAB_PROMPTS[0], "t5", "lab:induction", samples=2, kinds="mlp", window=2, target="t6 t7")


# -- engine runs (round trips on NDIF) ----------------------------------------------------------------


def test_runs_per_analysis_on_both_engines(lab_model, nnsight_lab, monkeypatch, tmp_path):
    """The same engine runs on both engines; patching batches cells of consecutive layers."""
    counts = {}
    for model in (lab_model, nnsight_lab):
        counter = RunCounter(monkeypatch, model)
        run_on("attention", model, LAB_PROMPTS[:1])
        attention = counter.take()
        run_to_completion(capture_activations(model, LAB_PROMPTS, "residual,attention", tmp_path / f"{model.engine.name}.h5"))
        caching = counter.take()
        result = run_on("patching", model, LAB_PROMPTS)
        patching = counter.take()
        # The bridge runs the corrupted prompt and the patched runs itself, from their layer (from_layer.py).
        assert patching == (2 + result.patched_passes if model.engine.name == "nnsight" else 1)
        counts[model.engine.name] = (attention, caching, patching)
    print(f"\nlab:induction engine runs (attention, caching, patching): {counts}")
    assert counts["nnsight"][0] == 1 and counts["nnsight"][1] == 1  # the bridge streams attention and caching itself
    assert counts["nnsight"][2] <= 2 + 5  # 5 targets, every cell of a target in one pass


# -- SmolLM2 ------------------------------------------------------------------------------------------


@pytest.mark.smollm2
def test_smollm2_attention_equals_the_bridge(smollm2, nnsight_smollm2):
    check_both("attention", smollm2, nnsight_smollm2, [EIFFEL], "smollm2", layer=9, head=7, compare_prompt=ROME)


@pytest.mark.smollm2
def test_smollm2_capture_stores_the_bridges_arrays(smollm2, nnsight_smollm2, tmp_path):
    worst = capture_both(smollm2, nnsight_smollm2, [EIFFEL, ROME, "Paris"], "residual,attention,heads", tmp_path, batch_size=2)
    print(f"\nsmollm2 capture (91 hooks, 3 prompts): relative difference {worst:.2g}")
    assert worst <= TOLERANCE


@pytest.mark.smollm2
def test_smollm2_induction_equals_the_bridge(smollm2, nnsight_smollm2):
    check_both("induction", smollm2, nnsight_smollm2, [], "smollm2", batch=4, length=20, top_n=2)


@pytest.mark.smollm2
def test_smollm2_causal_trace_equals_the_bridge(smollm2, nnsight_smollm2):
    check_traces(smollm2, nnsight_smollm2, EIFFEL, "The Eiffel Tower", "smollm2", samples=2, kinds="resid")


@pytest.mark.smollm2
def test_smollm2_patching_equals_the_bridge(smollm2, nnsight_smollm2):
    ours, _ = check_both("patching", smollm2, nnsight_smollm2, IOI, "smollm2", PATCHING_PASSES)
    assert ours.answer == " Mary"
