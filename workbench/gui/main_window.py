"""The main window: model picker, prompt editor with token strip and predictions, dockable panels.

It is the panels' host (workbench.gui.panels.PanelHost): it owns the loaded
model, the prompts, the session's activation store and the task area, and it
is where errors from any job or plugin become notifications.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QLabel,
    QMainWindow,
    QMessageBox,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from ..errors import WorkbenchError
from ..hooks.interrupt import install as install_interrupt
from ..models import LoadedModel
from ..models.ndif import NDIF_KEY_VARIABLE
from ..plugin_api import LongJobError, PluginRegistry, PluginRunError, discover_plugins
from ..progress import Progress
from .notifications import NotificationCenter, NotificationList
from .panels import AnalysisPanel
from .plugins_dialog import PluginsDialog
from .prompt_inspector import PromptInspector, PromptPredictions, PromptTokens
from .report_export import show_export_dialog
from .settings import AppSettings
from .tasks import Task, TaskList, TaskManager
from .widgets.model_picker import ModelPicker
from .widgets.predictions import PredictionList
from .widgets.prompt_editor import PromptEditor
from .widgets.style import label
from .widgets.token_strip import TokenStrip
from .workspace import PanelRecord
from .workspace_actions import WorkspaceActions

APP_TITLE = "Interpretability Workbench"
DEFAULT_SIZE = (1400, 880)




def _load_model_job(spec: str, device: str, dtype: str, device_map: str = "", max_memory: str = ""):
    from ..models import load_model

    # One blocking call: the task shows a busy bar, and a cancel takes effect when it returns.
    where = f"device map {device_map}" if device_map else device
    yield Progress(0, 0, f"loading {spec} on {where} ({dtype})")
    model = load_model(spec, device=device, dtype=dtype, device_map=device_map or None, max_memory=max_memory)
    if model.engine.name == "bridge":  # in the app, Cancel stops a forward pass between two blocks (bridge engine only, so far)
        install_interrupt(model.bridge)
    yield Progress(1, 1, f"loaded in {model.load_seconds:.1f} s")
    return model


_catalog: list | None = None  # the models available offline, found once per process


def _available_models_job(refresh: bool = False):
    # Finding them hashes the embedded GGUF file (hundreds of MB), so it is done once, off the GUI thread.
    global _catalog
    if _catalog is None or refresh:
        from ..models import available_models

        _catalog = available_models()
    return _catalog


def _heading(text: str) -> QLabel:
    heading = label(text, bold=True)
    heading.setContentsMargins(0, 6, 0, 0)
    return heading


class PanelDock(QDockWidget):
    """A dock holding one panel; closing it removes the panel."""

    closed = Signal(object)

    def __init__(self, plugin_id: str, panel: AnalysisPanel, title: str, name: str, parent=None):
        super().__init__(title, parent)
        self.plugin_id = plugin_id
        self.panel = panel
        self.setObjectName(name)
        self.setWidget(panel)
        self.setFeatures(QDockWidget.DockWidgetClosable | QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable)

    def closeEvent(self, event) -> None:
        super().closeEvent(event)
        self.closed.emit(self)


class MainWindow(WorkspaceActions, QMainWindow):
    """The app window. Implements PanelHost (model, prompts(), prepend_bos, store_path, start_job, notify_error)."""

    model_loaded = Signal(object)  # LoadedModel
    predictions_shown = Signal()
    workspace_opened = Signal(object)  # Workspace
    workspace_saved = Signal(object)  # Path

    def __init__(
        self, registry: PluginRegistry | None = None, settings: AppSettings | None = None, remember: bool = True, confirm_quit: bool | None = None
    ):
        super().__init__()
        self.setWindowTitle(APP_TITLE)
        self.registry = registry if registry is not None else discover_plugins()
        self.settings = settings if settings is not None else AppSettings()
        if self.settings.ndif_api_key() and not os.environ.get(NDIF_KEY_VARIABLE):
            os.environ[NDIF_KEY_VARIABLE] = self.settings.ndif_api_key()  # ndif: models read it when they load
        self.remember = remember  # False: leave the user's settings alone (screenshots)
        self.model_lock = threading.Lock()
        self._model: LoadedModel | None = None
        self._model_options: tuple[str, ...] = ("", "cpu", "float32", "", "")
        self._load_task: Task | None = None
        self._inspection_id = 0
        self._dock_counter = 0
        self._shut_down = False
        # Quitting with results not in a workspace or an applied edit asks first (sessions a
        # person drives: by default those that remember settings).
        self.confirm_quit = remember if confirm_quit is None else confirm_quit
        self._saved_results: list = []  # the results the last saved or opened workspace holds
        # How long quitting waits for jobs to stop (they are cancelled, forward passes between
        # two blocks); None: until they end. The app sets it, and exit_if_stuck: a job that still
        # runs then is left behind by ending the process, never by a window-less process.
        self.quit_wait_s: float | None = None
        self.exit_if_stuck = False
        self.panel_docks: list[PanelDock] = []
        self.orphan_panels: list[PanelRecord] = []  # from a workspace, whose plugin is missing
        self.workspace_path: Path | None = None
        self.session_dir = Path(tempfile.mkdtemp(prefix="workbench-session-"))

        self.notifications = NotificationCenter(self)
        self.notifications.install_exception_hooks()
        self.notifications.posted.connect(self._notification_posted)
        self.tasks = TaskManager(self)
        self.tasks.task_failed.connect(self._task_failed)
        self.inspector = PromptInspector(self.model_lock, self)
        self.inspector.tokens_ready.connect(self._tokens_ready)
        self.inspector.predictions_ready.connect(self._predictions_ready)
        self.inspector.failed.connect(self._inspection_failed)
        self.inspector.predicting.connect(self._predicting)
        # While predictions are computed, the note under the prompt counts the seconds.
        self._predicting_since: tuple[int, int, bool, float] | None = None
        self._predicting_clock = QTimer(self)
        self._predicting_clock.setInterval(1000)
        self._predicting_clock.timeout.connect(self._show_predicting)

        self._build_model_bar()
        self._build_central()
        self._build_task_docks()
        self._build_menus()
        self.setDockOptions(QMainWindow.AnimatedDocks | QMainWindow.AllowTabbedDocks | QMainWindow.AllowNestedDocks)
        self.setTabPosition(Qt.AllDockWidgetAreas, QTabWidget.North)
        self._restore_settings()
        self._report_broken_plugins()
        self.tasks.start("Finding models", _available_models_job, self._set_model_choices, visible=False)

    @property
    def loading_task(self) -> Task | None:
        """The model load in progress (or the last one)."""
        return self._load_task

    # -- building the window ---------------------------------------------------------------------------------

    def _build_model_bar(self) -> None:
        self.model_picker = ModelPicker()
        self.model_picker.load_requested.connect(self.load_model)
        bar = QToolBar("Model")
        bar.setObjectName("model-toolbar")
        bar.setMovable(False)
        bar.addWidget(self.model_picker)
        self.addToolBar(Qt.TopToolBarArea, bar)

    def _build_central(self) -> None:
        self.prompt_editor = PromptEditor()
        self.prompt_editor.settled.connect(self._request_inspection)
        self.token_heading = _heading("Tokens")
        self.token_strip = TokenStrip()
        self.predictions = PredictionList()
        central = QWidget()
        central.setMinimumWidth(340)
        layout = QVBoxLayout(central)
        layout.setContentsMargins(8, 4, 8, 4)
        layout.addWidget(_heading("Prompt"))
        layout.addWidget(self.prompt_editor)
        layout.addWidget(self.token_heading)
        layout.addWidget(self.token_strip)
        layout.addWidget(_heading("Next token"))
        layout.addWidget(self.predictions)
        layout.addStretch(1)
        self.setCentralWidget(central)

    def _build_task_docks(self) -> None:
        self.task_list = TaskList(self.tasks)
        self.tasks_dock = QDockWidget("Tasks")
        self.tasks_dock.setObjectName("tasks-dock")
        self.tasks_dock.setWidget(self.task_list)
        self.notification_list = NotificationList(self.notifications)
        self.notification_list.count_changed.connect(lambda n: self.notifications_dock.setWindowTitle(f"Notifications ({n})" if n else "Notifications"))
        self.notifications_dock = QDockWidget("Notifications")
        self.notifications_dock.setObjectName("notifications-dock")
        self.notifications_dock.setWidget(self.notification_list)
        # Panels take the whole right side, top to bottom; the task area sits under the prompt.
        self.setCorner(Qt.BottomRightCorner, Qt.RightDockWidgetArea)
        self.setCorner(Qt.TopRightCorner, Qt.RightDockWidgetArea)
        self.addDockWidget(Qt.BottomDockWidgetArea, self.tasks_dock)
        self.addDockWidget(Qt.BottomDockWidgetArea, self.notifications_dock)
        self.splitDockWidget(self.tasks_dock, self.notifications_dock, Qt.Vertical)
        for dock in (self.tasks_dock, self.notifications_dock):
            dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable | QDockWidget.DockWidgetClosable)

    def _build_menus(self) -> None:
        menu = self.menuBar().addMenu("&File")
        self._add_action(menu, "&Open workspace…", self._open_workspace_dialog, QKeySequence.Open)
        self.recent_menu = menu.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        self._add_action(menu, "&Save workspace", self._save_workspace_clicked, QKeySequence.Save)
        self._add_action(menu, "Save workspace &as…", self._save_workspace_dialog, QKeySequence.SaveAs)
        menu.addSeparator()
        self._add_action(menu, "&Export report…", lambda: show_export_dialog(self))
        menu.addSeparator()
        self._add_action(menu, "NDIF API &key…", self.ask_ndif_api_key)
        menu.addSeparator()
        self._add_action(menu, "&Quit", self.close, QKeySequence.Quit)
        self.panels_menu = self.menuBar().addMenu("&Panels")
        self.panels_menu.aboutToShow.connect(self.rebuild_panels_menu)
        self.rebuild_panels_menu()
        view = self.menuBar().addMenu("&View")
        view.addAction(self.tasks_dock.toggleViewAction())
        view.addAction(self.notifications_dock.toggleViewAction())
        self._add_action(view, "Tab all panels together", self.tab_panels)
        help_menu = self.menuBar().addMenu("&Help")
        self._add_action(help_menu, "&Tour of the five core panels…", self.show_tour)
        self._add_action(help_menu, "&Documentation", self.show_documentation, QKeySequence.HelpContents)
        help_menu.addSeparator()
        self._add_action(help_menu, "&About", self._about)

    def ask_ndif_api_key(self) -> None:
        from PySide6.QtWidgets import QInputDialog, QLineEdit

        key, ok = QInputDialog.getText(
            self,
            "NDIF API key",
            "The key of your NDIF account (https://login.ndif.us), for ndif:<hf id> models.\n"
            "Kept in this app's settings file only: never in workspaces, stores or reports.\n"
            "Leave it empty to forget it (NDIF_API_KEY, when set, is used instead).",
            QLineEdit.Password,
            self.settings.ndif_api_key(),
        )
        if ok:
            self.settings.set_ndif_api_key(key.strip())
            if key.strip():  # typed now, so it wins over the environment's
                os.environ[NDIF_KEY_VARIABLE] = key.strip()

    def _add_action(self, menu, text: str, slot: Callable, shortcut=None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(shortcut)
        action.triggered.connect(lambda checked=False: slot())
        menu.addAction(action)
        return action

    def rebuild_panels_menu(self) -> None:
        """Every enabled plugin with an analysis or a panel, then the Plugins dialog."""
        self.panels_menu.clear()
        for record in self.registry:
            plugin = record.plugin
            if not record.ok or plugin is None or (plugin.analysis is None and plugin.panel is None):
                continue
            action = self.panels_menu.addAction(plugin.name)
            action.setStatusTip(plugin.description)
            action.setData(plugin.id)
            action.triggered.connect(lambda checked=False, pid=plugin.id: self.open_panel(pid))
        if not self.panels_menu.actions():
            self.panels_menu.addAction("No usable plugins").setEnabled(False)
        self.panels_menu.addSeparator()
        self.panels_menu.addAction("Plugins…", self.show_plugins_dialog)

    def _restore_settings(self) -> None:
        geometry = self.settings.geometry() if self.remember else None
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(*DEFAULT_SIZE)
        device, dtype, device_map, max_memory = self.settings.last_model_options()
        recent = self.settings.recent_models()
        self.model_picker.set_choices([], recent)
        self.model_picker.set_selection(recent[0] if recent else "smollm2", device, dtype, device_map, max_memory)
        self.resizeDocks([self.tasks_dock, self.notifications_dock], [120, 120], Qt.Vertical)

    def _set_model_choices(self, entries) -> None:
        self.model_picker.set_choices(entries, self.settings.recent_models())

    # -- PanelHost ----------------------------------------------------------------------------------------------

    @property
    def model(self) -> LoadedModel | None:
        return self._model

    @property
    def prepend_bos(self) -> bool | None:
        return self.prompt_editor.prepend_bos

    @property
    def store_path(self) -> Path | None:
        return self.session_dir / "activations.h5"

    def prompts(self) -> list[str]:
        return self.prompt_editor.prompts()

    def start_job(self, title: str, job_factory: Callable[[], Any], on_result: Callable[[Any], None] | None = None, *, uses_model: bool = True, visible: bool = True) -> Task:
        """A background task. Jobs that use the model run one at a time (forward hooks are per model)."""
        return self.tasks.start(title, job_factory, on_result, lock=self.model_lock if uses_model else None, visible=visible)

    def notify_error(self, title: str, exc: BaseException, details: str = "") -> None:
        """Report an error. A plugin that raised while running stays in service: a failed run
        is a failed run (its traceback is under Details); only plugins that fail to import or
        declare themselves are disabled, by discovery."""
        if isinstance(exc, PluginRunError) and not details:
            details = exc.details
        self.notifications.error(title, exc, details)

    # -- the model ---------------------------------------------------------------------------------------------

    def load_model(self, spec: str, device: str = "cpu", dtype: str = "float32", device_map: str = "", max_memory: str = "") -> Task | None:
        spec = (spec or "").strip()
        if not spec:
            self.notifications.error("Cannot load a model", WorkbenchError("No model spec given.", "type one, e.g. smollm2 or lab:induction"))
            return None
        if self._load_task is not None and not self._load_task.state.ended:
            self._load_task.cancel()
        self.model_picker.set_selection(spec, device, dtype, device_map, max_memory)
        self.model_picker.set_loading(True)
        self.model_picker.info.setText(f"Loading {spec}…")
        options = (spec, device, dtype, device_map, max_memory)
        task = self.start_job(f"Load {spec}", lambda: _load_model_job(*options), lambda model: self._model_ready(model, options), uses_model=False)
        task.ended.connect(self._load_ended)
        self._load_task = task
        return task

    def _load_ended(self, task: Task) -> None:
        if task is not self._load_task:
            return
        self.model_picker.set_loading(False)
        if task.state.value != "done":
            self.model_picker.info.setText(self._model_summary() if self._model is not None else f"No model loaded ({task.state.value}).")

    def _model_ready(self, model: LoadedModel, options: tuple[str, ...]) -> None:
        self._model = model
        self._model_options = options
        self.model_picker.info.setText(self._model_summary())
        self.model_picker.info.setToolTip("\n".join(f"{k}: {v}" for k, v in model.describe().items()))
        self.prompt_editor.set_tokenizer_default(model.tokenizer_prepends_bos)
        if self.remember:
            self.settings.remember_model(*self._model_options)
        self._update_title()
        for panel in self.panels():
            try:
                panel.model_changed(model)
            except Exception as exc:
                self.notify_error(f"{panel.plugin.name} failed on the new model", PluginRunError(panel.plugin.id, exc, traceback.format_exc()))
        self._request_inspection()
        if model.source.kind in ("embedded", "gguf"):  # its catalog entry now says "converted"
            self.tasks.start("Finding models", lambda: _available_models_job(refresh=True), self._set_model_choices, visible=False)
        self.model_loaded.emit(model)

    def _model_summary(self) -> str:
        model = self._model
        if model is None:
            return "No model loaded."
        return (
            f"{model.name}  ·  {model.n_layers} layers × {model.n_heads} heads  ·  d_model {int(model.cfg.d_model)}  ·  "
            f"{model.placement.describe() if model.placement.mapped else model.device} {model.dtype}  ·  fingerprint {model.fingerprint[:12]}"
        )

    # -- prompt, tokens and predictions ---------------------------------------------------------------------

    def set_prompt(self, text: str) -> None:
        self.prompt_editor.set_prompts([line for line in text.split("\n")])

    def model_weights_changed(self) -> None:
        self._request_inspection()

    def _request_inspection(self) -> None:
        for panel in self.panels():
            panel.inputs_changed()  # "needs a prompt" and the like no longer hold
        prompt, index = self.prompt_editor.current_prompt()
        count = len(self.prompt_editor.prompts())
        self.token_heading.setText(f"Tokens of prompt {index + 1} of {count}" if count > 1 else "Tokens")
        if self._model is None:
            self.inspector.cancel_pending()
            return
        if not prompt.strip():
            self.inspector.cancel_pending()
            self.token_strip.show_message("Type a prompt to see its tokens.")
            self.predictions.show_message("")
            return
        self._inspection_id = self.inspector.request(self._model, prompt, self.prompt_editor.prepend_bos)
        self.predictions.set_stale(True)

    def _tokens_ready(self, tokens: PromptTokens) -> None:
        if tokens.request_id == self.inspector.latest_id:
            self.token_strip.set_tokens(tokens.ids, tokens.texts, tokens.bos_used)

    def _predicting(self, request_id: int, n_tokens: int, waiting: bool) -> None:
        if request_id != self.inspector.latest_id:
            return
        self._predicting_since = (request_id, n_tokens, waiting, time.monotonic())
        self._show_predicting()
        self._predicting_clock.start()

    def _show_predicting(self) -> None:
        since = self._predicting_since
        if since is None or since[0] != self.inspector.latest_id:
            self._predicting_clock.stop()
            return
        _, n_tokens, waiting, started = since
        seconds = int(time.monotonic() - started)
        elapsed = f" ({seconds} s)" if seconds >= 1 else ""
        what = "Waiting for the model (a job is using it) to predict" if waiting else "Predicting"
        self.predictions.set_busy(f"{what} the next token after {n_tokens:,} tokens…{elapsed}")

    def _stop_predicting(self) -> None:
        self._predicting_since = None
        self._predicting_clock.stop()

    def _predictions_ready(self, predictions: PromptPredictions) -> None:
        if predictions.request_id == self.inspector.latest_id:
            self._stop_predicting()
            self.predictions.set_predictions(predictions.top)
            self.predictions.set_stale(False)
            self.predictions_shown.emit()

    def _inspection_failed(self, request_id: int, exc: BaseException) -> None:
        if request_id != self.inspector.latest_id:
            return
        self._stop_predicting()
        if isinstance(exc, WorkbenchError):
            self.token_strip.show_message(str(exc), error=True)
            self.predictions.show_message("")
        else:
            self.predictions.show_message(f"Could not predict: {type(exc).__name__}: {exc}", error=True)
            self.notifications.error("Predicting the next token failed", exc)

    # -- panels ---------------------------------------------------------------------------------------------------

    def panels(self) -> list[AnalysisPanel]:
        return [dock.panel for dock in self.panel_docks]

    def panel_for(self, plugin_id: str) -> AnalysisPanel | None:
        return next((d.panel for d in self.panel_docks if d.plugin_id == plugin_id), None)

    def open_panel(self, plugin_id: str, *, dock_name: str = "", title: str = "") -> AnalysisPanel | None:
        """Open a plugin's panel in a new dock (its own panel class, or the generic AnalysisPanel).
        Failures are shown as notifications; returns None then."""
        try:
            plugin = self.registry.get(plugin_id)
        except WorkbenchError as exc:
            self.notifications.error(f"Cannot open the panel {plugin_id!r}", exc)
            return None
        try:
            panel_class = plugin.panel_class() or AnalysisPanel
            if not (isinstance(panel_class, type) and issubclass(panel_class, AnalysisPanel)):
                raise TypeError(f"{panel_class!r} is not a subclass of workbench.gui.panels.AnalysisPanel")
            panel = panel_class(plugin, self)
        except Exception as exc:
            self.notify_error(f"The {plugin.name} panel failed to open", PluginRunError(plugin.id, exc, traceback.format_exc()))
            return None
        self._dock_counter += 1
        name = dock_name or f"panel-{plugin.id}-{self._dock_counter}"
        while any(d.objectName() == name for d in self.panel_docks):
            self._dock_counter += 1
            name = f"panel-{plugin.id}-{self._dock_counter}"
        same = sum(1 for d in self.panel_docks if d.plugin_id == plugin.id)
        dock = PanelDock(plugin.id, panel, title or (plugin.name if not same else f"{plugin.name} ({same + 1})"), name, self)
        dock.closed.connect(self._panel_closed)
        previous = self.panel_docks[-1] if self.panel_docks else None
        self.addDockWidget(Qt.RightDockWidgetArea, dock)
        if previous is not None and not previous.isFloating() and self.dockWidgetArea(previous) == Qt.RightDockWidgetArea:
            self.tabifyDockWidget(previous, dock)
        else:
            self.resizeDocks([dock], [int(self.width() * 0.66)], Qt.Horizontal)
        self.panel_docks.append(dock)
        dock.show()
        dock.raise_()
        return panel

    def _panel_closed(self, dock: PanelDock) -> None:
        if dock in self.panel_docks:
            self.panel_docks.remove(dock)
            task = dock.panel.task
            if task is not None and not task.state.ended:
                task.cancel()
            self.removeDockWidget(dock)
            dock.deleteLater()

    def close_all_panels(self) -> None:
        for dock in list(self.panel_docks):
            dock.close()

    def tab_panels(self) -> None:
        docks = [d for d in self.panel_docks if not d.isFloating()]
        for dock in docks[1:]:
            self.tabifyDockWidget(docks[0], dock)

    def _report_broken_plugins(self) -> None:
        for record in self.registry:
            if not record.ok:
                self.notifications.warning(
                    f"Plugin {record.id!r} is disabled",
                    f"{record.error} (Panels → Plugins… lists every plugin; the others work as usual)",
                    record.details,
                )

    def show_plugins_dialog(self) -> PluginsDialog:
        dialog = PluginsDialog(self.registry, self)
        dialog.show()
        return dialog

    # -- task errors and notifications --------------------------------------------------------------------------

    def _task_failed(self, task: Task) -> None:
        if isinstance(task.error, LongJobError):
            return  # not a failure: the panel shows the estimate and asks whether to go on
        error = task.error if task.error is not None else RuntimeError(task.message)
        self.notify_error(f"{task.title} failed", error, task.details)

    def _notification_posted(self, notification) -> None:
        self.statusBar().showMessage(f"{notification.title}: {notification.message}", 15000)

    def _update_title(self) -> None:
        parts = [APP_TITLE]
        if self._model is not None:
            parts.append(self._model.name)
        if self.workspace_path is not None:
            parts.append(self.workspace_path.name)
        self.setWindowTitle(" — ".join(parts))

    def run_when_loaded(self, panel: AnalysisPanel) -> None:
        """Run panel now when a model is loaded, else once the model being loaded is ready."""
        if self._model is not None:
            panel.run()
        else:
            self.model_loaded.connect(lambda _model: panel.run(), Qt.SingleShotConnection)

    def show_tour(self):
        from .help import TourDialog

        dialog = TourDialog(self)
        dialog.show()
        return dialog

    def show_documentation(self):
        from .help import DocumentationDialog

        dialog = DocumentationDialog(self)
        dialog.show()
        return dialog

    def _about(self) -> None:
        from ..plugin_api import API_VERSION_TEXT

        QMessageBox.about(
            self,
            f"About {APP_TITLE}",
            f"{APP_TITLE}: look inside language models.\nPlugin API {API_VERSION_TEXT}. Session folder: {self.session_dir}",
        )

    # -- quitting -------------------------------------------------------------------------------------------------------

    def unsaved_work(self) -> list[str]:
        """What quitting now would lose, one line each (empty: nothing)."""
        lost = []
        unsaved = [d.windowTitle() for d in self.panel_docks if d.panel.result is not None and not any(d.panel.result is r for r in self._saved_results)]
        if unsaved:
            lost.append(f"{len(unsaved)} result(s) not saved in a workspace: {', '.join(unsaved)}")
        if self._model is not None:
            from ..editing import EditStack

            stack = EditStack.existing(self._model)
            if stack is not None and stack.applied:
                lost.append(f"{len(stack.applied)} applied ROME edit(s): the edited weights exist only in memory")
        return lost

    def _confirm_quit(self, lost: list[str]) -> bool:
        """Ask before losing work; True: quit. Save offers the workspace dialog (then quit again)."""
        box = QMessageBox(QMessageBox.Warning, "Quit?", "Quitting now loses:\n\n• " + "\n• ".join(lost), parent=self)
        save = box.addButton("Save workspace…", QMessageBox.AcceptRole)
        quit_button = box.addButton("Quit without saving", QMessageBox.DestructiveRole)
        box.addButton(QMessageBox.Cancel)
        box.exec()
        if box.clickedButton() is save:
            self._save_workspace_dialog()
            return False
        return box.clickedButton() is quit_button

    def shutdown(self) -> bool:
        """Stop every job, wait for the worker threads (up to quit_wait_s) and remove the session
        folder. Idempotent. True when every thread ended."""
        if self._shut_down:
            return True
        self._shut_down = True
        if self.remember:
            self.settings.save_geometry(self.saveGeometry())
            self.settings.sync()
        wait_ms = None if self.quit_wait_s is None else int(1000 * self.quit_wait_s)
        started = time.monotonic()
        ended = self.tasks.shutdown(wait_ms)
        left = None if self.quit_wait_s is None else max(0.1, self.quit_wait_s - (time.monotonic() - started))
        self.inspector.stop(10.0 if left is None else left)
        self.notifications.uninstall_exception_hooks()
        shutil.rmtree(self.session_dir, ignore_errors=True)
        return ended and not self.inspector.running

    def closeEvent(self, event) -> None:
        if self.confirm_quit and not self._shut_down:
            lost = self.unsaved_work()
            if lost and not self._confirm_quit(lost):
                event.ignore()
                return
        if self.tasks.running():
            # Jobs are cancelled (a forward pass stops between two blocks); the window goes
            # away meanwhile instead of looking frozen.
            self.hide()
        if not self.shutdown() and self.exit_if_stuck:
            print(f"a job did not stop within {self.quit_wait_s:.0f} s of quitting; ending the process without it", file=sys.stderr)
            sys.stderr.flush()
            os._exit(0)
        super().closeEvent(event)
