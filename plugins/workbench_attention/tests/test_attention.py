"""The attention plugin: its patterns against independent computations, its options, the store path, HDF5.

Real models only. The independent references are a freshly loaded Hugging Face model
(not the one TransformerBridge wraps) with eager attention and output_attentions=True,
and softmax(QK^T / sqrt(d_head) + causal mask) computed by hand from raw weights.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from workbench.capture import capture_activations
from workbench.errors import WorkbenchError
from workbench.models.loading import load_hf_model
from workbench.plugin_api import AnalysisContext, discover_plugins, run_analysis, summary_json
from workbench.progress import run_to_completion
from workbench.results import load_results, save_result
from workbench.store import ActivationStore

LAB_PROMPT = "t1 t2 t3 t4 t5 t1 t2 t3 t4"  # a repeat: L1H1 (induction) and L0H2 (previous token) show
SMOL_PROMPT = "The Eiffel Tower is located in the city of"


@pytest.fixture(scope="module")
def plugin():
    return discover_plugins().get("attention")


@pytest.fixture(scope="module")
def lab_hf():
    """An independent copy of the lab model, straight from its folder, with eager attention."""
    _, model, _ = load_hf_model("lab:induction")
    model.set_attn_implementation("eager")
    return model


def analyse(plugin, model, prompts, *, store_path=None, fill_store=False, **params):
    ctx = AnalysisContext(model, list(prompts), store_path=store_path, fill_store=fill_store)
    result = run_to_completion(run_analysis(plugin, ctx, params))
    return result, ctx


def hf_attentions(hf_model, ids) -> np.ndarray:
    """[layer, head, n, n] from Hugging Face's own output_attentions."""
    with torch.inference_mode():
        out = hf_model(torch.tensor([ids]), output_attentions=True)
    assert len(out.attentions) == hf_model.config.num_hidden_layers
    return np.stack([a[0].float().numpy() for a in out.attentions])


def test_plugin_is_discovered_with_its_parts(plugin):
    assert plugin.id == "attention"
    assert plugin.analysis.multi_prompt
    [cls] = plugin.result_classes()
    assert cls.kind == "attention/patterns"
    assert plugin.panel == "workbench_attention.panel:AttentionPanel"


def test_lab_patterns_equal_hugging_face_output_attentions(plugin, lab_model, lab_hf):
    ids = lab_model.tokenize(LAB_PROMPT)
    expected = hf_attentions(lab_hf, ids)  # [2, 4, n, n]
    assert expected.shape == (2, 4, len(ids), len(ids))
    for layer, head in [(0, 2), (1, 1), (1, 3)]:
        result, _ = analyse(plugin, lab_model, [LAB_PROMPT], layer=layer, head=head)
        np.testing.assert_allclose(result.pattern, expected[layer, head], atol=1e-5)
    # With fewer than 32 tokens every thumbnail block is one cell: the thumbnails are the patterns.
    np.testing.assert_allclose(result.thumbnails, expected, atol=1e-5)
    np.testing.assert_array_equal(result.thumbnail_edges, np.arange(len(ids) + 1))
    # The circuit the lab model was trained with: L0H2 reads the previous token, L1H1 the
    # token after the earlier copy of the current one (position 5 of the repeat -> t2 at 2).
    assert result.previous_token_weight[0, 2] > 0.95
    induction, _ = analyse(plugin, lab_model, [LAB_PROMPT], layer=1, head=1, destination=-1)
    assert induction.top_sources(1)[0]["position"] == 5 and induction.top_sources(1)[0]["token"] == "t5"


