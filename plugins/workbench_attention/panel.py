"""The attention panel: every head at a glance, one head in full, and its weights over the text.

Run computes the overview (a thumbnail per head) and fills the session's activation
store with every layer's patterns. After that, switching heads (a click in the grid,
the layer/head boxes) reads ONE head from the store, one chunk, and draws it at screen
resolution; the display options (scale, masking, destination token) only redraw. A
head the store lacks (say, a new compare prompt) is captured once as a background task.
"""

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
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from workbench.errors import WorkbenchError
from workbench.gui.panels import AnalysisPanel
from workbench.gui.widgets.heatmap import HeatmapView

from .figures import TEXT_RED, pattern_svg, side_by_side
from .patterns import colour_limits, display_values, downsample_for_display, head_label, kv_head_of, position_labels, resolve_position, text_shades
from .raster import NAN_RGB, colourise
from .store_access import StoredPatterns, pattern_hooks

SHOWN_TOKEN_CHARS = 24


def _visible(text: str) -> str:
    text = str(text).replace("\n", "↵").replace("\t", "⇥")
    return text if len(text) <= SHOWN_TOKEN_CHARS else text[: SHOWN_TOKEN_CHARS - 1] + "…"


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


class AttentionPanel(AnalysisPanel):
    """Overview grid, the selected head (and the same head on a compare prompt), the text view."""

    # Form fields that change which pattern is shown (a store read) versus how it is drawn.
    DATA_FIELDS = ("layer", "head", "average")

    def build_view(self) -> QWidget:
        self.grid = HeadGrid()
        self.grid.head_clicked.connect(self.select_head)
        self.main_view = PatternView()
        self.main_view.cell_clicked.connect(lambda row, col: self.set_destination(row))
        self.compare_view = PatternView()
        self.compare_view.cell_clicked.connect(lambda row, col: self.set_destination(row))
        self.compare_view.hide()
        self.main_tokens = TokenWeightsView()
        self.main_tokens.token_clicked.connect(self.set_destination)
        self.compare_tokens = TokenWeightsView()
        self.compare_tokens.hide()
        self.head_info = QLabel("Run to see every head; then click one.")
        self.head_info.setWordWrap(True)
        self.head_info.setTextFormat(Qt.PlainText)
        self.text_heading = QLabel("")
        self.text_heading.setStyleSheet("color: #444")

        grid_box = QWidget()
        grid_layout = QVBoxLayout(grid_box)
        grid_layout.setContentsMargins(0, 0, 0, 0)
        title = QLabel("Every head (click one to open it)")
        title.setStyleSheet("font-weight: bold")
        grid_layout.addWidget(title)
        grid_layout.addWidget(self.grid, 1)

        patterns = QWidget()
        pattern_row = QHBoxLayout(patterns)
        pattern_row.setContentsMargins(0, 0, 0, 0)
        pattern_row.addWidget(self.main_view, 1)
        pattern_row.addWidget(self.compare_view, 1)

        tokens_box = QWidget()
        tokens_layout = QVBoxLayout(tokens_box)
        tokens_layout.setContentsMargins(0, 0, 0, 0)
        tokens_layout.addWidget(self.text_heading)
        token_row = QHBoxLayout()
        for view in (self.main_tokens, self.compare_tokens):
            scroll = QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setWidget(view)
            scroll.setFrameShape(QScrollArea.NoFrame)
            view.scroll_area = scroll
            token_row.addWidget(scroll, 1)
        self.compare_tokens.scroll_area.hide()
        tokens_layout.addLayout(token_row, 1)

        right = QSplitter(Qt.Vertical)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.head_info)
        top_layout.addWidget(patterns, 1)
        right.addWidget(top)
        right.addWidget(tokens_box)
        right.setStretchFactor(0, 4)
        right.setStretchFactor(1, 1)

        splitter = QSplitter(Qt.Horizontal)
        splitter.addWidget(grid_box)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([300, 900])
        self._splitter = splitter

        self._stored: StoredPatterns | None = None
        self._capture_task = None
        self._syncing = False
        self._loaded_key: tuple | None = None
        self._main = np.zeros((0, 0), dtype=np.float32)
        self._main_labels: list[str] = []
        self._compare = np.zeros((0, 0), dtype=np.float32)
        self._compare_labels: list[str] = []
        self._compare_prompt = ""
        self._token_cache: dict[tuple, tuple[list[int], list[str]]] = {}
        self._drawn: tuple | None = None  # what the heatmaps show now (skip redrawing the same)
        self._captured: set[str] = set()  # prompts this panel captured into the store
        if self.form is not None:
            self.form.changed.connect(self._form_changed)
            compare = self.form.editors["compare_prompt"]
            compare.setMinimumWidth(220)
            compare.setPlaceholderText("a second prompt, shown side by side")
            compare.editingFinished.connect(self._compare_prompt_changed)
        return splitter

    # -- what the form says -------------------------------------------------------------------------

    def options(self) -> dict:
        """The form's current values (its editors only hold valid values, except free text)."""
        values = self.form.raw_values()
        values["compare_prompt"] = str(values.get("compare_prompt") or "").strip()
        return values

    def _set_form(self, values: dict) -> None:
        self._syncing = True
        try:
            self.set_parameters(values)
        finally:
            self._syncing = False

    def _data_key(self, options: dict) -> tuple:
        head = None if options["average"] == "layer" else options["head"]
        return (options["layer"], head, options["average"], options["compare_prompt"])

    # -- results ------------------------------------------------------------------------------------

    def render(self, result) -> None:
        meta = result.meta
        params = dict(meta.params) if meta is not None else {}
        if params:
            self._set_form(params)
        self._main = result.pattern
        self._main_labels = list(result.str_tokens)
        self._compare_prompt = result.compare_prompt.strip()
        self._compare = result.compare_pattern
        self._compare_labels = list(result.compare_str_tokens)
        self._loaded_key = (result.layer, None if result.average == "layer" else result.head, result.average, self._compare_prompt)
        self._stored = None  # the store may hold new runs now
        self._drawn = None
        self._captured.clear()
        if meta is not None and meta.prompts and result.average != "prompts" and self.host.model is not None:
            # The run's own tokens: the first head switch need not tokenize a long prompt again.
            self._token_cache[(meta.prompts[0], meta.prepend_bos, meta.model_fingerprint)] = (list(result.tokens), list(result.str_tokens))
        self._draw_grid()
        self._fit_grid_width()
        self._draw_selected()

    def _fit_grid_width(self) -> None:
        """Give the overview the width its tiles need at the available height, the rest to the large view."""
        grid, total = self.grid, sum(self._splitter.sizes())
        if grid._image is None or total <= 0 or grid.height() <= grid.TOP:
            return
        scale = min(64.0 / grid.tile, (grid.height() - grid.TOP - 2) / grid._image.height())
        wanted = int(grid.LEFT + grid._image.width() * scale + 12)
        wanted = max(180, min(wanted, int(0.45 * total)))
        self._splitter.setSizes([wanted, total - wanted])

    def _draw_grid(self) -> None:
        result = self.result
        if result is None:
            return
        options = self.options()
        display = result.thumbnail_display(options["scale"], options["mask_first_token"])
        lo, hi = colour_limits(display, options["scale"])
        tips = [
            [
                f"{head_label(layer, head, result.n_heads, result.n_kv_heads)}\n"
                f"entropy {result.entropy_bits[layer, head]:.2f} bits · first token {result.first_token_weight[layer, head]:.2f} · "
                f"previous token {result.previous_token_weight[layer, head]:.2f}"
                for head in range(result.n_heads)
            ]
            for layer in range(result.n_layers)
        ]
        self.grid.set_data(display, lo, hi, result.column_labels(), tips)
        self.grid.set_selected(options["layer"], None if options["average"] == "layer" else options["head"])

    def _title(self, options: dict) -> str:
        result = self.result
        if options["average"] == "layer":
            return f"L{options['layer']}, mean of {result.n_heads} heads"
        label = head_label(options["layer"], options["head"], result.n_heads, result.n_kv_heads)
        if options["average"] == "prompts":
            label += f", mean of {len(self._prompts())} prompts"
        return label

    def _draw_selected(self) -> None:
        result = self.result
        if result is None or self._main.size == 0:
            return
        options = self.options()
        scale, mask = options["scale"], options["mask_first_token"]
        n = self._main.shape[0]
        try:
            destination = resolve_position(options["destination"], n)
        except WorkbenchError:  # an index past this prompt's end: show the last token
            destination = n - 1
        title = self._title(options)
        has_compare = bool(self._compare_prompt) and self._compare.size > 0
        # A new destination only moves the row outline and refills the text view.
        heatmaps = (id(self._main), id(self._compare) if has_compare else None, scale, mask, title, tuple(self._main_labels[:1]))
        redraw = heatmaps != self._drawn
        if redraw:
            display = display_values(self._main, scale, mask, result.causal)
            levels = colour_limits(display, scale)
            self.main_view.show_pattern(self._main, display, self._main_labels, levels, title=title, log=scale == "log", masked_first=mask, causal=result.causal)
            self._drawn = heatmaps
        self.main_view.mark_row(destination)
        self.main_tokens.set_tokens(self._main_labels, self._main[destination], destination, scale, mask)
        self.compare_view.setVisible(has_compare)
        self.compare_tokens.scroll_area.setVisible(has_compare)
        if has_compare:
            other_destination = min(destination, self._compare.shape[0] - 1)
            if redraw:
                other = display_values(self._compare, scale, mask, result.causal)
                self.compare_view.show_pattern(
                    self._compare, other, self._compare_labels, colour_limits(other, scale), title=f"{title} · {self._compare_prompt[:40]!r}",
                    log=scale == "log", masked_first=mask, causal=result.causal,
                )
            self.compare_view.mark_row(other_destination)
            self.compare_tokens.set_tokens(self._compare_labels, self._compare[other_destination], other_destination, scale, mask)
        self.text_heading.setText(
            f"What {self._main_labels[destination]!r} (position {destination}) reads: white = 0, red = the largest weight "
            f"({self.main_tokens.top_weight:.3g}); click a token or a row to change it"
        )
        self._describe_head(options)

    def _describe_head(self, options: dict) -> None:
        result = self.result
        layer = options["layer"]
        if options["average"] == "layer":
            text = f"Layer {layer}: the mean pattern of its {result.n_heads} query heads."
        else:
            head = options["head"]
            text = f"{head_label(layer, head, result.n_heads, result.n_kv_heads)}: "
            if result.n_kv_heads < result.n_heads:
                kv = kv_head_of(head, result.n_heads, result.n_kv_heads)
                sharing = [h for h in range(result.n_heads) if kv_head_of(h, result.n_heads, result.n_kv_heads) == kv and h != head]
                text += f"query head {head} reads key/value head {kv} (shared with {', '.join(f'H{h}' for h in sharing)}); its pattern is its own. "
            text += (
                f"Entropy {result.entropy_bits[layer, head]:.2f} bits, weight on the first token {result.first_token_weight[layer, head]:.2f}, "
                f"on the previous token {result.previous_token_weight[layer, head]:.2f}."
            )
        text += " Rows attend to columns; each row sums to 1." + (" First token masked (weights not renormalised)." if options["mask_first_token"] else "")
        self.head_info.setText(text)

    # -- interaction -----------------------------------------------------------------------------------

    def select_head(self, layer: int, head: int) -> None:
        """Open a head (a click in the grid): one read from the store, then draw."""
        values = {"layer": layer, "head": head}
        if self.options()["average"] == "layer":
            values["average"] = "none"
        self._set_form(values)
        self._form_changed()

    def set_destination(self, row: int) -> None:
        self._set_form({"destination": row})
        self._form_changed()

    def _compare_prompt_changed(self) -> None:
        self._form_changed(force=True)

    def _form_changed(self, force: bool = False) -> None:
        if self._syncing or self.result is None:
            return
        options = self.options()
        key = self._data_key(options)
        if key[:3] != (self._loaded_key or (None,) * 4)[:3] or (force and key != self._loaded_key):
            self.load_selection()
        else:
            self._draw_grid()
            self._draw_selected()

    # -- lazy reads -------------------------------------------------------------------------------------

    def _prompts(self) -> list[str]:
        meta = self.result.meta if self.result is not None else None
        return list(meta.prompts) if meta is not None and meta.prompts else list(self.host.prompts())

    def _tokens(self, text: str) -> tuple[list[int], list[str]]:
        """Token ids and strings of a prompt, tokenized as the run did (cached: head switches reuse them)."""
        meta = self.result.meta
        prepend = meta.prepend_bos if meta is not None else self.host.prepend_bos
        key = (text, prepend, self.host.model.fingerprint)
        if key not in self._token_cache:
            ids = self.host.model.tokenize(text, prepend_bos=prepend)
            self._token_cache[key] = (ids, self.host.model.str_tokens(ids))
        return self._token_cache[key]

    def _store(self) -> StoredPatterns | None:
        model, path = self.host.model, self.host.store_path
        if model is None or path is None:
            return None
        if self._stored is None or self._stored.path != path or self._stored.fingerprint != model.fingerprint:
            self._stored = StoredPatterns(path, model.fingerprint, model.n_layers)
        return self._stored

    def _read(self, stored: StoredPatterns, tokens, layer: int, head: int | None) -> np.ndarray | None:
        if head is None:
            patterns = stored.layer(tokens, layer)
            return None if patterns is None else patterns.mean(0)
        return stored.head(tokens, layer, head)

    def load_selection(self) -> bool:
        """Read the selected head (or layer mean, or prompt mean, plus the compare prompt) and draw it.

        Returns False when something is missing: then it is captured into the store in
        the background (once) and drawn when that ends, or a Run is needed.
        """
        result = self.result
        options = self.options()
        key = self._data_key(options)
        model = self.host.model
        if model is None or (result.meta is not None and result.meta.model_fingerprint and result.meta.model_fingerprint != model.fingerprint):
            self._set_status("The shown result is from another model; Run to recompute.", error=True)
            return False
        stored = self._store()
        if stored is None:
            self.run()  # no store to read from: recompute with the new selection
            return False
        layer, head, average, compare_prompt = key
        texts = self._prompts() if average == "prompts" else self._prompts()[:1]
        tokenized = [self._tokens(t) for t in texts]
        other = self._tokens(compare_prompt) if compare_prompt else None
        patterns = [self._read(stored, ids, layer, head) for ids, _ in tokenized]
        other_pattern = self._read(stored, other[0], layer, head) if other is not None else None
        missing = [t for t, p in zip(texts, patterns) if p is None] + ([compare_prompt] if other is not None and other_pattern is None else [])
        if missing:
            self._capture(missing)
            return False
        if len(patterns) == 1:
            self._main, self._main_labels = patterns[0], tokenized[0][1]
        else:
            # Prompts are averaged position by position over their shared length (as the analysis does).
            length = min(p.shape[0] for p in patterns)
            self._main = np.mean([p[:length, :length] for p in patterns], axis=0).astype(np.float32)
            self._main_labels = position_labels([strings for _, strings in tokenized], length)
        self._compare_prompt = compare_prompt
        self._compare = other_pattern if other_pattern is not None else np.zeros((0, 0), dtype=np.float32)
        self._compare_labels = other[1] if other is not None else []
        self._loaded_key = key
        self._drawn = None  # new arrays (an id() of a freed one may be reused)
        self.grid.set_selected(layer, head)
        self._draw_selected()
        return True

    def _capture(self, texts: list[str]) -> None:
        """Capture the missing prompts' patterns into the store once, in the background, then draw."""
        if self._capture_task is not None and not self._capture_task.state.ended:
            return
        again = [t for t in texts if t in self._captured]
        if again:  # captured before and still not found: do not loop
            self._set_status(f"The activation store does not hold the patterns of {again[0][:40]!r}; Run to recompute.", error=True)
            return
        self._captured.update(texts)
        from workbench.capture import capture_activations

        model, path = self.host.model, self.host.store_path
        meta = self.result.meta
        prepend = meta.prepend_bos if meta is not None else self.host.prepend_bos
        hooks = pattern_hooks(model.n_layers)
        unique = list(dict.fromkeys(texts))
        self._set_status(f"Reading attention patterns of {len(unique)} prompt(s) into the activation store…")

        def captured(_value) -> None:
            self._stored = None
            if self.load_selection():
                self._set_status(self._provenance(self.result))

        self._capture_task = self.host.start_job(
            "Capture attention patterns", lambda: capture_activations(model, unique, hooks, path, prepend_bos=prepend), captured
        )

    # -- exports and state ---------------------------------------------------------------------------

    def figure_svg(self) -> str | None:
        """The selected pattern (and the compare prompt's) as drawn now, as report-quality SVG."""
        if self.result is None or self._main.size == 0:
            return None
        options = self.options()
        scale, mask = options["scale"], options["mask_first_token"]
        n = self._main.shape[0]
        destination = min(max(options["destination"] if options["destination"] >= 0 else n + options["destination"], 0), n - 1)
        parts = [pattern_svg(display_values(self._main, scale, mask, self.result.causal), self._main_labels, self._main_labels, title=self._title(options), scale=scale, highlight_row=destination)]
        if self._compare_prompt and self._compare.size:
            parts.append(
                pattern_svg(
                    display_values(self._compare, scale, mask, self.result.causal), self._compare_labels, self._compare_labels,
                    title=f"{self._title(options)}, second prompt", scale=scale, highlight_row=min(destination, self._compare.shape[0] - 1),
                )
            )
        return side_by_side(parts) if len(parts) > 1 else parts[0][0]

    def model_changed(self, model) -> None:
        self._stored = None
        super().model_changed(model)
