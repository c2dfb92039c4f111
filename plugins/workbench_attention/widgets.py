"""The attention panel's widgets: the overview grid of every head, one pattern at screen
resolution, and one destination's weights over the text. They only draw."""

from __future__ import annotations

import bisect
import math
from functools import lru_cache

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QImage, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import (
    QGraphicsPolygonItem,
    QGraphicsRectItem,
    QSizePolicy,
    QToolTip,
    QWidget,
)

from workbench.figures.raster import NAN_RGB, colourise, downsample_for_display
from workbench.figures.tokens import visible_token
from workbench.gui.widgets.heatmap import HeatmapView

from .figures import TEXT_RED
from .patterns import text_shades

SHOWN_TOKEN_CHARS = 24


def _visible(text: str) -> str:
    return visible_token(text, SHOWN_TOKEN_CHARS)


# -- widgets ---------------------------------------------------------------------------------------


class HeadGrid(QWidget):
    """Layers x heads of small pattern images; click one to open it. Painted from one mosaic image."""

    head_clicked = Signal(int, int)  # layer, head

    LEFT = 34.0  # room for the layer labels
    TOP = 18.0  # room for the head labels

    def __init__(self, parent=None):
        super().__init__(parent)
        self.n_layers = self.n_heads = 0
        self.tile = 1
        self.gap = 1
        self.column_labels: list[str] = []
        self.tips: list[list[str]] = []
        self.selected: tuple[int, int | None] | None = None
        self._image: QImage | None = None
        self._rgb: np.ndarray | None = None
        self.setMouseTracking(True)
        self.setMinimumSize(140, 140)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)

    def set_data(self, display: np.ndarray, lo: float, hi: float, column_labels: list[str], tips: list[list[str]]) -> None:
        """display: [layers, heads, t, t] values as drawn (NaN = nothing to draw)."""
        self.n_layers, self.n_heads, self.tile, _ = display.shape
        self.gap = 1 if self.tile <= 12 else 2
        step = self.tile + self.gap
        # Colour every tile at once, pad each with a white gap, then lay them out in one reshape.
        tiles = np.pad(colourise(display, lo, hi), ((0, 0), (0, 0), (0, self.gap), (0, self.gap), (0, 0)), constant_values=255)
        mosaic = tiles.transpose(0, 2, 1, 3, 4).reshape(self.n_layers * step, self.n_heads * step, 3)[: -self.gap, : -self.gap]
        self._rgb = np.ascontiguousarray(mosaic)
        height, width = mosaic.shape[:2]
        self._image = QImage(self._rgb.data, width, height, 3 * width, QImage.Format_RGB888).copy()
        self.column_labels = list(column_labels)
        self.tips = tips
        self.update()

    def set_selected(self, layer: int, head: int | None) -> None:
        """Outline one head, or (head None) the whole layer."""
        self.selected = (layer, head)
        self.update()

    def _scale(self) -> float:
        if self._image is None:
            return 1.0
        return max(0.05, min((self.width() - self.LEFT - 2) / self._image.width(), (self.height() - self.TOP - 2) / self._image.height()))

    def tile_rect(self, layer: int, head: int) -> QRectF:
        scale = self._scale()
        step = (self.tile + self.gap) * scale
        return QRectF(self.LEFT + head * step, self.TOP + layer * step, self.tile * scale, self.tile * scale)

    def head_at(self, point: QPointF) -> tuple[int, int] | None:
        if self._image is None:
            return None
        scale = self._scale()
        step = (self.tile + self.gap) * scale
        col = math.floor((point.x() - self.LEFT) / step)
        row = math.floor((point.y() - self.TOP) / step)
        if 0 <= row < self.n_layers and 0 <= col < self.n_heads:
            return row, col
        return None

    def sizeHint(self) -> QSize:
        if self._image is None:
            return QSize(240, 320)
        scale = max(1.0, 36.0 / self.tile)
        return QSize(int(self.LEFT + self._image.width() * scale + 4), int(self.TOP + self._image.height() * scale + 4))

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), Qt.white)
        if self._image is None:
            painter.setPen(QColor("#777"))
            painter.drawText(self.rect(), Qt.AlignCenter, "Run to see every head")
            return
        scale = self._scale()
        target = QRectF(self.LEFT, self.TOP, self._image.width() * scale, self._image.height() * scale)
        # Shrinking needs smoothing (else rows drop out); enlarging must stay blocky.
        painter.setRenderHint(QPainter.SmoothPixmapTransform, scale < 1.0)
        painter.drawImage(target, self._image)
        font = QFont(self.font())
        font.setPointSizeF(max(6.5, min(9.0, font.pointSizeF())))
        painter.setFont(font)
        painter.setPen(QColor("#222"))
        metrics = QFontMetricsF(font)
        step = (self.tile + self.gap) * scale
        label_every = max(1, math.ceil((metrics.height() + 1) / step))
        for layer in range(0, self.n_layers, label_every):
            painter.drawText(QRectF(0, self.TOP + layer * step, self.LEFT - 4, self.tile * scale), Qt.AlignRight | Qt.AlignVCenter, f"L{layer}")
        widest = max((metrics.horizontalAdvance(t) for t in self.column_labels), default=0)
        head_every = max(1, math.ceil((widest + 4) / step))
        for head in range(0, self.n_heads, head_every):
            label = self.column_labels[head] if head < len(self.column_labels) else f"H{head}"
            painter.drawText(QRectF(self.LEFT + head * step - 20, 0, self.tile * scale + 40, self.TOP - 2), Qt.AlignHCenter | Qt.AlignBottom, label)
        if self.selected is not None:
            layer, head = self.selected
            painter.setPen(QPen(QColor("#ff2d2d"), 2))
            if head is None:
                first, last = self.tile_rect(layer, 0), self.tile_rect(layer, self.n_heads - 1)
                rect = QRectF(first.topLeft(), last.bottomRight())
            else:
                rect = self.tile_rect(layer, head)
            painter.drawRect(rect.adjusted(-1.5, -1.5, 1.5, 1.5))

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.LeftButton:
            cell = self.head_at(event.position())
            if cell is not None:
                self.head_clicked.emit(*cell)
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:
        cell = self.head_at(event.position())
        if cell is not None and self.tips:
            QToolTip.showText(event.globalPosition().toPoint(), self.tips[cell[0]][cell[1]], self)
        else:
            QToolTip.hideText()
        super().mouseMoveEvent(event)


