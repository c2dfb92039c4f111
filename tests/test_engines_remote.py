"""The remote path of the nnsight engine (issue 21): a session sent to NDIF is the local
session plus a backend. No machine here reaches NDIF, so the sessions go through nnsight's
own simulation of it (LocalSimulationBackend): serialized as for the server, deserialized
with every module an NDIF server lacks hidden (the workbench included), then run. What
passes it deserializes on NDIF. The waits and failures are checked against what the real
libraries raise and send: nnsight's status responses, a websocket refused with HTTP 401, a
port where nothing listens.
"""

from __future__ import annotations

import dataclasses
import http.server
import socket
import threading
import time

import numpy as np
import pytest
import torch

from workbench.engines import Decode, NnsightEngine, RemoteMode, RunRequest, Write, seam_hook_names
from workbench.engines.remote import _JobStatus, explain_remote_failure
from workbench.errors import EngineError, HookError
from workbench.job_context import Interrupted, cancellable, reporting
from workbench.plugin_api import AnalysisContext, discover_plugins, run_analysis
from workbench.progress import run_to_completion

LAB_PROMPT = "t1 t2 t3 t4 t5 t6 t7 t8 t5"


@pytest.fixture(scope="module")
def simulated_lab(nnsight_lab):
    """The lab model with its nnsight engine's sessions sent through the NDIF simulation."""
    engine = NnsightEngine(nnsight_lab.engine.hf_model, nnsight_lab.tokenizer, remote=RemoteMode.simulated())
    return dataclasses.replace(nnsight_lab, engine=engine)


def test_a_simulated_remote_session_reads_and_writes_what_a_local_one_does(nnsight_lab, simulated_lab):
    ids = torch.tensor([nnsight_lab.tokenize(LAB_PROMPT)] * 2)
    d_model, width = nnsight_lab.cfg.d_model, ids.shape[1]
    mask = torch.zeros(2, width, 1, dtype=torch.bool)
    mask[1, 4] = True
    pattern = torch.full((1, nnsight_lab.n_heads, 1, width), 1.0 / width)  # query 3 attends evenly
    requests = [
        RunRequest(ids, reads=dict.fromkeys(seam_hook_names(nnsight_lab.n_layers))),
        RunRequest(
            ids,
            reads={"blocks.1.hook_resid_post": [-1], "blocks.1.attn.hook_z": None},
            writes={"blocks.0.hook_attn_out": Write(torch.zeros(1, width, d_model), None, mask), "blocks.1.attn.hook_pattern": Write(pattern, [3])},
            logit_positions=[-1],
        ),
        RunRequest(ids[:, :5], reads={"blocks.0.hook_mlp_out": [0, 2]}, logits=False),
    ]
    with torch.inference_mode():
        local = nnsight_lab.engine.run_many(requests)
    remote = simulated_lab.engine.run_many(requests)
    assert len(remote) == 3 and remote[2].logits is None
    for here, there in zip(local, remote):
        assert here.activations.keys() == there.activations.keys()
        for name, value in here.activations.items():
            assert torch.equal(value, there.activations[name]), name
        if here.logits is not None:
            assert torch.equal(here.logits, there.logits) and not there.logits.requires_grad
    assert not torch.equal(local[1].logits, local[0].logits[:, -1:])  # the writes changed something


def test_a_whole_causal_trace_is_one_remote_job(nnsight_lab, simulated_lab, monkeypatch):
    plugin = discover_plugins().get("causal-trace")
    params = {"subject": "t2 t3", "samples": 3}
    local = run_to_completion(run_analysis(plugin, AnalysisContext(nnsight_lab, [LAB_PROMPT]), params))
    jobs = []
    real = simulated_lab.engine._run_many
    monkeypatch.setattr(simulated_lab.engine, "_run_many", lambda runs: jobs.append(len(runs)) or real(runs))
    remote = run_to_completion(run_analysis(plugin, AnalysisContext(simulated_lab, [LAB_PROMPT]), params))
    # the clean run (which predicts the target and brings the subject's embeddings for the
    # noise level), then the 3 samples' runs in one job
    assert jobs == [1, 3]
    assert remote.answer == local.answer and remote.noise == pytest.approx(local.noise, rel=1e-6)
    assert np.abs(remote.scores - local.scores).max() <= 1e-6 and remote.high_score == pytest.approx(local.high_score, rel=1e-6)


