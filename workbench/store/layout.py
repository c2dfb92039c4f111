"""The on-disk layout of an activation store (HDF5), and opening files safely.

    /                      attrs: workbench_format, format_version
    /runs/<run-id>/        attrs: status, model spec/name/fingerprint/config, versions,
                                  dtype, hooks, created/finished time, prepend_bos
        prompts            [n] utf-8 strings
        tokens             [sum of lengths] int32, prompt i is tokens[offsets[i]:offsets[i+1]]
        offsets            [n + 1] int64
        str_tokens         [sum of lengths] utf-8 strings
        token_keys         [n] hash of each prompt's token ids, for lookups
        acts/<hook name>   ragged (format 2, store/ragged.py): [*leading, every prompt's
                           positions end to end, *trailing]; attrs: canonical name,
                           position_axes, layout, storage, extent_rule, leading_axes.
                           Format 1 runs hold [n, *per-prompt shape], padded to the
                           longest prompt; they are still read.
        checksums/<hook>   [*leading, n] XXH3-64 of each prompt's slice (format 2)
    /results/<result-id>   analysis results beside the runs (workbench.results.storage)

A run's status is "writing" until all its data has been flushed, then
"complete"; only complete runs are ever served. A run whose structure cannot
be read (the process was killed while HDF5 created it) reads as "damaged".
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from ..errors import StoreError

FORMAT_NAME = "interpretability-workbench/activations"
FORMAT_VERSION = 2  # 2: ragged runs (store/ragged.py); format-1 runs (padded) are still read
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

STATUS_WRITING = "writing"
STATUS_COMPLETE = "complete"
STATUS_INTERRUPTED = "interrupted"
STATUS_DAMAGED = "damaged"  # never written: what the reader calls a run it cannot read

# The group of analysis results; what is in it is workbench.results.storage's to say.
RESULTS_GROUP = "results"

STRING_DTYPE = h5py.string_dtype("utf-8")


def token_key(tokens: Sequence[int] | np.ndarray) -> str:
    return hashlib.blake2b(np.asarray(tokens, dtype=np.int64).tobytes(), digest_size=16).hexdigest()


def _has_hdf5_signature(path: Path) -> bool:
    """Raises OSError when the file cannot be read: that is not the same as foreign."""
    # HDF5 allows the superblock at 0, 512, 1024, 2048, ... bytes.
    with open(path, "rb") as handle:
        offset = 0
        while True:
            handle.seek(offset)
            head = handle.read(8)
            if len(head) < 8:
                return False
            if head == HDF5_SIGNATURE:
                return True
            offset = 512 if offset == 0 else offset * 2


def open_store_file(path: Path, mode: str) -> h5py.File:
    """Open path as a workbench store, with a clear error for every way that can fail.

    mode "r" reads; mode "a" appends, creating the file when it does not exist.
    """
    path = Path(path)
    exists = path.exists()
    if mode == "r" and not exists:
        raise StoreError(f"No store at {path}.", "check the path, or create one with 'workbench cache'")
    if exists and path.is_dir():
        raise StoreError(f"{path} is a folder, not a store file.", "give a file name ending in .h5")
    try:
        if exists and path.stat().st_size > 0 and not _has_hdf5_signature(path):
            raise StoreError(f"{path} is not an HDF5 file.", "give a workbench store (.h5) or a new file name")
        handle = h5py.File(path, mode)
    except BlockingIOError as exc:
        raise StoreError(f"{path} is open for writing in another process.", "wait for that run to finish") from exc
    except OSError as exc:
        detail = str(exc).split("(")[0].strip()
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            doing = "read" if mode == "r" else "written"
            raise StoreError(f"{path} cannot be {doing}: {os.strerror(exc.errno)}.", "fix its permissions, or use another file") from exc
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise StoreError(f"The folder of {path} does not exist.", "create it, or give a path in an existing folder") from exc
        if re.search(r"\block", str(exc).lower()):  # not "sblock" in truncation messages
            raise StoreError(f"{path} is locked by another process.", "wait for it to finish, or close the other program") from exc
        raise StoreError(
            f"{path} is a damaged or truncated HDF5 file ({detail}).",
            "the runs in it cannot be read; write new runs to another file",
        ) from exc
    try:
        if len(handle.keys()) == 0 and not handle.attrs.keys() and mode != "r":
            handle.attrs["workbench_format"] = FORMAT_NAME
            handle.attrs["format_version"] = FORMAT_VERSION
            handle.create_group("runs")
        fmt = handle.attrs.get("workbench_format")
        if fmt != FORMAT_NAME:
            raise StoreError(
                f"{path} is an HDF5 file but not a workbench activation store.",
                "the workbench will not read or change it; give another file name",
            )
        version = int(handle.attrs.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise StoreError(
                f"{path} was written by a newer workbench (store format {version}; this one reads up to {FORMAT_VERSION}).",
                "upgrade the workbench",
            )
        if "runs" not in handle:
            raise StoreError(f"{path} is a workbench store without its 'runs' group (damaged).", "write new runs to another file")
        _refuse_links(handle, path)
    except StoreError:
        handle.close()
        raise
    except (OSError, KeyError, RuntimeError) as exc:
        handle.close()
        raise StoreError(f"{path} is damaged ({exc}).", "write new runs to another file") from exc
    return handle


def link_problem(group: h5py.Group, depth: int = 1) -> str | None:
    """What in group (and, to depth, the groups below it) is a link rather than data, or None.

    A store is data, never a pointer: an HDF5 external link would make reading it read
    another file, and a soft link lets one name stand for another run's data. Links are
    looked at, never followed; only hard-linked groups are descended into."""
    for name in group.keys():
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            return f"{group.name.rstrip('/')}/{name} is a link to {link.filename}"
        if isinstance(link, h5py.SoftLink):
            return f"{group.name.rstrip('/')}/{name} is a soft link to {link.path}"
    if depth > 0:
        for name in group.keys():
            member = group[name]
            if isinstance(member, h5py.Group):
                found = link_problem(member, depth - 1)
                if found:
                    return found
    return None


def _refuse_links(handle: h5py.File, path: Path) -> None:
    """The file's top levels (runs and results are listed from them) hold no links; what
    lies inside a run is checked with the run, so one damaged run spoils only itself."""
    for group in [handle] + [handle[name] for name in ("runs", RESULTS_GROUP) if name in handle and isinstance(handle.get(name, getlink=True), h5py.HardLink)]:
        found = link_problem(group, depth=0)
        if found:
            raise StoreError(f"{path}: {found}; the workbench does not follow links in a store.", "it was not written by the workbench; do not use it")


# Causal attention patterns are zero above the diagonal, so they are stored as
# packed lower triangles: entry (q, k), k <= q, sits at q*(q+1)/2 + k. The
# packing of a length-L prompt is a prefix of the packing at any longer length,
# so padded prompts share one dataset. Half the bytes, and no compression CPU.
LAYOUT_DENSE = "dense"
LAYOUT_LOWER_TRIANGLE = "lower-triangle"


def tril_size(n: int) -> int:
    return n * (n + 1) // 2


@functools.lru_cache(maxsize=16)
def _tril_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    # Building the index arrays costs ~10 ms at 1,024 tokens: more than reading a head.
    return np.tril_indices(n)


def unpack_lower_triangle(packed: np.ndarray, n: int) -> np.ndarray:
    """[..., n*(n+1)/2] -> [..., n, n] with zeros above the diagonal."""
    rows, cols = _tril_indices(n)
    out = np.zeros(packed.shape[:-1] + (n, n), dtype=packed.dtype)
    out[..., rows, cols] = packed[..., : tril_size(n)]
    return out
