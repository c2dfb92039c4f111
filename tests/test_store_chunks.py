"""Whole-chunk writing: prompts that cross chunk boundaries, in and out of order, with and
without compression, come back exactly as they went in."""

import h5py
import numpy as np
import pytest

import workbench.store.writer as writer_module
from tests.test_store import PROMPTS, capture, reference_cache
from workbench.store import ActivationStore
from workbench.store.appender import ChunkAppender
from workbench.store.ragged import EXTENT_LENGTH, RaggedShape, chunk_shape


def blocks_of(rng, sizes, heads=3, width=2):
    return [rng.standard_normal((heads, n, width)).astype(np.float32) for n in sizes]


@pytest.mark.parametrize("compression", [None, "lzf"])
@pytest.mark.parametrize("in_order", [True, False])
def test_appender_writes_every_block_where_it_belongs(tmp_path, compression, in_order):
    rng = np.random.default_rng(0)
    sizes = [5, 1, 9, 3, 7, 2, 11, 4]  # 42 along the extent, chunks of 6: blocks straddle them
    blocks = blocks_of(rng, sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    total = int(starts[-1])
    with h5py.File(tmp_path / "a.h5", "w") as f:
        ds = f.create_dataset("x", shape=(3, total, 2), dtype="float32", chunks=(1, 6, 2), compression=compression)
        appender = ChunkAppender(ds, 1, direct=compression is None)
        order = list(range(len(sizes))) if in_order else [2, 3, 0, 1, 7, 4, 5, 6]
        for i in order:
            appender.write(int(starts[i]), blocks[i])
        appender.drain()
        np.testing.assert_array_equal(ds[...], np.concatenate(blocks, axis=1))


def test_chunks_just_cover_the_extent_and_a_row_takes_the_target():
    shape = RaggedShape((9,), (64,), EXTENT_LENGTH)
    chunks = chunk_shape(shape, total=1000, itemsize=4, target_bytes=9 * 64 * 4 * 300)
    assert chunks[0] == 1 and chunks[2] == 64
    along = chunks[1]
    assert along <= 300 and -(-1000 // along) == -(-1000 // 300)  # as many chunks as the target asks
    assert -(-1000 // along) * along - 1000 < -(-1000 // along)  # the last chunk wastes < one row per chunk
    assert chunk_shape(shape, total=5, itemsize=4, target_bytes=1 << 20)[1] == 5  # never past the data


@pytest.mark.parametrize("compression", ["none", "lzf"])
def test_capture_across_many_small_chunks_equals_run_with_cache(lab_model, tmp_path, monkeypatch, compression):
    # Chunk rows of 512 bytes: every prompt of every hook crosses chunk boundaries.
    monkeypatch.setattr(writer_module, "CHUNK_TARGET_BYTES", 512)
    monkeypatch.setattr(writer_module, "MIN_CHUNK_ROW_BYTES", 512)
    path = tmp_path / "small-chunks.h5"
    capture(lab_model, path, batch_size=2, compression=compression)
    with ActivationStore(path) as store:
        run = store.run()
        assert run.full_damage is None  # every checksum matches what was written
        pattern = run.dataset("blocks.1.attn.hook_pattern")
        assert pattern.shape[1] > 4 * pattern.chunks[1]
        for i, prompt in enumerate(PROMPTS):
            expected = reference_cache(lab_model, prompt, run.hooks)
            for name in run.hooks:
                np.testing.assert_allclose(run.read(name, i), expected[name], rtol=1e-4, atol=1e-5, err_msg=name)
