"""The patching panel: one heatmap per target (chosen in a selector), normalised or raw, centred at 0.

Hovering a cell names it in full (head with its key/value head under grouped-query
attention, token at both prompts) with its patched and normalised values.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from workbench.gui.panels import AnalysisPanel
from workbench.gui.widgets.heatmap import HeatmapView

from .result import ActivationPatchingResult
from .targets import TARGETS

SHOWN_TOP = 5


class PatchingPanel(AnalysisPanel):
    def build_view(self) -> QWidget:
        self._pending: dict = {}  # view state from a workspace, applied on the next render
        view = QWidget()
        layout = QVBoxLayout(view)
        layout.setContentsMargins(0, 0, 0, 0)

        self.summary = QLabel(
            "No result yet. Type the clean prompt, and the corrupted one in 'corrupted' or as a second prompt line "
            "(same number of tokens), then press Run."
        )
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.PlainText)
        self.target_box = QComboBox()
        self.target_box.setToolTip("which activation was patched")
        self.target_box.setSizeAdjustPolicy(QComboBox.AdjustToContents)
        self.target_box.currentIndexChanged.connect(lambda _i: self._draw())
        self.normalised_box = QCheckBox("normalised")
        self.normalised_box.setToolTip("(patched − corrupted) / (clean − corrupted): 1 = clean restored, 0 = no change")
        self.normalised_box.setChecked(True)
        self.normalised_box.toggled.connect(lambda _on: self._draw())
        controls = QHBoxLayout()
        controls.addWidget(QLabel("patched:"))
        controls.addWidget(self.target_box)
        controls.addWidget(self.normalised_box)
        controls.addStretch(1)

        self.heatmap = HeatmapView()
        self.heatmap.cell_hovered.connect(self._hovered)
        self.heatmap.cell_clicked.connect(self._hovered)
        self.cell_info = QLabel(" ")
        self.cell_info.setTextFormat(Qt.PlainText)
        self.cell_info.setStyleSheet("font-weight: bold")
        self.top_info = QLabel(" ")
        self.top_info.setWordWrap(True)
        self.top_info.setTextFormat(Qt.PlainText)
        self.top_info.setStyleSheet("color: #333")

        layout.addWidget(self.summary)
        layout.addLayout(controls)
        layout.addWidget(self.cell_info)
        layout.addWidget(self.heatmap, 1)
        layout.addWidget(self.top_info)
        return view

    # -- drawing ----------------------------------------------------------------------------------------

    def render(self, result: ActivationPatchingResult) -> None:
        wanted = self._pending.get("target") or self.current_target()
        if "normalised" in self._pending:
            normalised = bool(self._pending["normalised"])
        else:
            normalised = result.normalise
        self._pending = {}
        self.target_box.blockSignals(True)
        self.normalised_box.blockSignals(True)
        try:
            self.target_box.clear()
            for name in result.targets:
                self.target_box.addItem(TARGETS[name].title, name)
            index = result.targets.index(wanted) if wanted in result.targets else 0
            self.target_box.setCurrentIndex(index)
            self.normalised_box.setChecked(normalised)
        finally:
            self.target_box.blockSignals(False)
            self.normalised_box.blockSignals(False)
        differing = ", ".join(f"{p} ({result.position_labels[p]})" for p in result.differing_positions)
        self.summary.setText(
            f"Metric {result.metric_text()}: clean {result.clean_value:.4g}, corrupted {result.corrupted_value:.4g}. "
            f"The prompts differ at position {differing}. Each cell: the corrupted run with that one activation taken from the clean run."
        )
        self._draw()

    def current_target(self) -> str | None:
        return self.target_box.currentData()

    def _draw(self) -> None:
        result = self.result
        target = self.current_target()
        if result is None or target is None:
            return
        normalised = self.normalised_box.isChecked()
        x_labels, y_labels = result.axis_labels(target, short=True)
        axes = TARGETS[target].axes
        self.heatmap.set_data(
            result.grid(target, normalised),
            x_labels=x_labels,
            y_labels=y_labels,
            title=TARGETS[target].title + (" (normalised)" if normalised else ""),
            x_title="head" if axes == ("head",) else "position (* where the corrupted prompt differs)",
            y_title="layer · head" if target == "head_out_by_pos" else "layer",
            signed=True,
            value_format="{:.3f}",
        )
        self.heatmap.setToolTip(result.caption(normalised))
        top = "; ".join(f"{result.cell_name(target, cell)} {norm:.2f}" for cell, _, norm in result.top_cells(target, SHOWN_TOP))
        self.top_info.setText(f"Most restoring (normalised): {top}\n{result.caption(normalised)}")
        self.cell_info.setText("Hover a cell for its values.")

    def cell_at(self, row: int, col: int) -> tuple[int, ...]:
        """The (layer, ...) cell of the shown grid at a heatmap row and column."""
        target = self.current_target()
        if target == "head_out_by_pos":
            layer, head = divmod(row, self.result.n_heads)
            return (layer, col, head)
        return (row, col)

    def _hovered(self, row: int, col: int) -> None:
        result = self.result
        target = self.current_target()
        if result is None or target is None:
            return
        cell = self.cell_at(row, col)
        raw = float(result.raw(target)[cell])
        norm = float(result.normalised(target)[cell])
        self.cell_info.setText(f"{result.cell_name(target, cell)}: patched {raw:.4g}, normalised {norm:.3f}")

    # -- workspaces -------------------------------------------------------------------------------------

    def figure_widget(self) -> QWidget:
        return self.heatmap

    def view_state(self) -> dict:
        return {"target": self.current_target(), "normalised": self.normalised_box.isChecked()}

    def restore_view_state(self, state: dict) -> None:
        self._pending = {k: v for k, v in state.items() if v is not None}
        if self.result is not None:
            self.render(self.result)
