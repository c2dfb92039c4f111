"""One mechanism for empty states and stale messages across panels (issue 18, item 7)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from tests.gui.helpers import LAB_PROMPT, wait_for_task  # noqa: E402
from workbench.gui.tasks import TaskState  # noqa: E402


def test_before_a_run_a_panel_says_what_run_will_show_not_empty_axes(qtbot, model_window):
    panel = model_window.open_panel("attention")
    assert panel._stack.currentWidget() is panel.placeholder
    assert "Type a prompt, then press Run to see attention maps here." in panel.placeholder.text()
    assert not panel.view.isVisible()
    induction = model_window.open_panel("induction")
    assert induction.placeholder.text().startswith("Press Run to see")  # it needs no prompt
    model_window.set_prompt(LAB_PROMPT)
    with qtbot.waitSignal(panel.result_changed, timeout=60_000):
        panel.run()
    assert panel._stack.currentWidget() is panel.view and panel.view.isVisible()


def test_needs_a_prompt_goes_once_a_prompt_is_typed(qtbot, model_window):
    panel = model_window.open_panel("logit-lens")
    assert panel.run() is None
    assert "needs a prompt" in panel.status.text()
    model_window.set_prompt(LAB_PROMPT)
    qtbot.waitUntil(lambda: "needs a prompt" not in panel.status.text(), timeout=5_000)
    assert panel.status.text() == "Not run yet."
    assert wait_for_task(qtbot, panel.run()).state is TaskState.DONE


def test_a_bad_parameter_is_said_once_under_its_field(qtbot, model_window):
    panel = model_window.open_panel("params-test")
    panel.set_parameters({"note": ""})
    assert panel.run() is None
    message = panel.form.error_label.text()
    assert "note" in message and panel.form.error_label.isVisibleTo(panel)
    assert message not in panel.status.text() and "Fix the parameter marked above" in panel.status.text()


def test_the_status_of_an_analysis_without_a_prompt_does_not_name_one(qtbot, lab_window):
    panel = lab_window.open_panel("induction")
    assert wait_for_task(qtbot, panel.run(), timeout=120_000).state is TaskState.DONE
    assert LAB_PROMPT[:10] not in panel.status.text() and " on '" not in panel.status.text()


def test_a_heatmap_hover_text_goes_with_the_data_it_described(qtbot):
    from workbench.gui.widgets.heatmap import HeatmapView

    view = HeatmapView()
    qtbot.addWidget(view)
    view.set_data(np.eye(3), x_labels=list("abc"), y_labels=list("abc"))
    view.readout.setText(view.describe_cell(1, 1))
    view.set_data(np.ones((2, 2)))
    assert view.readout.text().strip() == ""
