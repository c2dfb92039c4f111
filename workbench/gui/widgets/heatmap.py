"""HeatmapView: an interactive matrix view for panels (attention patterns, per-layer scores, …).

    view = HeatmapView()
    view.set_data(matrix, x_labels=key_tokens, y_labels=query_tokens, x_title="key", y_title="query")
    view.cell_clicked.connect(lambda row, col: ...)

Rows are drawn top to bottom and columns left to right, as the matrix is printed.
Hovering shows the row label, column label and value; clicking a cell emits
`cell_clicked(row, col)`. Colours come from workbench.figures.colormaps, the same
tables the SVG report figures use, so a panel and its exported report agree.
Signed data gets symmetric limits and the diverging map unless told otherwise.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QFont, QFontMetrics
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from ...figures.colormaps import lookup_table
from ...figures.tokens import visible_token

LABEL_LIMIT = 12  # characters of a token label shown on an axis; the hover text has it in full


def _axis_label(text: str) -> str:
    return visible_token(text, LABEL_LIMIT)


@functools.lru_cache(maxsize=16)
def colormap(name: str) -> pg.ColorMap:
    # Shared, never modified: building one costs ~10 ms, and set_data asks on every draw.
    table = lookup_table(name)
    return pg.ColorMap(pos=np.linspace(0.0, 1.0, len(table)), color=table)


class LabelAxis(pg.AxisItem):
    """An axis whose ticks are the centres of matrix cells, labelled with tokens.

    When the labels do not fit, every n-th is shown (n chosen from the space per cell).
    """

    def __init__(self, orientation: str, **kwargs):
        super().__init__(orientation, **kwargs)
        self.labels: list[str] = []
        self._metrics = QFontMetrics(QFont())
        self._widest = 0  # the widest label in pixels, measured once per set of labels
        self._upright = False
        self._shown_values: list[float] = []  # the labelled cell centres tickValues chose last

    def set_labels(self, labels: Sequence[str] | None) -> None:
        shown = [_axis_label(t) for t in labels] if labels is not None else []
        if shown != self.labels:  # another head of the same prompt keeps its axis as it is
            self.labels = shown
            self._widest = max((self._metrics.horizontalAdvance(t) for t in self.labels), default=0)
            self._upright = False
            self._fit_height()
        self.picture = None
        self.update()

    def setLabel(self, *args, **kwargs):  # noqa: N802 (pyqtgraph's name)
        super().setLabel(*args, **kwargs)
        self._fit_height()

    def _fit_height(self) -> None:
        """Bottom axis: room for the labels (upright ones: their length) and the axis title."""
        if self.orientation != "bottom" or not getattr(self, "labels", None):  # setLabel runs in AxisItem.__init__ too
            return
        title = self._metrics.height() + 8 if self.label.isVisible() and self.labelText else 0
        height = (min(120, self._widest + 12) if self._upright else self._metrics.height() + 12) + title
        if height != self.fixedHeight:  # a new height lays the plot out again: only when it changes
            self.setHeight(height)

    def tickValues(self, minVal: float, maxVal: float, size: float):
        if not self.labels:
            return super().tickValues(minVal, maxVal, size)
        minVal, maxVal = min(minVal, maxVal), max(minVal, maxVal)  # an inverted axis passes them swapped
        span = max(maxVal - minVal, 1e-9)
        pixels_per_cell = size / span
        needed = self._metrics.height() + 1  # the left axis: labels stacked
        if self.orientation in ("bottom", "top"):
            needed = self._widest + 6
            if self.orientation == "bottom":
                # Words wider than a cell stand upright (read bottom to top), one per column,
                # as in the SVG figures; side by side they left every other column unlabelled.
                # Numbers and other short labels stay flat (every n-th): upright they read worse.
                upright = needed > pixels_per_cell and needed > 2 * self._metrics.height()
                if upright != self._upright:
                    self._upright = upright
                    self._fit_height()
                if upright:
                    needed = self._metrics.height() + 1
        step = max(1, math.ceil(needed / max(pixels_per_cell, 1e-9)))
        first = max(0, math.ceil(minVal - 0.5))
        last = min(len(self.labels) - 1, math.floor(maxVal - 0.5))
        values = [i + 0.5 for i in range(first, last + 1) if i % step == 0]
        self._shown_values = values
        return [(float(step), values)]

    def drawPicture(self, p, axisSpec, tickSpecs, textSpecs):
        if self.orientation != "bottom" or not self.labels or not self._upright:
            return super().drawPicture(p, axisSpec, tickSpecs, textSpecs)
        super().drawPicture(p, axisSpec, tickSpecs, [])  # the line and ticks; the labels below
        p.setPen(self.textPen())
        height = self._metrics.height()
        room = self._widest + 6
        for value, (_pen, start, end) in zip(self._shown_values, tickSpecs):
            index = int(math.floor(value))
            if not 0 <= index < len(self.labels):
                continue
            p.save()
            p.translate(start.x(), max(start.y(), end.y()) + 3)
            p.rotate(-90)
            p.drawText(QRectF(-room, -height / 2, room - 3, height), int(Qt.AlignRight | Qt.AlignVCenter), self.labels[index])
            p.restore()
        return None

    def tickStrings(self, values, scale, spacing):
        if not self.labels:
            return super().tickStrings(values, scale, spacing)
        out = []
        for value in values:
            index = int(math.floor(value))
            out.append(self.labels[index] if 0 <= index < len(self.labels) else "")
        return out


class HeatmapView(QWidget):
    """A pyqtgraph heatmap with token-labelled axes, hover read-out, click signal and colour bar."""

    cell_clicked = Signal(int, int)  # row, column
    cell_hovered = Signal(int, int)

    def __init__(self, parent=None, *, show_log_toggle: bool = False):
        super().__init__(parent)
        self.matrix = np.zeros((0, 0))
        self.x_labels: list[str] = []
        self.y_labels: list[str] = []
        self.levels: tuple[float, float] = (0.0, 1.0)
        self.colormap_name = "viridis"
        self.log = False
        self.value_format = "{:.4g}"
        self._signed: bool | None = None
        self._requested_levels: tuple[float, float] | None = None
        self._requested_colormap: str | None = None

        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground("w")
        self.x_axis = LabelAxis("bottom")
        self.y_axis = LabelAxis("left")
        self.plot = self.graphics.addPlot(row=0, col=0, axisItems={"bottom": self.x_axis, "left": self.y_axis})
        for axis in (self.x_axis, self.y_axis):
            axis.setPen(pg.mkPen("#333"))
            axis.setTextPen(pg.mkPen("#222"))
        self.plot.invertY(True)  # row 0 at the top, as the matrix is printed
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.image = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.image)
        self.marker = pg.QtWidgets.QGraphicsRectItem()
        self.marker.setPen(pg.mkPen("#ff2d2d", width=2, cosmetic=True))
        self.marker.setZValue(10)
        self.marker.hide()
        self.plot.addItem(self.marker)
        self.colorbar = pg.ColorBarItem(values=(0, 1), colorMap=colormap("viridis"), interactive=False, width=14, pen="#333")
        self.colorbar.setImageItem(self.image, insert_in=self.plot)
        self.colorbar.getAxis("right").setTextPen(pg.mkPen("#222"))

        self.readout = QLabel(" ")
        self._cell_items: list = []  # set_cell_text's texts, removed with the data they describe
        self.readout.setTextFormat(Qt.PlainText)
        self.readout.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.log_toggle = QCheckBox("log scale")
        self.log_toggle.setVisible(show_log_toggle)
        self.log_toggle.toggled.connect(self.set_log)
        # The title is a wrapping label outside the plot: a title drawn in the plot scene sets the
        # plot's minimum width, and a long one made the view clip instead of shrink.
        self.title_label = QLabel("")
        self.title_label.setTextFormat(Qt.PlainText)
        self.title_label.setWordWrap(True)
        self.title_label.setAlignment(Qt.AlignHCenter)
        self.title_label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.title_label.setStyleSheet("color: #222; background: white; font-weight: bold; padding-top: 3px;")
        self.title_label.hide()
        top = QHBoxLayout()
        top.addWidget(self.readout, 1)
        top.addWidget(self.log_toggle)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addLayout(top)
        layout.addWidget(self.title_label)
        layout.addWidget(self.graphics, 1)

        self.graphics.scene().sigMouseMoved.connect(self._mouse_moved)
        self.graphics.scene().sigMouseClicked.connect(self._mouse_clicked)

    # -- data ------------------------------------------------------------------------------------

    def set_data(
        self,
        matrix,
        x_labels: Sequence[str] | None = None,
        y_labels: Sequence[str] | None = None,
        *,
        title: str = "",
        x_title: str = "",
        y_title: str = "",
        colormap_name: str | None = None,
        levels: tuple[float, float] | None = None,
        signed: bool | None = None,
        log: bool | None = None,
        value_format: str = "{:.4g}",
    ) -> None:
        """Show a 2-D array. levels fixes the colour limits; signed (default: any negative value)
        centres them on zero with the diverging map; log shows log10 of positive data."""
        data = np.asarray(matrix, dtype=np.float64)
        if data.ndim != 2:
            raise ValueError(f"HeatmapView needs a 2-D array, not shape {data.shape}")
        self.matrix = data
        self.readout.setText(" ")  # a hover text describes the old data: it goes with it
        self.set_cell_text(None)  # so do the cells' texts
        rows, cols = data.shape
        self.x_labels = [str(t) for t in x_labels] if x_labels is not None else [str(i) for i in range(cols)]
        self.y_labels = [str(t) for t in y_labels] if y_labels is not None else [str(i) for i in range(rows)]
        self.value_format = value_format
        self._signed = signed
        self._requested_levels = levels
        self._requested_colormap = colormap_name
        if log is not None:
            self.log = bool(log)
            self.log_toggle.blockSignals(True)
            self.log_toggle.setChecked(self.log)
            self.log_toggle.blockSignals(False)
        self.x_axis.set_labels(self.x_labels)
        self.y_axis.set_labels(self.y_labels)
        self.title_label.setText(title)
        self.title_label.setVisible(bool(title))
        self.plot.setLabel("bottom", x_title, color="#222")
        self.plot.setLabel("left", y_title, color="#222")
        self.marker.hide()
        self._redraw()
        self.plot.vb.setLimits(xMin=0, xMax=max(cols, 1), yMin=0, yMax=max(rows, 1))
        self.plot.vb.setRange(QRectF(0, 0, max(cols, 1), max(rows, 1)), padding=0)

    def set_log(self, on: bool) -> None:
        self.log = bool(on)
        if self.log_toggle.isChecked() != self.log:
            self.log_toggle.setChecked(self.log)
        self._redraw()

    def _redraw(self) -> None:
        data = self.matrix
        shown = data
        finite = data[np.isfinite(data)]
        signed = self._signed if self._signed is not None else bool(finite.size and finite.min() < 0)
        name = self._requested_colormap or ("diverging" if signed and not self.log else "viridis")
        if self.log:
            positive = finite[finite > 0]
            floor = float(positive.min()) if positive.size else 1e-12
            shown = np.log10(np.clip(data, floor, None))
            low, high = (float(np.nanmin(shown)), float(np.nanmax(shown))) if shown.size else (0.0, 1.0)
        elif self._requested_levels is not None:
            low, high = map(float, self._requested_levels)
        elif signed:
            bound = float(np.abs(finite).max()) if finite.size else 1.0
            low, high = -(bound or 1.0), bound or 1.0
        else:
            low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if high <= low:
            high = low + 1.0
        self.levels = (low, high)
        self.colormap_name = name
        cmap = colormap(name)
        self.image.setColorMap(cmap)
        self.image.setImage(np.nan_to_num(shown, nan=low), levels=self.levels, autoLevels=False)
        rows, cols = data.shape
        self.image.setRect(QRectF(0, 0, cols, rows))
        self.colorbar.setColorMap(cmap)
        self.colorbar.setLevels(self.levels)
        self.colorbar.getAxis("right").setLabel("log10" if self.log else "", color="#222")

    CELL_TEXT_LIMIT = 900  # cells; above it the texts would not be legible anyway

    def set_cell_text(self, texts: Sequence[Sequence[str]] | None, max_chars: int = 8) -> None:
        """Print a short text in every cell (a decoded token, say), dark or light against the
        cell's colour; None removes them. Skipped above CELL_TEXT_LIMIT cells (the hover read-out
        still has every cell)."""
        for item in self._cell_items:
            self.plot.removeItem(item)
        self._cell_items = []
        if texts is None or self.matrix.size == 0 or self.matrix.size > self.CELL_TEXT_LIMIT:
            return
        lo, hi = self.image.getLevels() if self.image.getLevels() is not None else (0.0, 1.0)
        span = (hi - lo) or 1.0
        shown = self.image.image
        for row, line in enumerate(texts):
            for col, text in enumerate(line):
                value = float(shown[row, col]) if shown is not None else 0.0
                dark_cell = value == value and (value - lo) / span < 0.55
                item = pg.TextItem(visible_token(text, max_chars), color="#ffffff" if dark_cell else "#111111", anchor=(0.5, 0.5))
                item.setFont(QFont("DejaVu Sans", 7))
                item.setPos(col + 0.5, row + 0.5)
                self.plot.addItem(item)
                self._cell_items.append(item)

    # -- reading it --------------------------------------------------------------------------------

    def value_at(self, row: int, col: int) -> float:
        return float(self.matrix[row, col])

    def describe_cell(self, row: int, col: int) -> str:
        value = self.value_format.format(self.value_at(row, col))
        return f"row {row} {self.y_labels[row]!r} · column {col} {self.x_labels[col]!r} · {value}"

    def select_cell(self, row: int | None, col: int | None = None) -> None:
        """Outline one cell (None hides the outline)."""
        if row is None or col is None:
            self.marker.hide()
            return
        self.marker.setRect(QRectF(col, row, 1, 1))
        self.marker.show()

    def _cell_at_scene(self, scene_pos) -> tuple[int, int] | None:
        if not self.plot.vb.sceneBoundingRect().contains(scene_pos):
            return None
        point = self.plot.vb.mapSceneToView(scene_pos)
        row, col = int(math.floor(point.y())), int(math.floor(point.x()))
        rows, cols = self.matrix.shape
        if 0 <= row < rows and 0 <= col < cols:
            return row, col
        return None

    def _mouse_moved(self, scene_pos) -> None:
        cell = self._cell_at_scene(scene_pos)
        if cell is None:
            self.readout.setText(" ")
            return
        self.readout.setText(self.describe_cell(*cell))
        self.cell_hovered.emit(*cell)

    def _mouse_clicked(self, event) -> None:
        if event.button() != Qt.LeftButton:
            return
        cell = self._cell_at_scene(event.scenePos())
        if cell is not None:
            self.select_cell(*cell)
            self.cell_clicked.emit(*cell)
