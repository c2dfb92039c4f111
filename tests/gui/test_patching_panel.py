"""The activation-patching panel in the real main window, on the lab model (pytest-qt, offscreen)."""

from __future__ import annotations

import json
import os
import threading

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("pytestqt")

CLEAN = "t1 t2 t3 t4 t5 t6 t7 t8 t5"
CORRUPTED = "t1 t2 t3 t4 t5 t9 t7 t8 t5"


@pytest.fixture
def window(model_window):
    return model_window


def test_panel_patches_off_the_gui_thread_and_draws_every_target(qtbot, window, tmp_path, monkeypatch):
    import workbench_patching.analysis as analysis
    from workbench_patching.panel import PatchingPanel

    # Spies (not mocks): record which thread runs the patched forward passes, whole (the
    # engine seam) or from the patched layer (TransformerBridge).
    threads = set()

    def spy(name):
        real = getattr(analysis, name)

        def spying(*args, **kwargs):
            threads.add(threading.get_ident())
            return (yield from real(*args, **kwargs))

        monkeypatch.setattr(analysis, name, spying)

    spy("patched_metrics")
    spy("patched_metrics_from_layer")

    window.set_prompt(f"{CLEAN}\n{CORRUPTED}")  # the second line is the corrupted prompt
    panel = window.open_panel("patching")
    assert isinstance(panel, PatchingPanel)
    with qtbot.waitSignal(panel.result_changed, timeout=120_000) as shown:
        assert panel.run() is not None
    result = shown.args[0]
    assert threads and threading.get_ident() not in threads
    assert result.corrupted_prompt == CORRUPTED and result.answer == "t6" and result.wrong_answer == "t9"

    # First target: layer x position, normalised, diverging colours centred at 0, token labels.
    heatmap = panel.heatmap
    assert panel.current_target() == "resid_pre"
    np.testing.assert_allclose(heatmap.matrix, result.normalised("resid_pre"))
    assert heatmap.colormap_name == "diverging" and heatmap.levels[0] == -heatmap.levels[1]
    assert heatmap.y_labels == ["L0", "L1"] and heatmap.x_labels[6] == "t6*" and heatmap.x_labels[0] == "<bos>"
    assert "clean" in panel.summary.text() and "corrupted" in panel.summary.text()

    # The selector switches to the head outputs: layer x head, L1H1 restores the clean run.
    panel.target_box.setCurrentIndex(result.targets.index("head_out"))
    np.testing.assert_allclose(heatmap.matrix, result.normalised("head_out"))
    assert heatmap.x_labels == ["H0", "H1", "H2", "H3"]
    assert panel.top_info.text().startswith("Most restoring (normalised): L1H1")
    heatmap.cell_hovered.emit(1, 1)
    assert panel.cell_info.text().startswith("L1H1: patched") and "normalised 1.0" in panel.cell_info.text()

    # Raw values on request.
    panel.normalised_box.setChecked(False)
    np.testing.assert_allclose(heatmap.matrix, result.raw("head_out"))

    # It rendered: not a blank image.
    image = heatmap.graphics.grab().toImage()
    colours = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
    assert len(colours) > 5

    panel.export_data(tmp_path / "patching.json")
    summary = json.loads((tmp_path / "patching.json").read_text())
    assert summary["top_cells"]["head_out"][0]["cell"] == "L1H1"
    state = panel.state()
    assert state["view"] == {"target": "head_out", "normalised": False}

    # A workspace's view state comes back on the next render.
    panel.restore_view_state({"target": "head_pattern", "normalised": True})
    assert panel.current_target() == "head_pattern" and panel.normalised_box.isChecked()
    np.testing.assert_allclose(heatmap.matrix, result.normalised("head_pattern"))


def test_panel_reports_unequal_prompts(qtbot, window):
    window.set_prompt("t1 t2 t3 t1 t2")
    panel = window.open_panel("patching")
    panel.set_parameters({"corrupted": "t1 t2 t3 t1 t2 t3"})
    task = panel.run()
    assert task is not None
    qtbot.waitUntil(lambda: task.state.ended, timeout=60_000)
    assert "6 tokens" in panel.status.text() and "7" in panel.status.text()
