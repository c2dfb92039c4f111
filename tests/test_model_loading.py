"""Every kind of model source loads into a TransformerBridge whose logits match the HF model's."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from workbench.errors import ModelLoadError
from workbench.models import load_model
from workbench.models.fingerprint import model_weights


def bridge_logits(model, ids):
    with torch.inference_mode():
        return model.bridge(torch.tensor([ids]), return_type="logits")[0]


def test_lab_model_loads_with_metadata(lab_model):
    info = lab_model.describe()
    assert info["kind"] == "lab"
    assert info["n_layers"] == 2
    assert len(lab_model.fingerprint) == 32
    assert lab_model.n_ctx >= 32


def test_fingerprint_is_stable_and_sees_weight_changes(lab_model):
    hf = lab_model.bridge.original_model
    assert lab_model.current_fingerprint() == lab_model.fingerprint
    param = model_weights(hf)["transformer.h.1.mlp.c_fc.weight"]
    with torch.no_grad():
        old = param.view(-1)[0].item()
        param.view(-1)[0] += 1e-3
        try:
            assert lab_model.current_fingerprint() != lab_model.fingerprint
        finally:
            param.view(-1)[0] = old
    assert lab_model.current_fingerprint() == lab_model.fingerprint


def test_local_folder_loads_same_model(lab_model, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(lab_model.source.location, folder)
    copy = load_model(str(folder))
    assert copy.source.kind == "folder"
    assert copy.fingerprint == lab_model.fingerprint
    ids = lab_model.tokenize("t1 t2 t3 t1 t2")
    assert torch.equal(bridge_logits(copy, ids), bridge_logits(lab_model, ids))


def test_gguf_file_made_locally_loads_and_matches(tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    model = load_model(str(tiny_gguf["path"]))
    assert model.source.kind == "gguf"
    assert model.n_kv_heads == 2 and model.n_heads == 4  # grouped-query attention survives the trip
    ids = model.tokenize("The quick brown fox")
    expected = tiny_gguf["model"](torch.tensor([ids])).logits[0]
    torch.testing.assert_close(bridge_logits(model, ids), expected, atol=1e-5, rtol=1e-5)
    # The conversion is cached: the second load reads the safetensors folder, not the GGUF file.
    converted = list((tmp_path / "cache" / "converted").iterdir())
    assert len(converted) == 1 and (converted[0] / "model.safetensors").is_file()
    again = load_model(str(tiny_gguf["path"]))
    assert again.fingerprint == model.fingerprint


def _fake_hub_cache(root, repo_id, source_folder):
    """Lay a model out as huggingface_hub caches it: models--org--name/{refs,snapshots}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = root / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    shutil.copytree(source_folder, snapshot)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


HUB_SCRIPT = """
import json, sys
from workbench.errors import WorkbenchError
from workbench.models import load_model
try:
    m = load_model(sys.argv[1])
    print(json.dumps({"ok": True, "fingerprint": m.fingerprint, "kind": m.source.kind}))
except WorkbenchError as e:
    print(json.dumps({"ok": False, "message": e.message, "hint": e.hint}))
"""


def _load_in_subprocess(spec, hub_cache, offline):
    env = dict(os.environ, HF_HUB_CACHE=str(hub_cache), HF_HOME=str(hub_cache.parent / "hf-home"))
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env.pop("HF_HUB_OFFLINE", None)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", HUB_SCRIPT, spec], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), time.perf_counter() - started


@pytest.mark.slow
def test_hub_id_loads_from_the_users_cache_offline(lab_model, tmp_path):
    hub = tmp_path / "hub"
    _fake_hub_cache(hub, "workbench-test/tiny-induction", lab_model.source.location)
    out, _ = _load_in_subprocess("workbench-test/tiny-induction", hub, offline=True)
    assert out == {"ok": True, "fingerprint": lab_model.fingerprint, "kind": "hub"}
    # Without offline mode set, a cached model still loads from the cache, without waiting on the network.
    out, _ = _load_in_subprocess("workbench-test/tiny-induction", hub, offline=False)
    assert out["ok"] and out["fingerprint"] == lab_model.fingerprint


@pytest.mark.slow
def test_uncached_hub_id_offline_is_a_clear_error(tmp_path):
    out, seconds = _load_in_subprocess("workbench-test/not-cached", tmp_path / "hub", offline=True)
    assert not out["ok"]
    assert "not in the Hugging Face cache" in out["message"] and "offline" in out["message"]
    assert seconds < 120


@pytest.mark.slow
def test_uncached_hub_id_without_network_does_not_hang(tmp_path):
    out, seconds = _load_in_subprocess("workbench-test/not-cached-either", tmp_path / "hub", offline=False)
    assert not out["ok"]
    assert "workbench-test/not-cached-either" in out["message"]
    assert seconds < 120


def test_unknown_device_and_dtype_are_clear_errors():
    with pytest.raises(ModelLoadError, match="Unknown device"):
        load_model("lab:induction", device="tpu")
    with pytest.raises(ModelLoadError, match="Unknown dtype"):
        load_model("lab:induction", dtype="int3")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="CUDA"):
        load_model("lab:induction", device="cuda")


def test_a_model_that_cannot_fit_is_refused_before_any_weight_is_read(tmp_path):
    # Llama-3.1-70B's shapes, no weights: the estimate comes from the config alone.
    from transformers import LlamaConfig

    folder = tmp_path / "llama-70b-config-only"
    LlamaConfig(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8, vocab_size=128256).save_pretrained(folder)
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as refused:
        load_model(str(folder), dtype="bfloat16")
    message = str(refused.value)
    assert "70.55 B parameters" in message and "131.4 GiB of weights in bfloat16" in message and "GiB of memory is free" in message
    assert "WORKBENCH_SKIP_MEMORY_CHECK" in message and time.perf_counter() - started < 30
    with pytest.raises(ModelLoadError, match="load it in bfloat16"):
        load_model(str(folder), dtype="float32")


@pytest.mark.parametrize("spec", ["lab:induction", "zoo:llama", "zoo:mixtral"])
def test_the_parameter_estimate_counts_what_loads(spec):
    from workbench.models.loading import load_hf_model
    from workbench.models.memory import parameter_count

    _, hf, _ = load_hf_model(spec)  # before the bridge wraps it (which splits fused weights)
    assert parameter_count(hf.config) == sum(p.numel() for p in {id(p): p for p in hf.parameters()}.values())
