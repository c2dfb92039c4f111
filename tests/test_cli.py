"""The command line as users run it: one-line errors, never a traceback."""

import json
import re
import signal
import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import pytest

from tests.conftest import REPO, run_cli
from workbench.cli.main import main
from workbench.store import ActivationStore


def test_models_lists_embedded_and_lab(capsys):
    assert main(["models", "--json"]) == 0
    specs = {entry["spec"]: entry["kind"] for entry in json.loads(capsys.readouterr().out)}
    assert specs["smollm2"] == "embedded"
    assert specs["lab:induction"] == "lab"


def test_cache_then_inspect(tmp_path, capsys):
    out = tmp_path / "cli.h5"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("t1 t2 t3 t1 t2\n\nt4 t5 t6 t4\n")
    code = main(
        ["cache", "--model", "lab:induction", "--prompt", "t7 t8 t9", "--prompts-file", str(prompts),
         "--hooks", "blocks.*.attn.hook_pattern,blocks.1.hook_resid_post", "--out", str(out), "--dtype", "float16", "--batch-size", "2"]
    )
    assert code == 0
    assert "wrote run-0001" in capsys.readouterr().out
    with ActivationStore(out) as store:
        run = store.run()
        assert run.prompts() == ["t7 t8 t9", "t1 t2 t3 t1 t2", "t4 t5 t6 t4"]
        assert run.hooks == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern", "blocks.1.hook_resid_post"]
        assert run.dataset("blocks.1.hook_resid_post").dtype == np.float16
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "run-0001  [complete]" in text and "lab:induction" in text and "blocks.1.attn.hook_pattern" in text
    assert main(["inspect", "--json", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["runs"][0]["prompts"] == 3 and info["runs"][0]["status"] == "complete"


@pytest.mark.parametrize(
    "args, message",
    [
        (["cache", "--model", "no-such/model-anywhere", "--prompt", "hi", "--hooks", "attention", "--out", "{tmp}/a.h5"], "not in the Hugging Face cache"),
        (["cache", "--model", "lab:induction", "--prompt", "t1", "--hooks", "blocks.0.hook_resid_psot", "--out", "{tmp}/a.h5"], "Unknown hook name"),
        (["cache", "--model", "lab:induction", "--prompt", "   ", "--hooks", "attention", "--out", "{tmp}/a.h5"], "The prompt is empty"),
        (["cache", "--model", "lab:induction", "--prompt", " ".join(["t1"] * 500), "--hooks", "attention", "--out", "{tmp}/a.h5"], "tokens long"),
        (["inspect", "{tmp}/foreign.h5"], "not a workbench activation store"),
        (["inspect", "{tmp}/missing.h5"], "No store"),
        (["run", "causal-trace", "--model", "lab:induction", "--prompt", "t1 t2 t3", "--param", "subject=t9"], "not in the prompt"),
    ],
)
@pytest.mark.slow
def test_bad_input_gives_one_line_error(tmp_path, args, message):
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = np.zeros(3)
    result = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args], env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert "%|" not in result.stderr  # no progress bar before an error that came before any progress


@pytest.mark.slow
def test_killed_cache_leaves_an_incomplete_run(tmp_path):
    out = tmp_path / "killed.h5"
    prompts = tmp_path / "many.txt"
    prompts.write_text("\n".join(" ".join(f"t{(i + j) % 60}" for j in range(40)) for i in range(20000)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench", "cache", "--model", "lab:induction", "--prompts-file", str(prompts),
         "--hooks", "residual,attention", "--out", str(out), "--batch-size", "4"],
        cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    stderr = bytearray()
    threading.Thread(target=lambda: [stderr.extend(c) for c in iter(lambda: proc.stderr.read(64), b"")], daemon=True).start()

    def prompts_done() -> int:
        counts = re.findall(rb"(\d+)/20000", bytes(stderr))
        return int(counts[-1]) if counts else 0

    try:
        deadline = time.time() + 240
        # Kill in the middle of steady writing, many batches after the run started.
        while time.time() < deadline and prompts_done() < 80:
            assert proc.poll() is None, bytes(stderr).decode()
            time.sleep(0.2)
        assert prompts_done() >= 80, "the run never got going"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    result = run_cli("inspect", str(out))
    assert result.returncode == 0, result.stderr
    assert "INCOMPLETE" in result.stdout
    with ActivationStore(out) as store:
        (run,) = store.runs()
        assert not run.complete
        with pytest.raises(Exception, match="no complete run"):
            store.run()
    # The damaged run does not spoil the file: a new run can still be appended and read.
    result = run_cli("cache", "--model", "lab:induction", "--prompt", "t1 t2", "--hooks", "attention", "--out", str(out))
    assert result.returncode == 0, result.stderr
    with ActivationStore(out) as store:
        assert [r.complete for r in store.runs()] == [False, True]
    # Compacting drops the killed run and gives its space back.
    size = out.stat().st_blocks
    assert main(["store", "compact", str(out)]) == 0
    with ActivationStore(out) as store:
        assert [(r.id, r.complete) for r in store.runs()] == [("run-0002", True)]
    assert out.stat().st_blocks < size


def test_torch_threads_variable_sets_the_threads_of_every_command(monkeypatch, capsys):
    import torch

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("WORKBENCH_TORCH_THREADS", "1")
        assert main(["models", "--json"]) == 0
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("WORKBENCH_TORCH_THREADS", "two")
        assert main(["models", "--json"]) == 2
        assert "WORKBENCH_TORCH_THREADS is 'two'" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_the_cli_default_model_is_the_apps():
    from workbench.cli import main as cli
    from workbench.models import DEFAULT_MODEL

    assert cli.DEFAULT_MODEL == DEFAULT_MODEL
