"""The attention panel in the real main window, on the lab model (pytest-qt, offscreen)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402

PROMPT = "t1 t2 t3 t4 t5 t1 t2 t3 t4"


@pytest.fixture
def window(model_window):
    return model_window


def stored_pattern(window, layer, head, text=PROMPT):
    from workbench.store import ActivationStore

    model = window.model
    with ActivationStore(window.store_path) as store:
        hit = store.find(model.fingerprint, model.tokenize(text), [f"blocks.{layer}.attn.hook_pattern"])
        assert hit is not None, "the run did not fill the session's store"
        return hit.run.pattern(layer, head, hit.prompt)


def test_click_a_head_in_the_grid_shows_its_stored_pattern(qtbot, window, tmp_path):
    from workbench_attention.panel import AttentionPanel

    window.set_prompt(PROMPT)
    panel = window.open_panel("attention")
    assert isinstance(panel, AttentionPanel)
    panel.set_parameters({"layer": 0, "head": 0})
    with qtbot.waitSignal(panel.result_changed, timeout=120_000) as shown:
        assert panel.run() is not None
    result = shown.args[0]
    assert result.n_layers == 2 and result.n_heads == 4
    # The run filled the session's store; the large view shows L0H0 from it.
    np.testing.assert_allclose(panel.main_view.weights, stored_pattern(window, 0, 0), atol=1e-6)
    assert panel.grid.n_layers == 2 and panel.grid.n_heads == 4 and panel.grid.selected == (0, 0)

    # Click L1H1 (the induction head) in the overview grid: the large view shows its stored pattern.
    qtbot.wait(50)
    centre = panel.grid.tile_rect(1, 1).center().toPoint()
    with qtbot.waitSignal(panel.result_changed, timeout=60_000) as answered:  # the plugin's `pattern` query
        qtbot.mouseClick(panel.grid, Qt.LeftButton, pos=centre)
    assert answered.args[0].meta.query == "pattern" and answered.args[0].meta.params["head"] == 1
    assert panel.result.thumbnails is result.thumbnails  # the overview stays the run's
    expected = stored_pattern(window, 1, 1)
    np.testing.assert_allclose(panel.main_view.weights, expected, atol=1e-6)
    shown = panel.main_view.matrix  # what the view draws: weights, NaN above the diagonal
    lower = np.tril_indices(expected.shape[0])
    np.testing.assert_allclose(shown[lower], expected[lower], atol=1e-6)
    assert np.isnan(shown[np.triu_indices(expected.shape[0], 1)]).all()
    assert panel.grid.selected == (1, 1)
    assert panel.parameters()["layer"] == 1 and panel.parameters()["head"] == 1
    assert "L1H1" in panel.head_info.text()
    assert panel.main_view.x_labels == result.str_tokens == panel.main_view.y_labels
    # Hover text names both tokens and the weight; the induction target of the last t4 is t5.
    last = len(result.str_tokens) - 1
    assert panel.main_view.describe_cell(last, 5) == f"{last} 't4' → 5 't5': weight {expected[last, 5]:.4g}"
    assert int(np.argmax(panel.main_tokens.weights)) == 5

    # Display options redraw without re-reading: log scale, masking the first token.
    panel.set_parameters({"scale": "log", "mask_first_token": True})
    panel._form_changed()
    shown = panel.main_view.matrix
    assert np.isnan(shown[:, 0]).all()
    np.testing.assert_allclose(shown[last, 5], np.log10(expected[last, 5]), atol=1e-6)

    # The token-centred view follows a click on a row of the heatmap.
    panel.main_view.cell_clicked.emit(3, 1)
    assert panel.parameters()["destination"] == 3
    np.testing.assert_allclose(panel.main_tokens.weights, expected[3], atol=1e-6)

    # Average over the layer's heads: the mean of the four stored heads.
    panel.set_parameters({"average": "layer", "mask_first_token": False, "scale": "linear"})
    with qtbot.waitSignal(panel.result_changed, timeout=60_000):
        panel._form_changed()
    mean = np.mean([stored_pattern(window, 1, h) for h in range(4)], axis=0)
    np.testing.assert_allclose(panel.main_view.weights, mean, atol=1e-6)
    assert panel.grid.selected == (1, None)

    # A compare prompt the store lacks is captured once in the background, then shown beside.
    other = "t7 t8 t9 t7 t8"
    panel.set_parameters({"average": "none", "compare_prompt": other})
    panel._compare_prompt_changed()
    qtbot.waitUntil(lambda: panel.compare_view.isVisible() and panel.compare_view.weights.size > 0, timeout=60_000)
    np.testing.assert_allclose(panel.compare_view.weights, stored_pattern(window, 1, 1, other), atol=1e-6)

    # The figure export is the SVG of what is shown; the large view drew something.
    svg = panel.figure_svg()
    assert svg.startswith("<svg") and "second prompt" in svg
    image = panel.main_view.graphics.grab().toImage()
    colours = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
    assert len(colours) > 5
    panel.export_figure(tmp_path / "attention.png")
    assert (tmp_path / "attention.png").stat().st_size > 1000


def test_figure_exports_are_named_after_what_is_shown_and_leave_the_hover_text_out(qtbot, window, tmp_path):
    window.set_prompt(PROMPT)
    panel = window.open_panel("attention")
    with qtbot.waitSignal(panel.result_changed, timeout=120_000):
        panel.run()
    with qtbot.waitSignal(panel.result_changed, timeout=60_000):
        panel.select_head(1, 1)
    assert panel.figure_name() == "attention-L1H1"
    panel.main_view.readout.setText("3 't4' → 1 't2': weight 0.5")  # as after a hover
    before = tmp_path / "hover.png"
    panel.export_figure(before)
    assert panel.main_view.readout.text().startswith("3 't4'")  # put back after the capture
    panel.main_view.readout.setText(" ")
    plain = tmp_path / "plain.png"
    panel.export_figure(plain)
    assert before.read_bytes() == plain.read_bytes()  # the hover text was not captured
