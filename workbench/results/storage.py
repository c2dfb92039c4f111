"""Results in a workbench HDF5 file, beside the activation runs.

    /results/<result-id>   attrs: kind, status, meta (JSON provenance), title
        fields/..., json/...   written by the result type's save()

The same file format as the activation store, so one file can hold a session's
activations and results, and `workbench inspect` reads both. A result is marked
complete only after its data is flushed, like a run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py

from ..errors import StoreError
from ..store.layout import RESULTS_GROUP, STATUS_COMPLETE, STATUS_WRITING, link_problem, open_store_file
from ..store.lock import writing
from ..store.reader import refuse_if_damaged
from .base import Result, ResultMeta


@dataclass
class StoredResultInfo:
    id: str
    kind: str
    status: str
    title: str
    meta: ResultMeta | None

    @property
    def complete(self) -> bool:
        return self.status == STATUS_COMPLETE


def new_result_id(group: h5py.Group) -> str:
    """The next free result id in a results group (result-0001, result-0002, ...)."""
    numbers = [int(k[7:]) for k in group.keys() if k.startswith("result-") and k[7:].isdigit()]
    return f"result-{(max(numbers) + 1) if numbers else 1:04d}"


def write_result(handle: h5py.File, result: Result, title: str = "") -> str:
    """Append result into an open store file; returns its id."""
    if not result.kind:
        raise StoreError(f"{type(result).__name__} has no kind.", "set kind = '<plugin id>/<name>' on the result class")
    results = handle.require_group(RESULTS_GROUP)
    result_id = new_result_id(results)
    group = results.create_group(result_id)
    group.attrs["kind"] = result.kind
    group.attrs["status"] = STATUS_WRITING
    group.attrs["title"] = title
    group.attrs["saved"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    group.attrs["meta"] = (result.meta or ResultMeta(plugin_id=result.kind.split("/")[0])).to_json()
    result.save(group.create_group("data"))
    handle.flush()
    group.attrs["status"] = STATUS_COMPLETE
    handle.flush()
    return result_id


def save_result(path: str | Path, result: Result, title: str = "") -> str:
    """Append result to the store file at path (created when missing); returns its id."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with writing(path):
        refuse_if_damaged(path)
        handle = open_store_file(path, "a")
        try:
            return write_result(handle, result, title)
        finally:
            handle.close()


def _info(result_id: str, group: h5py.Group) -> StoredResultInfo:
    meta_text = group.attrs.get("meta")
    try:
        meta = ResultMeta.from_json(meta_text) if meta_text else None
    except (ValueError, TypeError):
        meta = None
    return StoredResultInfo(
        id=result_id,
        kind=str(group.attrs.get("kind", "")),
        status=str(group.attrs.get("status", STATUS_WRITING)),
        title=str(group.attrs.get("title", "")),
        meta=meta,
    )


def list_results(handle: h5py.File) -> list[StoredResultInfo]:
    if RESULTS_GROUP not in handle:
        return []
    return [_info(rid, handle[RESULTS_GROUP][rid]) for rid in sorted(handle[RESULTS_GROUP].keys())]


def read_result(handle: h5py.File, result_id: str, result_class: Callable[[str], type[Result] | None]) -> Result:
    """Load one complete result; result_class maps a kind to its class (from the plugin registry)."""
    if RESULTS_GROUP not in handle or result_id not in handle[RESULTS_GROUP]:
        raise StoreError(f"The file holds no result {result_id!r}.", "list its results with 'workbench inspect'")
    group = handle[RESULTS_GROUP][result_id]
    linked = link_problem(group, depth=4)
    if linked:
        raise StoreError(f"Result {result_id}: {linked}; the workbench does not follow links in a store.", "it was not written by the workbench; do not use it")
    info = _info(result_id, group)
    if not info.complete:
        raise StoreError(f"Result {result_id} was not completely written.", "run the analysis again")
    cls = result_class(info.kind)
    if cls is None:
        plugin = info.kind.split("/")[0]
        raise StoreError(f"Result {result_id} is of kind {info.kind!r}, which no enabled plugin reads.", f"install or enable the plugin {plugin!r}")
    try:
        result = cls.load(group["data"])
    except StoreError:
        raise
    except (KeyError, TypeError, ValueError, OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"Result {result_id} ({info.kind}) could not be read: {exc}.", "the file is damaged or from another version") from exc
    result.meta = info.meta
    return result


def load_results(path: str | Path, result_class: Callable[[str], type[Result] | None]) -> list[tuple[StoredResultInfo, Result]]:
    handle = open_store_file(Path(path), "r")
    try:
        return [(info, read_result(handle, info.id, result_class)) for info in list_results(handle) if info.complete]
    finally:
        handle.close()
