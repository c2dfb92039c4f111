"""File → Export report…: the chosen panels' current results as an HTML report (+ PDF, + data).

Nothing is run again: the report is made from the results the panels show. The
HTML and the data file are written by a background task (report sections are
plain Python and may take a moment for large results); the PDF is painted with Qt
afterwards on the GUI thread, where QPainter and QTextDocument belong (about half a
second for a handful of results). The data file is a workspace, so File → Open
workspace brings the same panels and results back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import InputError
from .widgets.style import MUTED_COLOUR, label


@dataclass
class ExportChoice:
    """What the dialog asks for."""

    title: str
    html_path: Path
    panels: list  # the AnalysisPanel objects whose results go in, in dock order
    pdf: bool = True
    data: bool = True

    @property
    def pdf_path(self) -> Path | None:
        return self.html_path.with_suffix(".pdf") if self.pdf else None

    @property
    def data_path(self) -> Path | None:
        return self.html_path.with_suffix(".h5") if self.data else None


class ExportReportDialog(QDialog):
    """Which panels, the title, and where to write; OK is enabled once there is something to write."""

    def __init__(self, window, parent: QWidget | None = None):
        super().__init__(parent or window)
        self.setWindowTitle("Export report")
        self.setObjectName("export-report-dialog")
        self.window_ = window
        layout = QVBoxLayout(self)

        form = QFormLayout()
        self.title_edit = QLineEdit(self._default_title())
        form.addRow("Title", self.title_edit)
        path_row = QHBoxLayout()
        self.path_edit = QLineEdit(str(self._default_path()))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        path_row.addWidget(self.path_edit, 1)
        path_row.addWidget(browse)
        form.addRow("HTML file", path_row)
        layout.addLayout(form)

        group = QGroupBox("Panels to include (their current results; nothing is run again)")
        boxes = QVBoxLayout(group)
        self.checks: list[tuple[QCheckBox, object]] = []
        for dock in window.panel_docks:
            panel = dock.panel
            has_result = panel.result is not None
            text = f"{dock.windowTitle()}  ({panel.plugin.id})" if has_result else f"{dock.windowTitle()}  (no result yet)"
            check = QCheckBox(text)
            check.setChecked(has_result)
            check.setEnabled(has_result)
            check.toggled.connect(self._update_ok)
            boxes.addWidget(check)
            self.checks.append((check, panel))
        if not self.checks:
            boxes.addWidget(label("No panels are open. Open one from the Panels menu and run it first.", colour=MUTED_COLOUR, wrap=True))
        layout.addWidget(group)

        self.pdf_check = QCheckBox("Also write a PDF (same name, .pdf)")
        self.pdf_check.setChecked(True)
        self.data_check = QCheckBox("Also write the results (same name, .h5; File → Open workspace reopens them)")
        self.data_check.setChecked(True)
        layout.addWidget(self.pdf_check)
        layout.addWidget(self.data_check)
        self.problem = QLabel("")
        layout.addWidget(self.problem)

        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.buttons.button(QDialogButtonBox.Ok).setText("Export")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.path_edit.textChanged.connect(self._update_ok)
        self._update_ok()

    def _default_title(self) -> str:
        model = self.window_.model
        return f"Analyses of {model.name}" if model is not None else "Analysis report"

    def _default_path(self) -> Path:
        workspace = self.window_.workspace_path
        if workspace is not None:
            return workspace.with_name(workspace.name.split(".")[0] + "-report.html")
        return Path.cwd() / "report.html"

    def _browse(self) -> None:
        chosen, _ = QFileDialog.getSaveFileName(self, "Export report", self.path_edit.text(), "HTML report (*.html)")
        if chosen:
            self.path_edit.setText(chosen if chosen.lower().endswith((".html", ".htm")) else chosen + ".html")

    def selected_panels(self) -> list:
        return [panel for check, panel in self.checks if check.isChecked() and check.isEnabled()]

    def _update_ok(self) -> None:
        path = self.path_edit.text().strip()
        problem = ""
        if not self.selected_panels():
            problem = "Choose at least one panel with a result."
        elif not path:
            problem = "Choose where to write the report."
        self.problem.setText(problem)
        self.buttons.button(QDialogButtonBox.Ok).setEnabled(not problem)

    def choice(self) -> ExportChoice:
        path = Path(self.path_edit.text().strip()).expanduser()
        if path.suffix.lower() not in (".html", ".htm"):
            path = path.with_name(path.name + ".html")
        return ExportChoice(self.title_edit.text().strip() or "Analysis report", path, self.selected_panels(), self.pdf_check.isChecked(), self.data_check.isChecked())


class ReportExport(QObject):
    """One export: HTML and data in a task, then the PDF on the GUI thread. `finished` carries the paths."""

    finished = Signal(object)  # workbench.report.WrittenReport

    def __init__(self, window, choice: ExportChoice):
        super().__init__(window)
        self.window_ = window
        self.choice = choice
        self.pdf_seconds = 0.0

    def start(self):
        choice = self.choice
        results = [(self._title(panel), panel.result) for panel in choice.panels if panel.result is not None]
        if not results:
            raise InputError("None of the chosen panels has a result.", "run a panel first")
        registry = self.window_.registry

        def job():
            from ..report import report_from_results, write_report

            report = report_from_results(results, choice.title, registry)
            written = write_report(report, choice.html_path, data_path=choice.data_path, write_data=choice.data)
            return report, written

        return self.window_.start_job(f"Export report {choice.html_path.name}", job, self._html_written, uses_model=False)

    def _title(self, panel) -> str:
        dock = next((d for d in self.window_.panel_docks if d.panel is panel), None)
        return dock.windowTitle() if dock is not None else panel.plugin.name

    def _html_written(self, value) -> None:
        import time

        report, written = value
        if self.choice.pdf_path is not None:
            from .report_pdf import write_pdf

            started = time.perf_counter()
            try:
                written.pages = write_pdf(report, self.choice.pdf_path)
                written.pdf = self.choice.pdf_path
            except Exception as exc:  # the HTML is written; a PDF problem must not hide that
                self.window_.notifications.error("The PDF of the report could not be written", exc)
            self.pdf_seconds = time.perf_counter() - started
        parts = [str(written.html)] + [str(p) for p in (written.pdf, written.data) if p is not None]
        self.window_.statusBar().showMessage("Report written: " + ", ".join(parts), 15000)
        self.finished.emit(written)


def export_report(window, choice: ExportChoice) -> ReportExport:
    """Start exporting (used by the dialog, and by tests and scripts without it)."""
    export = ReportExport(window, choice)
    export.task = export.start()
    return export


def show_export_dialog(window) -> ReportExport | None:
    """File → Export report…: ask, then export in the background."""
    dialog = ExportReportDialog(window)
    if dialog.exec() != QDialog.Accepted:
        return None
    try:
        return export_report(window, dialog.choice())
    except InputError as exc:
        window.notifications.error("Cannot export the report", exc)
        return None
