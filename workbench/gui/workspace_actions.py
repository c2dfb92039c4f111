"""Workspace actions of the main window: save the session to a project file, open one again.

A mixin of MainWindow, kept apart from the window's layout code. The file format
and its checks are in workspace.py; this is the Qt side: reading the session
from the widgets, running reads and writes as tasks, and applying a workspace
only once it has been read completely.
"""

from __future__ import annotations

import traceback
from pathlib import Path

from PySide6.QtCore import QByteArray
from PySide6.QtWidgets import QFileDialog

from ..plugin_api import PluginRunError
from .tasks import Task
from .workspace import SUFFIX as WORKSPACE_SUFFIX
from .workspace import PanelRecord, Workspace, read_workspace, save_workspace


class WorkspaceActions:
    """Mixed into MainWindow; uses its model picker, prompt editor, panels, tasks and settings."""

    def snapshot(self) -> Workspace:
        """The session as a Workspace (read from the widgets, on the GUI thread)."""
        spec, device, dtype, device_map, max_memory = self._model_options if self._model is not None else self.model_picker.selection()
        panels = [PanelRecord(d.plugin_id, d.objectName(), d.windowTitle(), d.panel.state(), d.panel.result) for d in self.panel_docks]
        return Workspace(
            model_spec=spec,
            device=device,
            dtype=dtype,
            device_map=device_map,
            max_memory=max_memory,
            bos=self.prompt_editor.bos_choice,
            prompts=self.prompt_editor.prompts(),
            layout=bytes(self.saveState().data()),
            panels=panels + list(self.orphan_panels),
        )

    def save_workspace(self, path: str | Path) -> Task:
        path = Path(path)
        workspace = self.snapshot()
        saved = [p.result for p in workspace.panels if p.result is not None]
        return self.start_job(f"Save workspace {path.name}", lambda: save_workspace(path, workspace), lambda done: self._workspace_saved(done, saved), uses_model=False)

    def _workspace_saved(self, path: Path, saved: list | None = None) -> None:
        self._saved_results = list(saved or [])
        self.workspace_path = path
        if self.remember:
            self.settings.remember_workspace(str(path))
        self._update_title()
        self.statusBar().showMessage(f"Workspace saved to {path}", 8000)
        self.workspace_saved.emit(path)

    def open_workspace(self, path: str | Path) -> Task:
        """Read the file in the background; the session changes only once it has been read completely."""
        path = Path(path)
        registry = self.registry
        return self.start_job(f"Open workspace {path.name}", lambda: read_workspace(path, registry), self.apply_workspace, uses_model=False)

    def apply_workspace(self, workspace: Workspace) -> None:
        self.close_all_panels()
        self.orphan_panels = [p for p in workspace.panels if p.plugin_missing]
        self.prompt_editor.set_bos_choice(workspace.bos)
        self.prompt_editor.set_prompts(workspace.prompts)
        for record in workspace.panels:
            if record.plugin_missing:
                continue
            panel = self.open_panel(record.plugin_id, dock_name=record.dock_name, title=record.title)
            if panel is None:
                continue
            # The result first, then the saved parameters and view options on top: a result
            # sets the form to what it was computed with, and the view the user left (the
            # head, the scale, the tab) must win over that.
            if record.result is not None:
                panel.show_result(record.result)
            try:
                panel.restore_state(record.state)
            except Exception as exc:
                self.notify_error(f"{record.title}: its saved state could not be restored", PluginRunError(record.plugin_id, exc, traceback.format_exc()))
        self._saved_results = [d.panel.result for d in self.panel_docks if d.panel.result is not None]
        if workspace.layout:
            self.restoreState(QByteArray(workspace.layout))
        for problem in workspace.problems():
            self.notifications.warning("Workspace partly restored", problem)
        self.workspace_path = workspace.path
        if self.remember and workspace.path is not None:
            self.settings.remember_workspace(str(workspace.path))
        options = (workspace.model_spec, workspace.device, workspace.dtype, workspace.device_map, workspace.max_memory)
        if workspace.model_spec and (self._model is None or options != self._model_options):
            self.load_model(*options)
        else:
            self._request_inspection()
        self._update_title()
        self.workspace_opened.emit(workspace)

    def _open_workspace_dialog(self) -> None:
        start = str(self.workspace_path.parent) if self.workspace_path else ""
        chosen, _ = QFileDialog.getOpenFileName(self, "Open workspace", start, f"Workspaces (*{WORKSPACE_SUFFIX} *.h5);;All files (*)")
        if chosen:
            self.open_workspace(chosen)

    def _save_workspace_clicked(self) -> None:
        if self.workspace_path is not None:
            self.save_workspace(self.workspace_path)
        else:
            self._save_workspace_dialog()

    def _save_workspace_dialog(self) -> None:
        chosen, _ = QFileDialog.getSaveFileName(self, "Save workspace", f"workspace{WORKSPACE_SUFFIX}", f"Workspaces (*{WORKSPACE_SUFFIX})")
        if chosen:
            path = Path(chosen)
            if not path.name.endswith(".h5"):
                path = path.with_name(path.name + WORKSPACE_SUFFIX)
            self.save_workspace(path)

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for path in self.settings.recent_workspaces():
            self.recent_menu.addAction(path, lambda p=path: self.open_workspace(p))
        if not self.recent_menu.actions():
            self.recent_menu.addAction("No recent workspaces").setEnabled(False)
