"""Analysis panels: the Qt side of a plugin. PUBLIC API for plugin authors.

A panel edits an analysis' parameters, runs it in the background and shows its
result. The base class does all of that from the plugin's declarations alone: a
plugin that contributes an analysis and no panel gets a plain `AnalysisPanel`,
which builds a parameter form from `plugin.analysis.params`, has a Run button,
and shows the result's report section (figures, tables, how to read them). So
every plugin is usable in the app without writing any Qt.

To give a result an interactive view, subclass and override two methods:

    from workbench.gui.panels import AnalysisPanel
    from workbench.gui.widgets.heatmap import HeatmapView

    class ResidualNormPanel(AnalysisPanel):
        def build_view(self):
            self.heatmap = HeatmapView()
            return self.heatmap

        def render(self, result):
            self.heatmap.set_data(result.norms, x_labels=result.str_tokens, y_labels=result.hooks)

and name the class in the plugin: `Plugin(..., panel="my_plugin.panel:ResidualNormPanel")`.

Contract:
- The app constructs panels as `PanelClass(plugin, host, parent=None)`; `host` is
  the main window, seen through the small `PanelHost` protocol below.
- Panels never compute on the GUI thread: `run()` hands the analysis generator to
  `host.start_job`, which runs it on a worker thread, shows it in the task area
  (progress, Cancel) and calls back on the GUI thread with the result.
- Drill-downs (another head, layer or prompt of the shown result) are the plugin's
  queries (`Plugin(queries=[Query(...)])`, plugin API 1.1): `run_query(name, params)`
  runs one through the same runner in the background and shows its answer. A panel
  never reads the store or runs the model itself.
- `render(result)` runs on the GUI thread; keep it quick (draw, do not compute).
- An exception from a panel's code or a run is reported as a notification (its
  traceback under Details); the plugin stays usable and the app keeps working.
  Only a plugin that fails to import or to declare itself is disabled.
- `state()` / `restore_state()` carry parameters and view options into
  workspaces; override `view_state()` / `restore_view_state()` for view options.
- Figure export captures `figure_widget()` (PNG) or, for SVG, `figure_svg()` when
  it returns SVG text, else paints `figure_widget()` into an SVG. Data export
  writes the result (.h5) or its JSON summary (.json).
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

from PySide6.QtCore import QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import QPainter
from PySide6.QtSvg import QSvgGenerator
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QMenu,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import InputError, WorkbenchError
from ..models import LoadedModel
from ..plugin_api import AnalysisContext, LongJobError, Plugin, PluginRunError, Result, check_same_model, run_analysis, run_query, summary_json
from ..results import save_result
from .widgets.param_form import ParameterForm
from .widgets.report_view import ReportView
from .widgets.style import ERROR_COLOUR, MUTED_COLOUR, TEXT_COLOUR, label, set_text_colour

__all__ = ["AnalysisPanel", "PanelHost"]

FIGURE_SUFFIXES = (".png", ".svg")
DATA_SUFFIXES = (".h5", ".json")


@runtime_checkable
class PanelHost(Protocol):
    """What a panel may use of the window hosting it. The main window implements it."""

    @property
    def model(self) -> LoadedModel | None:
        """The loaded model, or None before one is loaded."""

    @property
    def prepend_bos(self) -> bool | None:
        """The prompt editor's BOS choice: None follows the tokenizer's convention."""

    @property
    def store_path(self) -> Path | None:
        """The session's activation store; analyses read (and fill) cached activations there."""

    def prompts(self) -> list[str]:
        """The prompts in the prompt editor (one per line, empty lines dropped)."""

    def start_job(self, title: str, job_factory: Callable[[], Any], on_result: Callable[[Any], None], *, uses_model: bool = True, visible: bool = True) -> Any:
        """Run job_factory() on a worker thread as a task (progress and Cancel in the task
        area; visible=False: no row, for quick work such as a query); on_result(value) runs
        on the GUI thread. Jobs that use the model run one at a time. Returns the task
        (workbench.gui.tasks.Task: .state, .cancel(), signal .ended)."""

    def notify_error(self, title: str, exc: BaseException) -> None:
        """Show an error as a notification (a PluginRunError's traceback under Details). The
        plugin stays in service: a failed run is a failed run."""

    def model_weights_changed(self) -> None:
        """Tell the window that a panel changed the model's weights (an edit, its undo):
        views computed from the old weights, such as the next-token predictions, are redone."""