def test_decoding_where_the_model_runs_equals_decoding_here(lab_model, nnsight_lab, simulated_lab):
    """A Decode: made here from the residual on the bridge, inside the trace on nnsight (the
    same session whether it runs here or remotely)."""
    ids = torch.tensor([nnsight_lab.tokenize(LAB_PROMPT)])
    decode = {"blocks.0.hook_resid_post": Decode(None, 3), "blocks.1.hook_resid_pre": Decode([-1, 2], 4), "hook_embed": Decode([0], 2)}
    reads = {"blocks.0.hook_resid_post": [1, 3], "blocks.1.hook_mlp_out": [0, 2]}  # read as well, at other positions
    with torch.inference_mode():
        runs = [model.engine.run(ids, reads=reads, decode=decode, logits=False) for model in (lab_model, nnsight_lab)]
    runs.append(simulated_lab.engine.run(ids, reads=reads, decode=decode, logits=False))
    answers = [run.decoded for run in runs]
    for run in runs[1:]:
        for name in reads:
            assert torch.allclose(run.activations[name], runs[0].activations[name], rtol=1e-4, atol=1e-5), name
    for name, asked in decode.items():
        bridge = answers[0][name]
        assert bridge.top_ids.shape == (1, ids.shape[1] if asked.positions is None else len(asked.positions), asked.top_k)
        for other in answers[1:]:
            assert torch.equal(other[name].top_ids, bridge.top_ids), name
            assert torch.allclose(other[name].top_probs, bridge.top_probs, rtol=1e-4, atol=1e-6), name
            assert torch.allclose(other[name].model_top_probs, bridge.model_top_probs, rtol=1e-4, atol=1e-6), name
    with pytest.raises(HookError, match="not a residual stream"):
        nnsight_lab.engine.run(ids, decode={"blocks.0.hook_mlp_out": Decode()})


def test_the_logit_lens_of_a_remote_model_decodes_there(nnsight_lab, simulated_lab, monkeypatch):
    lens = discover_plugins().get("logit-lens")
    here = run_to_completion(run_analysis(lens, AnalysisContext(nnsight_lab, [LAB_PROMPT])))
    jobs = []
    real = simulated_lab.engine._run_many
    monkeypatch.setattr(simulated_lab.engine, "_run_many", lambda runs: jobs.append(len(runs)) or real(runs))
    there = run_to_completion(run_analysis(lens, AnalysisContext(simulated_lab, [LAB_PROMPT])))
    assert jobs == [1]
    assert np.array_equal(here.top_ids, there.top_ids) and here.final_top_tokens == there.final_top_tokens
    assert np.abs(here.top_probs - there.top_probs).max() <= 1e-5 and np.abs(here.p_final_top - there.p_final_top).max() <= 1e-5
    with pytest.raises(EngineError, match="weights stay on NDIF"):
        simulated_lab.engine.decode_residual(torch.zeros(1, 1, simulated_lab.cfg.d_model))


def test_analyses_that_read_weights_refuse_a_remote_model_in_one_line(simulated_lab):
    for plugin_id in ("qk-ov",):
        plugin = discover_plugins().get(plugin_id)
        with pytest.raises(EngineError) as caught:
            run_to_completion(run_analysis(plugin, AnalysisContext(simulated_lab, [LAB_PROMPT])))
        assert "on NDIF they stay on the server" in caught.value.message and "\n" not in str(caught.value)


# -- waiting for NDIF ------------------------------------------------------------------------------


def test_the_wait_reports_each_state_once_and_stops_on_cancel():
    from nnsight.schema.response import ResponseModel, Status

    heard: list[str] = []
    status = _JobStatus()
    with reporting(heard.append):
        for state in (Status.RECEIVED, Status.QUEUED, Status.QUEUED, Status.LOG, Status.RUNNING):
            status.update(ResponseModel(id="job", status=state, description="..."))
        status.refresh()  # not cancelled: the wait goes on
        cancel = threading.Event()
        cancel.set()
        with cancellable(cancel), pytest.raises(Interrupted):
            status.refresh()
    assert heard == ["NDIF: received", "NDIF: queued", "NDIF: running"]


class _RefusingServer(http.server.BaseHTTPRequestHandler):
    """Answers everything with 401, as NDIF does a key it does not know."""

    def do_GET(self):
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"detail": "invalid api key"}')

    do_POST = do_GET

    def log_message(self, *args):
        pass