def test_lab_pattern_equals_a_hand_computation_from_raw_weights(plugin, lab_model, lab_hf):
    """softmax(q k^T / sqrt(d_head) + causal mask) from GPT-2's raw ln_1 and c_attn weights."""
    ids = lab_model.tokenize(LAB_PROMPT)
    layer, head = 1, 1
    with torch.inference_mode():
        hidden = lab_hf(torch.tensor([ids]), output_hidden_states=True).hidden_states[layer][0].double()  # input to block 1
        block = lab_hf.transformer.h[layer]
        eps = lab_hf.config.layer_norm_epsilon
        mean, var = hidden.mean(-1, keepdim=True), hidden.var(-1, unbiased=False, keepdim=True)
        normed = (hidden - mean) / torch.sqrt(var + eps) * block.ln_1.weight.double() + block.ln_1.bias.double()
        qkv = normed @ block.attn.c_attn.weight.double() + block.attn.c_attn.bias.double()  # Conv1D: [in, out]
        d_model, n_heads = lab_hf.config.n_embd, lab_hf.config.n_head
        d_head = d_model // n_heads
        q = qkv[:, :d_model].reshape(len(ids), n_heads, d_head)[:, head]
        k = qkv[:, d_model : 2 * d_model].reshape(len(ids), n_heads, d_head)[:, head]
        scores = q @ k.T / np.sqrt(d_head)
        scores = scores.masked_fill(torch.triu(torch.ones(len(ids), len(ids), dtype=torch.bool), 1), float("-inf"))
        expected = torch.softmax(scores, -1).numpy()
    result, _ = analyse(plugin, lab_model, [LAB_PROMPT], layer=layer, head=head)
    np.testing.assert_allclose(result.pattern, expected, atol=1e-5)
    np.testing.assert_allclose(result.pattern.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(result.pattern, 1) == 0)


