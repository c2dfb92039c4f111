"""The QK/OV panel in the real main window, on the lab model (pytest-qt, offscreen)."""

from __future__ import annotations

import json
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("pytestqt")



@pytest.fixture
def window(model_window):
    return model_window


def expected_circuits(model, layer, head, token_ids, positional=0):
    """The same head's circuits computed directly, outside the panel."""
    from workbench_qk_ov import circuits
    from workbench_qk_ov.analysis import head_circuits

    return head_circuits(model, circuits.circuit_weights(model.bridge, fold_ln=True), layer, head, token_ids, positional=positional)


def test_panel_runs_draws_and_follows_the_chosen_head(qtbot, window, tmp_path):
    from workbench_qk_ov.panel import QKOVPanel

    panel = window.open_panel("qk-ov")
    assert isinstance(panel, QKOVPanel)
    panel.set_parameters({"head": "1.1", "tokens": "t1,t2,t3"})
    with qtbot.waitSignal(panel.result_changed, timeout=120_000) as shown:
        assert panel.run() is not None
    result = shown.args[0]
    assert result.head_name == "L1H1" and result.token_strings == ["t1", "t2", "t3"]

    # The chosen head's maps, with token labels; the tables; the composition matrix with head labels.
    np.testing.assert_array_equal(panel.qk_map.matrix, result.qk)
    np.testing.assert_array_equal(panel.ov_map.matrix, result.ov)
    assert panel.qk_map.x_labels == ["t1", "t2", "t3"] and panel.ov_map.y_labels == ["t1", "t2", "t3"]
    assert panel.ov_map.colormap_name == "diverging" and panel.ov_map.levels[0] == -panel.ov_map.levels[1]
    np.testing.assert_array_equal(panel.copying_map.matrix, result.copying_score)
    assert panel.copying_map.levels == (-1.0, 1.0) and panel.self_top_map.levels == (0.0, 1.0)
    # writers L0H0..L0H3 (rows) into readers L1H0..L1H3 (columns): the only pairs that can compose
    assert panel.composition_map.matrix.shape == (4, 4) and panel.composition_map.y_labels[2] == "L0H2" and panel.composition_map.x_labels[1] == "L1H1"
    np.testing.assert_array_equal(panel.composition_map.matrix, result.composition_k[0, :, 1, :])  # K is shown first
    assert "baseline" in panel.baseline_label.text()
    assert panel.head_picker.count() == 8 and panel.head_picker.currentText() == "L1H1"
    assert not panel.positional_map.isVisible()
    image = panel.ov_map.graphics.grab().toImage()
    assert len({image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}) > 5

    # A click on a layer × head table draws that head: only its circuits are recomputed.
    with qtbot.waitSignal(panel.result_changed, timeout=60_000) as shown:
        panel.copying_map.cell_clicked.emit(0, 2)
    clicked = shown.args[0]
    assert clicked.head_name == "L0H2" and panel.head_picker.currentText() == "L0H2"
    direct = expected_circuits(window.model, 0, 2, result.token_ids)
    np.testing.assert_allclose(panel.qk_map.matrix, direct.qk, rtol=1e-6)
    np.testing.assert_allclose(panel.ov_map.matrix, direct.ov, rtol=1e-6)
    np.testing.assert_array_equal(clicked.copying_score, result.copying_score)
    assert clicked.meta.params["head"] == "0.2"

    # A click in the composition matrix draws the reading head (the column): L0H2 -> L1H1.
    panel.tabs.setCurrentIndex(2)
    with qtbot.waitSignal(panel.result_changed, timeout=60_000) as shown:
        panel.composition_map.cell_clicked.emit(2, 1)
    assert shown.args[0].head_name == "L1H1"

    # Redraw with the token set and positional term now in the form (the tables stay).
    panel.set_parameters({"token_set": "top-norm", "top_k": 5, "positional": 8})
    with qtbot.waitSignal(panel.result_changed, timeout=60_000) as shown:
        assert panel.redraw_circuits() is not None
    redrawn = shown.args[0]
    assert redrawn.token_set == "top-norm" and len(redrawn.token_ids) == 5 and redrawn.head_name == "L1H1"
    direct = expected_circuits(window.model, 1, 1, redrawn.token_ids, positional=8)
    np.testing.assert_allclose(panel.ov_map.matrix, direct.ov, rtol=1e-6)
    panel.tabs.setCurrentIndex(0)
    qtbot.waitUntil(lambda: panel.positional_map.isVisible(), timeout=5_000)
    assert panel.positional_map.matrix.shape == (8, 8)

    # A bad token set in the form fails that redraw only, with the reason shown; the result stays.
    panel.set_parameters({"token_set": "typed", "tokens": "t1,t2 t3"})
    task = panel.redraw_circuits()
    qtbot.waitUntil(lambda: task.state.ended, timeout=60_000)
    assert task.state.value == "failed" and "2 tokens" in panel.status.text() and panel.result is redrawn

    # Exports and workspace state.
    panel.export_figure(tmp_path / "qkov.png")
    assert (tmp_path / "qkov.png").stat().st_size > 1000
    panel.export_data(tmp_path / "qkov.json")
    summary = json.loads((tmp_path / "qkov.json").read_text())
    assert summary["head"] == "L1H1" and summary["params"]["token_set"] == "top-norm"
    assert set(summary["composition"]) == {"q", "k", "v"}
    state = panel.state()
    assert state["view"] == {"tab": 0, "mode": "k"}


def test_panel_reports_bad_input_without_running(qtbot, window):
    panel = window.open_panel("qk-ov")
    panel.set_parameters({"head": "1.1", "tokens": "t1,t2 t3"})
    task = panel.run()
    qtbot.waitUntil(lambda: task.state.ended, timeout=60_000)
    assert task.state.value == "failed" and panel.result is None
    assert "2 tokens" in panel.status.text()