def test_a_refused_key_and_a_lost_connection_say_what_to_do():
    import websocket

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RefusingServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"http://127.0.0.1:{server.server_port}"
    mode = RemoteMode.ndif(host, "expired-key")
    try:
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(f"ws://127.0.0.1:{server.server_port}/subscribe", header={"ndif-api-key": "expired-key"}, timeout=5)
    finally:
        server.shutdown()
    error = explain_remote_failure(refused.value, mode, "meta-llama/Llama-3.1-8B")
    assert "refused the API key (HTTP 401)" in error.message and "NDIF_API_KEY" in error.hint

    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.perf_counter()
    with pytest.raises(ConnectionRefusedError) as lost:
        websocket.create_connection(f"ws://127.0.0.1:{port}/subscribe", timeout=5)
    error = explain_remote_failure(lost.value, RemoteMode.ndif(f"http://127.0.0.1:{port}", "key"), "meta-llama/Llama-3.1-8B")
    assert time.perf_counter() - started < 5
    assert "lost or refused" in error.message and "results received before this job are kept" in error.hint
    assert "expired-key" not in repr(mode)  # the key stays out of logs and tracebacks


def test_induction_on_a_remote_model_is_one_job_per_pass(nnsight_lab, simulated_lab, monkeypatch):
    import workbench_induction.analysis as induction

    plugin = discover_plugins().get("induction")
    params = {"batch": 6, "top_n": 2, "ablation": "zero"}
    monkeypatch.setattr(induction, "READ_BUDGET_BYTES", 1)  # a run per read: several runs a pass
    here = run_to_completion(run_analysis(plugin, AnalysisContext(nnsight_lab, []), params))
    jobs = []
    real = simulated_lab.engine._run_many
    monkeypatch.setattr(simulated_lab.engine, "_run_many", lambda runs: jobs.append(len(runs)) or real(runs))
    there = run_to_completion(run_analysis(plugin, AnalysisContext(simulated_lab, []), params))
    assert jobs == [4] + [2] * len(there.ablated_heads)  # the scoring pass, then one per ablated head
    assert there.ablated_heads == here.ablated_heads
    assert np.abs(there.induction - here.induction).max() <= 1e-6 and np.abs(there.ablated_loss_curves - here.ablated_loss_curves).max() <= 1e-6


def test_an_ndif_model_loads_without_weights_and_explains_what_fails(monkeypatch):
    """load_ndif_model on the lab model's folder in place of a Hub id (the config and tokenizer
    read from it, as from the Hub), with a server that accepts connections: the modules are
    built on the meta device, the sizes come from the config, and a run that cannot be sent is
    one EngineError. (A folder is no NDIF model id, so it fails before any request.)"""
    from workbench.models.ndif import load_ndif_model
    from workbench.models.specs import ModelSource, lab_models_dir

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RefusingServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("NDIF_API_KEY", "a-key")
    monkeypatch.setenv("NDIF_HOST", f"http://127.0.0.1:{server.server_port}")
    folder = str(lab_models_dir() / "induction")
    try:
        model = load_ndif_model(ModelSource("hub", "ndif:lab-induction", folder, "ndif"))
        assert model.engine.remote and model.engine.device == torch.device("cpu")
        assert next(model.engine.hf_model.parameters()).device.type == "meta"
        assert (model.n_layers, model.n_heads) == (2, 4) and model.current_fingerprint() == model.fingerprint
        with pytest.raises(EngineError) as caught:
            model.engine.run([model.tokenize(LAB_PROMPT)])
    finally:
        server.shutdown()
    assert "NDIF" in caught.value.message and "\n" not in str(caught.value)


def test_patching_a_remote_model_sends_each_targets_passes_as_one_job(nnsight_lab, simulated_lab, monkeypatch):
    plugin = discover_plugins().get("patching")
    prompts = ["t1 t2 t3 t4 t5 t6 t7 t8 t5", "t1 t2 t3 t4 t5 t9 t7 t8 t5"]
    params = {"targets": "resid_pre,head_out", "max_batch": 5}
    here = run_to_completion(run_analysis(plugin, AnalysisContext(nnsight_lab, prompts), params))
    jobs = []
    real = simulated_lab.engine._run_many
    monkeypatch.setattr(simulated_lab.engine, "_run_many", lambda runs: jobs.append(len(runs)) or real(runs))
    there = run_to_completion(run_analysis(plugin, AnalysisContext(simulated_lab, prompts), params))
    assert there.patched_passes == here.patched_passes > 2  # passes of up to 5 cells
    assert jobs[:2] == [1, 1] and len(jobs) == 2 + 2 and sum(jobs[2:]) == there.patched_passes  # the clean and corrupted runs, then a job per target
    for target in here.targets:
        assert np.abs(there.raw(target) - here.raw(target)).max() <= 1e-6, target