@pytest.mark.smollm2
def test_smollm2_grouped_query_heads_match_hugging_face_and_stay_distinct(plugin, smollm2):
    ids = smollm2.tokenize(SMOL_PROMPT)
    n = len(ids)
    assert smollm2.n_heads == 9 and smollm2.n_kv_heads == 3
    result, _ = analyse(plugin, smollm2, [SMOL_PROMPT], layer=3, head=4)
    assert result.thumbnails.shape == (30, 9, n, n)  # one pattern per query head
    assert result.kv_heads == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert result.summary()["selected"]["kv_head"] == 1

    _, hf, _ = load_hf_model("smollm2")
    hf.set_attn_implementation("eager")
    expected = hf_attentions(hf, ids)
    assert expected.shape == (30, 9, n, n)
    np.testing.assert_allclose(result.thumbnails, expected, atol=1e-5)
    np.testing.assert_allclose(result.pattern, expected[3, 4], atol=1e-5)

    # Query heads that share a key/value head still have their own patterns.
    for layer in (0, 3, 15):
        for kv in range(3):
            group = expected[layer, 3 * kv : 3 * kv + 3]
            assert np.abs(group[0] - group[1]).max() > 1e-2 and np.abs(group[1] - group[2]).max() > 1e-2

    # The grouping itself: query head h reads KV head h // 3 (repeat_interleave), which a
    # hand computation from the rotated queries and keys confirms, and h % 3 does not.
    with torch.inference_mode():
        _, cache = smollm2.bridge.run_with_cache(
            torch.tensor([ids]), names_filter=["blocks.3.attn.hook_rot_q", "blocks.3.attn.hook_rot_k"], return_type=None
        )
    rot_q = cache["blocks.3.attn.hook_rot_q"][0].double()  # [n, 9, d_head]
    rot_k = cache["blocks.3.attn.hook_rot_k"][0].double()  # [n, 3, d_head]
    causal = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)

    def by_hand(query_head, kv_head):
        scores = rot_q[:, query_head] @ rot_k[:, kv_head].T / np.sqrt(rot_q.shape[-1])
        return torch.softmax(scores.masked_fill(causal, float("-inf")), -1).numpy()

    np.testing.assert_allclose(by_hand(4, 4 // 3), result.pattern, atol=1e-5)
    for head in range(9):
        np.testing.assert_allclose(by_hand(head, head // 3), expected[3, head], atol=1e-5)
        if head % 3 != head // 3:
            assert np.abs(by_hand(head, head % 3) - expected[3, head]).max() > 1e-2


def test_store_path_reads_the_same_patterns_and_reports_reuse(plugin, lab_model, tmp_path):
    store = tmp_path / "acts.h5"
    run_to_completion(capture_activations(lab_model, [LAB_PROMPT], ["attention"], store))
    computed, computed_ctx = analyse(plugin, lab_model, [LAB_PROMPT], layer=1, head=1)
    assert not computed_ctx.reused_activations and not computed.meta.reused_activations
    stored, stored_ctx = analyse(plugin, lab_model, [LAB_PROMPT], store_path=store, layer=1, head=1)
    assert stored_ctx.reused_activations and stored.meta.reused_activations
    np.testing.assert_allclose(stored.pattern, computed.pattern, atol=1e-6)
    np.testing.assert_allclose(stored.thumbnails, computed.thumbnails, atol=1e-6)
    with ActivationStore(store) as opened:
        np.testing.assert_allclose(opened.run().pattern(1, 1, 0), computed.pattern, atol=1e-6)


def test_fill_store_captures_once_then_reuses(plugin, lab_model, tmp_path):
    store = tmp_path / "filled.h5"
    first, first_ctx = analyse(plugin, lab_model, [LAB_PROMPT], store_path=store, fill_store=True, layer=0, head=2)
    with ActivationStore(store) as opened:
        run = opened.run()
        assert sorted(run.hooks) == [f"blocks.{layer}.attn.hook_pattern" for layer in range(2)]
        np.testing.assert_allclose(run.pattern(0, 2, 0), first.pattern, atol=1e-6)
        n_runs = len(opened.runs())
    second, _ = analyse(plugin, lab_model, [LAB_PROMPT], store_path=store, fill_store=True, layer=0, head=2)
    with ActivationStore(store) as opened:
        assert len(opened.runs()) == n_runs  # nothing captured twice
    np.testing.assert_array_equal(second.pattern, first.pattern)


def test_streamed_forward_pass_equals_reading_everything(plugin, lab_model, monkeypatch):
    from workbench.plugin_api import context

    whole, _ = analyse(plugin, lab_model, [LAB_PROMPT], layer=1, head=3)
    monkeypatch.setattr(context, "IN_MEMORY_BUDGET_BYTES", 0)  # forces the hook-by-hook pass
    handed = []
    real_stream = context.stream_activations

    def spy(bridge, ids, hooks):
        for name, array in real_stream(bridge, ids, hooks):
            handed.append(name)
            yield name, array

    monkeypatch.setattr(context, "stream_activations", spy)
    streamed, _ = analyse(plugin, lab_model, [LAB_PROMPT], layer=1, head=3)
    assert handed == [f"blocks.{layer}.attn.hook_pattern" for layer in range(lab_model.n_layers)]
    np.testing.assert_allclose(streamed.pattern, whole.pattern, atol=1e-6)
    np.testing.assert_allclose(streamed.thumbnails, whole.thumbnails, atol=1e-6)
    np.testing.assert_allclose(streamed.entropy_bits, whole.entropy_bits, atol=1e-5)


def test_mask_first_token_hides_column_zero_without_renormalising(plugin, lab_model, lab_hf):
    ids = lab_model.tokenize(LAB_PROMPT)
    expected = hf_attentions(lab_hf, ids)[1, 0]
    plain, _ = analyse(plugin, lab_model, [LAB_PROMPT], layer=1, head=0)
    masked, _ = analyse(plugin, lab_model, [LAB_PROMPT], layer=1, head=0, mask_first_token=True)
    np.testing.assert_allclose(masked.pattern, expected, atol=1e-5)  # stored weights stay raw
    shown = masked.display()
    assert np.isnan(shown[:, 0]).all()
    lower = np.tril(np.ones_like(expected, dtype=bool))
    lower[:, 0] = False
    np.testing.assert_allclose(shown[lower], expected[lower], atol=1e-5)  # not renormalised
    assert np.isnan(shown[np.triu_indices(len(ids), 1)]).all()  # future tokens are not drawn
    assert all(s["position"] != 0 for s in masked.top_sources(5))
    assert not np.isnan(plain.display()[1:, 0]).any()
    # Thumbnails are stored raw; drawn masked, they leave the first column out.
    np.testing.assert_allclose(masked.thumbnails, plain.thumbnails)
    thumbs = masked.thumbnail_display()
    assert np.isnan(thumbs[..., 0]).all()
    np.testing.assert_allclose(thumbs[1, 0][lower], expected[lower], atol=1e-5)


def test_log_scale_draws_log10_of_the_weights(plugin, lab_model):
    from workbench_attention.patterns import LOG_FLOOR

    result, _ = analyse(plugin, lab_model, [LAB_PROMPT], layer=0, head=0, scale="log")
    shown = result.display()
    lower = np.tril_indices(len(result.str_tokens))
    np.testing.assert_allclose(shown[lower], np.log10(np.maximum(result.pattern[lower], LOG_FLOOR)), rtol=1e-6)


def test_average_over_heads_of_a_layer(plugin, lab_model, lab_hf):
    expected = hf_attentions(lab_hf, lab_model.tokenize(LAB_PROMPT))[1].mean(0)
    result, _ = analyse(plugin, lab_model, [LAB_PROMPT], layer=1, head=2, average="layer")
    np.testing.assert_allclose(result.pattern, expected, atol=1e-5)
    assert result.summary()["selected"]["head"] is None and "mean of 4 heads" in result.selected_label


def test_average_over_prompts_is_position_by_position_over_the_shared_length(plugin, lab_model, lab_hf):
    prompts = [LAB_PROMPT, "t9 t8 t7 t9 t8 t7 t6 t5 t4 t3 t2", "t1 t2 t3 t4 t5 t1"]
    patterns = [hf_attentions(lab_hf, lab_model.tokenize(p)) for p in prompts]
    length = min(p.shape[-1] for p in patterns)
    result, _ = analyse(plugin, lab_model, prompts, layer=0, head=2, average="prompts", destination=3)
    assert result.n_prompts == 3 and len(result.str_tokens) == length
    expected = np.mean([p[0, 2, :length, :length] for p in patterns], axis=0)
    np.testing.assert_allclose(result.pattern, expected, atol=1e-5)
    np.testing.assert_allclose(result.thumbnails, np.mean([p[..., :length, :length] for p in patterns], axis=0), atol=1e-5)
    # Positions where the prompts' tokens differ are labelled by position.
    assert result.str_tokens[0] == "<bos>" and result.str_tokens[1] == "#1"
    np.testing.assert_allclose(result.destination_row, expected[3], atol=1e-5)


def test_compare_prompt_shows_the_same_head_on_the_second_prompt(plugin, lab_model, lab_hf):
    other = "t7 t8 t9 t7 t8"
    result, _ = analyse(plugin, lab_model, [LAB_PROMPT], layer=1, head=1, compare_prompt=other, destination=6)
    alone, _ = analyse(plugin, lab_model, [other], layer=1, head=1)
    np.testing.assert_allclose(result.compare_pattern, alone.pattern, atol=1e-6)
    np.testing.assert_allclose(result.compare_pattern, hf_attentions(lab_hf, lab_model.tokenize(other))[1, 1], atol=1e-5)
    assert result.compare_str_tokens == ["<bos>", "t7", "t8", "t9", "t7", "t8"]
    assert result.destination == 6 and result.compare_destination == 5  # the second prompt is shorter
    summary = result.summary()["compare"]
    assert summary["destination"]["token"] == "t8" and summary["top_sources"][0]["token"] == "t9"
    titles = [f.title for f in result.report().figures]
    assert "Selected pattern, two prompts" in titles


def test_destination_and_selection_are_checked(plugin, lab_model):
    result, _ = analyse(plugin, lab_model, [LAB_PROMPT], layer=1, head=1, destination=3)
    np.testing.assert_array_equal(result.destination_row, result.pattern[3])
    assert result.summary()["destination"] == {"position": 3, "token": "t3"}
    for bad in ({"layer": 2}, {"head": 4}, {"destination": 10}, {"destination": -11}):
        with pytest.raises(WorkbenchError):
            analyse(plugin, lab_model, [LAB_PROMPT], **bad)


def test_hdf5_round_trip_summary_and_report(plugin, lab_model, tmp_path):
    registry = discover_plugins()
    result, _ = analyse(plugin, lab_model, [LAB_PROMPT], layer=1, head=1, mask_first_token=True, scale="log", compare_prompt="t3 t4 t3")
    plain, _ = analyse(plugin, lab_model, [LAB_PROMPT], layer=0, head=2)
    path = tmp_path / "results.h5"
    save_result(path, result, title="attention")
    save_result(path, plain)
    (_, loaded), (_, loaded_plain) = load_results(path, registry.result_class)
    for original, copy in ((result, loaded), (plain, loaded_plain)):
        assert type(copy) is type(original)
        for name, value in vars(original).items():
            if name == "meta":
                continue
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(getattr(copy, name), value)
                assert getattr(copy, name).dtype == value.dtype
            else:
                assert getattr(copy, name) == value, name
    assert loaded.meta.model_fingerprint == lab_model.fingerprint
    assert not loaded_plain.has_compare
    # The summary is plain JSON; the report has the overview, the pattern and the text view.
    text = json.dumps(summary_json(loaded))
    assert json.loads(text)["selected"]["label"] == "L1H1"
    section = loaded.report()
    assert len(section.figures) == 3 and all(f.svg.startswith("<svg") for f in section.figures)
    assert section.how_to_read and section.tables[0].rows
    assert len(loaded_plain.report().figures) == 3


def test_large_prompt_report_stays_small(plugin, lab_model):
    """60 tokens: thumbnails are block averages and the big pattern becomes one embedded image."""
    from workbench_attention.patterns import block_average

    prompt = " ".join(f"t{i % 50}" for i in range(62))
    result, _ = analyse(plugin, lab_model, [prompt], layer=0, head=2)
    n = len(result.str_tokens)
    assert n == 63 and result.thumbnails.shape == (2, 4, 32, 32)
    np.testing.assert_allclose(result.thumbnails[0, 2], block_average(result.pattern, 32), atol=1e-6)
    section = result.report()
    assert "data:image/png;base64," in section.figures[1].svg and len(section.figures[1].svg) < 200_000
    # A masked thumbnail derived from the stored one equals block-averaging without column 0.
    from workbench_attention.patterns import mask_thumbnails

    derived = mask_thumbnails(result.thumbnails[0, 2], result.thumbnail_first_column[0, 2], result.thumbnail_edges)
    np.testing.assert_allclose(derived, block_average(result.pattern, 32, mask_first_token=True), atol=1e-6)


def test_block_average_and_display_downsampling():
    from workbench.figures.raster import downsample_for_display
    from workbench_attention.patterns import block_average

    rng = np.random.default_rng(0)
    data = rng.random((7, 7)).astype(np.float32)
    out = block_average(data, 3)  # edges 0, 2, 5, 7 (np.round of 0, 2.33, 4.67, 7)
    assert out.shape == (3, 3)
    assert out[1, 2] == pytest.approx(data[2:5, 5:7].mean(), rel=1e-6)
    masked = block_average(data, 3, mask_first_token=True)
    assert masked[0, 0] == pytest.approx(data[0:2, 1:2].mean(), rel=1e-6)
    assert masked[2, 1] == pytest.approx(out[2, 1], rel=1e-6)
    image, rows, cols = downsample_for_display(data, 3, 3)
    assert image[1, 2] == pytest.approx(data[rows[1] : rows[2], cols[2] : cols[3]].max())
    same, _, _ = downsample_for_display(data, 10, 10)
    np.testing.assert_array_equal(same, data)


@pytest.mark.slow
def test_cli_run_writes_the_summary(tmp_path):
    from tests.conftest import run_cli

    out = tmp_path / "summary.json"
    done = run_cli("run", "attention", "--model", "lab:induction", "--prompt", LAB_PROMPT, "--param", "layer=1", "--param", "head=1", "--json", str(out))
    assert done.returncode == 0, done.stderr
    summary = json.loads(out.read_text())
    assert summary["plugin"] == "attention" and summary["selected"]["label"] == "L1H1"
    assert summary["top_sources"][0]["token"] == "t5"


def test_headless_parts_import_no_qt():
    """`workbench run attention` and reports must work without Qt: only panel.py imports it."""
    import subprocess
    import sys

    code = (
        "import sys, workbench_attention, workbench_attention.analysis, workbench_attention.result, workbench_attention.store_access\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
