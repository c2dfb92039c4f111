"""Writing a run into a store on a background thread.

The forward pass hands each hook's activations to RunWriter.put() and goes on
computing; a writer thread cuts away the padding and writes them into HDF5.
A byte budget bounds what waits in the queue, so memory stays bounded for any
number of prompts.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from ..errors import StoreError
from .appender import ChunkAppender
from .layout import (
    FORMAT_VERSION,
    LAYOUT_DENSE,
    LAYOUT_LOWER_TRIANGLE,
    STATUS_COMPLETE,
    STATUS_INTERRUPTED,
    STATUS_WRITING,
    STRING_DTYPE,
    open_store_file,
    token_key,
)
from .lock import StoreLock
from .ragged import CHECKSUM_KIND, STORAGE_RAGGED, RaggedShape, chunk_shape, slot_starts
from .reader import refuse_if_damaged

CHUNK_TARGET_BYTES = 1 << 20  # a row of chunks (every head of a stretch of positions)
MIN_CHUNK_ROW_BYTES = 64 << 10
CHUNK_BUFFER_BYTES = 256 << 20  # the rows being filled, all hooks together
COMPRESSIONS = ("none", "lzf", "gzip")


@dataclass
class _Item:
    name: str
    canonical: str
    position_axes: tuple[int, ...]  # per-prompt axes over token positions (batch axis removed)
    layout: str
    prompt_indices: list[int]
    lengths: list[int]
    array: np.ndarray  # [batch, ...] in storage dtype; for lower-triangle: [batch, heads, packed]
    nbytes: int

    def stored_axes(self) -> tuple[int, ...]:
        """Axes of the stored per-prompt array that run over positions (one packed axis for triangles)."""
        return (self.array.ndim - 2,) if self.layout == LAYOUT_LOWER_TRIANGLE else self.position_axes


def attribute_value(value: object) -> str | bool | int | float | np.generic:
    """A value HDF5 can hold as an attribute: containers as JSON, str subclasses as str."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    if isinstance(value, (bool, int, float, np.generic)):
        return value
    return str(value)