class AnalysisPanel(QWidget):
    """A plugin's panel: parameter form, Run, result view, exports. Subclass to customise the view.

    Attributes: `plugin` (workbench.plugin_api.Plugin), `host` (PanelHost),
    `result` (the shown Result or None), `form` (ParameterForm or None), `view`
    (what build_view returned), `task` (the running task or None).
    """

    result_changed = Signal(object)  # the Result now shown

    def __init__(self, plugin: Plugin, host: PanelHost, parent: QWidget | None = None):
        super().__init__(parent)
        self.plugin = plugin
        self.host = host
        self.result: Result | None = None
        self.task = None
        self.query_task = None
        self._prepared: PreparedResult | None = None
        analysis = plugin.analysis
        self.form = ParameterForm(analysis.params) if analysis is not None else None

        self.run_button = QPushButton("Run")
        self.run_button.setToolTip(f"Run {plugin.name} on the prompt (in the background)")
        self.run_button.clicked.connect(self._run_clicked)
        self.run_button.setVisible(analysis is not None)
        self.export_button = QToolButton()
        self.export_button.setText("Export")
        self.export_button.setPopupMode(QToolButton.InstantPopup)
        menu = QMenu(self.export_button)
        menu.addAction("Figure as PNG…", lambda: self._export_dialog("figure", "PNG image (*.png)", ".png"))
        menu.addAction("Figure as SVG…", lambda: self._export_dialog("figure", "SVG image (*.svg)", ".svg"))
        menu.addAction("Data as HDF5…", lambda: self._export_dialog("data", "Workbench result (*.h5)", ".h5"))
        menu.addAction("Data as JSON…", lambda: self._export_dialog("data", "JSON summary (*.json)", ".json"))
        self.export_button.setMenu(menu)
        self.export_button.setEnabled(False)
        self.status = label("Not run yet." if analysis is not None else "", colour=MUTED_COLOUR)
        self._status_is_error = False
        self._status_about_inputs = False
        self.status.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)

        controls = QHBoxLayout()
        controls.setContentsMargins(0, 0, 0, 0)
        if self.form is not None:
            controls.addWidget(self.form, 1)
        else:
            controls.addStretch(1)
        controls.addWidget(self.run_button, 0, Qt.AlignTop)
        controls.addWidget(self.export_button, 0, Qt.AlignTop)

        self.view = self.build_view()
        # One empty state for every panel: until a result is shown, a sentence says what Run
        # will show instead of empty axes (-0.5..0.5) or a blank area.
        self.placeholder = label(self.empty_text(), colour=MUTED_COLOUR, wrap=True)
        self.placeholder.setAlignment(Qt.AlignCenter)
        self._stack = QStackedWidget()
        self._stack.addWidget(self.placeholder)
        self._stack.addWidget(self.view)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(4)
        if plugin.description:
            layout.addWidget(label(plugin.description, colour=TEXT_COLOUR, wrap=True))
        layout.addLayout(controls)
        layout.addWidget(self.status)
        layout.addWidget(self._stack, 1)

    # -- parameters -----------------------------------------------------------------------------------

    def parameters(self) -> dict[str, Any]:
        """The validated parameter values. An invalid value is shown inline under the
        form and raised as InputError (naming the parameter and what it accepts)."""
        return self.form.values() if self.form is not None else {}

    def set_parameters(self, values: dict[str, Any]) -> None:
        """Set parameter editors from values (Python values or their text forms)."""
        if self.form is not None:
            self.form.set_values(values)

    # -- the view: override build_view and render for an interactive one ------------------------

    def build_view(self) -> QWidget:
        """The widget that shows results; called once from __init__. Default: a ReportView."""
        return ReportView()

    def render(self, result: Result) -> None:
        """Show result in the view (GUI thread; draw, do not compute). Default: its report section."""
        if isinstance(self.view, ReportView):
            self.view.show_report(self._report_for(result))

    def _shows_report(self) -> bool:
        """Whether results go through the default render into a ReportView, whose report
        section can then be built by the worker instead of the GUI thread."""
        return type(self).render is AnalysisPanel.render and isinstance(self.view, ReportView)

    def _report_for(self, result: Result):
        prepared = self._prepared
        self._prepared = None
        if prepared is not None and prepared.result is result and prepared.report is not None:
            return prepared.report
        return result.report()

    def empty_text(self) -> str:
        """What the panel says before its first result. Default: from the plugin's declaration."""
        analysis = self.plugin.analysis
        if analysis is None:
            return self.plugin.description
        needs = "Type a prompt, then press Run" if analysis.needs_prompt else "Press Run"
        return f"{needs} to see {self.plugin.name.lower()} here." + (f"\n\n{self.plugin.description}" if self.plugin.description else "")

    def figure_widget(self) -> QWidget:
        """The widget figure exports capture. Default: the ReportView's first figure, else the view."""
        if isinstance(self.view, ReportView):
            return self.view.figure_widget()
        return self.view

    def figure_svg(self) -> str | None:
        """SVG text for figure export, or None to paint figure_widget() into an SVG.

        Default: the report's first SVG figure when the view is the default ReportView
        (then it is exactly what is shown); None for custom views.
        """
        if self.result is None or not isinstance(self.view, ReportView) or self.view.section is None:
            return None
        return next((figure.svg for figure in self.view.section.figures if figure.svg), None)

    def view_state(self) -> dict:
        """View options to keep in workspaces (JSON-able). Default: none."""
        return {}

    def restore_view_state(self, state: dict) -> None:
        """Apply what view_state() returned. Called after a restored result is shown (so the
        saved view wins over the result's own defaults); also when no result was saved."""

    def model_changed(self, model: LoadedModel | None) -> None:
        """Called when the host's model changes. Default: notes that the shown result is from another model."""
        if self.result is not None and model is not None:
            try:
                check_same_model(self.result, model)
            except WorkbenchError as exc:
                self._set_status(str(exc))

    # -- running ---------------------------------------------------------------------------------------

    def analysis_context(self) -> AnalysisContext:
        """The context a run gets: the host's model, prompts, BOS choice and activation store."""
        if self.host.model is None:
            raise InputError("No model is loaded.", "load a model first (Model → Load)")
        analysis = self.plugin.analysis
        if analysis is not None and analysis.needs_prompt and not self.host.prompts():
            raise InputError(f"{self.plugin.name} needs a prompt.", "type one in the prompt editor")
        return self._context(list(self.host.prompts()), self.host.prepend_bos)

    def _context(self, prompts: list[str], prepend_bos: bool | None) -> AnalysisContext:
        """A context on the host's model and activation store (read and filled)."""
        return AnalysisContext(
            model=self.host.model,
            prompts=prompts,
            prepend_bos=prepend_bos,
            store_path=self.host.store_path,
            fill_store=self.host.store_path is not None,
        )

    def run(self, go_on: bool = False):
        """Start the analysis as a background task; returns the task, or None when it cannot start
        (no analysis, invalid parameters, no model or prompt: the reason is shown in the panel).
        While a run is going, returns that task. The task's value is a PreparedResult; the
        panel shows it through show_result(), which emits result_changed. A job estimated over
        LONG_JOB_SECONDS stops before any work and asks (ask_to_go_on); go_on skips the question."""
        if self.plugin.analysis is None:
            return None
        if self.task is not None and not self.task.state.ended:
            return self.task
        try:
            params = self.parameters()
        except WorkbenchError:
            # The form shows the problem under the field; saying it twice helps no one.
            self._set_status("Fix the parameter marked above, then Run.", error=True)
            return None
        try:
            ctx = self.analysis_context()
        except WorkbenchError as exc:
            self._set_status(str(exc), error=True, about_inputs=True)
            return None
        plugin, prepare_report = self.plugin, self._shows_report()

        def job():
            result = yield from run_analysis(plugin, ctx, params, go_on=go_on)
            return PreparedResult(result, _report_or_none(result) if prepare_report else None)

        self.task = self.host.start_job(plugin.name, job, self._job_done)
        self.task.ended.connect(self._task_ended)
        self.task.changed.connect(self._task_changed)
        self.run_button.setText("Cancel")
        self._set_status("Running…")
        return self.task

    def query_context(self) -> AnalysisContext:
        """The context a query on the shown result gets: the result's prompts and BOS choice,
        the host's model and activation store."""
        meta = self.result.meta if self.result is not None else None
        return self._context(
            list(meta.prompts) if meta is not None and meta.prompts else list(self.host.prompts()),
            meta.prepend_bos if meta is not None else self.host.prepend_bos,
        )

    def run_query(self, name: str, params: dict | None = None, on_result: Callable[[Any], None] | None = None, title: str = ""):
        """Run the plugin's query `name` on the shown result in the background (no task row:
        the status line says what is being read); its answer is shown with show_result()
        unless on_result is given. The latest query wins: one still running is cancelled.
        Returns the task, or None when it cannot start (the reason is in the status line)."""
        if self.result is None:
            return None
        try:
            self.plugin.query(name)
            check_same_model(self.result, self.host.model)
            ctx = self.query_context()
        except WorkbenchError as exc:
            self._set_status(str(exc), error=True, about_inputs=True)
            return None
        if self.query_task is not None and not self.query_task.state.ended:
            self.query_task.cancel()
        plugin, result = self.plugin, self.result
        title = title or f"{plugin.name}: {name}"
        self._set_status(f"{title}…")
        task = self.host.start_job(title, lambda: run_query(plugin, name, ctx, result, params), on_result or self.show_result, visible=False)
        task.ended.connect(self._query_ended)
        self.query_task = task
        return task

    def _query_ended(self, task) -> None:
        from .tasks import TaskState

        if task.state is TaskState.FAILED:
            self._set_status(f"Failed: {task.message}", error=True)

    def _run_clicked(self) -> None:
        if self.task is not None and not self.task.state.ended:
            self.task.cancel()
        else:
            self.run()

    def _task_changed(self) -> None:
        task = self.task
        if task is not None and not task.state.ended:
            percent = f"{task.progress.fraction:.0%} " if task.progress is not None else ""
            self._set_status(f"{task.state.value.capitalize()}: {percent}{task.message}")

    def _task_ended(self, task) -> None:
        self.run_button.setText("Run")
        from .tasks import TaskState

        if task.state is TaskState.CANCELLED:
            self._set_status("Cancelled." + (" The previous result is still shown." if self.result is not None else ""))
        elif task.state is TaskState.FAILED and isinstance(task.error, LongJobError):
            self._set_status(f"Not started: {task.error.message}", error=True)
            if self.ask_to_go_on(task.error):
                self.run(go_on=True)
        elif task.state is TaskState.FAILED:
            self._set_status(f"Failed: {task.message}", error=True)

    def ask_to_go_on(self, error: LongJobError) -> bool:
        """Show a long job's estimate and ask whether to run it anyway (tests replace this)."""
        answer = QMessageBox.question(
            self,
            f"{self.plugin.name}: a long job",
            f"{error.message}\n\nRun it anyway? (It can be cancelled at any time.) A shorter prompt, or fewer layers, samples or targets make it faster.",
            QMessageBox.Yes | QMessageBox.No,
            QMessageBox.No,
        )
        return answer == QMessageBox.Yes

    # -- results ------------------------------------------------------------------------------------------

    def _job_done(self, prepared: PreparedResult) -> None:
        self._prepared = prepared
        self.show_result(prepared.result)

    def show_result(self, result: Result) -> None:
        """Keep result and render it (used after a run and when a workspace is opened).
        A failing render() is reported (with its traceback) and the panel says so; the app and
        the plugin keep working."""
        self.result = result
        self._stack.setCurrentWidget(self.view)
        try:
            self.render(result)
        except Exception as exc:
            error = PluginRunError(self.plugin.id, exc, traceback.format_exc())
            self._set_status(f"Could not show the result: {type(exc).__name__}: {exc}", error=True)
            self.host.notify_error(f"{self.plugin.name} could not show its result", error)
            return
        self.export_button.setEnabled(True)
        self._set_status(self._provenance(result))
        self.result_changed.emit(result)

    def _provenance(self, result: Result) -> str:
        meta = result.meta
        if meta is None:
            return "Result restored."
        reads_prompt = self.plugin.analysis is None or self.plugin.analysis.needs_prompt
        prompt = meta.prompts[0] if meta.prompts and reads_prompt else ""
        short = prompt if len(prompt) <= 40 else prompt[:39] + "…"
        on_prompt = f" on {short!r}" if prompt else ""
        reused = ", activations from the store" if meta.reused_activations else ""
        # Half precision changes the numbers (the model itself computes differently), so say so.
        half = f" · computed in {meta.dtype} (half precision: expect small differences from float32)" if meta.half_precision else ""
        return f"{meta.model_name or meta.model_spec}{on_prompt} in {meta.seconds:.2f} s{reused}{half}"

    def inputs_changed(self) -> None:
        """The host's prompt or model changed: an input error said before (no prompt, no
        model) no longer holds, so it goes; the shown result's provenance comes back."""
        if self._status_about_inputs:
            self._set_status(self._provenance(self.result) if self.result is not None else ("Not run yet." if self.plugin.analysis is not None else ""))

    def _set_status(self, text: str, error: bool = False, about_inputs: bool = False) -> None:
        self._status_about_inputs = about_inputs
        self.status.setText(text)
        self.status.setToolTip(text)
        if error != self._status_is_error:
            self._status_is_error = error
            set_text_colour(self.status, ERROR_COLOUR if error else MUTED_COLOUR)

    # -- exports --------------------------------------------------------------------------------------------

    def export_figure(self, path: str | Path) -> Path:
        """Write the figure: .png (a capture of figure_widget()) or .svg (figure_svg(), else the
        widget painted as vectors). Raises InputError for another suffix or when nothing is shown."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in FIGURE_SUFFIXES:
            raise InputError(f"Cannot export a figure as {suffix or 'a file without suffix'}.", "use a .png or .svg file name")
        if self.result is None:
            raise InputError("There is no figure to export yet.", "run the panel first")
        widget = self.figure_widget()
        if suffix == ".png":
            with _without_hover_text(widget):
                image = widget.grab()
            if not image.save(str(path), "PNG"):
                raise InputError(f"Could not write {path}.", "check that the folder exists and is writable")
            return path
        svg = self.figure_svg()
        if svg is not None:
            path.write_text(svg, encoding="utf-8")
            return path
        _paint_svg(widget, path, self.plugin.name)
        return path

    def export_data(self, path: str | Path) -> Path:
        """Write the result: .h5 (a workbench result file, appended to when it exists) or
        .json (the `workbench run --json` summary). Touches no widget, so it may run in a job."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in DATA_SUFFIXES:
            raise InputError(f"Cannot export data as {suffix or 'a file without suffix'}.", "use a .h5 or .json file name")
        if self.result is None:
            raise InputError("There is no result to export yet.", "run the panel first")
        if suffix == ".h5":
            save_result(path, self.result, title=self.plugin.name)
        else:
            path.write_text(json.dumps(summary_json(self.result), indent=2) + "\n", encoding="utf-8")
        return path

    def figure_name(self) -> str:
        """The default file name (without suffix) for exports: the plugin and what is shown.
        Override to name the selection (attention: attention-L5H2)."""
        return self.plugin.id

    def _export_dialog(self, what: str, file_filter: str, suffix: str) -> None:
        name = f"{_file_safe(self.figure_name())}{suffix}"
        chosen, _ = QFileDialog.getSaveFileName(self, f"Export {what}", name, file_filter)
        if not chosen:
            return
        path = Path(chosen) if Path(chosen).suffix else Path(chosen + suffix)
        try:
            if what == "figure":
                self.export_figure(path)  # grabbing widgets must happen on the GUI thread
                self._set_status(f"Figure written to {path}")
            else:
                self.host.start_job(f"Export {self.plugin.name} data", lambda: self.export_data(path), lambda _: self._set_status(f"Data written to {path}"))
        except WorkbenchError as exc:
            self.host.notify_error(f"Export of {self.plugin.name} failed", exc)

    # -- workspaces --------------------------------------------------------------------------------------

    def state(self) -> dict:
        """Parameters and view options, JSON-able, for workspaces."""
        params = {}
        if self.form is not None:
            for name, value in self.form.raw_values().items():
                params[name] = list(value) if isinstance(value, tuple) else value
        return {"params": params, "view": self.view_state()}

    def restore_state(self, state: dict) -> None:
        """Apply what state() returned (unknown parameters are ignored)."""
        self.set_parameters(dict(state.get("params") or {}))
        self.restore_view_state(dict(state.get("view") or {}))


