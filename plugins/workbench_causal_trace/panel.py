"""The causal-tracing panel: one token × layer map per restored kind, as in the paper's figure,
showing P(answer) or the indirect effect. Hovering a cell reads its value; clicking one
selects that (token, layer) in every map."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QButtonGroup, QHBoxLayout, QLabel, QRadioButton, QSplitter, QVBoxLayout, QWidget

from workbench.gui.panels import AnalysisPanel
from workbench.gui.widgets.heatmap import HeatmapView

from .result import KIND_TITLES, CausalTraceResult

KIND_COLOURS = {"resid": "purples", "mlp": "greens", "attn": "reds"}
# Short, so three maps fit side by side in a narrow dock; the headline names the answer.
SHORT_TITLES = {"resid": "residual stream", "mlp": "MLP (window)", "attn": "attention (window)"}


class CausalTracePanel(AnalysisPanel):
    def build_view(self) -> QWidget:
        self.show_effect = False
        view = QWidget()
        layout = QVBoxLayout(view)
        layout.setContentsMargins(0, 0, 0, 0)

        header = QHBoxLayout()
        self.headline = QLabel("Give a subject that appears in the prompt, then Run.")
        self.headline.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.headline.setWordWrap(True)
        header.addWidget(self.headline, 1)
        self.mode_group = QButtonGroup(view)
        for index, text in enumerate(("P(answer)", "indirect effect")):
            button = QRadioButton(text)
            button.setChecked(index == 0)
            self.mode_group.addButton(button, index)
            header.addWidget(button)
        self.mode_group.idToggled.connect(self._mode_toggled)
        layout.addLayout(header)

        self.splitter = QSplitter(Qt.Horizontal)
        self.maps: dict[str, HeatmapView] = {}
        for kind in KIND_TITLES:
            heatmap = HeatmapView()
            heatmap.cell_hovered.connect(lambda row, col, kind=kind: self._hovered(kind, row, col))
            heatmap.cell_clicked.connect(lambda row, col: self.select_cell(row, col))
            self.maps[kind] = heatmap
            self.splitter.addWidget(heatmap)
        layout.addWidget(self.splitter, 1)
        self.cell_info = QLabel("")
        self.cell_info.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.cell_info)
        return view

    def figure_widget(self) -> QWidget:
        return self.splitter

    def render(self, result: CausalTraceResult) -> None:
        self.headline.setText(
            f"Answer {result.answer!r}: P = {result.high_score:.3f} clean, {result.low_score:.3f} with the subject noised "
            f"(noise σ {result.noise:.3g}, {result.samples} samples, {result.method} path). "
            "Each cell restores one clean state; * marks subject tokens."
        )
        labels = result.token_labels()
        for kind, heatmap in self.maps.items():
            heatmap.setVisible(kind in result.kinds)
            if kind not in result.kinds:
                continue
            layers = [str(layer) for layer in range(result.table(kind).shape[1])]
            if self.show_effect:
                heatmap.set_data(result.indirect_effect(kind), layers, labels, title=f"{SHORT_TITLES[kind]}: effect",
                                 x_title="layer", y_title="token", colormap_name="diverging", signed=True, value_format="{:+.4f}")
            else:
                table = result.table(kind)
                heatmap.set_data(table, layers, labels, title=SHORT_TITLES[kind], x_title="layer",
                                 y_title="token", colormap_name=KIND_COLOURS[kind],
                                 levels=result.colour_limits(kind),
                                 signed=False, value_format="{:.4f}")

    def _mode_toggled(self, button_id: int, checked: bool) -> None:
        if checked:
            self.show_effect = button_id == 1
            if self.result is not None:
                self.render(self.result)

    def _hovered(self, kind: str, row: int, col: int) -> None:
        result = self.result
        if result is None or kind not in result.kinds:
            return
        value = float(result.table(kind)[row, col])
        self.cell_info.setText(
            f"{KIND_TITLES[kind]}, token {row} {result.tokens[row]!r}, layer {col}: "
            f"P = {value:.4f}, indirect effect {value - result.low_score:+.4f}"
        )

    def select_cell(self, row: int, col: int) -> None:
        for heatmap in self.maps.values():
            heatmap.select_cell(row, col)

    def view_state(self) -> dict:
        return {"effect": self.show_effect}

    def restore_view_state(self, state: dict) -> None:
        self.mode_group.button(1 if state.get("effect") else 0).setChecked(True)