class RunWriter:
    """Creates one run in a store file and fills it from a background thread."""

    def __init__(
        self,
        path: Path,
        *,
        metadata: dict[str, Any],
        prompts: list[str],
        token_lists: list[list[int]],
        str_token_lists: list[list[str]],
        storage_dtype: str = "float32",
        compression: str = "none",
        max_pending_bytes: int = 512 << 20,
        write_order: list[int] | None = None,
    ):
        if storage_dtype not in ("float32", "float16"):
            raise StoreError(f"Unknown storage dtype {storage_dtype!r}.", "choose float32 or float16")
        if compression not in COMPRESSIONS:
            raise StoreError(f"Unknown compression {compression!r}.", f"choose one of {', '.join(COMPRESSIONS)}")
        self.path = Path(path)
        self.storage_dtype = np.dtype(storage_dtype)
        self.compression = compression
        self.n_prompts = len(prompts)
        self.lengths = np.array([len(t) for t in token_lists], dtype=np.int64)
        # Prompts lie along the extent in the order they are written, so a batch is one
        # contiguous write; slots[prompt] says where each one went.
        order = np.arange(self.n_prompts) if write_order is None else np.asarray(write_order, dtype=np.int64)
        if sorted(order.tolist()) != list(range(self.n_prompts)):
            raise StoreError("The write order is not an ordering of the prompts.", "this is a bug; please report it")
        self.slots = np.empty(self.n_prompts, dtype=np.int64)
        self.slots[order] = np.arange(self.n_prompts)
        self._checks: dict[str, tuple[RaggedShape, np.ndarray, np.ndarray]] = {}
        # Ours, not HDF5's, file lock: it holds where HDF5_USE_FILE_LOCKING=FALSE (see lock.py).
        self._lock = StoreLock(self.path).acquire()
        try:
            refuse_if_damaged(self.path)
            self._file = open_store_file(self.path, "a")
        except BaseException:
            self._lock.release()
            raise
        try:
            self.run_id = self._new_run_id()
            self._group = self._file["runs"].create_group(self.run_id)
            self._write_header(metadata, prompts, token_lists, str_token_lists)
            self._file.flush()
        except BaseException:
            self._file.close()
            self._lock.release()
            raise
        self._acts = self._group["acts"]
        self._written: dict[str, int] = {}
        self._appenders: dict[str, ChunkAppender] = {}
        self._chunk_row_bytes = CHUNK_TARGET_BYTES
        self._queue: queue.Queue[_Item | Literal["flush"] | tuple[str, list[_Item]] | None] = queue.Queue()
        self._pending = 0
        # The first batch is held until all datasets exist (see _end_batch_on_disk);
        # the producer must not wait on the byte budget for it or it would wait forever.
        self._first_batch: list[_Item] | None = []
        self._producer_in_first_batch = True
        self._pending_lock = threading.Condition()
        self._max_pending = max_pending_bytes
        self._error: BaseException | None = None
        self._structure_on_disk = threading.Event()
        self._thread = threading.Thread(target=self._drain, name=f"store-writer-{self.run_id}", daemon=True)
        self._thread.start()

    def _new_run_id(self) -> str:
        existing = [int(k[4:]) for k in self._file["runs"].keys() if k.startswith("run-") and k[4:].isdigit()]
        return f"run-{(max(existing) + 1) if existing else 1:04d}"

    def _write_header(self, metadata: dict[str, Any], prompts: list[str], token_lists: list[list[int]], str_token_lists: list[list[str]]) -> None:
        group = self._group
        attrs = group.attrs
        attrs["status"] = STATUS_WRITING
        attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        attrs["writer_pid"] = os.getpid()
        attrs["storage_dtype"] = self.storage_dtype.name
        attrs["compression"] = self.compression
        for key, value in metadata.items():
            attrs[key] = attribute_value(value)
        lengths = np.array([len(t) for t in token_lists], dtype=np.int64)
        group.create_dataset("prompts", data=np.array(prompts, dtype=object), dtype=STRING_DTYPE)
        group.create_dataset("tokens", data=np.concatenate([np.asarray(t, dtype=np.int32) for t in token_lists]))
        group.create_dataset("offsets", data=np.concatenate([[0], np.cumsum(lengths)]))
        flat_str = [s for strs in str_token_lists for s in strs]
        group.create_dataset("str_tokens", data=np.array(flat_str, dtype=object), dtype=STRING_DTYPE)
        group.create_dataset("token_keys", data=np.array([token_key(t) for t in token_lists], dtype="S32"))
        group.create_dataset("slots", data=self.slots)
        group.create_group("acts")
        attrs["checksum_kind"] = CHECKSUM_KIND
        self._checksums = group.create_group("checksums")
        if int(self._file.attrs.get("format_version", 0)) < FORMAT_VERSION:
            # Older workbenches cannot read ragged runs: they must refuse the file, not misread it.
            self._file.attrs["format_version"] = FORMAT_VERSION

    # -- producer side (the thread running the model) --------------------------------------

    def put(
        self,
        name: str,
        canonical: str,
        position_axes: Iterable[int],
        prompt_indices: Iterable[int],
        lengths: Iterable[int],
        array: np.ndarray,
        layout: str = LAYOUT_DENSE,
    ) -> None:
        """Queue one hook's activations for a batch; blocks while the byte budget is spent."""
        self.raise_if_failed()
        nbytes = int(array.nbytes)
        with self._pending_lock:
            while not self._producer_in_first_batch and self._pending > 0 and self._pending + nbytes > self._max_pending and self._error is None:
                self._pending_lock.wait(0.5)
            self._pending += nbytes
        item = _Item(name, canonical, tuple(position_axes), layout, list(prompt_indices), list(lengths), array, nbytes)
        self._queue.put(item)

    def declare(self, samples: list[tuple[str, str, Iterable[int], str, np.ndarray]]) -> None:
        """Create every dataset of the run from samples of its hooks' activations (name,
        canonical name, position axes, layout, a [1, ...] array from a short probe pass),
        before the first batch. Without it the first batch is held in memory until all its
        hooks have fired, which for one long prompt is every layer's attention at once."""
        items = [_Item(name, canonical, tuple(axes), layout, [], [], array, 0) for name, canonical, axes, layout, array in samples]
        self._queue.put(("declare", items))
        while not self._structure_on_disk.wait(0.5):
            if self._error is not None or not self._thread.is_alive():
                break
        self.raise_if_failed()
        self._producer_in_first_batch = False

    def end_batch(self) -> None:
        """Ask the writer to flush to disk once everything queued so far is written.

        After the first batch this waits until the run's structure is on disk: while
        HDF5 creates the datasets it may evict half-updated metadata, and a kill then
        damages the file. Progress reported after this call is therefore safe to kill.
        """
        first = self._producer_in_first_batch
        self._producer_in_first_batch = False
        self._queue.put("flush")
        if first:
            while not self._structure_on_disk.wait(0.5):
                if self._error is not None or not self._thread.is_alive():
                    break
            self.raise_if_failed()

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise StoreError(f"Writing to {self.path} failed: {self._error}", "check free disk space and permissions") from self._error

    # -- writer thread ---------------------------------------------------------------------

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                if self._error is None:
                    if isinstance(item, tuple):  # ("declare", items): the run's structure, before any data
                        self._create_structure(item[1])
                    elif item == "flush":
                        self._end_batch_on_disk()
                    elif self._first_batch is not None and not self._structure_on_disk.is_set():
                        self._first_batch.append(item)
                    else:
                        self._write(item)
            except BaseException as exc:  # reported to the producer by raise_if_failed
                self._error = exc
            finally:
                if isinstance(item, _Item):
                    with self._pending_lock:
                        self._pending -= item.nbytes
                        self._pending_lock.notify_all()

    def _create_structure(self, items: list[_Item]) -> None:
        # Crash safety: every dataset of the run is created, its space allocated and the
        # metadata flushed before any data lands. Later batches then write raw chunk bytes
        # only, so a kill at any point leaves the file's structure whole.
        # Each dataset holds one row of chunks in memory (see appender.py); the rows of all
        # hooks together stay within CHUNK_BUFFER_BYTES.
        self._chunk_row_bytes = min(CHUNK_TARGET_BYTES, max(MIN_CHUNK_ROW_BYTES, CHUNK_BUFFER_BYTES // max(1, len({i.name for i in items}))))
        try:
            for item in items:
                self._dataset(item)
            self._file.flush()
        finally:
            self._structure_on_disk.set()

    def _end_batch_on_disk(self) -> None:
        if self._first_batch is not None:
            items, self._first_batch = self._first_batch, None
            if not self._structure_on_disk.is_set():
                self._create_structure(items)
            for item in items:
                self._write(item)
        self._file.flush()

    def _dataset(self, item: _Item) -> h5py.Dataset:
        if item.name in self._acts:
            return self._acts[item.name]
        shape = RaggedShape.of(tuple(item.array.shape[1:]), item.stored_axes(), item.layout)
        starts = slot_starts(shape, self.lengths, self.slots)
        total = int(starts[-1])
        compression = None if self.compression == "none" else self.compression
        dcpl = None
        if compression is None:
            # Early allocation without fill: the chunk index is final from the start and
            # costs no zero-writing; unwritten space is never read (the run is not complete).
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        dataset = self._acts.create_dataset(
            item.name,
            shape=shape.dataset_shape(total),
            dtype=self.storage_dtype,
            chunks=chunk_shape(shape, total, self.storage_dtype.itemsize, self._chunk_row_bytes),
            compression=compression,
            shuffle=compression is not None,
            fillvalue=None if dcpl is not None else 0,
            dcpl=dcpl,
        )
        dataset.attrs["canonical_name"] = item.canonical
        dataset.attrs["position_axes"] = np.array(item.position_axes, dtype=np.int64)
        dataset.attrs["layout"] = item.layout
        dataset.attrs["storage"] = STORAGE_RAGGED
        dataset.attrs["extent_rule"] = shape.rule
        dataset.attrs["leading_axes"] = len(shape.leading)
        # Checksums are filled in memory and written at the end, before the run is complete.
        self._checks[item.name] = (shape, starts, np.zeros((*shape.leading, self.n_prompts), dtype=np.uint64))
        self._checksums.create_dataset(item.name, data=self._checks[item.name][2])
        self._appenders[item.name] = ChunkAppender(dataset, len(shape.leading), direct=compression is None)
        return dataset

    def _write(self, item: _Item) -> None:
        self._dataset(item)
        shape, starts, checks = self._checks[item.name]
        lead: tuple[slice | int, ...] = (slice(None),) * len(shape.leading)
        blocks = []
        for row, (prompt, length) in enumerate(zip(item.prompt_indices, item.lengths)):
            block = shape.flatten(item.array[row], length)
            checks[(*lead, prompt)] = shape.checksums(block)
            blocks.append(block)
        appender = self._appenders[item.name]
        for slot, block in zip(self.slots[item.prompt_indices], blocks):
            appender.write(int(starts[slot]), block)
        self._written[item.name] = self._written.get(item.name, 0) + len(item.prompt_indices)

    # -- ending ------------------------------------------------------------------------------

    def _stop_thread(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def finish(self, extra_attrs: dict[str, Any] | None = None) -> str:
        """Wait for all writes, flush, and only then mark the run complete."""
        self._stop_thread()
        try:
            self.raise_if_failed()
            short = sorted(name for name, n in self._written.items() if n != self.n_prompts)
            if short:
                raise StoreError(f"Run {self.run_id} is missing activations for {short}.", "this is a bug; please report it")
            for appender in self._appenders.values():
                appender.drain()
            for name, (_, _, checks) in self._checks.items():
                self._checksums[name][...] = checks
            for key, value in (extra_attrs or {}).items():
                self._group.attrs[key] = attribute_value(value)
            self._file.flush()
            self._group.attrs["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            self._group.attrs["status"] = STATUS_COMPLETE
            self._file.flush()
        finally:
            self._file.close()
            self._lock.release()
        return self.run_id

    def abort(self, reason: str) -> None:
        """Stop writing and leave the run marked interrupted (never served as valid)."""
        if self._thread.is_alive():
            self._stop_thread()
        if not self._file.id.valid:
            self._lock.release()
            return
        try:
            self._group.attrs["status"] = STATUS_INTERRUPTED
            self._group.attrs["interrupted_reason"] = reason
            self._file.flush()
        finally:
            self._file.close()
            self._lock.release()
