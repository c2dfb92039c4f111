"""The engine seam (issue 21): the nnsight engine reads, writes and predicts what the
TransformerBridge engine does, hook point by hook point, on real models; the analyses
ported to the seam give the same numbers through `nnsight:<spec>`; the others refuse in
one line; `ndif:` without a key or network fails in seconds saying what to set.

"Relative difference" is max |nnsight - bridge| / max |bridge| over a tensor (float32).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from workbench.engines import BridgeEngine, NnsightEngine, Write, seam_hook_names
from workbench.errors import EngineError, HookError, ModelLoadError
from workbench.models import load_model
from workbench.models.specs import parse_spec
from workbench.plugin_api import AnalysisContext, discover_plugins, run_analysis
from workbench.predict import predict_next
from workbench.progress import run_to_completion

TOLERANCE = 1e-4
LAB_PROMPTS = ["t1 t2 t3 t4 t1 t2 t3", "t5 t6 t7 t8 t5 t6 t7"]  # one length: a batch of two
EIFFEL = "The Eiffel Tower is located in the city of"
ROME = "The Colosseum is located in the city of"  # the same length as EIFFEL on SmolLM2


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30))


def batch(model, prompts) -> torch.Tensor:
    ids = [model.tokenize(p) for p in prompts]
    assert len({len(i) for i in ids}) == 1, "prompts of one length"
    return torch.tensor(ids)


def worst_by_point(bridge_model, nnsight_model, ids) -> tuple[dict[str, float], float]:
    """Every seam hook read on both engines: the largest relative difference per hook point
    (over layers) and of the logits."""
    names = seam_hook_names(bridge_model.n_layers)
    with torch.inference_mode():
        ours = nnsight_model.engine.run(ids, reads={n: None for n in names})
        theirs = bridge_model.engine.run(ids, reads={n: None for n in names})
    worst: dict[str, float] = {}
    for name in names:
        point = name.split(".", 2)[2] if name.startswith("blocks.") else name
        worst[point] = max(worst.get(point, 0.0), relative(ours.activations[name], theirs.activations[name]))
    return worst, relative(ours.logits, theirs.logits)


def patched_logits(model, clean, corrupt, hook, positions):
    """Logits of `clean` with `hook` at `positions` replaced by its value on `corrupt`."""
    with torch.inference_mode():
        donor = model.engine.run(corrupt, reads={hook: positions}, logits=False).activations[hook]
        out = model.engine.run(clean, reads={hook: positions}, writes={hook: Write(donor, positions)})
    assert torch.equal(out.activations[hook], donor.to(out.activations[hook].dtype))  # a read after a write sees it
    return out.logits


# -- specs ------------------------------------------------------------------------------


def test_engine_specs_parse():
    source = parse_spec("nnsight:lab:induction")
    assert (source.kind, source.engine, source.base_spec) == ("lab", "nnsight", "lab:induction")
    assert source.location.endswith("assets/lab/induction") and source.display_name == "lab:induction (nnsight)"
    assert (parse_spec("nnsight:smollm2").kind, parse_spec("smollm2").engine) == ("embedded", "bridge")
    remote = parse_spec("ndif:meta-llama/Llama-3.1-70B")
    assert (remote.kind, remote.engine, remote.location) == ("hub", "ndif", "meta-llama/Llama-3.1-70B")
    for bad, fragment in [("nnsight:", "names no model"), ("nnsight:ndif:gpt2", "two engines"), ("ndif:./folder", "Hugging Face model"), ("nnsight:lab:nope", "Unknown lab model")]:
        with pytest.raises(ModelLoadError, match=fragment):
            parse_spec(bad)


# -- the lab model (GPT-2 layout) -----------------------------------------------------------


def test_lab_every_hook_point_equals_the_bridge(lab_model, nnsight_lab):
    assert isinstance(lab_model.engine, BridgeEngine) and isinstance(nnsight_lab.engine, NnsightEngine)
    assert nnsight_lab.fingerprint == lab_model.fingerprint  # the same weights
    for field in ("n_layers", "n_heads", "d_model", "d_head", "d_mlp", "d_vocab", "n_ctx"):
        assert getattr(nnsight_lab.cfg, field) == getattr(lab_model.cfg, field), field
    worst, logits = worst_by_point(lab_model, nnsight_lab, batch(lab_model, LAB_PROMPTS))
    print(f"\nlab:induction relative differences: logits {logits:.2g}, " + ", ".join(f"{k} {v:.2g}" for k, v in worst.items()))
    assert set(worst) == {"hook_embed", "ln_final.hook_normalized", "hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "mlp.hook_post", "hook_mlp_out", "attn.hook_pattern", "attn.hook_z"}
    assert max(worst.values()) <= TOLERANCE and logits <= TOLERANCE


def test_reads_at_positions_are_slices_of_the_whole(nnsight_lab, lab_model):
    ids = batch(lab_model, LAB_PROMPTS)
    for model in (lab_model, nnsight_lab):
        with torch.inference_mode():
            whole = model.engine.run(ids, reads={"blocks.1.attn.hook_pattern": None, "blocks.1.hook_resid_post": None})
            some = model.engine.run(ids, reads={"blocks.1.attn.hook_pattern": [-1], "blocks.1.hook_resid_post": [0, 2]}, logit_positions=[-1], logits=True)
            none = model.engine.run(ids, reads={"blocks.0.hook_resid_post": 3}, logits=False)
        assert torch.equal(some.activations["blocks.1.attn.hook_pattern"], whole.activations["blocks.1.attn.hook_pattern"][:, :, [-1]])
        assert torch.equal(some.activations["blocks.1.hook_resid_post"], whole.activations["blocks.1.hook_resid_post"][:, [0, 2]])
        assert torch.equal(some.logits, whole.logits[:, [-1]])
        assert none.logits is None and none.activations["blocks.0.hook_resid_post"].shape == (2, 1, 128)


@pytest.mark.parametrize("hook", ["blocks.1.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_mid", "blocks.0.hook_attn_out", "blocks.1.hook_mlp_out", "blocks.1.attn.hook_z", "hook_embed"])
def test_lab_a_write_gives_the_bridges_logits(lab_model, nnsight_lab, hook):
    clean, corrupt = (batch(lab_model, [p]) for p in LAB_PROMPTS)
    ours = patched_logits(nnsight_lab, clean, corrupt, hook, [3, 4])
    theirs = patched_logits(lab_model, clean, corrupt, hook, [3, 4])
    with torch.inference_mode():
        unpatched = lab_model.engine.run(clean).logits
    assert relative(ours, theirs) <= TOLERANCE
    assert relative(theirs, unpatched) > 1e-2  # the write did something


def test_a_whole_tensor_write_and_the_shorthand(lab_model, nnsight_lab):
    ids = batch(lab_model, LAB_PROMPTS[:1])
    value = torch.zeros(128)
    outs = []
    for model in (lab_model, nnsight_lab):
        with torch.inference_mode():
            outs.append(model.engine.run(ids, writes={"blocks.0.hook_attn_out": (None, value)}, reads={"blocks.0.hook_resid_mid": None, "blocks.0.hook_resid_pre": None}))
    for out in outs:  # no attention output: the residual after attention is the block's input
        assert torch.allclose(out.activations["blocks.0.hook_resid_mid"], out.activations["blocks.0.hook_resid_pre"])
    assert relative(outs[1].logits, outs[0].logits) <= TOLERANCE


def test_pattern_writes_and_masked_writes_equal_the_bridge(lab_model, nnsight_lab):
    """A pattern is written inside the attention function (the seam's only write that is not
    a module's value); a mask writes one cell per row, as batched patching does."""
    ids = batch(lab_model, LAB_PROMPTS[:1]).expand(3, -1)
    n = ids.shape[1]
    pattern_mask = torch.zeros(3, 4, 1, 1, dtype=torch.bool)
    pattern_mask[0, 1] = pattern_mask[2, 3] = True  # row 0: head 1, row 2: head 3, row 1: nothing
    resid_mask = torch.zeros(3, n, 1, dtype=torch.bool)
    resid_mask[1, 4] = True
    writes = {
        "blocks.1.attn.hook_pattern": Write(torch.full((1, 4, n, n), 1 / n), None, pattern_mask),
        "blocks.0.hook_resid_post": Write(torch.zeros(1, n, 128), None, resid_mask),
    }
    reads = {"blocks.1.attn.hook_pattern": None, "blocks.1.hook_resid_pre": None}
    with torch.inference_mode():
        ours, theirs = (model.engine.run(ids, reads=reads, writes=writes) for model in (nnsight_lab, lab_model))
        plain = lab_model.engine.run(ids, reads=reads)
    for name in reads:
        assert relative(ours.activations[name], theirs.activations[name]) <= TOLERANCE, name
    assert relative(ours.logits, theirs.logits) <= TOLERANCE
    pattern, resid = ours.activations["blocks.1.attn.hook_pattern"], ours.activations["blocks.1.hook_resid_pre"]
    assert torch.allclose(pattern[0, 1], torch.full((n, n), 1 / n)) and torch.allclose(pattern[2, 3], torch.full((n, n), 1 / n))
    assert relative(pattern[0, 0], plain.activations["blocks.1.attn.hook_pattern"][0, 0]) <= TOLERANCE  # a head not written
    assert torch.all(resid[1, 4] == 0) and relative(resid[0], plain.activations["blocks.1.hook_resid_pre"][0]) <= TOLERANCE
    assert relative(theirs.logits[0], plain.logits[0]) > 1e-3  # the pattern write changed row 0's logits


def test_what_the_nnsight_engine_cannot_do_is_a_clear_error(nnsight_lab, lab_model):
    ids = batch(lab_model, LAB_PROMPTS[:1])
    with pytest.raises(EngineError, match="cannot write ln_final.hook_normalized"):
        nnsight_lab.engine.run(ids, writes={"ln_final.hook_normalized": Write(torch.zeros(1))})
    with pytest.raises(EngineError, match="cannot write ln_final.hook_normalized"):
        nnsight_lab.engine.check_write("ln_final.hook_normalized")
    lab_model.engine.check_write("blocks.0.attn.hook_pattern")
    nnsight_lab.engine.check_write("blocks.0.attn.hook_pattern")
    with pytest.raises(HookError, match="not one the engines read"):
        nnsight_lab.engine.run(ids, reads={"blocks.0.mlp.hook_pre": None})
    with pytest.raises(HookError, match="layers 0..1"):
        lab_model.engine.run(ids, reads={"blocks.2.hook_resid_post": None})
    with pytest.raises(EngineError, match="does not run on the nnsight engine yet"):
        nnsight_lab.bridge  # noqa: B018 -- code not on the seam reaches for it


def test_unported_analyses_refuse_in_one_line(nnsight_lab):
    registry = discover_plugins()
    for plugin_id in ("qk-ov",):
        plugin = registry.get(plugin_id)
        with pytest.raises(EngineError) as caught:
            run_to_completion(run_analysis(plugin, AnalysisContext(nnsight_lab, [LAB_PROMPTS[0]])))
        assert caught.value.message == f"{plugin.name} does not run on the nnsight engine yet."
        assert "lab:induction" in caught.value.hint


def test_lab_logit_lens_and_predictions_equal_the_bridge(lab_model, nnsight_lab):
    lens = discover_plugins().get("logit-lens")
    ours = run_to_completion(run_analysis(lens, AnalysisContext(nnsight_lab, [LAB_PROMPTS[0]])))
    theirs = run_to_completion(run_analysis(lens, AnalysisContext(lab_model, [LAB_PROMPTS[0]])))
    assert ours.meta.model_spec == "nnsight:lab:induction" and ours.meta.model_fingerprint == theirs.meta.model_fingerprint
    assert np.array_equal(ours.top_ids, theirs.top_ids) and ours.top_strings == theirs.top_strings
    assert np.abs(ours.top_probs - theirs.top_probs).max() <= TOLERANCE
    assert np.abs(ours.p_final_top - theirs.p_final_top).max() <= TOLERANCE
    a, b = predict_next(nnsight_lab, LAB_PROMPTS[0], k=5), predict_next(lab_model, LAB_PROMPTS[0], k=5)
    assert [t[1] for t in a.top] == [t[1] for t in b.top] and np.allclose([t[2] for t in a.top], [t[2] for t in b.top], rtol=TOLERANCE, atol=0)


# -- the zoo: every family the nnsight engine has a map for -----------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "olmo2", "phi3", "gpt2"])
def test_zoo_family_hook_points_and_decoding_equal_the_bridge(family):
    bridge_model, nnsight_model = load_model(f"zoo:{family}"), load_model(f"nnsight:zoo:{family}")
    ids = batch(bridge_model, [EIFFEL])
    worst, logits = worst_by_point(bridge_model, nnsight_model, ids)
    assert max(worst.values()) <= TOLERANCE and logits <= TOLERANCE, (worst, logits)
    with torch.inference_mode():
        resid = bridge_model.engine.run(ids, reads={"blocks.1.hook_resid_post": None}, logits=False).activations["blocks.1.hook_resid_post"]
        assert relative(nnsight_model.engine.decode_residual(resid), bridge_model.engine.decode_residual(resid)) <= TOLERANCE  # Gemma 2's soft cap included
    # a pattern write (inside the family's attention function on nnsight) moves the logits alike
    n, heads = ids.shape[1], bridge_model.n_heads
    mask = torch.zeros(1, heads, 1, 1, dtype=torch.bool)
    mask[0, 0] = True
    write = {"blocks.0.attn.hook_pattern": Write(torch.full((1, heads, n, n), 1.0 / n).tril(), None, mask)}
    with torch.inference_mode():
        ours, theirs = nnsight_model.engine.run(ids, writes=write).logits, bridge_model.engine.run(ids, writes=write).logits
    assert relative(ours, theirs) <= TOLERANCE, family


def test_a_family_without_a_map_is_refused_when_it_loads():
    with pytest.raises(ModelLoadError, match="does not know where the hook points of GPTNeoXForCausalLM"):
        load_model("nnsight:zoo:pythia")


# -- SmolLM2 (Llama layout) ------------------------------------------------------------------


@pytest.mark.smollm2
def test_smollm2_every_hook_point_equals_the_bridge(smollm2, nnsight_smollm2):
    ids = batch(smollm2, [EIFFEL, ROME])
    worst, logits = worst_by_point(smollm2, nnsight_smollm2, ids)
    print(f"\nsmollm2 relative differences: logits {logits:.2g}, " + ", ".join(f"{k} {v:.2g}" for k, v in worst.items()))
    assert max(worst.values()) <= TOLERANCE and logits <= TOLERANCE


@pytest.mark.smollm2
def test_smollm2_patching_a_residual_gives_the_bridges_logits(smollm2, nnsight_smollm2):
    clean, corrupt = batch(smollm2, [EIFFEL]), batch(smollm2, [ROME])
    subject = [1, 2, 3, 4]  # " Eiffel Tower" / " Colosseum" and the words around them
    for hook in ("blocks.5.hook_resid_post", "blocks.12.hook_resid_pre"):
        ours = patched_logits(nnsight_smollm2, clean, corrupt, hook, subject)
        theirs = patched_logits(smollm2, clean, corrupt, hook, subject)
        diff = relative(ours, theirs)
        print(f"\nsmollm2 patched {hook}: relative logit difference {diff:.2g}")
        assert diff <= TOLERANCE
        paris = smollm2.tokenize(" Paris")[0]
        assert theirs[0, -1].softmax(-1)[paris] < 0.5  # the patch moved the answer away from Paris


@pytest.mark.smollm2
def test_smollm2_predictions_and_logit_lens_equal_the_bridge(smollm2, nnsight_smollm2):
    ours, theirs = predict_next(nnsight_smollm2, EIFFEL), predict_next(smollm2, EIFFEL)
    assert ours.top[0][0] == " Paris" and abs(ours.top[0][2] - 0.7016) < 1e-4
    assert [t[1] for t in ours.top] == [t[1] for t in theirs.top]
    assert max(abs(a[2] - b[2]) / b[2] for a, b in zip(ours.top, theirs.top)) <= TOLERANCE
    lens = discover_plugins().get("logit-lens")
    a = run_to_completion(run_analysis(lens, AnalysisContext(nnsight_smollm2, [EIFFEL])))
    b = run_to_completion(run_analysis(lens, AnalysisContext(smollm2, [EIFFEL])))
    assert np.array_equal(a.top_ids, b.top_ids) and a.final_top_tokens == b.final_top_tokens
    assert np.abs(a.top_probs - b.top_probs).max() <= TOLERANCE and np.abs(a.p_final_top - b.p_final_top).max() <= TOLERANCE


# -- NDIF without a key or a network ----------------------------------------------------------


def test_ndif_without_a_key_fails_in_seconds_saying_what_to_set(monkeypatch):
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as caught:
        load_model("ndif:meta-llama/Llama-3.1-8B")
    assert time.perf_counter() - started < 5
    assert "needs your API key" in caught.value.message and "NDIF_API_KEY" in caught.value.hint


def test_ndif_without_a_network_fails_in_seconds(monkeypatch):
    monkeypatch.setenv("NDIF_API_KEY", "not-a-real-key")
    monkeypatch.setenv("NDIF_HOST", "http://127.0.0.1:9")  # nothing listens there: no NDIF is contacted
    started = time.perf_counter()
    with pytest.raises(ModelLoadError, match="NDIF cannot be reached at http://127.0.0.1:9"):
        load_model("ndif:meta-llama/Llama-3.1-8B")
    assert time.perf_counter() - started < 5


def test_ndif_from_the_command_line(monkeypatch, capsys):
    from workbench.cli.main import main

    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    started = time.perf_counter()
    code = main(["run", "logit-lens", "--model", "ndif:meta-llama/Llama-3.1-8B", "--prompt", "The Eiffel Tower is in", "--quiet"])
    assert code == 2 and time.perf_counter() - started < 5
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "set the environment variable NDIF_API_KEY" in errors[0]  # one line, no traceback


def test_predict_and_hooks_commands_on_the_nnsight_engine(capsys):
    from workbench.cli.main import main

    printed = []
    for spec in ("lab:induction", "nnsight:lab:induction"):
        assert main(["predict", "--model", spec, "--prompt", LAB_PROMPTS[0], "-k", "3"]) == 0
        printed.append([line for line in capsys.readouterr().out.splitlines() if "(id " in line])
    assert printed[0] == printed[1] and len(printed[0]) == 3
    assert main(["hooks", "--model", "nnsight:lab:induction", "--pattern", "residual"]) == 0
    assert "blocks.1.hook_resid_post" in capsys.readouterr().out
