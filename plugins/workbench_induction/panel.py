"""The induction panel: three layer x head score maps, the ranked heads, the ablations and the
in-context learning curve. Clicking a head in any map selects it everywhere: its cell in the
three maps, its row in the tables and, when it was ablated, its curve in the plot."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from workbench.gui.panels import AnalysisPanel
from workbench.gui.widgets.heatmap import HeatmapView

from .result import SCORE_KINDS, SCORE_TITLES, InductionResult, head_name

CURVE_PENS = {"clean": pg.mkPen("#1f77b4", width=2), "selected": pg.mkPen("#d62728", width=2), "previous": pg.mkPen("#2ca02c", width=2)}


def _number_item(value: float, digits: int = 3) -> QTableWidgetItem:
    """A cell that sorts by value, not by its text."""
    item = QTableWidgetItem()
    item.setData(Qt.DisplayRole, round(float(value), digits))
    item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
    return item


def _text_item(text: str) -> QTableWidgetItem:
    return QTableWidgetItem(str(text))


def _short_header(column: str) -> str:
    if column.startswith("share of ICL gain"):
        return "gain lost"
    return column.replace("-ablated loss", " loss").replace("-ablated rise", " rise").replace("prev-token", "prev.").replace("induction", "ind.")


def _table(columns: list[str]) -> QTableWidget:
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(columns)
    table.setEditTriggers(QAbstractItemView.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectRows)
    table.setSelectionMode(QAbstractItemView.SingleSelection)
    table.verticalHeader().setVisible(False)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
    table.verticalHeader().setDefaultSectionSize(22)
    return table


class InductionPanel(AnalysisPanel):
    def build_view(self) -> QWidget:
        self.selected: tuple[int, int] | None = None
        self._pending_selection: tuple[int, int] | None = None  # from a workspace, applied on render
        view = QWidget()
        layout = QVBoxLayout(view)
        layout.setContentsMargins(0, 0, 0, 0)

        maps = QSplitter(Qt.Horizontal)
        self.maps: dict[str, HeatmapView] = {}
        for kind in SCORE_KINDS:
            heatmap = HeatmapView()
            heatmap.cell_clicked.connect(lambda row, col: self.select_head(row, col))
            self.maps[kind] = heatmap
            maps.addWidget(heatmap)

        self.ranked = _table(["rank", "head", "induction", "prev-token", "dup-token"])
        self.ranked.setSortingEnabled(True)
        self.ranked.itemSelectionChanged.connect(lambda: self._table_selected(self.ranked))
        self.ablations = _table(["head"])
        self.ablations.itemSelectionChanged.connect(lambda: self._table_selected(self.ablations))
        self.tables = QTabWidget()
        self.tables.addTab(self.ranked, "Ranked heads")
        self.tables.addTab(self.ablations, "Ablations")

        self.curve = pg.PlotWidget(background="w")
        self.curve.setTitle("Loss along the repeated sequence", color="#222")
        self.curve.setLabel("bottom", "position of the predicted token", color="#222")
        self.curve.setLabel("left", "loss (nats)", color="#222")
        self.curve.showGrid(x=True, y=True, alpha=0.2)
        # Bottom left: the first copy sits at the no-context loss, high up, so that corner stays clear.
        self.curve.addLegend(offset=(10, -10), brush=pg.mkBrush(255, 255, 255, 220), labelTextColor="#222")
        self.curve.setMenuEnabled(False)

        lower = QSplitter(Qt.Horizontal)
        lower.addWidget(self.tables)
        lower.addWidget(self.curve)
        lower.setSizes([560, 440])
        body = QSplitter(Qt.Vertical)
        body.addWidget(maps)
        body.addWidget(lower)
        body.setSizes([420, 300])

        self.notes = QLabel("No result yet. Set the parameters and press Run (no prompt needed: the analysis makes its own random sequences).")
        self.notes.setWordWrap(True)
        self.notes.setTextFormat(Qt.PlainText)
        self.notes.setStyleSheet("color: #333")
        self.head_info = QLabel("Click a head in any map to select it everywhere.")
        self.head_info.setStyleSheet("font-weight: bold")
        layout.addWidget(self.head_info)
        layout.addWidget(body, 1)
        layout.addWidget(self.notes)
        return view

    # -- drawing ------------------------------------------------------------------------------------

    def render(self, result: InductionResult) -> None:
        layers = [f"L{i}" for i in range(result.n_layers)]
        heads = [f"H{i}" for i in range(result.n_heads)]
        for kind, heatmap in self.maps.items():
            # A fixed 0..1 scale: the scores are shares of attention, comparable across maps and models.
            heatmap.set_data(result.scores(kind), x_labels=heads, y_labels=layers, title=SCORE_TITLES[kind], x_title="head", y_title="layer", levels=(0.0, 1.0), signed=False)

        self.ranked.setSortingEnabled(False)
        order = result.top("induction", result.n_layers * result.n_heads)
        self.ranked.setRowCount(len(order))
        for row, (layer, head, _) in enumerate(order):
            rank = QTableWidgetItem()
            rank.setData(Qt.DisplayRole, row + 1)
            name = _text_item(head_name(layer, head))
            name.setData(Qt.UserRole, (layer, head))
            self.ranked.setItem(row, 0, rank)
            self.ranked.setItem(row, 1, name)
            for col, kind in enumerate(SCORE_KINDS, start=2):
                self.ranked.setItem(row, col, _number_item(result.scores(kind)[layer, head]))
        self.ranked.setSortingEnabled(True)
        self.ranked.sortItems(0, Qt.AscendingOrder)

        columns = result.ablation_columns()
        self.ablations.clear()
        self.ablations.setColumnCount(len(columns))
        # Short headers keep the table narrow; the report's full names are the tooltips.
        for c, column in enumerate(columns):
            header = QTableWidgetItem(_short_header(column))
            header.setToolTip(column)
            self.ablations.setHorizontalHeaderItem(c, header)
        rows = result.ablation_rows()
        self.ablations.setRowCount(len(rows))
        for r, (values, (layer, head)) in enumerate(zip(rows, result.ablated_heads)):
            for c, value in enumerate(values):
                item = _number_item(value) if isinstance(value, float) else _text_item(value)
                if c == 0:
                    item.setData(Qt.UserRole, (layer, head))
                if columns[c] == "matters" and value == "no":
                    item.setForeground(QColor("#b26a00"))
                self.ablations.setItem(r, c, item)
        self.tables.setTabText(1, f"Ablations (clean loss {result.clean_loss:.3f})")

        section = result.report()
        self.notes.setText("\n".join([section.how_to_read] + section.notes))
        layer, head = self._pending_selection or tuple(result.top("induction", 1)[0][:2])
        self._pending_selection = None
        self.select_head(layer, head)

    def _draw_curves(self, result: InductionResult) -> None:
        plot = self.curve
        plot.clear()
        if plot.plotItem.legend is not None:
            plot.plotItem.legend.clear()
        x = np.arange(1, result.seq_len)
        plot.plot(x, result.clean_loss_curve, pen=CURVE_PENS["clean"], name="clean")
        kind = result.verdict_kind
        j = result.ablation_kinds.index(kind)
        shown = []
        if self.selected is not None and list(self.selected) in result.ablated_heads:
            shown.append(("selected", self.selected))
        top_previous = tuple(result.top("previous_token", 1)[0][:2])
        if top_previous != self.selected and list(top_previous) in result.ablated_heads:
            shown.append(("previous", top_previous))
        for pen, (layer, head) in shown:
            index = result.ablated_heads.index([layer, head])
            plot.plot(x, result.ablated_loss_curves[index, j], pen=CURVE_PENS[pen], name=f"{head_name(layer, head)} {kind}-ablated")
        # Where the second copy starts: from here on the earlier copy makes tokens predictable.
        plot.addItem(pg.InfiniteLine(result.second_start, angle=90, pen=pg.mkPen("#888", style=Qt.DashLine)))
        plot.setXRange(1, result.seq_len - 1, padding=0.02)

    # -- selection ------------------------------------------------------------------------------------

    def select_head(self, layer: int, head: int) -> None:
        """Select a head in the three maps, the tables and the curve plot."""
        result = self.result
        if result is None or not (0 <= layer < result.n_layers and 0 <= head < result.n_heads):
            return
        self.selected = (layer, head)
        for heatmap in self.maps.values():
            heatmap.select_cell(layer, head)
        for table in (self.ranked, self.ablations):
            self._select_row(table, (layer, head))
        self._draw_curves(result)
        scores = ", ".join(f"{kind.replace('_', '-')} {result.scores(kind)[layer, head]:.3f}" for kind in SCORE_KINDS)
        kv = f" (key/value head {result.kv_head(head)})" if result.n_kv_heads < result.n_heads else ""
        self.head_info.setText(f"{head_name(layer, head)}{kv}: {scores}")

    def _select_row(self, table: QTableWidget, head: tuple[int, int]) -> None:
        column = 1 if table is self.ranked else 0
        table.blockSignals(True)
        try:
            table.clearSelection()
            for row in range(table.rowCount()):
                item = table.item(row, column)
                if item is not None and tuple(item.data(Qt.UserRole) or ()) == head:
                    table.selectRow(row)
                    table.scrollToItem(item)
                    break
        finally:
            table.blockSignals(False)

    def _table_selected(self, table: QTableWidget) -> None:
        column = 1 if table is self.ranked else 0
        rows = table.selectionModel().selectedRows()
        if rows:
            item = table.item(rows[0].row(), column)
            head = item.data(Qt.UserRole) if item is not None else None
            if head:
                self.select_head(int(head[0]), int(head[1]))

    # -- exports and workspaces -----------------------------------------------------------------------

    def figure_widget(self) -> QWidget:
        return self.view

    def view_state(self) -> dict:
        return {"selected": list(self.selected) if self.selected else None, "table": self.tables.currentIndex()}

    def restore_view_state(self, state: dict) -> None:
        self.tables.setCurrentIndex(int(state.get("table") or 0))
        selected = state.get("selected")
        if selected:
            self._pending_selection = (int(selected[0]), int(selected[1]))
            if self.result is not None:
                self.select_head(*self._pending_selection)
