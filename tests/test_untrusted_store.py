"""Stores are untrusted input: a crafted file is refused or its run reported damaged, never
followed out of the file, served with impossible numbers, or printed raw to a terminal."""

from __future__ import annotations

import shutil
import time

import h5py
import numpy as np
import pytest

from workbench.cli.main import main
from workbench.errors import StoreError
from workbench.store import ActivationStore

PROMPTS = ["t1 t2 t3 t4 t1 t2 t3", "t5 t6 t7"]


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "healthy.h5"
    args = ["cache", "--model", "lab:induction", "--hooks", "residual,attention", "--out", str(path), "--quiet"]
    for prompt in PROMPTS:
        args += ["--prompt", prompt]
    assert main(args) == 0
    return path


@pytest.fixture
def crafted(healthy, tmp_path):
    path = tmp_path / "crafted.h5"
    shutil.copy(healthy, path)
    return path


def inspect(capsys, path, *extra) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["inspect", str(path), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_external_links_are_never_followed(crafted, tmp_path, capsys):
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as handle:
        handle["data"] = np.array([7_654_321.0])  # a value no path or timestamp contains
    with h5py.File(crafted, "a") as handle:
        handle["runs/run-0001/acts/stolen"] = h5py.ExternalLink(str(secret), "/data")
        handle["sneaky"] = h5py.ExternalLink(str(secret), "/data")
    code, out, err = inspect(capsys, crafted)
    assert code == 2 and "/sneaky is a link to " + str(secret) in err and "does not follow links" in err
    with h5py.File(crafted, "a") as handle:
        del handle["sneaky"]
    code, out, err = inspect(capsys, crafted)  # inside a run: that run is damaged, never read
    assert code == 0 and f"DAMAGED (/runs/run-0001/acts/stolen is a link to {secret}, which the workbench does not follow)" in out
    assert "7654321" not in out and "Traceback" not in err
    with ActivationStore(crafted) as store:
        assert not store.runs()[0].complete


def test_soft_links_are_refused(crafted, capsys):
    with h5py.File(crafted, "a") as handle:
        handle["runs/run-0002"] = h5py.SoftLink("/runs/run-0001")
    code, _, err = inspect(capsys, crafted)
    assert code == 2 and "/runs/run-0002 is a soft link to /runs/run-0001" in err


def test_inconsistent_offsets_make_the_run_damaged(crafted, capsys):
    with h5py.File(crafted, "a") as handle:
        handle["runs/run-0001/offsets"][1] = -1_000_000_005
    code, out, _ = inspect(capsys, crafted)
    assert code == 0 and "DAMAGED (its offsets do not split its tokens into prompts)" in out
    assert "-1000000005" not in out
    with ActivationStore(crafted) as store:
        assert not store.runs()[0].complete


def test_a_header_declaring_millions_of_prompts_is_caught_without_reading_them(crafted, capsys):
    with h5py.File(crafted, "a") as handle:
        run = handle["runs/run-0001"]
        del run["offsets"]
        run.create_dataset("offsets", shape=(20_000_001,), dtype=np.int64)  # declared, never stored
    assert crafted.stat().st_size < 200_000
    started = time.perf_counter()
    code, out, _ = inspect(capsys, crafted, "--json")
    assert code == 0 and time.perf_counter() - started < 5
    assert "'offsets' declares 20000001 entries that are not stored" in out


def test_activations_shorter_than_the_prompts_are_damage(crafted, capsys):
    with h5py.File(crafted, "a") as handle:
        acts = handle["runs/run-0001/acts"]
        name = "blocks.0.hook_resid_pre"
        attrs = dict(acts[name].attrs)
        del acts[name]
        acts.create_dataset(name, data=np.zeros((2, 3, 64), dtype=np.float32))
        for key, value in attrs.items():
            acts[name].attrs[key] = value
    code, out, _ = inspect(capsys, crafted)
    assert "DAMAGED (activations 'blocks.0.hook_resid_pre' do not hold exactly its prompts' positions)" in out


def test_escape_sequences_in_a_file_are_shown_not_obeyed(crafted, capsys):
    with h5py.File(crafted, "a") as handle:
        handle["runs/run-0001"].attrs["model_spec"] = "lab:\x1b]0;pwned\x07\x1b[2J\u202egnp.exe"
    code, out, _ = inspect(capsys, crafted)
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "lab:\\x1b]0;pwned\\x07" in out and "\\u202e" in out


def test_the_healthy_store_is_not_called_damaged(healthy, capsys):
    code, out, _ = inspect(capsys, healthy)
    assert code == 0 and "run-0001  [complete]" in out and "DAMAGED" not in out


def test_a_flipped_bit_in_the_data_is_an_error_not_a_wrong_value(crafted, capsys):
    with ActivationStore(crafted) as store:
        run = store.run()
        good = run.read("blocks.1.attn.hook_pattern", 1, (2,))
        dataset = run.dataset("blocks.1.attn.hook_pattern")
        chunk = dataset.id.get_chunk_info(2)  # head 2's first chunk: prompt 0, then prompt 1
        offset = chunk.byte_offset + (dataset.shape[1] - 3) * dataset.dtype.itemsize  # a value of prompt 1
    with open(crafted, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x10]))
    with ActivationStore(crafted) as store:
        run = store.run()
        assert run.complete  # its structure is whole; its data is not
        np.testing.assert_array_equal(run.read("blocks.1.attn.hook_pattern", 1, (1,)).shape, good.shape)  # other heads still read
        with pytest.raises(StoreError, match="pattern of prompt 1 does not match its checksum"):
            run.read("blocks.1.attn.hook_pattern", 1, (2,))
        with pytest.raises(StoreError, match="does not match its checksum"):
            run.read("blocks.1.attn.hook_pattern", 1)  # every head at once checks each


def test_the_store_holds_the_activations_without_padding(healthy):
    """Prompts of mixed lengths: the activation datasets hold their values and (at most) one
    partly used chunk per head row, not the longest prompt's length for every prompt."""
    with ActivationStore(healthy) as store:
        run = store.run()
        lengths = np.array([run.length(i) for i in range(run.n_prompts)])
        assert lengths.max() >= 2 * lengths.min()
        for name in run.hooks:
            dataset = run.dataset(name)
            if dataset.attrs["layout"] == "lower-triangle":  # read as [heads, q, k], kept as triangles
                count = dataset.shape[0] * int((lengths * (lengths + 1) // 2).sum())
            else:
                count = sum(np.asarray(run.read(name, i)).size for i in range(run.n_prompts))
            values = count * dataset.dtype.itemsize
            assert dataset.id.get_storage_size() <= 1.05 * values, name


def test_slots_that_are_not_an_ordering_of_the_prompts_are_damage(crafted, capsys):
    with h5py.File(crafted, "a") as handle:
        handle["runs/run-0001/slots"][:] = [0, 0]
    code, out, _ = inspect(capsys, crafted)
    assert code == 0 and "DAMAGED (its 'slots' are not an ordering of its prompts)" in out
