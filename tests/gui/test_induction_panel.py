"""The induction panel in the real main window, on the lab model (pytest-qt, offscreen)."""

from __future__ import annotations

import json
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402


@pytest.fixture
def window(model_window):
    return model_window


def test_panel_runs_and_shows_the_circuit(qtbot, window, tmp_path):
    from workbench_induction.panel import InductionPanel

    panel = window.open_panel("induction")
    assert isinstance(panel, InductionPanel)
    panel.set_parameters({"batch": 4, "top_n": 2})
    with qtbot.waitSignal(panel.result_changed, timeout=120_000) as shown:
        assert panel.run() is not None  # no prompt needed
    result = shown.args[0]
    assert result.batch == 4 and result.meta.model_spec == "lab:induction"

    # The three maps show the scores, layer x head, on a fixed 0..1 scale.
    for kind, heatmap in panel.maps.items():
        np.testing.assert_array_equal(heatmap.matrix, result.scores(kind))
        assert heatmap.levels == (0.0, 1.0) and heatmap.y_labels == ["L0", "L1"] and len(heatmap.x_labels) == 4
    # Ranked table: every head, L1H1 first; ablation table: one row per ablated head.
    assert panel.ranked.rowCount() == 8 and panel.ranked.item(0, 1).text() == "L1H1"
    assert panel.ablations.rowCount() == len(result.ablated_heads)
    assert [0, 2] in result.ablated_heads
    # The top induction head is selected, its ablation curve drawn beside the clean one.
    assert panel.selected == (1, 1)
    names = [item.name() for item in panel.curve.getPlotItem().listDataItems()]
    assert names[0] == "clean" and any(name.startswith("L1H1") for name in names)

    # Selecting another head (as a click on a map does) selects it everywhere.
    panel.maps["previous_token"].cell_clicked.emit(0, 2)
    assert panel.selected == (0, 2)
    assert panel.ranked.item(panel.ranked.currentRow(), 1).text() == "L0H2"
    assert panel.ablations.item(panel.ablations.currentRow(), 0).text() == "L0H2"
    assert "L0H2" in panel.head_info.text()
    assert any(name.startswith("L0H2") for name in (i.name() for i in panel.curve.getPlotItem().listDataItems()))

    # Sorting the ranked table by previous-token score puts L0H2 on top.
    panel.ranked.sortItems(3, Qt.DescendingOrder)
    assert panel.ranked.item(0, 1).text() == "L0H2"

    # It rendered: the induction map is not a blank image.
    image = panel.maps["induction"].graphics.grab().toImage()
    colours = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
    assert len(colours) > 5

    # Exports and workspace state.
    panel.export_figure(tmp_path / "induction.png")
    assert (tmp_path / "induction.png").stat().st_size > 1000
    panel.export_data(tmp_path / "induction.json")
    summary = json.loads((tmp_path / "induction.json").read_text())
    assert summary["model"] == "lab:induction" and summary["top_heads"]["induction"][0][:2] == [1, 1]
    state = panel.state()
    assert state["view"]["selected"] == [0, 2] and state["params"]["batch"] == 4
