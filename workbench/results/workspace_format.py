"""The workspace description: what a workspace file (or a report's data file) says about
its model, prompts and panels, so that the app can reopen it.

Qt-free, because the headless report writes it too; the GUI's workspace module and
the report's data module both build it here, so the format has one definition.
"""

from __future__ import annotations

import json
from typing import Any

import h5py

WORKSPACE_GROUP = "workspace"
DESCRIPTION = "description"
FORMAT = "interpretability-workbench/workspace"
VERSION = 1


def describe_workspace(*, model: dict[str, Any], bos: str, prompts: list[str], layout: str, panels: list[dict[str, Any]]) -> dict[str, Any]:
    """panels: {"plugin", "dock", "title", "state", "result"} each; layout: base64 dock state or ""."""
    return {"format": FORMAT, "version": VERSION, "model": model, "bos": bos, "prompts": list(prompts), "layout": layout, "panels": panels}


def write_description(handle: h5py.File, description: dict[str, Any]) -> None:
    group = handle.require_group(WORKSPACE_GROUP)
    group.create_dataset(DESCRIPTION, data=json.dumps(description, indent=1), dtype=h5py.string_dtype("utf-8"))