class PreparedResult(NamedTuple):
    """What a panel's run job returns (the value of its task): the result, and its
    report section when the worker could already build it (for the default view)."""

    result: Result
    report: Any = None


def _report_or_none(result: Result):
    # Building the report (SVG text) is plain Python: done in the worker, it keeps the
    # GUI thread free. If it fails, render() raises it again on the GUI thread, where
    # it is reported against the plugin.
    try:
        return result.report()
    except Exception:
        return None


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.," else "-" for c in name).strip("-") or "figure"


@contextmanager
def _without_hover_text(widget: QWidget) -> Iterator[None]:
    """Blank the hover read-outs of heatmaps while a figure is captured (the mouse's last
    position is not part of the figure)."""
    from .widgets.heatmap import HeatmapView

    views = ([widget] if isinstance(widget, HeatmapView) else []) + widget.findChildren(HeatmapView)
    saved = [(view, view.readout.text()) for view in views]
    for view, _ in saved:
        view.readout.setText(" ")
    try:
        yield
    finally:
        for view, text in saved:
            view.readout.setText(text)


def _paint_svg(widget: QWidget, path: Path, title: str) -> None:
    size = widget.size() if not widget.size().isEmpty() else widget.sizeHint()
    generator = QSvgGenerator()
    generator.setFileName(str(path))
    generator.setSize(QSize(size))
    generator.setViewBox(QRect(0, 0, size.width(), size.height()))
    generator.setTitle(title)
    painter = QPainter(generator)
    try:
        widget.render(painter, QPoint(0, 0))
    finally:
        painter.end()
