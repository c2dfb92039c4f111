"""Device maps (workbench.models.placement): a model placed across CPU and disk by accelerate
gives the same numbers as on one device, and analyses that read weight matrices refuse it."""

import numpy as np
import pytest

from workbench.errors import ModelLoadError, WorkbenchError
from workbench.models import load_model
from workbench.models.placement import Placement, parse_max_memory
from workbench.plugin_api import AnalysisContext, discover_plugins, run_analysis
from workbench.progress import run_to_completion

PROMPT = "t1 t2 t3 t4 t5 t6 t1 t2 t3"
CORRUPTED = "t7 t8 t9 t4 t5 t6 t1 t2 t3"
# 600 KB of main memory for a 1.3 MB model: accelerate keeps some layers in memory and
# offloads the rest to disk, so both kinds of offloaded weights are exercised.
BUDGET = "cpu=600KB"


@pytest.fixture(scope="module")
def placed():
    return load_model("lab:induction", device_map="auto", max_memory=BUDGET)


@pytest.fixture(scope="module")
def single():
    return load_model("lab:induction")


def test_budgets_parse_and_bad_ones_name_the_fix():
    assert parse_max_memory("cpu=2GiB") == {"cpu": 2 * 1024**3}
    assert parse_max_memory(" cpu = 500MB ,") == {"cpu": 500_000_000}
    for bad in ("cpu", "gpu=1GiB", "cpu=lots", "cpu=0", ""):
        with pytest.raises(ModelLoadError) as caught:
            Placement(device_map="auto", max_memory=bad or ",")
        assert "e.g. 0=20GiB" in str(caught.value)


def test_conflicting_choices_are_refused_before_loading():
    with pytest.raises(ModelLoadError, match="Both a device"):
        Placement(device="cuda", device_map="auto")
    with pytest.raises(ModelLoadError, match="without a device map"):
        Placement(max_memory="cpu=1GiB")
    with pytest.raises(ModelLoadError, match="Unknown device map"):
        Placement(device_map="everywhere")


def test_a_placed_model_is_offloaded_and_keeps_its_fingerprint(placed, single):
    summary = placed.device_map_summary
    assert "disk" in summary and "cpu" in summary, summary
    assert placed.offloaded_weights, "nothing was offloaded: the budget no longer forces it"
    assert placed.fingerprint == single.fingerprint  # the offloaded weights are hashed from their CPU/disk copies
    assert placed.current_fingerprint() == single.fingerprint
    assert placed.describe()["placement"] == f"device map auto ({BUDGET})"


def _run(model, plugin_id, prompts, **params):
    plugin = discover_plugins().get(plugin_id)
    return run_to_completion(run_analysis(plugin, AnalysisContext(model, prompts), params))


def _arrays(result) -> dict[str, np.ndarray]:
    return {k: v for k, v in vars(result).items() if isinstance(v, np.ndarray) and v.dtype.kind == "f"}


@pytest.mark.parametrize(
    ("plugin_id", "prompts", "params"),
    [
        ("logit-lens", [PROMPT], {}),
        ("attention", [PROMPT], {}),
        ("patching", [PROMPT, CORRUPTED], {"targets": "resid_pre,attn_out,head_out"}),
        ("causal-trace", [PROMPT], {"subject": "t2 t3", "samples": 3, "window": 1}),
    ],
)
def test_analyses_give_the_single_device_numbers(placed, single, plugin_id, prompts, params):
    here, there = _arrays(_run(single, plugin_id, prompts, **params)), _arrays(_run(placed, plugin_id, prompts, **params))
    assert here and here.keys() == there.keys()
    for name in here:
        np.testing.assert_allclose(there[name], here[name], rtol=1e-5, atol=1e-6, err_msg=f"{plugin_id}.{name}")


@pytest.mark.parametrize(("plugin_id", "params"), [("qk-ov", {}), ("rome", {"subject": "t3", "target_new": "t9", "template": "t1 t2 {}", "layer": 0, "gen_tokens": 0})])
def test_analyses_that_read_weights_refuse_offloaded_ones(placed, plugin_id, params):
    with pytest.raises(WorkbenchError) as caught:
        _run(placed, plugin_id, [PROMPT], **params)
    message = str(caught.value)
    assert "device map keeps" in message and "disk" in message and "--max-memory" in message
    assert placed.current_fingerprint() == placed.fingerprint  # nothing was touched


def test_a_device_map_with_room_for_everything_offloads_nothing_and_edits_work():
    model = load_model("lab:induction", device_map="auto")
    assert model.offloaded_weights == []
    result = _run(model, "qk-ov", [PROMPT])
    assert result is not None