@lru_cache(maxsize=4)
def _future_staircase(n: int) -> QPolygonF:
    """The outline of the cells above the diagonal of an n x n pattern: row r hides columns r+1..n-1."""
    points = [QPointF(1, 0), QPointF(n, 0), QPointF(n, n - 1)]
    for r in range(n - 1, 0, -1):
        points += [QPointF(r, r), QPointF(r, r - 1)]
    return QPolygonF(points)


class PatternView(HeatmapView):
    """One destination x source pattern. Hover names both tokens and the weight; the
    destination row of the text view is outlined.

    A pattern with more cells than the view has pixels is drawn at screen resolution:
    each pixel shows the largest value of the cells it covers, so a one-token stripe (a
    previous-token or induction diagonal) stays visible instead of being averaged away.
    Zooming in redraws the visible part, down to single cells; hover always reads the
    exact cell.
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self.weights = np.zeros((0, 0), dtype=np.float32)
        self.pooled = False  # whether the image now drawn is shrunk to screen resolution
        self._quiet = False
        self.masked_first = False
        self.row_marker = QGraphicsRectItem()
        pen = QPen(QColor("#ff2d2d"), 2)
        pen.setCosmetic(True)
        self.row_marker.setPen(pen)
        self.row_marker.setZValue(11)
        self.row_marker.hide()
        self.plot.addItem(self.row_marker)
        # Cells with nothing to show (future tokens, a masked first column) are covered in
        # grey, as in the report figures, rather than drawn as weight 0.
        self.future_cover = QGraphicsPolygonItem()
        self.mask_cover = QGraphicsRectItem()
        for item in (self.future_cover, self.mask_cover):
            item.setBrush(QColor(*NAN_RGB))
            item.setPen(QPen(Qt.NoPen))
            item.setZValue(5)
            item.hide()
            self.plot.addItem(item)
        self.plot.vb.sigRangeChanged.connect(self._fit_to_screen)
        self.plot.vb.sigResized.connect(self._fit_to_screen)

    def show_pattern(
        self, weights: np.ndarray, display: np.ndarray, labels: list[str], levels: tuple[float, float], *, title: str, log: bool, masked_first: bool, causal: bool = True
    ) -> None:
        self.weights = weights
        self.masked_first = masked_first
        self._quiet = True  # set_data moves the view range: fit to the screen once, at the end
        try:
            self._set_pattern_data(display, labels, title, levels)
        finally:
            self._quiet = False
        self._finish_pattern(display, log, masked_first, causal)

    def _set_pattern_data(self, display, labels, title, levels) -> None:
        self.set_data(
            display,
            x_labels=labels,
            y_labels=labels,
            title=title,
            x_title="source token (attended to)",
            y_title="destination token (attending)",
            colormap_name="viridis",
            levels=levels,
            signed=False,
            log=False,  # display values are already log10 on the log scale
        )

    def _finish_pattern(self, display, log: bool, masked_first: bool, causal: bool) -> None:
        self.colorbar.getAxis("right").setLabel("log10 weight" if log else "weight", color="#222")
        rows, cols = display.shape
        if causal and rows == cols and rows > 1:
            self.future_cover.setPolygon(_future_staircase(rows))
            self.future_cover.show()
        else:
            self.future_cover.hide()
        self.mask_cover.setRect(QRectF(0, 0, 1, rows))
        self.mask_cover.setVisible(masked_first)
        self._fit_to_screen()

    def _fit_to_screen(self, *_args) -> None:
        """Draw the visible cells at no more than the view's pixels (max over each pixel's cells)."""
        if self._quiet:
            return
        data = self.matrix
        rows, cols = data.shape
        if rows == 0 or cols == 0:
            return
        box = self.plot.vb.viewRect()
        r0, r1 = max(0, math.floor(box.top())), min(rows, math.ceil(box.bottom()))
        c0, c1 = max(0, math.floor(box.left())), min(cols, math.ceil(box.right()))
        size, ratio = self.plot.vb.size(), self.devicePixelRatioF()
        pixel_rows, pixel_cols = max(1, int(size.height() * ratio)), max(1, int(size.width() * ratio))
        if r1 <= r0 or c1 <= c0:
            return
        low = self.levels[0]
        if rows <= pixel_rows and cols <= pixel_cols:
            if self.pooled:  # back to every cell (set_data drew them; a zoom may have replaced them)
                self.image.setImage(np.nan_to_num(data, nan=low), levels=self.levels, autoLevels=False)
                self.image.setRect(QRectF(0, 0, cols, rows))
                self.pooled = False
            return
        shown, _, _ = downsample_for_display(data[r0:r1, c0:c1], pixel_rows, pixel_cols)
        self.image.setImage(np.nan_to_num(shown, nan=low), levels=self.levels, autoLevels=False)
        self.image.setRect(QRectF(c0, r0, c1 - c0, r1 - r0))
        self.pooled = True

    def mark_row(self, row: int | None) -> None:
        rows, cols = self.matrix.shape
        if row is None or not 0 <= row < rows:
            self.row_marker.hide()
            return
        self.row_marker.setRect(QRectF(0, row, cols, 1))
        self.row_marker.show()

    def describe_cell(self, row: int, col: int) -> str:
        destination, source = self.y_labels[row], self.x_labels[col]
        if col > row:
            what = "future token (not readable)"
        elif col == 0 and self.masked_first:
            what = f"weight {self.weights[row, col]:.4g} (masked)"
        else:
            what = f"weight {self.weights[row, col]:.4g}"
        return f"{row} {destination!r} → {col} {source!r}: {what}"


class TokenWeightsView(QWidget):
    """The token-centred view: the text, each token shaded by the weight the destination puts on it.

    Click a token to make it the destination.
    """

    token_clicked = Signal(int)

    PAD, GAP, LINE = 4.0, 3.0, 22.0

    def __init__(self, parent=None):
        super().__init__(parent)
        self.tokens: list[str] = []
        self.weights = np.zeros(0)
        self.levels = np.zeros(0)
        self.destination = -1
        self.masked_first = False
        self.top_weight = 1.0
        self._boxes: list[QRectF] = []
        self._tops: list[float] = []
        self._widths: list[float] | None = None
        self._laid_out_width = -1
        self.setMouseTracking(True)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)

    def set_tokens(self, tokens: list[str], weights: np.ndarray, destination: int, scale: str, mask_first_token: bool) -> None:
        shown = [_visible(t) for t in tokens]
        if shown != self.tokens:
            self.tokens = shown
            self._widths = None
            self._laid_out_width = -1
        self.weights = np.asarray(weights, dtype=np.float64)
        self.destination = destination
        self.masked_first = mask_first_token
        self.levels, self.top_weight = text_shades(self.weights, destination, scale, mask_first_token)
        self._layout()
        self.update()
        scroll = getattr(self, "scroll_area", None)
        if scroll is not None and 0 <= destination < len(self._boxes):
            centre = self._boxes[destination].center()
            scroll.ensureVisible(int(centre.x()), int(centre.y()), 20, int(self.LINE))

    def _layout(self) -> None:
        width = max(self.width(), 200)
        if width == self._laid_out_width:
            return
        if self._widths is None:  # measured once per token list, not per layout or destination
            metrics = QFontMetricsF(self.font())
            self._widths = [metrics.horizontalAdvance(text) + 8 for text in self.tokens]
        x, y = self.PAD, self.PAD
        boxes = []
        for box in self._widths:
            if x + box > width - self.PAD and x > self.PAD:
                x, y = self.PAD, y + self.LINE
            boxes.append(QRectF(x, y, box, self.LINE - 4))
            x += box + self.GAP
        self._boxes = boxes
        self._tops = [box.top() for box in boxes]
        self._laid_out_width = width
        self.setMinimumHeight(int(y + self.LINE + self.PAD))

    def resizeEvent(self, event) -> None:
        self._layout()
        super().resizeEvent(event)

    def sizeHint(self) -> QSize:
        return QSize(400, max(self.minimumHeight(), 60))

    def token_at(self, point: QPointF) -> int | None:
        for index, box in enumerate(self._boxes):
            if box.contains(point):
                return index
        return None

    def paintEvent(self, event) -> None:
        self._layout()
        painter = QPainter(self)
        painter.fillRect(self.rect(), Qt.white)
        red = np.array(TEXT_RED, dtype=np.float64)
        visible = event.rect()
        # Boxes run top to bottom: paint only the lines in the exposed rectangle.
        first = max(0, bisect.bisect_left(self._tops, visible.top() - self.LINE))
        last = bisect.bisect_right(self._tops, visible.bottom() + 1)
        for index in range(first, min(last, len(self._boxes))):
            text, box = self.tokens[index], self._boxes[index]
            level = self.levels[index] if index < len(self.levels) else np.nan
            if np.isnan(level):
                fill = QColor("#eeeeee") if index == 0 and self.masked_first else QColor("white")
                ink = QColor("#999")
            else:
                rgb = np.round(255 - level * (255 - red)).astype(int)
                fill, ink = QColor(*rgb), QColor("white" if level > 0.6 else "black")
            painter.setBrush(fill)
            painter.setPen(QPen(QColor("black"), 2) if index == self.destination else QPen(QColor("#dddddd"), 0.6))
            painter.drawRoundedRect(box, 3, 3)
            painter.setPen(ink)
            painter.drawText(box, Qt.AlignCenter, text)

    def mousePressEvent(self, event) -> None:
        index = self.token_at(event.position())
        if index is not None and event.button() == Qt.LeftButton:
            self.token_clicked.emit(index)
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:
        index = self.token_at(event.position())
        if index is not None:
            weight = f"{self.weights[index]:.4g}" if index <= self.destination else "future token"
            QToolTip.showText(event.globalPosition().toPoint(), f"{index} {self.tokens[index]!r}: {weight}", self)
        super().mouseMoveEvent(event)


# -- the panel ----------------------------------------------------------------------------------------
