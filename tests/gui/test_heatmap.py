"""HeatmapView, the reusable matrix view for panels."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt

from workbench.figures.colormaps import lookup_table
from workbench.gui.widgets.heatmap import HeatmapView


@pytest.fixture
def heatmap(qtbot):
    view = HeatmapView(show_log_toggle=True)
    qtbot.addWidget(view)
    view.resize(520, 420)
    view.show()
    qtbot.waitExposed(view)
    return view


def _widget_point(view: HeatmapView, row: float, col: float):
    scene = view.plot.vb.mapViewToScene(QPointF(col, row))
    return view.graphics.mapFromScene(scene)


def test_signed_data_gets_symmetric_levels_and_the_diverging_map(heatmap):
    data = np.array([[-0.5, 0.1, 2.0], [0.0, 1.0, -1.0]])
    heatmap.set_data(data, x_labels=[" a", "b", "c"], y_labels=["r0", "r1"], x_title="key", y_title="query")
    assert heatmap.levels == (-2.0, 2.0) and heatmap.colormap_name == "diverging"
    lut = heatmap.colorbar.colorMap().getLookupTable(nPts=256, alpha=False)
    np.testing.assert_array_equal(lut[[0, -1]], lookup_table("diverging")[[0, -1]])
    assert heatmap.describe_cell(0, 2) == "row 0 'r0' · column 2 'c' · 2"
    assert heatmap.image.image.shape == (2, 3)  # row-major: rows of the matrix are rows of the image

    heatmap.set_data(np.array([[0.2, 0.4]]), levels=(0.0, 1.0))
    assert heatmap.levels == (0.0, 1.0) and heatmap.colormap_name == "viridis"


def test_axes_are_labelled_with_tokens_and_thinned_when_crowded(heatmap):
    labels = [f"tok{i}" for i in range(60)]
    heatmap.set_data(np.random.default_rng(0).random((60, 60)), x_labels=labels, y_labels=labels)
    ticks = heatmap.x_axis.tickValues(0, 60, 400)[0][1]
    assert 1 < len(ticks) < 60 and ticks[0] == 0.5  # cell centres, every n-th label
    assert heatmap.x_axis.tickStrings(ticks[:2], 1, 1) == ["tok0", labels[int(ticks[1])]]
    assert heatmap.y_axis.tickValues(60, 0, 4000)[0][1][:3] == [0.5, 1.5, 2.5]  # inverted axis, room for all


def test_log_scale(heatmap):
    heatmap.set_data(np.array([[1e-4, 1e-2], [1.0, 0.1]]))
    heatmap.log_toggle.setChecked(True)
    assert heatmap.log and heatmap.levels == pytest.approx((-4.0, 0.0))


def test_hover_shows_the_cell_and_click_emits_it(qtbot, heatmap):
    heatmap.set_data(np.arange(12, dtype=float).reshape(3, 4), x_labels=list("wxyz"), y_labels=["A", "B", "C"])
    qtbot.wait(50)
    point = _widget_point(heatmap, 1.5, 2.5)
    qtbot.mouseMove(heatmap.graphics.viewport(), point)
    qtbot.waitUntil(lambda: "row 1 'B'" in heatmap.readout.text())
    assert "column 2 'y'" in heatmap.readout.text() and heatmap.readout.text().endswith("6")
    with qtbot.waitSignal(heatmap.cell_clicked) as clicked:
        qtbot.mouseClick(heatmap.graphics.viewport(), Qt.LeftButton, pos=point)
    assert clicked.args == [1, 2] and heatmap.marker.isVisible()


def test_a_long_title_wraps_and_the_view_still_shrinks(qtbot, heatmap):
    title = "Attention pattern of layer 17 head 8 on the second prompt, averaged over the batch " * 2
    heatmap.set_data(np.eye(4), title=title, x_title="key", y_title="query")
    assert heatmap.title_label.text() == title and heatmap.title_label.isVisibleTo(heatmap)
    assert heatmap.minimumSizeHint().width() < 300 < heatmap.title_label.fontMetrics().horizontalAdvance(title)
    heatmap.resize(300, 420)
    # The plot fits: its right edge (colour bar included) is inside the widget, not clipped.
    # Waited for, as the scene's layout follows the resize through posted events.
    qtbot.waitUntil(
        lambda: heatmap.graphics.width() <= 300 and heatmap.plot.sceneBoundingRect().right() <= heatmap.graphics.width() + 1
    )
    heatmap.set_data(np.eye(4))
    assert not heatmap.title_label.isVisibleTo(heatmap)


def test_long_token_labels_stand_upright_one_per_column_and_short_ones_lie_flat(qtbot):
    from workbench.gui.widgets.heatmap import HeatmapView

    view = HeatmapView()
    qtbot.addWidget(view)
    view.resize(500, 400)
    view.show()
    words = [" located", " Tower", " Eiffel", " city", " Paris", " station", " river", " bridge", " museum", " garden", " square", " avenue"]
    view.set_data(np.eye(len(words)), x_labels=words, y_labels=words, x_title="source token")
    qtbot.waitExposed(view)
    axis = view.x_axis
    [(step, values)] = axis.tickValues(0, len(words), 300)  # 25 px a column: the words do not fit flat
    assert step == 1 and len(values) == len(words) and axis._upright  # every column labelled
    assert axis.minimumHeight() > axis._metrics.horizontalAdvance("␣located")  # room for the longest, upright
    view.set_data(np.eye(3), x_labels=["H0", "H1", "H2"], y_labels=["a", "b", "c"], x_title="head")
    axis.tickValues(0, 3, 300)
    assert not axis._upright and axis.minimumHeight() < 60  # short labels lie flat, the title below them
    view.set_data(np.zeros((3, 30)), x_labels=[str(i) for i in range(30)], y_labels=["a", "b", "c"], x_title="layer")
    [(step, _)] = axis.tickValues(0, 30, 150)  # 5 px a column: layer numbers every few columns, flat
    assert not axis._upright and step > 1
