"""The activation store: what goes in comes out, lazily, and bad files give clear errors."""

import h5py
import numpy as np
import pytest
import torch

from tests.conftest import REPO
from workbench.capture import capture_activations
from workbench.errors import HookError, InputError, StoreError
from workbench.progress import run_to_completion
from workbench.store import ActivationStore

PROMPTS = [
    "t1 t2 t3 t4 t5 t6 t1 t2 t3 t4 t5 t6",
    "t9 t8 t7",
    "t10 t11 t12 t13 t14 t10 t11",
    "t20 t21",
    "t30 t31 t32 t33 t34 t35 t36 t37 t38",
]
HOOKS = ["residual", "attention", "blocks.1.attn.hook_z", "blocks.0.hook_mlp_out"]


def capture(model, path, prompts=PROMPTS, hooks=HOOKS, **kw):
    return run_to_completion(capture_activations(model, prompts, hooks, path, **kw))


def reference_cache(model, prompt, names):
    ids = model.tokenize(prompt)
    _, cache = model.bridge.run_with_cache(torch.tensor([ids]), names_filter=names)
    return {name: cache[name][0].numpy() for name in names}


@pytest.fixture(scope="module")
def float32_store(lab_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "acts.h5"
    result = capture(lab_model, path, batch_size=1)
    return path, result


def test_float32_equals_run_with_cache(lab_model, float32_store):
    path, result = float32_store
    with ActivationStore(path) as store:
        run = store.run(result.run_id)
        assert run.complete
        assert set(run.hooks) == set(result.hooks)
        names = run.hooks
        for i, prompt in enumerate(PROMPTS):
            expected = reference_cache(lab_model, prompt, names)
            for name in names:
                got = run.read(name, i)
                assert got.shape == expected[name].shape, name
                np.testing.assert_array_equal(got, expected[name], err_msg=f"{name} prompt {i}")


def test_batched_padded_run_matches_too(lab_model, tmp_path):
    # Prompts of different lengths share padded batches; causal attention keeps padding invisible.
    path = tmp_path / "batched.h5"
    capture(lab_model, path, batch_size=3)
    with ActivationStore(path) as store:
        run = store.run()
        for i, prompt in enumerate(PROMPTS):
            expected = reference_cache(lab_model, prompt, run.hooks)
            for name in run.hooks:
                np.testing.assert_allclose(run.read(name, i), expected[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_float16_within_rounding(lab_model, float32_store, tmp_path):
    path = tmp_path / "half.h5"
    capture(lab_model, path, storage_dtype="float16", batch_size=2)
    with ActivationStore(path) as half, ActivationStore(float32_store[0]) as full:
        h, f = half.run(), full.run()
        assert h.dataset("blocks.0.hook_resid_post").dtype == np.float16
        for name in h.hooks:
            for i in range(len(PROMPTS)):
                exact = f.read(name, i)
                # float16 has an 11-bit significand: relative error at most 2**-11 per value.
                np.testing.assert_allclose(h.read(name, i).astype(np.float32), exact, rtol=2**-10, atol=1e-4)


def test_metadata_recorded(lab_model, float32_store):
    path, result = float32_store
    with ActivationStore(path) as store:
        run = store.run(result.run_id)
        attrs = run.attrs
        assert attrs["model_spec"] == "lab:induction"
        assert attrs["model_fingerprint"] == lab_model.fingerprint
        assert attrs["transformer_lens_version"].startswith("4.")
        assert attrs["storage_dtype"] == "float32"
        assert "created" in attrs and "finished" in attrs
        assert run.prompts() == PROMPTS
        for i, prompt in enumerate(PROMPTS):
            ids = lab_model.tokenize(prompt)
            assert run.tokens(i).tolist() == ids
            assert run.str_tokens(i) == lab_model.str_tokens(ids)
        # Stored under the names users type, with the 4.x canonical name beside them.
        assert run.canonical_names()["blocks.0.hook_resid_post"] == "blocks.0.hook_out"
        assert run.resolve("blocks.0.hook_out") == "blocks.0.hook_resid_post"


def test_patterns_are_stored_ragged_one_head_per_chunk_row(lab_model, float32_store):
    path, result = float32_store
    with ActivationStore(path) as store:
        run = store.run(result.run_id)
        ds = run.dataset("blocks.1.attn.hook_pattern")
        # Causal patterns keep only the lower triangle, and prompts lie end to end with no
        # padding: the dataset holds exactly the sum of the prompts' triangles, per head.
        assert ds.attrs["layout"] == "lower-triangle" and ds.attrs["storage"] == "ragged"
        lengths = [run.length(i) for i in range(run.n_prompts)]
        assert len(set(lengths)) > 1  # mixed lengths, so padding would have shown
        assert ds.shape == (lab_model.n_heads, sum(n * (n + 1) // 2 for n in lengths))
        assert ds.chunks[0] == 1  # a head's chunks hold that head only
        head = run.pattern(1, 2, 0)
        full = run.read("blocks.1.attn.hook_pattern", 0)
        np.testing.assert_array_equal(head, full[2])
        n = run.length(0)
        assert head.shape == (n, n)
        np.testing.assert_allclose(head.sum(-1), 1.0, rtol=1e-5)


def test_lookup_returns_stored_activations(lab_model, float32_store):
    path, result = float32_store
    ids = lab_model.tokenize(PROMPTS[2])
    with ActivationStore(path) as store:
        hit = store.find(lab_model.fingerprint, ids, ["blocks.1.attn.hook_pattern", "blocks.1.hook_out"])
        assert hit is not None and hit.prompt == 2 and hit.run.id == result.run_id
        assert store.find(lab_model.fingerprint, ids, ["blocks.1.attn.hook_q"]) is None  # not stored
        assert store.find("0" * 32, ids, ["blocks.1.attn.hook_pattern"]) is None  # another model
        assert store.find(lab_model.fingerprint, ids[:-1], ["blocks.1.attn.hook_pattern"]) is None


def test_many_runs_in_one_file(lab_model, tmp_path):
    path = tmp_path / "multi.h5"
    first = capture(lab_model, path, prompts=PROMPTS[:2], hooks=["attention"])
    second = capture(lab_model, path, prompts=PROMPTS[2:], hooks=["mlp"])
    with ActivationStore(path) as store:
        assert [r.id for r in store.runs()] == [first.run_id, second.run_id]
        assert store.run(first.run_id).n_prompts == 2 and store.run(second.run_id).n_prompts == 3


def test_cancelled_run_is_never_served(lab_model, tmp_path):
    path = tmp_path / "cancelled.h5"
    job = capture_activations(lab_model, PROMPTS, ["attention"], path, batch_size=1)
    next(job)
    job.close()  # what the GUI's cancel button does
    with ActivationStore(path) as store:
        (run,) = store.runs()
        assert run.status == "interrupted" and not run.complete
        assert store.find(lab_model.fingerprint, lab_model.tokenize(PROMPTS[0]), ["blocks.0.attn.hook_pattern"]) is None
        with pytest.raises(StoreError, match="no complete run"):
            store.run()


def test_bad_inputs_are_clear_errors(lab_model, tmp_path):
    path = tmp_path / "x.h5"
    with pytest.raises(HookError, match="Unknown hook name") as info:
        run_to_completion(capture_activations(lab_model, PROMPTS, ["blocks.0.hook_resid_psot"], path))
    assert "blocks.0.hook_resid_post" in info.value.hint
    with pytest.raises(HookError, match="matches no hook"):
        run_to_completion(capture_activations(lab_model, PROMPTS, ["blocks.*.nothing"], path))
    with pytest.raises(InputError, match="Prompt 2 of 2: The prompt is empty"):
        run_to_completion(capture_activations(lab_model, ["t1", ""], ["attention"], path))
    with pytest.raises(InputError, match="No prompts"):
        run_to_completion(capture_activations(lab_model, [], ["attention"], path))
    assert not path.exists()  # nothing was written for rejected input


def test_truncated_file_is_a_clear_error(float32_store, tmp_path):
    data = float32_store[0].read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="damaged or truncated|damaged"):
        with ActivationStore(cut) as store:
            for run in store.runs():
                run.read(run.hooks[-1], run.n_prompts - 1)


def test_foreign_hdf5_is_refused_and_left_alone(lab_model, tmp_path):
    foreign = tmp_path / "theirs.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.arange(10)
    before = foreign.read_bytes()
    with pytest.raises(StoreError, match="not a workbench activation store"):
        ActivationStore(foreign)
    with pytest.raises(StoreError, match="not a workbench activation store"):
        capture(lab_model, foreign, prompts=PROMPTS[:1], hooks=["attention"])
    assert foreign.read_bytes() == before


def test_non_hdf5_and_missing_files(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("just some text, not HDF5\n" * 10)
    with pytest.raises(StoreError, match="not an HDF5 file"):
        ActivationStore(text)
    with pytest.raises(StoreError, match="No store"):
        ActivationStore(tmp_path / "missing.h5")


def _set_end_of_file_address(path, address: int) -> None:
    # What a kill while HDF5 creates a run leaves: metadata written past the end of
    # the file that the superblock records (version 0 superblock: address at byte 40).
    with open(path, "r+b") as handle:
        head = handle.read(48)
        assert head[:8] == b"\x89HDF\r\n\x1a\n" and head[8] == 0, "expected a version-0 superblock"
        handle.seek(40)
        handle.write(int(address).to_bytes(8, "little"))


def test_run_damaged_by_a_kill_is_listed_and_the_rest_stays_readable(lab_model, tmp_path):
    path = tmp_path / "damaged.h5"
    first = capture(lab_model, path, prompts=PROMPTS[:2], hooks=["attention"])
    end_of_first = path.stat().st_size
    capture(lab_model, path, prompts=PROMPTS[2:], hooks=HOOKS)
    _set_end_of_file_address(path, end_of_first)
    with ActivationStore(path) as store:
        runs = store.runs()
        assert [r.status for r in runs] == ["complete", "damaged"]
        assert runs[1].damage and not runs[1].complete
        assert store.run().id == first.run_id  # the newest complete run is the readable one
        pattern = "blocks.1.attn.hook_pattern"
        np.testing.assert_allclose(store.run().read(pattern, 1), reference_cache(lab_model, PROMPTS[1], [pattern])[pattern], atol=1e-6)
        with pytest.raises(StoreError, match="damaged"):
            store.run(runs[1].id)
        assert store.find(lab_model.fingerprint, lab_model.tokenize(PROMPTS[2]), ["attention"]) is None
    before = path.read_bytes()
    # Appending could put new bytes where the damaged run's metadata points; it is refused.
    with pytest.raises(StoreError, match="damaged.*another file"):
        capture(lab_model, path, prompts=PROMPTS[:1], hooks=["attention"])
    assert path.read_bytes() == before


def test_format_1_stores_still_read_and_take_new_runs(lab_model, tmp_path):
    """tests/data/format1-lab.h5 was written by the padded layout (format 1, before ragged
    storage): it reads as it did, equal to what the model computes, and a new run appended to
    it is ragged, with the file marked format 2 so older workbenches refuse it."""
    import shutil

    path = tmp_path / "old.h5"
    shutil.copy(REPO / "tests" / "data" / "format1-lab.h5", path)
    with ActivationStore(path) as store:
        run = store.run()
        assert "storage" not in run.dataset("blocks.0.hook_resid_post").attrs
        for prompt in range(run.n_prompts):
            tokens = torch.from_numpy(np.asarray(run.tokens(prompt), dtype=np.int64))[None]
            _, cache = lab_model.bridge.run_with_cache(tokens)
            for hook in run.hooks:
                expected = cache[hook][0].float().numpy()
                np.testing.assert_allclose(run.read(hook, prompt), expected, atol=2e-3, rtol=2e-3)
            np.testing.assert_allclose(run.pattern(1, 3, prompt), cache["blocks.1.attn.hook_pattern"][0, 3].numpy(), atol=2e-3)
    capture(lab_model, path)
    with ActivationStore(path) as store:
        assert store.handle.attrs["format_version"] == 2
        old, new = store.runs()
        assert old.complete and new.complete
        assert new.dataset("blocks.1.attn.hook_pattern").attrs["storage"] == "ragged"
        np.testing.assert_array_equal(old.read("blocks.1.hook_resid_post", 0).shape, (10, lab_model.cfg.d_model))


def test_activations_stream_to_disk_from_the_first_batch(lab_model, tmp_path, monkeypatch):
    # The run's datasets are made from a two-token probe pass, so no batch waits in memory
    # for the structure (a 4,000-token prompt's every attention layer did: 6 GiB).
    from workbench.store.writer import RunWriter

    structures: list[list] = []
    original = RunWriter._create_structure

    def spy(self, items):
        structures.append(items)
        return original(self, items)

    monkeypatch.setattr(RunWriter, "_create_structure", spy)
    prompts = ["t1 t2 t3 t4 t5 t6 t1 t2 t3", "t7 t8 t9 t7 t8"]
    run_to_completion(capture_activations(lab_model, prompts, ["residual", "attention"], tmp_path / "s.h5", batch_size=1))
    assert len(structures) == 1 and all(item.prompt_indices == [] for item in structures[0])  # probe samples only
    with ActivationStore(tmp_path / "s.h5") as store:
        run = store.run()
        for index, prompt in enumerate(prompts):
            expected = reference_cache(lab_model, prompt, run.hooks)
            for name in run.hooks:
                np.testing.assert_array_equal(run.read(name, index), expected[name])
