"""The generic result view: a result's report section (SVG figures, tables, how to read them).

Every result type can render a ReportSection, so this view shows any plugin's
result in the app without the plugin writing Qt code. Figures and tables are
laid out side by side while there is room and wrap otherwise.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QByteArray, QSize, Qt, QTimer
from PySide6.QtGui import QPixmap
from PySide6.QtSvgWidgets import QSvgWidget
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHeaderView,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...results.base import Figure, ReportSection, Table
from .flow_layout import FlowLayout
from .style import MUTED_COLOUR, TEXT_COLOUR, label, set_background

TABLE_MAX_VISIBLE_ROWS = 16
# Wider text (prompts, generations) is elided; the cell's tooltip has it whole. Without a cap one
# long prompt makes the table wider than the panel, and the whole view scrolls sideways.
TABLE_MAX_COLUMN_WIDTH = 340
CONTENT_MARGIN, CARD_MARGIN = 8, 8

# A tall figure is shrunk to fit the visible height, but never below this (text must stay legible).
MIN_FIGURE_SCALE = 0.6


class SvgFigure(QSvgWidget):
    """An SVG drawn at its natural size times `scale`, its aspect ratio kept."""

    def __init__(self, svg: str, parent=None):
        super().__init__(parent)
        self.svg = svg
        self.load(QByteArray(svg.encode("utf-8")))
        self.renderer().setAspectRatioMode(Qt.KeepAspectRatio)
        self.setSizePolicy(QSizePolicy.Fixed, QSizePolicy.Fixed)
        self.scale = 1.0
        self.setFixedSize(self.natural_size())

    def natural_size(self) -> QSize:
        size = self.renderer().defaultSize()
        return size if size.isValid() and not size.isEmpty() else QSize(400, 300)

    def sizeHint(self) -> QSize:
        natural = self.natural_size()
        return QSize(round(natural.width() * self.scale), round(natural.height() * self.scale))

    def set_scale(self, scale: float) -> None:
        if abs(scale - self.scale) > 0.01:
            self.scale = scale
            self.setFixedSize(self.sizeHint())


def _format_cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "nan"
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    if isinstance(value, str):
        return value.replace("\n", "\\n")
    return str(value)


class TableView(QTableWidget):
    """A read-only table sized to its contents (up to TABLE_MAX_VISIBLE_ROWS rows, then it scrolls)."""

    def __init__(self, table: Table, parent=None):
        super().__init__(len(table.rows), len(table.columns), parent)
        self.table = table
        self.setHorizontalHeaderLabels([str(c) for c in table.columns])
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.verticalHeader().setVisible(False)
        # Fixed row heights and sampled column widths: sizing every row of a long table is slow.
        self.verticalHeader().setSectionResizeMode(QHeaderView.Fixed)
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        self.horizontalHeader().setResizeContentsPrecision(TABLE_MAX_VISIBLE_ROWS * 4)
        for r, row in enumerate(table.rows):
            for c, value in enumerate(row):
                item = QTableWidgetItem(_format_cell(value))
                item.setToolTip(repr(value))
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                self.setItem(r, c, item)
        self.resizeColumnsToContents()
        self.setTextElideMode(Qt.ElideRight)
        for c in range(len(table.columns)):
            if self.columnWidth(c) > TABLE_MAX_COLUMN_WIDTH:
                self.setColumnWidth(c, TABLE_MAX_COLUMN_WIDTH)
        self.setSizePolicy(QSizePolicy.Fixed, QSizePolicy.Fixed)
        self.setFixedSize(self.sizeHint())

    def fit_width(self, room: int) -> None:
        """Take at most `room` pixels across; a wider table scrolls sideways inside itself."""
        natural = self.sizeHint()
        if natural.width() <= room:
            self.setFixedSize(natural)
        else:
            self.setFixedSize(max(room, 120), natural.height() + self.horizontalScrollBar().sizeHint().height())

    def sizeHint(self) -> QSize:
        header = self.horizontalHeader()
        width = header.length() + 2 * self.frameWidth() + self.verticalScrollBar().sizeHint().width() * (len(self.table.rows) > TABLE_MAX_VISIBLE_ROWS)
        rows = min(len(self.table.rows), TABLE_MAX_VISIBLE_ROWS)
        height = header.height() + sum(self.rowHeight(r) for r in range(rows)) + 2 * self.frameWidth()
        return QSize(width, height)


def _card(title: str, body: QWidget, caption: str = "") -> QWidget:
    card = QWidget()
    layout = QVBoxLayout(card)
    layout.setContentsMargins(0, 0, CARD_MARGIN, CARD_MARGIN)
    layout.setSpacing(3)
    layout.addWidget(label(title, bold=True))
    layout.addWidget(body)
    if caption:
        note = label(caption, colour=TEXT_COLOUR, wrap=True)
        note.setMaximumWidth(max(body.sizeHint().width(), 240))
        layout.addWidget(note)
    layout.addStretch(1)
    card.setSizePolicy(QSizePolicy.Fixed, QSizePolicy.Fixed)
    return card


class ReportView(QScrollArea):
    """Shows a ReportSection; `figure_widget()` is what figure exports capture."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.NoFrame)
        self.section: ReportSection | None = None
        self._figures: list[QWidget] = []
        self._tables: list[TableView] = []
        self.clear("No result yet. Set the parameters and press Run.")

    def clear(self, message: str = "") -> None:
        self.section = None
        self._figures, self._tables = [], []
        content = QWidget()
        layout = QVBoxLayout(content)
        layout.addWidget(label(message, colour=MUTED_COLOUR, wrap=True))
        layout.addStretch(1)
        self._set_content(content)

    def show_report(self, section: ReportSection) -> None:
        self.section = section
        self._figures, self._tables = [], []
        content = QWidget()
        set_background(content, "white")
        layout = QVBoxLayout(content)
        layout.setContentsMargins(CONTENT_MARGIN, 6, CONTENT_MARGIN, 6)
        layout.addWidget(label(section.title, bold=True, size_delta=4))
        if section.how_to_read:
            layout.addWidget(label(section.how_to_read, colour=TEXT_COLOUR, wrap=True))
        cards = QWidget()
        flow = FlowLayout(cards, spacing=12)
        for figure in section.figures:
            body = self._figure_body(figure)
            self._figures.append(body)
            flow.addWidget(_card(figure.title, body, figure.caption))
        for table in section.tables:
            view = TableView(table)
            self._tables.append(view)
            flow.addWidget(_card(table.title, view))
        layout.addWidget(cards)
        for note in section.notes:
            layout.addWidget(label(note, wrap=True))
        layout.addStretch(1)
        self._set_content(content)
        QTimer.singleShot(0, self, self._fit_to_viewport)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit_to_viewport()

    def _fit_to_viewport(self) -> None:
        """Shrink SVG figures to the visible width and height (down to MIN_FIGURE_SCALE) and let
        wide tables scroll inside themselves, so the view itself never needs to scroll sideways."""
        content = self.widget()
        if content is None:
            return
        room_across = self.viewport().width() - 2 * CONTENT_MARGIN - CARD_MARGIN
        for table in self._tables:
            table.fit_width(room_across)
        # Every figure fits the viewport's height (with its caption), wherever it sits: fitting
        # the room left below a figure's top shrank every figure after the first to the minimum.
        room_down = self.viewport().height() - 50
        for figure in self._figures:
            if not isinstance(figure, SvgFigure):
                continue
            natural = figure.natural_size()
            if natural.width() <= 0 or natural.height() <= 0:
                continue
            fit = min(1.0, room_down / natural.height(), room_across / natural.width())
            figure.set_scale(max(MIN_FIGURE_SCALE, fit))

    @staticmethod
    def _figure_body(figure: Figure) -> QWidget:
        if figure.svg:
            return SvgFigure(figure.svg)
        label = QLabel()
        if figure.png:
            pixmap = QPixmap()
            pixmap.loadFromData(figure.png, "PNG")
            label.setPixmap(pixmap)
        else:
            label.setText("(empty figure)")
        return label

    def _set_content(self, content: QWidget) -> None:
        old = self.takeWidget()
        if old is not None:
            old.deleteLater()
        self.setWidget(content)

    # -- what exports and tests look at --------------------------------------------------------------

    def figure_widgets(self) -> list[QWidget]:
        return list(self._figures)

    def table_views(self) -> list[TableView]:
        return list(self._tables)

    def figure_widget(self) -> QWidget:
        """The first figure, or the whole view when the report has none."""
        return self._figures[0] if self._figures else self.widget()
