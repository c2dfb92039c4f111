"""The report's data: its results in one workbench HDF5 file beside the HTML.

The file is a workbench store (`workbench inspect` lists the results) and also a
workspace the app opens with File → Open workspace: one panel per analysis, with
its parameters and result, on the report's model and prompts. The workspace
description comes from workbench.results.workspace_format, as the app's own does.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py

from ..disk import replacing
from ..errors import InputError
from ..results.storage import write_result
from ..results.workspace_format import describe_workspace, write_description
from ..store.layout import open_store_file
from .build import Report

REPORT_GROUP = "report"


def _workspace_description(report: Report, result_ids: dict[int, str]) -> dict:
    panels = []
    for index, entry in enumerate(report.entries):
        if index not in result_ids:
            continue
        panels.append({"plugin": entry.plugin_id, "dock": "", "title": entry.title, "state": {"params": entry.params, "view": {}}, "result": result_ids[index]})
    model = {"spec": report.model_spec, "device": report.model_device, "dtype": report.model_dtype}
    return describe_workspace(model=model, bos=report.bos, prompts=report.prompts, layout="", panels=panels)


def write_report_data(path: str | Path, report: Report) -> dict[int, str]:
    """Write every result of report to path (replacing the file); returns {entry index: result id}.

    Written beside the target and renamed over it when complete, so an interrupted
    write never leaves a half file where the last good one was.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder.", "give the data file a name ending in .h5")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with replacing(path, ".writing") as partial:
            handle = open_store_file(partial, "a")
            try:
                ids = {i: write_result(handle, e.result, title=e.title) for i, e in enumerate(report.entries) if e.result is not None}
                text = h5py.string_dtype("utf-8")
                write_description(handle, _workspace_description(report, ids))
                group = handle.create_group(REPORT_GROUP)
                group.attrs["title"] = report.title
                group.attrs["created"] = report.created
                group.create_dataset("spec", data=report.spec_text, dtype=text)
                failures = [{"plugin": e.plugin_id, "title": e.title, "error": e.error.message} for e in report.entries if e.error is not None]
                group.create_dataset("failed", data=json.dumps(failures), dtype=text)
                handle.flush()
            finally:
                handle.close()
    except OSError as exc:
        raise InputError(f"Could not write the report data to {path}: {exc.strerror or exc}.", "choose a writable folder") from exc
    return ids
