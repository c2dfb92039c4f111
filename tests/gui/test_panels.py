"""Panels: the generic AnalysisPanel on a real plugin, its parameter form, and figure/data exports."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from PySide6.QtGui import QImage
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QSpinBox

from tests.gui.helpers import LAB_PROMPT, wait_for_task
from workbench.errors import InputError
from workbench.gui.panels import AnalysisPanel, PanelHost
from workbench.gui.tasks import TaskState
from workbench.gui.widgets.report_view import TABLE_MAX_COLUMN_WIDTH, ReportView, SvgFigure
from workbench.results.base import Figure, ReportSection, Table


def _distinct_colours(image: QImage, step: int = 5) -> int:
    return len({image.pixel(x, y) for x in range(0, image.width(), step) for y in range(0, image.height(), step)})


def run_panel(qtbot, panel, timeout: int = 60_000):
    with qtbot.waitSignal(panel.result_changed, timeout=timeout) as shown:
        task = panel.run()
        assert task is not None, panel.status.text()
    return shown.args[0]


def test_a_plugin_without_a_panel_gets_the_generic_one_that_runs_and_renders(qtbot, lab_window, monkeypatch):
    window = lab_window
    assert isinstance(window, PanelHost)
    # The logit lens as a plugin that declares no panel class (it has one of its own since issue 18).
    monkeypatch.setattr(window.registry.get("logit-lens"), "panel", None)
    panel = window.open_panel("logit-lens")
    assert type(panel) is AnalysisPanel  # no panel class: the generic one
    assert isinstance(panel.view, ReportView)
    assert isinstance(panel.form.editors["top_k"], QSpinBox) and isinstance(panel.form.editors["include_embeddings"], QCheckBox)

    result = run_panel(qtbot, panel)
    assert panel.result is result and result.meta.model_spec == "lab:induction" and result.meta.prompts == [LAB_PROMPT]
    assert result.final_top_tokens[-1] == "t4"
    assert result.p_final_top.shape == (3, 8)  # embed + 2 layers, 8 tokens with BOS

    figures, tables = panel.view.figure_widgets(), panel.view.table_views()
    assert len(figures) == 1 and isinstance(figures[0], SvgFigure) and figures[0].renderer().isValid()
    assert len(tables) == 2  # the last position by layer, and every position's top-1 token
    assert tables[0].rowCount() == 3 and tables[0].item(2, 1).text() == "t4"
    qtbot.waitUntil(lambda: figures[0].isVisible())
    assert _distinct_colours(figures[0].grab().toImage()) > 5
    assert "lab:induction" in panel.status.text()

    # Running again reuses the activations the first run stored in the session store.
    again = run_panel(qtbot, panel)
    assert again.meta.reused_activations
    np.testing.assert_allclose(again.p_final_top, result.p_final_top, rtol=1e-5)


def test_parameter_form_editors_and_inline_validation(qtbot, lab_window):
    panel = lab_window.open_panel("params-test")
    editors = panel.form.editors
    assert isinstance(editors["count"], QSpinBox) and (editors["count"].minimum(), editors["count"].maximum()) == (1, 20)
    assert isinstance(editors["scale"], QDoubleSpinBox)
    assert isinstance(editors["flag"], QCheckBox)
    assert isinstance(editors["mode"], QComboBox) and [editors["mode"].itemText(i) for i in range(2)] == ["a", "b"]
    assert isinstance(editors["layers"], QLineEdit) and editors["layers"].text() == "0,1"
    assert isinstance(editors["note"], QLineEdit)

    # An empty note is not allowed: shown inline, naming the parameter; Run does not start.
    assert panel.run() is None
    assert panel.form.error_label.isVisible() and "'note'" in panel.form.error_label.text() and "non-empty text" in panel.form.error_label.text()
    editors["layers"].setText("1,x")
    with pytest.raises(InputError, match="layers"):
        panel.parameters()
    assert "whole numbers separated by commas" in panel.form.error_label.text()

    panel.set_parameters({"count": 4, "scale": 2.0, "flag": True, "mode": "b", "layers": [2, 3], "note": "hi"})
    assert not panel.form.error_label.isVisible()
    assert panel.parameters() == {"count": 4, "scale": 2.0, "flag": True, "mode": "b", "layers": (2, 3), "note": "hi"}
    result = run_panel(qtbot, panel)
    assert result.label == "b:hi:[2, 3]:True"
    np.testing.assert_allclose(result.values, [0, 2, 4, 6])

    state = panel.state()
    assert json.loads(json.dumps(state)) == state  # JSON-able, for workspaces
    other = lab_window.open_panel("params-test")
    other.restore_state(state)
    assert other.parameters() == panel.parameters()


def test_export_figure_and_data(qtbot, lab_window, tmp_path):
    from workbench.results import load_results

    panel = lab_window.open_panel("logit-lens")
    with pytest.raises(InputError, match="run the panel first"):
        panel.export_figure(tmp_path / "early.png")
    result = run_panel(qtbot, panel)

    png = panel.export_figure(tmp_path / "lens.png")
    image = QImage(str(png))
    assert not image.isNull() and image.width() > 100 and _distinct_colours(image) > 5
    svg = panel.export_figure(tmp_path / "lens.svg")
    assert ElementTree.parse(svg).getroot().tag.endswith("svg")
    assert QSvgRenderer(str(svg)).isValid()
    with pytest.raises(InputError, match=r"\.png or \.svg"):
        panel.export_figure(tmp_path / "lens.jpg")

    h5 = panel.export_data(tmp_path / "lens.h5")
    [(info, loaded)] = load_results(h5, lab_window.registry.result_class)
    assert info.kind == "logit-lens/lens"
    np.testing.assert_array_equal(loaded.p_final_top, result.p_final_top)
    summary = json.loads(panel.export_data(tmp_path / "lens.json").read_text())
    assert summary["plugin"] == "logit-lens" and summary["model"] == "lab:induction" and summary["prediction"] == "t4"


def test_custom_panel_view_exports_a_painted_svg(qtbot, lab_window, tmp_path):
    panel = lab_window.open_panel("heatmap-test")
    assert type(panel).__name__ == "HeatmapPanel"
    run_panel(qtbot, panel)
    assert panel.heatmap.matrix.shape == (3, 4) and panel.heatmap.colormap_name == "diverging"
    assert panel.figure_svg() is None  # a custom view: the widget is painted as vectors
    svg = panel.export_figure(tmp_path / "custom.svg")
    assert QSvgRenderer(str(svg)).isValid() and "<svg" in svg.read_text()
    png = panel.export_figure(tmp_path / "custom.png")
    assert _distinct_colours(QImage(str(png))) > 5


def test_export_data_from_the_menu_runs_as_a_task(qtbot, lab_window, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    panel = lab_window.open_panel("params-test")
    panel.set_parameters({"note": "x"})
    run_panel(qtbot, panel)
    target = tmp_path / "exported.json"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    with qtbot.waitSignal(lab_window.tasks.task_started) as started:
        panel._export_dialog("data", "JSON summary (*.json)", ".json")
    task = wait_for_task(qtbot, started.args[0])
    assert task.title == "Export Params test data" and task.state is TaskState.DONE
    assert json.loads(target.read_text())["plugin"] == "params-test"


def test_every_figure_fits_the_viewport_height_not_only_the_first(qtbot):
    # The ROME result's v* chart sat below the bar chart and was shrunk to the minimum scale
    # because it was fitted to the room left below its top, not to the viewport.
    def svg(colour):
        return f"<svg xmlns='http://www.w3.org/2000/svg' width='400' height='300'><rect width='400' height='300' fill='{colour}'/></svg>"

    view = ReportView()
    qtbot.addWidget(view)
    view.resize(700, 500)
    view.show()
    view.show_report(ReportSection("Two figures", figures=[Figure("first", svg=svg("red")), Figure("second", svg=svg("blue"))]))
    first, second = view.figure_widgets()
    qtbot.waitUntil(lambda: first.isVisible() and second.isVisible())
    qtbot.wait(50)
    assert first.scale == second.scale == 1.0  # 300 px tall figures fit a 500 px view, wherever they sit
    view.resize(700, 250)  # now neither fits: both shrink alike
    qtbot.waitUntil(lambda: first.scale < 1.0)
    assert second.scale == pytest.approx(first.scale)


def test_long_table_text_is_elided_and_the_view_never_scrolls_sideways(qtbot):
    prompt = "The Eiffel Tower, which was built for the 1889 World's Fair, is located in the city of " * 3
    wide = Figure("wide", svg="<svg xmlns='http://www.w3.org/2000/svg' width='800' height='200'><rect width='800' height='200' fill='red'/></svg>")
    rows = [["prompt", prompt, prompt.upper(), 0.5], ["neighbour", "short", "short", 0.25]]
    section = ReportSection("Probes", figures=[wide], tables=[Table("Probes", ["kind", "prompt", "generation", "P"], rows)])
    view = ReportView()
    qtbot.addWidget(view)
    view.resize(700, 600)
    view.show()
    view.show_report(section)
    table, figure = view.table_views()[0], view.figure_widgets()[0]
    assert table.columnWidth(1) == TABLE_MAX_COLUMN_WIDTH < table.fontMetrics().horizontalAdvance(prompt)
    assert table.columnWidth(0) < TABLE_MAX_COLUMN_WIDTH  # short columns keep their natural width
    assert table.item(0, 1).toolTip() == repr(prompt)  # the whole text stays one hover away

    # Narrower than the figure and the table: the figure shrinks, the table scrolls inside itself,
    # and the view does not scroll sideways.
    # The content's own width follows from a posted layout request, so it is waited for too.
    qtbot.waitUntil(
        lambda: figure.width() < 800
        and table.width() < table.sizeHint().width()
        and view.widget().width() <= view.viewport().width()
    )
    assert table.horizontalScrollBar().maximum() > 0
    view.resize(1000, 600)
    qtbot.waitUntil(lambda: figure.width() == 800 and table.width() == table.sizeHint().width())


def test_a_long_job_asks_first_and_runs_only_when_told_to(qtbot, lab_window, monkeypatch):
    import workbench.plugin_api.cost as cost
    import workbench.plugin_api.runner as runner

    window = lab_window
    monkeypatch.setattr(cost, "TRIVIAL_FLOPS", 0.0)
    monkeypatch.setattr(runner, "LONG_JOB_SECONDS", 1e-9)  # every job is "long"
    notified = []
    monkeypatch.setattr(window.notifications, "error", lambda *args, **kwargs: notified.append(args))
    panel = window.open_panel("logit-lens")
    asked = []
    monkeypatch.setattr(panel, "ask_to_go_on", lambda error: asked.append(error) or False)
    wait_for_task(qtbot, panel.run())
    assert len(asked) == 1 and "forward passes" in asked[0].message and "about" in asked[0].message
    assert panel.result is None and panel.status.text().startswith("Not started:")
    assert notified == []  # a question, not an error notification

    monkeypatch.setattr(panel, "ask_to_go_on", lambda error: asked.append(error) or True)
    wait_for_task(qtbot, panel.run())
    qtbot.waitUntil(lambda: panel.task is not None and panel.task.state.ended and panel.result is not None, timeout=60_000)
    assert len(asked) == 2 and panel.result.final_top_tokens[-1] == "t4"


def test_the_model_picker_offers_device_maps_with_a_memory_budget(qtbot, lab_window):
    picker = lab_window.model_picker
    maps = [picker.device.itemText(i) for i in range(picker.device.count()) if picker.device.itemText(i).startswith("map: ")]
    assert "map: auto" in maps
    picker.set_selection("lab:induction", "cpu", "float32", "auto", "cpu=600KB")
    assert not picker.max_memory.isHidden() and picker.selection() == ("lab:induction", "cpu", "float32", "auto", "cpu=600KB")
    picker.set_selection("lab:induction", "cpu", "float32")
    assert picker.max_memory.isHidden() and picker.selection() == ("lab:induction", "cpu", "float32", "", "")
