"""The QK/OV panel: a head's QK and OV maps on a token set, the layer × head tables, composition.

Run computes everything (the whole-model tables take a while on big models). Choosing
another head afterwards (the head picker, or a click on any layer × head table or
composition matrix) recomputes only that head's restricted circuits, in the background,
and keeps the tables; "Redraw circuits" does the same with the token set now in the form.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from workbench.errors import WorkbenchError
from workbench.gui.panels import AnalysisPanel
from workbench.gui.widgets.heatmap import HeatmapView

from .result import QKOVResult, head_label, visible_token

COMPOSITION_TITLES = {"q": "Q-composition", "k": "K-composition", "v": "V-composition"}


class QKOVPanel(AnalysisPanel):
    def build_view(self) -> QWidget:
        self._pending_view: dict = {}
        view = QWidget()
        layout = QVBoxLayout(view)
        layout.setContentsMargins(0, 0, 0, 0)

        bar = QHBoxLayout()
        bar.addWidget(QLabel("Head"))
        self.head_picker = QComboBox()
        self.head_picker.setToolTip("The head whose QK and OV circuits are drawn; choosing one recomputes only its circuits")
        self.head_picker.activated.connect(self._picker_activated)
        bar.addWidget(self.head_picker)
        self.redraw_button = QPushButton("Redraw circuits")
        self.redraw_button.setToolTip("Recompute the chosen head's QK and OV maps with the token set now in the form (the tables stay)")
        self.redraw_button.clicked.connect(self.redraw_circuits)
        self.redraw_button.setEnabled(False)
        bar.addWidget(self.redraw_button)
        self.head_info = QLabel("Run to compute the circuits (no prompt needed; a prompt gives the 'prompt' token set).")
        self.head_info.setTextFormat(Qt.PlainText)
        self.head_info.setStyleSheet("font-weight: bold")
        self.head_info.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)  # long text must not widen the panel
        bar.addWidget(self.head_info, 1)
        layout.addLayout(bar)

        self.tabs = QTabWidget()
        # -- the chosen head
        self.qk_map = HeatmapView()
        self.ov_map = HeatmapView()
        self.positional_map = HeatmapView()
        self.spectrum = pg.PlotWidget(background="w")
        self.spectrum.setMenuEnabled(False)
        self.spectrum.showGrid(x=True, y=True, alpha=0.2)
        self.spectrum.setLabel("bottom", "Re λ", color="#222")
        self.spectrum.setLabel("left", "Im λ", color="#222")
        self.top_outputs = QTableWidget(0, 3)
        self.top_outputs.setHorizontalHeaderLabels(["attended token", "top output logits (whole vocabulary)", "own rank"])
        self.top_outputs.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.top_outputs.verticalHeader().setVisible(False)
        self.top_outputs.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.top_outputs.horizontalHeader().setStretchLastSection(True)
        self.top_outputs.verticalHeader().setDefaultSectionSize(20)
        maps = QSplitter(Qt.Horizontal)
        maps.addWidget(self.qk_map)
        maps.addWidget(self.ov_map)
        maps.addWidget(self.positional_map)
        self.positional_map.hide()
        lower = QSplitter(Qt.Horizontal)
        lower.addWidget(self.spectrum)
        lower.addWidget(self.top_outputs)
        lower.setSizes([360, 640])
        circuits_tab = QSplitter(Qt.Vertical)
        circuits_tab.addWidget(maps)
        circuits_tab.addWidget(lower)
        circuits_tab.setSizes([520, 260])
        self.tabs.addTab(circuits_tab, "Head circuits")
        # -- every head
        self.copying_map = HeatmapView()
        self.self_top_map = HeatmapView()
        self.qk_score_map = HeatmapView()
        tables = QSplitter(Qt.Horizontal)
        for heatmap in (self.copying_map, self.self_top_map, self.qk_score_map):
            heatmap.cell_clicked.connect(lambda row, col: self.select_head(row, col))
            tables.addWidget(heatmap)
        self.tabs.addTab(tables, "Copying, every head")
        # -- composition
        composition_tab = QWidget()
        composition_layout = QVBoxLayout(composition_tab)
        composition_layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("Mode"))
        self.mode_picker = QComboBox()
        for mode, title in COMPOSITION_TITLES.items():
            self.mode_picker.addItem(title, mode)
        self.mode_picker.setCurrentIndex(1)  # K: the induction mechanism
        self.mode_picker.currentIndexChanged.connect(lambda _i: self._draw_composition())
        row.addWidget(self.mode_picker)
        self.baseline_label = QLabel()
        self.baseline_label.setTextFormat(Qt.PlainText)
        self.baseline_label.setWordWrap(True)
        row.addWidget(self.baseline_label, 1)
        composition_layout.addLayout(row)
        self.composition_map = HeatmapView()
        self.composition_map.cell_clicked.connect(self._composition_clicked)
        composition_layout.addWidget(self.composition_map, 1)
        self.tabs.addTab(composition_tab, "Composition")
        layout.addWidget(self.tabs, 1)

        self.notes = QLabel()
        self.notes.setWordWrap(True)
        self.notes.setTextFormat(Qt.PlainText)
        self.notes.setStyleSheet("color: #333")
        layout.addWidget(self.notes)
        return view

    # -- drawing ------------------------------------------------------------------------------------

    def render(self, result: QKOVResult) -> None:
        labels = [visible_token(t) for t in result.token_strings]
        # Titles stay short: a pyqtgraph title wider than its plot widens the plot past its widget.
        approx = " (≈, RoPE)" if result.rotary else ""
        self.qk_map.set_data(result.qk, x_labels=labels, y_labels=labels, title=f"QK {result.head_name}{approx}", x_title="key (source) token", y_title="query (destination) token", signed=True)
        self.ov_map.set_data(result.ov, x_labels=labels, y_labels=labels, title=f"OV {result.head_name}", x_title="output logit", y_title="attended token", signed=True)
        masked = result.positional_masked()
        if masked is not None:
            positions = [str(p) for p in range(masked.shape[0])]
            self.positional_map.set_data(masked, x_labels=positions, y_labels=positions, title=f"Positional QK {result.head_name}", x_title="key position", y_title="query position", signed=True)
        self.positional_map.setVisible(masked is not None)
        self._draw_spectrum(result)
        self._fill_top_outputs(result)

        heads = [f"H{h}" for h in range(result.n_heads)]
        layers = [f"L{layer}" for layer in range(result.n_layers)]
        self.copying_map.set_data(result.copying_score, x_labels=heads, y_labels=layers, title="OV copying score", x_title="head", y_title="layer", levels=(-1.0, 1.0), signed=True)
        self.self_top_map.set_data(result.ov_self_top_fraction, x_labels=heads, y_labels=layers, title="OV self-top fraction", x_title="head", y_title="layer", levels=(0.0, 1.0), signed=False)
        self.qk_score_map.set_data(result.qk_copying_score, x_labels=heads, y_labels=layers, title="QK eigenvalue score", x_title="head", y_title="layer", levels=(-1.0, 1.0), signed=True)
        self._draw_composition()

        self.head_picker.blockSignals(True)
        self.head_picker.clear()
        for layer in range(result.n_layers):
            for head in range(result.n_heads):
                self.head_picker.addItem(head_label(layer, head), (layer, head))
        self.head_picker.setCurrentIndex(result.layer * result.n_heads + result.head)
        self.head_picker.blockSignals(False)
        self.redraw_button.setEnabled(True)
        self._mark_head(result.layer, result.head)
        section = result.report()
        self.notes.setText("\n".join([section.how_to_read] + section.notes))
        if self._pending_view:
            self._apply_view(self._pending_view)
            self._pending_view = {}

    def _draw_spectrum(self, result: QKOVResult) -> None:
        plot = self.spectrum
        plot.clear()
        eig = result.ov_eigenvalues()
        bound = float(np.abs(eig).max()) if eig.size else 1.0
        plot.addItem(pg.InfiniteLine(0, angle=90, pen=pg.mkPen("#999")))
        plot.addItem(pg.InfiniteLine(0, angle=0, pen=pg.mkPen("#999")))
        positive = eig.real >= 0
        plot.addItem(pg.ScatterPlotItem(eig.real[positive], eig.imag[positive], size=7, brush=pg.mkBrush("#d62728"), pen=None))
        plot.addItem(pg.ScatterPlotItem(eig.real[~positive], eig.imag[~positive], size=7, brush=pg.mkBrush("#1f77b4"), pen=None))
        plot.setXRange(-bound, bound, padding=0.08)
        plot.setYRange(-bound, bound, padding=0.08)
        score = float(result.copying_score[result.layer, result.head])
        plot.setTitle(f"OV eigenvalues {result.head_name}", color="#222")
        plot.setToolTip(f"Eigenvalues of the full OV circuit of {result.head_name} (red: Re λ ≥ 0); copying score {score:+.3f}")

    def _fill_top_outputs(self, result: QKOVResult) -> None:
        table = self.top_outputs
        table.setRowCount(len(result.token_strings))
        for row, (token, strings, values, rank) in enumerate(zip(result.token_strings, result.ov_top_strings, np.asarray(result.ov_top_values).tolist(), np.asarray(result.ov_self_rank).tolist())):
            table.setItem(row, 0, QTableWidgetItem(visible_token(token)))
            table.setItem(row, 1, QTableWidgetItem(", ".join(f"{visible_token(s)} {v:+.2f}" for s, v in zip(strings, values))))
            item = QTableWidgetItem()
            item.setData(Qt.DisplayRole, int(rank) + 1)
            table.setItem(row, 2, item)

    def _draw_composition(self) -> None:
        result = self.result
        if result is None:
            return
        mode = self.mode_picker.currentData()
        block = result.composition_block(mode)
        if block is None:
            self.composition_map.set_data(np.zeros((0, 0)))
            self.baseline_label.setText("Composition needs at least two layers.")
            return
        # Every head pair, whatever the model's size (the view zooms, unlike a report figure).
        matrix, writers, readers = block
        top = float(matrix.max()) if matrix.size else 1.0
        self.composition_map.set_data(
            matrix,
            x_labels=readers,
            y_labels=writers,
            title=COMPOSITION_TITLES[mode],
            x_title="reading head",
            y_title="writing head",
            levels=(0.0, max(top, result.baseline_mean * 2, 1e-9)),
            signed=False,
        )
        self.baseline_label.setText(
            f"Random matrices of the same shapes score {result.baseline_mean:.3f} ± {result.baseline_std:.3f}; "
            f"the largest score here is {top:.3f} ({top / result.baseline_mean:.1f}× the baseline). Click a cell to draw the reading head."
        )

    def _mark_head(self, layer: int, head: int) -> None:
        for heatmap in (self.copying_map, self.self_top_map, self.qk_score_map):
            heatmap.select_cell(layer, head)
        result = self.result
        if result is None:
            return
        kv = f", key/value head {head // (result.n_heads // result.n_kv_heads)}" if result.n_kv_heads < result.n_heads else ""
        drawn = "" if (layer, head) == (result.layer, result.head) else f" (drawing {head_label(layer, head)}…)"
        self.head_info.setText(
            text := f"{result.head_name}{kv}: OV copying score {float(result.copying_score[result.layer, result.head]):+.3f}, "
            f"self-top {float(result.ov_self_top_fraction[result.layer, result.head]):.3f}, "
            f"QK score {float(result.qk_copying_score[result.layer, result.head]):+.3f}{drawn}"
        )
        self.head_info.setToolTip(text)

    # -- choosing a head ------------------------------------------------------------------------------

    def _picker_activated(self, index: int) -> None:
        data = self.head_picker.itemData(index)
        if data:
            self.select_head(int(data[0]), int(data[1]))

    def _composition_clicked(self, row: int, col: int) -> None:
        result = self.result
        if result is None:
            return
        reader = col + result.n_heads  # the matrix's columns start at layer 1 (see composition_block)
        self.select_head(reader // result.n_heads, reader % result.n_heads)

    def select_head(self, layer: int, head: int):
        """Show (layer, head): marks it in the tables and, when it is not the drawn head, recomputes
        its restricted circuits in the background on the same token set. Returns the task or None."""
        result = self.result
        if result is None or not (0 <= layer < result.n_layers and 0 <= head < result.n_heads):
            return None
        self._mark_head(layer, head)
        if (layer, head) == (result.layer, result.head):
            return None
        # On the shown token set, with the shown positional term (the query's defaults).
        return self._start_head_job(layer, head, {"token_set": "shown", "positional": -1})

    def redraw_circuits(self):
        """Recompute the chosen head's circuits with the token set and positional term now in the form."""
        result = self.result
        if result is None:
            return None
        try:
            params = self.parameters()
        except WorkbenchError as exc:
            self._set_status(str(exc), error=True)
            return None
        if bool(params.get("fold_ln")) != result.fold_ln:
            self._set_status("'fold ln' changed since the run: press Run to recompute the tables too.", error=True)
            return None
        data = self.head_picker.currentData() or (result.layer, result.head)
        spec = {name: params[name] for name in ("token_set", "tokens", "top_k")}
        return self._start_head_job(int(data[0]), int(data[1]), {**spec, "positional": int(params.get("positional") or 0)})

    def _start_head_job(self, layer: int, head: int, params: dict):
        """The plugin's `head` query in the background (the latest choice wins)."""
        return self.run_query("head", {"head": f"{layer}.{head}", **params}, title=f"{self.plugin.name}: {head_label(layer, head)}")

    # -- exports and workspaces -----------------------------------------------------------------------

    def figure_name(self) -> str:
        result = self.result
        tab = self.tabs.tabText(self.tabs.currentIndex()) if self.tabs.count() else ""
        return f"qk-ov-{result.head_name}-{tab}" if result is not None else "qk-ov"

    def figure_widget(self) -> QWidget:
        return self.tabs.currentWidget()

    def view_state(self) -> dict:
        return {"tab": self.tabs.currentIndex(), "mode": self.mode_picker.currentData()}

    def restore_view_state(self, state: dict) -> None:
        if self.result is None:
            self._pending_view = dict(state)
        self._apply_view(state)

    def _apply_view(self, state: dict) -> None:
        self.tabs.setCurrentIndex(int(state.get("tab") or 0))
        mode = state.get("mode")
        index = self.mode_picker.findData(mode) if mode else -1
        if index >= 0:
            self.mode_picker.setCurrentIndex(index)
