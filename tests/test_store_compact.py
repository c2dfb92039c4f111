"""`workbench store compact`: the space of runs that never completed comes back, and what
was complete reads back identical."""

from __future__ import annotations

import numpy as np

from workbench.capture import capture_activations
from workbench.cli.main import main
from workbench.store import ActivationStore
from workbench.store.lock import lock_path

PROMPTS = [" ".join(f"t{(i + j) % 60}" for j in range(40)) for i in range(200)]


def cancelled_after(model, path, batches: int) -> None:
    """A run cancelled part way (as the app's Cancel does): marked interrupted, its space allocated."""
    job = capture_activations(model, PROMPTS, ["residual", "attention"], path, batch_size=4)
    for _ in range(batches):
        next(job)
    job.close()


def test_compact_drops_incomplete_runs_and_keeps_complete_ones_bit_for_bit(lab_model, tmp_path, capsys):
    store = tmp_path / "store.h5"
    assert main(["cache", "--model", "lab:induction", "--prompt", "t1 t2 t3 t1 t2", "--hooks", "residual,attention", "--out", str(store), "--quiet"]) == 0
    cancelled_after(lab_model, store, 5)
    assert main(["cache", "--model", "lab:induction", "--prompt", "t4 t5 t6 t4", "--hooks", "residual", "--out", str(store), "--quiet"]) == 0
    with ActivationStore(store) as before:
        assert [run.status for run in before.runs()] == ["complete", "interrupted", "complete"]
        kept = {(run.id, hook): run.read(hook, 0) for run in before.runs() if run.complete for hook in run.hooks}
    size_before = store.stat().st_blocks * 512
    capsys.readouterr()

    assert main(["store", "compact", str(store)]) == 0
    out = capsys.readouterr().out
    assert "kept 2 run(s)" in out and "run-0002 (interrupted)" in out
    assert store.stat().st_blocks * 512 < size_before / 5  # the cancelled run had allocated 200 prompts
    with ActivationStore(store) as after:
        assert [run.id for run in after.runs()] == ["run-0001", "run-0003"]
        for (run_id, hook), values in kept.items():
            assert np.array_equal(after.run(run_id).read(hook, 0), values)
    assert not lock_path(store).exists()
    assert not (tmp_path / "store.h5.compacting").exists()
    # The compacted store takes new runs as any other.
    assert main(["cache", "--model", "lab:induction", "--prompt", "t7 t8", "--hooks", "attention", "--out", str(store), "--quiet"]) == 0
    with ActivationStore(store) as again:
        assert [run.id for run in again.runs()] == ["run-0001", "run-0003", "run-0004"]


def test_compact_into_another_file_leaves_the_original(lab_model, tmp_path, capsys):
    store = tmp_path / "store.h5"
    cancelled_after(lab_model, store, 2)
    original = store.read_bytes()
    assert main(["store", "compact", str(store), "--out", str(tmp_path / "clean.h5")]) == 0
    assert store.read_bytes() == original
    with ActivationStore(tmp_path / "clean.h5") as clean:
        assert clean.runs() == []


def test_compact_refuses_a_store_being_written(lab_model, tmp_path, capsys):
    from workbench.store.lock import StoreLock

    store = tmp_path / "store.h5"
    cancelled_after(lab_model, store, 1)
    held = StoreLock(store).acquire()
    try:
        capsys.readouterr()
        assert main(["store", "compact", str(store)]) == 2
        assert "is being written by process" in capsys.readouterr().err
    finally:
        held.release()
