"""One writer at a time per store, with HDF5's own file locking off (as on NFS and clusters)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO
from workbench.errors import StoreError
from workbench.store import ActivationStore
from workbench.store.lock import StoreLock, lock_path


def cache_process(out, prompts: int, env: dict) -> subprocess.Popen:
    args = [sys.executable, "-m", "workbench", "cache", "--model", "lab:induction", "--hooks", "residual,attention", "--out", str(out), "--quiet", "--batch-size", "1"]
    for index in range(prompts):
        args += ["--prompt", " ".join(f"t{(index + k) % 60}" for k in range(40))]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_concurrent_appends_with_hdf5_locking_off_never_damage_a_run(tmp_path):
    env = dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE")
    out = tmp_path / "shared.h5"
    first = cache_process(out, 300, env)
    deadline = time.monotonic() + 120
    while not lock_path(out).exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the second starts while the first holds the store
    second = cache_process(out, 3, env)
    second_out, second_err = second.communicate(timeout=300)
    first_out, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err
    if second.returncode == 0:  # it could only have run once the first had finished
        assert "wrote run-0002" in second_out
    else:
        assert second.returncode == 2 and "is being written by process" in second_err, second_err
        assert "Traceback" not in second_err and "wrote" not in second_out
    with ActivationStore(out) as store:
        runs = store.runs()
        assert all(run.complete and run.damage is None for run in runs)
        assert len(runs) == (2 if second.returncode == 0 else 1)
        assert runs[0].n_prompts == 300
    assert not lock_path(out).exists()


def test_a_lock_left_by_a_killed_writer_is_taken_over(tmp_path):
    store = tmp_path / "store.h5"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    lock_path(store).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "since": "earlier"}))
    lock = StoreLock(store).acquire()
    assert json.loads(lock_path(store).read_text())["pid"] == os.getpid()
    lock.release()
    assert not lock_path(store).exists()


def test_a_live_writer_is_named_and_a_foreign_host_is_never_taken_over(tmp_path):
    store = tmp_path / "store.h5"
    held = StoreLock(store).acquire()
    with pytest.raises(StoreError, match=f"being written by process {os.getpid()}"):
        StoreLock(store).acquire(wait_seconds=0.2)
    held.release()
    lock_path(store).write_text(json.dumps({"pid": 1, "host": "another-machine", "since": "2026-12-01"}))
    with pytest.raises(StoreError, match="another-machine") as raised:
        StoreLock(store).acquire()
    assert str(lock_path(store)) in raised.value.hint
