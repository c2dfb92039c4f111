"""The causal-tracing panel in the real main window, on the lab model (pytest-qt, offscreen)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("pytestqt")

PROMPT = "t1 t2 t3 t4 t5 t6 t1 t2 t3"


def test_panel_traces_shows_three_maps_and_switches_to_effects(qtbot, model_window):
    from workbench_causal_trace.panel import CausalTracePanel

    window = model_window
    window.set_prompt(PROMPT)
    panel = window.open_panel("causal-trace")
    assert isinstance(panel, CausalTracePanel)
    panel.set_parameters({"subject": "t2 t3", "samples": 3})
    with qtbot.waitSignal(panel.result_changed, timeout=120_000) as shown:
        assert panel.run() is not None
    result = shown.args[0]
    assert result.tokens[2:4] == ["t2", "t3"] and result.answer == "t4"

    # One map per kind: tokens down, layers across, the subject starred.
    for kind, heatmap in panel.maps.items():
        np.testing.assert_array_equal(heatmap.matrix, result.table(kind))
        assert heatmap.y_labels[2:4] == ["t2*", "t3*"] and heatmap.x_labels == ["0", "1"]
        assert heatmap.levels[0] <= result.low_score + 1e-6 and heatmap.levels[1] >= result.high_score - 1e-6
    assert "P = " in panel.headline.text() and "t4" in panel.headline.text()

    # The indirect-effect view subtracts the corrupted probability.
    panel.mode_group.button(1).setChecked(True)
    np.testing.assert_allclose(panel.maps["resid"].matrix, result.table("resid") - result.low_score)
    assert panel.view_state() == {"effect": True}
    panel.maps["mlp"].cell_hovered.emit(9, 1)
    assert "layer 1" in panel.cell_info.text() and "indirect effect" in panel.cell_info.text()


def test_subject_not_in_prompt_is_reported_not_raised(qtbot, model_window):
    window = model_window
    window.set_prompt(PROMPT)
    panel = window.open_panel("causal-trace")
    panel.set_parameters({"subject": "t40"})
    task = panel.run()
    if task is not None:
        qtbot.waitUntil(lambda: task.state.ended, timeout=60_000)
    qtbot.waitUntil(lambda: "not in the prompt" in panel.status.text(), timeout=10_000)
    assert panel.result is None
