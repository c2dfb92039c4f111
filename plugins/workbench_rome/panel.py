"""The ROME panel: the request form and Run (= apply the edit, in the background), the model's
edit history with Undo / Redo, edit files and saving the edited model, and the before/after view.

Undo and redo copy one saved matrix back (about 1 ms for SmolLM2's 576 × 1536 down_proj),
so they run on the GUI thread; they are disabled while a run is going, which edits the
same model from a worker.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton, QSplitter, QVBoxLayout, QWidget

from workbench.editing import EditStack, load_edit, save_edit, save_edited_model
from workbench.errors import WorkbenchError
from workbench.gui.panels import AnalysisPanel
from workbench.gui.widgets.report_view import ReportView


class RomePanel(AnalysisPanel):
    def build_view(self) -> QWidget:
        self.report_view = ReportView()
        side = QWidget()
        column = QVBoxLayout(side)
        column.setContentsMargins(0, 0, 0, 0)
        heading = QLabel("Edits on this model (newest last)")
        heading.setStyleSheet("font-weight: bold")
        self.history = QListWidget()
        self.history.setToolTip("Applied edits in black; undone edits (redo brings them back) in grey")
        # Long requests wrap to the list's width rather than scroll sideways.
        self.history.setWordWrap(True)
        self.history.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.undo_button = QPushButton("Undo")
        self.redo_button = QPushButton("Redo")
        self.undo_button.clicked.connect(self.undo)
        self.redo_button.clicked.connect(self.redo)
        row = QHBoxLayout()
        row.addWidget(self.undo_button)
        row.addWidget(self.redo_button)
        self.save_edit_button = QPushButton("Save edit…")
        self.load_edit_button = QPushButton("Load edit…")
        self.save_model_button = QPushButton("Save edited model…")
        self.save_edit_button.clicked.connect(self._save_edit_dialog)
        self.load_edit_button.clicked.connect(self._load_edit_dialog)
        self.save_model_button.clicked.connect(self._save_model_dialog)
        self.fingerprint = QLabel()
        self.fingerprint.setWordWrap(True)
        self.fingerprint.setStyleSheet("color: #555")
        column.addWidget(heading)
        column.addWidget(self.history, 1)
        column.addLayout(row)
        for button in (self.save_edit_button, self.load_edit_button, self.save_model_button):
            column.addWidget(button)
        column.addWidget(self.fingerprint)
        splitter = QSplitter(Qt.Horizontal)
        splitter.addWidget(side)
        splitter.addWidget(self.report_view)
        splitter.setSizes([260, 900])
        self.refresh_history()
        return splitter

    # -- the edit stack ------------------------------------------------------------------------------

    def stack(self) -> EditStack | None:
        model = self.host.model
        return EditStack.of(model) if model is not None else None

    def _busy(self) -> bool:
        return self.task is not None and not self.task.state.ended

    def refresh_history(self) -> None:
        self.history.clear()
        stack = self.stack()
        busy = self._busy()
        if stack is None:
            for button in (self.undo_button, self.redo_button, self.save_edit_button, self.load_edit_button, self.save_model_button):
                button.setEnabled(False)
            self.fingerprint.setText("No model loaded.")
            return
        for text, applied in stack.history():
            item = QListWidgetItem(("✓ " if applied else "↶ ") + text)
            item.setToolTip(text + ("" if applied else " (undone)"))
            if not applied:
                item.setForeground(Qt.gray)
            self.history.addItem(item)
        self.undo_button.setEnabled(bool(stack.applied) and not busy)
        self.redo_button.setEnabled(bool(stack.undone) and not busy)
        self.save_edit_button.setEnabled(bool(stack.applied))
        self.load_edit_button.setEnabled(not busy)
        self.save_model_button.setEnabled(not busy)
        state = "unedited" if not stack.applied else f"{len(stack.applied)} edit(s) applied"
        self.fingerprint.setText(f"Model {state}; fingerprint {self.host.model.fingerprint[:12]}")

    def _weights_changed(self) -> None:
        self.refresh_history()
        self.host.model_weights_changed()

    def undo(self):
        stack = self.stack()
        if stack is None or self._busy():
            return None
        edit = stack.undo()
        self._weights_changed()
        if edit is not None:
            self._set_status(f"Undid: {edit.describe()}")
        return edit

    def redo(self):
        stack = self.stack()
        if stack is None or self._busy():
            return None
        edit = stack.redo()
        self._weights_changed()
        if edit is not None:
            self._set_status(f"Redid: {edit.describe()}")
        return edit

    def save_last_edit(self, path) -> None:
        stack = self.stack()
        if stack is None or not stack.applied:
            raise WorkbenchError("There is no applied edit to save.", "run an edit first")
        save_edit(path, stack.applied[-1])
        self._set_status(f"Edit saved to {path}")

    def load_edit_file(self, path) -> None:
        stack = self.stack()
        if stack is None:
            raise WorkbenchError("No model is loaded.", "load the model the edit was made on")
        stack.apply(load_edit(path, self.host.model))
        self._weights_changed()
        self._set_status(f"Edit loaded from {path} and applied")

    def _dialog(self, title: str, action, save: bool, file_filter: str) -> None:
        chooser = QFileDialog.getSaveFileName if save else QFileDialog.getOpenFileName
        path, _ = chooser(self, title, "", file_filter)
        if not path:
            return
        try:
            action(path)
        except WorkbenchError as exc:
            self.host.notify_error(title, exc)

    def _save_edit_dialog(self) -> None:
        self._dialog("Save edit", self.save_last_edit, True, "ROME edit (*.h5)")

    def _load_edit_dialog(self) -> None:
        self._dialog("Load edit", self.load_edit_file, False, "ROME edit (*.h5)")

    def _save_model_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save edited model into folder")
        if not folder or self.host.model is None:
            return
        model = self.host.model
        self.host.start_job("Save edited model", lambda: save_edited_model(model, folder), lambda _: self._set_status(f"Edited model saved to {folder}"))

    # -- runs and results ----------------------------------------------------------------------------

    def run(self):
        task = super().run()
        self.refresh_history()
        return task

    def _task_ended(self, task) -> None:
        super()._task_ended(task)
        self._weights_changed()

    def render(self, result) -> None:
        self.report_view.show_report(self._report_for(result))
        self._weights_changed()

    def figure_widget(self) -> QWidget:
        return self.report_view.figure_widget()

    def model_changed(self, model) -> None:
        super().model_changed(model)
        self.refresh_history()
