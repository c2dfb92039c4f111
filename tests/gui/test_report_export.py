"""File → Export report…: the chosen panels' results, without running anything again, reopened as a workspace."""

from __future__ import annotations

import re

from PySide6.QtWidgets import QDialogButtonBox

from tests.gui.helpers import LAB_MODEL, LAB_PROMPT
from workbench.gui.report_export import ExportReportDialog, export_report
from workbench.gui.workspace import read_workspace
from workbench.results import load_results


def _run(qtbot, panel, **params):
    if params:
        panel.set_parameters(params)
    with qtbot.waitSignal(panel.result_changed, timeout=60_000):
        panel.run()
    return panel.result


def test_export_report_writes_chosen_results_without_rerunning(qtbot, lab_window, make_window, tmp_path):
    window = lab_window
    action = next(a for a in window.menuBar().actions()[0].menu().actions() if a.text() == "&Export report…")
    assert action.isEnabled()
    lens = window.open_panel("logit-lens")
    _run(qtbot, lens, top_k=3)
    attention = window.open_panel("attention")
    _run(qtbot, attention)
    window.open_panel("params-test")  # never run: offered, but not selectable

    dialog = ExportReportDialog(window)
    qtbot.addWidget(dialog)
    checks = {panel.plugin.id: check for check, panel in dialog.checks}
    assert checks["logit-lens"].isChecked() and checks["attention"].isChecked()
    assert not checks["params-test"].isEnabled() and "no result yet" in checks["params-test"].text()
    checks["attention"].setChecked(False)
    dialog.title_edit.setText("Lens <only> & co")
    dialog.path_edit.setText(str(tmp_path / "lens"))
    ok = dialog.buttons.button(QDialogButtonBox.Ok)
    assert ok.isEnabled()
    choice = dialog.choice()
    assert choice.html_path == tmp_path / "lens.html" and choice.panels == [lens]

    started = []
    window.tasks.task_started.connect(lambda task: started.append(task.title))
    export = export_report(window, choice)
    with qtbot.waitSignal(export.finished, timeout=60_000) as finished:
        pass
    written = finished.args[0]
    assert started == ["Export report lens.html"]  # nothing was run again
    html = written.html.read_text(encoding="utf-8")
    assert "Lens &lt;only&gt; &amp; co" in html and html.count("<h2>") == 2  # the section and Reproduce
    assert html.count("<figure>") == len(lens.result.report().figures)
    assert not re.search(r"https?:|<script|<link", html)
    assert "plugin = &quot;logit-lens&quot;" in html and "top_k = 3" in html  # a spec that reruns it
    assert written.pdf.read_bytes().startswith(b"%PDF-") and written.pages >= 1
    assert export.pdf_seconds < 3.0, export.pdf_seconds  # painted on the GUI thread: must stay short
    [(info, result)] = load_results(written.data, window.registry.result_class)
    assert info.kind == "logit-lens/lens" and result.meta.params["top_k"] == 3

    # The data file is a workspace: the app's own reader opens it, and the window restores the panel.
    workspace = read_workspace(written.data, window.registry)
    assert workspace.model_spec == LAB_MODEL and workspace.prompts == [LAB_PROMPT]
    assert [p.plugin_id for p in workspace.panels] == ["logit-lens"] and workspace.panels[0].result is not None
    reopened = make_window()
    with qtbot.waitSignal(reopened.workspace_opened, timeout=30_000):
        reopened.open_workspace(written.data)
    [panel] = reopened.panels()
    assert panel.plugin.id == "logit-lens" and panel.parameters()["top_k"] == 3
    assert panel.result is not None and panel.heatmap.matrix.shape == panel.result.p_final_top.shape  # drawn again, not rerun


def test_dialog_without_results_cannot_export(qtbot, make_window):
    window = make_window()
    dialog = ExportReportDialog(window)
    qtbot.addWidget(dialog)
    assert not dialog.buttons.button(QDialogButtonBox.Ok).isEnabled()
    assert "at least one panel" in dialog.problem.text()
