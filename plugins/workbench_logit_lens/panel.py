"""The logit lens panel: P(final prediction) per layer and position with each cell's decoded
top token printed in it, hover for the top-k, and a click opens that position's table."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from workbench.figures.tokens import visible_token
from workbench.gui.panels import AnalysisPanel
from workbench.gui.widgets.heatmap import HeatmapView


class _LensHeatmap(HeatmapView):
    def __init__(self, panel: LogitLensPanel):
        super().__init__()
        self._panel = panel

    def describe_cell(self, row: int, col: int) -> str:
        result = self._panel.result
        if result is None:
            return super().describe_cell(row, col)
        tops = ", ".join(f"{visible_token(result.top_strings_at(row, col, k))} {float(result.top_probs[row, col, k]):.3f}" for k in range(min(3, result.top_probs.shape[-1])))
        return (
            f"{result.layer_names[row]} at {col} {visible_token(result.str_tokens[col])}: {tops} · "
            f"P(final {visible_token(result.final_top_tokens[col])}) {float(result.p_final_top[row, col]):.3f}"
        )


class LogitLensPanel(AnalysisPanel):
    def build_view(self) -> QWidget:
        self.heatmap = _LensHeatmap(self)
        self.heatmap.cell_clicked.connect(lambda row, col: self.show_position(col))
        self.table_title = QLabel("")
        self.table_title.setStyleSheet("font-weight: bold")
        self.table = QTableWidget()
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        lower = QWidget()
        column = QVBoxLayout(lower)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.table_title)
        column.addWidget(self.table, 1)
        splitter = QSplitter(Qt.Vertical)
        splitter.addWidget(self.heatmap)
        splitter.addWidget(lower)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        self.position = -1
        return splitter

    def render(self, result) -> None:
        self.heatmap.set_data(
            result.p_final_top, x_labels=result.str_tokens, y_labels=result.layer_names,
            title="P(final prediction) decoded after each layer (each cell: its top token)", x_title="position (token)", y_title="layer", levels=(0.0, 1.0),
        )
        self.heatmap.set_cell_text(result.top_strings)
        position = self.position if -len(result.str_tokens) <= self.position < len(result.str_tokens) else -1
        self.show_position(position)

    def show_position(self, position: int) -> None:
        """The table of one position (click a column): every layer's top-k tokens there."""
        result = self.result
        if result is None:
            return
        n = len(result.str_tokens)
        column = position % n
        self.position = position if position < 0 else column
        self.heatmap.select_cell(None)
        k = result.top_probs.shape[-1]
        self.table_title.setText(
            f"Position {column} {visible_token(result.str_tokens[column])}: top {k} decoded after each layer "
            f"(final prediction {visible_token(result.final_top_tokens[column])}; click another column to change)"
        )
        self.table.clear()
        self.table.setColumnCount(1 + k)
        self.table.setRowCount(len(result.layer_names))
        self.table.setHorizontalHeaderLabels(["layer"] + [f"#{i + 1}" for i in range(k)])
        for row, name in enumerate(result.layer_names):
            self.table.setItem(row, 0, QTableWidgetItem(name))
            for i in range(k):
                self.table.setItem(row, 1 + i, QTableWidgetItem(f"{visible_token(result.top_strings_at(row, column, i))}  {float(result.top_probs[row, column, i]):.3f}"))
        self.table.resizeColumnsToContents()

    def figure_widget(self) -> QWidget:
        return self.heatmap

    def view_state(self) -> dict:
        return {"position": self.position}

    def restore_view_state(self, state: dict) -> None:
        self.position = int(state.get("position", -1))
        if self.result is not None:
            self.show_position(self.position)
