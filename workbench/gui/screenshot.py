"""`workbench --screenshot FILE.png`: drive the real window through a short script, then capture it.

The steps are the ones a user takes (open a workspace, load the model, type the
prompt, open the panel, run it), each waiting on the previous one's signals, so
the picture shows the app exactly as it works. Any failure ends the run with a
one-line message; the caller turns that into exit status 2.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QApplication

from ..errors import WorkbenchError
from .main_window import MainWindow
from .tasks import Task, TaskState

# The first load of SmolLM2 converts its GGUF file (about 40 s on a laptop); this is far beyond that.
OVERALL_TIMEOUT_S = 900
# How long to wait for the next-token predictions to appear before capturing anyway.
PREDICTIONS_TIMEOUT_MS = 20000
# Lets layouts and repaints settle after the last step, so the capture is complete.
SETTLE_MS = 400


class ScreenshotScript(QObject):
    def __init__(self, window: MainWindow, path: Path, *, model: str | None, prompt: str | None, panel: str | None, workspace: str | None,
                 panel_params: list[str] | None = None):
        super().__init__(window)
        self.window = window
        self.path = Path(path)
        self.model = model
        self.prompt = prompt
        self.panel_id = panel
        self.workspace = workspace
        self.error: str | None = None
        self.finished = False
        if self.path.suffix.lower() != ".png":
            raise WorkbenchError(f"Screenshot file {self.path} is not a .png file.", "give a file name ending in .png")
        self.panel_params: dict[str, str] = {}
        if panel:
            plugin = window.registry.get(panel)  # an unknown or broken plugin fails now, before any loading
            if panel_params:
                from ..plugin_api.params import parse_assignments, resolve_params

                self.panel_params = parse_assignments(panel_params)
                if plugin.analysis is not None:  # bad names or values fail now too
                    resolve_params(plugin.analysis.params, texts=self.panel_params)
        self._watchdog = QTimer(self)
        self._watchdog.setSingleShot(True)
        self._watchdog.timeout.connect(lambda: self.fail(f"The screenshot run did not finish within {OVERALL_TIMEOUT_S} s."))

    def start(self) -> None:
        self._watchdog.start(OVERALL_TIMEOUT_S * 1000)
        if self.prompt is not None:
            self.window.set_prompt(self.prompt)
        if self.workspace:
            task = self.window.open_workspace(self.workspace)
            self._after(task, self._workspace_opened)
        else:
            self._load_model()

    def _workspace_opened(self, _task: Task) -> None:
        if self.prompt is not None:
            self.window.set_prompt(self.prompt)
        loading = self.window.loading_task
        if loading is not None and not loading.state.ended:
            self._after(loading, lambda _t: self._open_panel())
        else:
            self._load_model()

    def _load_model(self) -> None:
        if not self.model:
            self._open_panel()
            return
        task = self.window.load_model(self.model)
        if task is None:
            self.fail("No model to load.")
            return
        self._after(task, lambda _t: self._open_panel())

    def _open_panel(self) -> None:
        if not self.panel_id:
            self._wait_for_predictions()
            return
        panel = self.window.open_panel(self.panel_id)
        if panel is None:
            self.fail(self._last_notification() or f"The panel {self.panel_id!r} could not be opened.")
            return
        if self.panel_params:
            panel.set_parameters(self.panel_params)
        task = panel.run()
        if task is None:
            self.fail(f"{panel.plugin.name} could not run: {panel.status.text()}")
            return
        self._after(task, lambda _t: self._wait_for_predictions())

    def _wait_for_predictions(self) -> None:
        window = self.window
        if window.model is None or not window.prompts() or window.predictions.predictions:
            self._capture_soon()
            return
        window.predictions_shown.connect(self._capture_soon)
        QTimer.singleShot(PREDICTIONS_TIMEOUT_MS, self, self._capture_soon)

    def _capture_soon(self) -> None:
        if not self.finished:
            QTimer.singleShot(SETTLE_MS, self, self._capture)

    def _capture(self) -> None:
        if self.finished:
            return
        QApplication.processEvents()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.window.grab().save(str(self.path), "PNG"):
            self.fail(f"Could not write {self.path}.")
            return
        self._end(0)

    def _after(self, task: Task, then) -> None:
        """Call then(task) once task has succeeded; fail the run otherwise."""

        def ended(done: Task) -> None:
            if done.state is TaskState.DONE:
                then(done)
            elif done.state is TaskState.CANCELLED:
                self.fail(f"{done.title} was cancelled.")
            else:
                self.fail(f"{done.title} failed: {done.message}")

        if task.state.ended:
            ended(task)
        else:
            task.ended.connect(ended)

    def _last_notification(self) -> str:
        items = self.window.notifications.items
        return items[-1].message if items else ""

    def fail(self, message: str) -> None:
        if not self.finished:
            self.error = message
            self._end(2)

    def _end(self, code: int) -> None:
        self.finished = True
        self._watchdog.stop()
        QApplication.instance().exit(code)
