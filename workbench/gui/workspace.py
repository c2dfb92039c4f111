"""Workspaces: a session saved to one project file and opened again.

The file is a workbench store (the HDF5 format of the activation store, so
`workbench inspect` reads it) holding:

    /workspace/description   JSON: format, version, model spec/device/dtype, BOS choice,
                             prompts, window layout (base64 of QMainWindow.saveState),
                             and per open panel: plugin id, dock name, title, state(),
                             and the id of its result
    /results/<result-id>     each panel's computed result (workbench.results.write_result)

Saving writes a new file beside the target and renames it over the target only
when complete, so a failed save never damages the previous file. Opening reads
and checks everything before the window changes, so a corrupt file leaves the
session as it was; a panel whose plugin is missing is reported and kept
(description and stored result) to be written back on the next save.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py

from ..disk import replacing
from ..errors import StoreError, WorkbenchError
from ..plugin_api import PluginRegistry, Result
from ..results.storage import new_result_id, read_result, write_result
from ..results.workspace_format import DESCRIPTION, FORMAT, VERSION, WORKSPACE_GROUP, describe_workspace, write_description
from ..store.layout import RESULTS_GROUP, open_store_file

SUFFIX = ".wbproj.h5"


class WorkspaceError(WorkbenchError):
    pass


@dataclass
class PanelRecord:
    """One open panel as saved: which plugin, its dock, its state() and its result."""

    plugin_id: str
    dock_name: str
    title: str
    state: dict = field(default_factory=dict)
    result: Result | None = None
    # Where its result is stored when it was not loaded (its plugin is missing): copied on save.
    stored_result: tuple[str, str] | None = None  # (file path, result id)
    problem: str = ""  # why it (or its result) could not be restored, for the user
    plugin_missing: bool = False  # then it is kept in the workspace but not opened


@dataclass
class Workspace:
    model_spec: str = ""
    device: str = "cpu"
    dtype: str = "float32"
    device_map: str = ""  # "" or a device map (workbench.models.placement)
    max_memory: str = ""
    bos: str = "auto"
    prompts: list[str] = field(default_factory=list)
    layout: bytes = b""
    panels: list[PanelRecord] = field(default_factory=list)
    path: Path | None = None

    def problems(self) -> list[str]:
        return [p.problem for p in self.panels if p.problem]


def _description(workspace: Workspace, result_ids: dict[int, str]) -> dict:
    return describe_workspace(
        model={"spec": workspace.model_spec, "device": workspace.device, "dtype": workspace.dtype, "device_map": workspace.device_map, "max_memory": workspace.max_memory},
        bos=workspace.bos,
        prompts=workspace.prompts,
        layout=base64.b64encode(workspace.layout).decode("ascii"),
        panels=[
            {"plugin": p.plugin_id, "dock": p.dock_name, "title": p.title, "state": p.state, "result": result_ids.get(i)}
            for i, p in enumerate(workspace.panels)
        ],
    )


def save_workspace(path: str | Path, workspace: Workspace) -> Path:
    """Write workspace to path atomically. Runs off the GUI thread (touches no widget)."""
    path = Path(path)
    if path.exists() and path.is_dir():
        raise WorkspaceError(f"{path} is a folder.", f"choose a file name ending in {SUFFIX}")
    try:
        with replacing(path, ".saving") as partial:
            handle = open_store_file(partial, "a")
            try:
                result_ids: dict[int, str] = {}
                for index, panel in enumerate(workspace.panels):
                    if panel.result is not None:
                        result_ids[index] = write_result(handle, panel.result, title=panel.title)
                    elif panel.stored_result is not None:
                        copied = _copy_stored_result(handle, *panel.stored_result)
                        if copied:
                            result_ids[index] = copied
                write_description(handle, _description(workspace, result_ids))
                handle.flush()
            finally:
                handle.close()
    except OSError as exc:
        raise WorkspaceError(f"Could not save the workspace to {path}: {exc.strerror or exc}.", "choose a writable folder") from exc
    return path


def _copy_stored_result(handle: h5py.File, source: str, result_id: str) -> str | None:
    """Copy a result group verbatim from another workspace file (for panels whose plugin is missing)."""
    try:
        with h5py.File(source, "r") as original:
            group = original[RESULTS_GROUP][result_id]
            results = handle.require_group(RESULTS_GROUP)
            new_id = new_result_id(results)
            original.copy(group, results, name=new_id)
            return new_id
    except (OSError, KeyError):
        return None


def read_workspace(path: str | Path, registry: PluginRegistry) -> Workspace:
    """Read and check a workspace file completely (results included). Runs off the GUI thread.

    Raises WorkspaceError (or StoreError) when the file cannot be used at all;
    problems with single panels are recorded on their PanelRecord instead.
    """
    path = Path(path)
    handle = open_store_file(path, "r")
    try:
        if WORKSPACE_GROUP not in handle or DESCRIPTION not in handle[WORKSPACE_GROUP]:
            raise WorkspaceError(f"{path} is a workbench store but not a workspace.", "open a file saved with File → Save workspace")
        raw = handle[WORKSPACE_GROUP][DESCRIPTION][()]
        try:
            data = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise WorkspaceError(f"The workspace description in {path} is damaged ({exc}).", "the file cannot be opened; the current session is unchanged") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise WorkspaceError(f"{path} holds no workspace description this app understands.", "open a file saved with File → Save workspace")
        if int(data.get("version", 0)) > VERSION:
            raise WorkspaceError(f"{path} was saved by a newer workbench (workspace format {data.get('version')}).", "upgrade the workbench")
        model = data.get("model") or {}
        try:
            layout = base64.b64decode(data.get("layout") or "")
        except ValueError:
            layout = b""
        workspace = Workspace(
            model_spec=str(model.get("spec") or ""),
            device=str(model.get("device") or "cpu"),
            dtype=str(model.get("dtype") or "float32"),
            device_map=str(model.get("device_map") or ""),
            max_memory=str(model.get("max_memory") or ""),
            bos=str(data.get("bos") or "auto"),
            prompts=[str(p) for p in data.get("prompts") or []],
            layout=layout,
            path=path,
        )
        for entry in data.get("panels") or []:
            workspace.panels.append(_read_panel(handle, path, entry, registry))
        return workspace
    except (KeyError, TypeError, AttributeError) as exc:
        raise WorkspaceError(f"{path} is damaged ({type(exc).__name__}: {exc}).", "the file cannot be opened; the current session is unchanged") from exc
    finally:
        handle.close()


def _read_panel(handle: h5py.File, path: Path, entry: dict, registry: PluginRegistry) -> PanelRecord:
    plugin_id = str(entry["plugin"])
    record = PanelRecord(plugin_id, str(entry.get("dock") or ""), str(entry.get("title") or plugin_id), dict(entry.get("state") or {}))
    result_id = entry.get("result")
    plugin_record = registry.record(plugin_id)
    if plugin_record is None or not plugin_record.ok:
        why = "is not installed" if plugin_record is None else f"is disabled ({plugin_record.error})"
        record.problem = f"The panel {record.title!r} needs the plugin {plugin_id!r}, which {why}; install or fix it and open the workspace again (the panel is kept when you save)."
        record.stored_result = (str(path), str(result_id)) if result_id else None
        record.plugin_missing = True
        return record
    if result_id:
        try:
            record.result = read_result(handle, str(result_id), registry.result_class)
        except StoreError as exc:
            record.problem = f"The result of the panel {record.title!r} could not be restored: {exc} The panel opens without it."
    return record
