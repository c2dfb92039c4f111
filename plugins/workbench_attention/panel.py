"""The attention panel: every head at a glance, one head in full, and its weights over the text.

Run computes the overview (a thumbnail per head) and fills the session's activation
store with every layer's patterns. Switching heads (a click in the grid, the layer/head
boxes), averaging or a compare prompt runs the plugin's `pattern` query in the
background: one head read from the store, one chunk (captured first when the store
lacks it). The panel only draws what results say; the display options (scale, masking,
destination token) only redraw.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QScrollArea, QSplitter, QVBoxLayout, QWidget

from workbench.errors import WorkbenchError
from workbench.gui.panels import AnalysisPanel

from .figures import pattern_svg, side_by_side
from .patterns import colour_limits, display_values, head_label, kv_head_of, resolve_position
from .widgets import HeadGrid, PatternView, TokenWeightsView


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

        self._syncing = False
        self._drawn: tuple | None = None  # what the heatmaps show now (skip redrawing the same)
        self._grid_of: object = None  # the thumbnails the grid shows (a query keeps them)
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
        if meta is not None and meta.params:
            self._set_form(dict(meta.params))
        self._drawn = None
        if result.thumbnails is not self._grid_of:  # a query's answer keeps the run's overview
            self._grid_of = result.thumbnails
            self._draw_grid()
            self._fit_grid_width()
        else:
            self.grid.set_selected(result.layer, None if result.average == "layer" else result.head)
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
            label += f", mean of {result.n_prompts} prompts"
        return label

    def _draw_selected(self) -> None:
        result = self.result
        if result is None or result.pattern.size == 0:
            return
        options = self.options()
        scale, mask = options["scale"], options["mask_first_token"]
        main, labels = result.pattern, list(result.str_tokens)
        n = main.shape[0]
        try:
            destination = resolve_position(options["destination"], n)
        except WorkbenchError:  # an index past this prompt's end: show the last token
            destination = n - 1
        title = self._title(options)
        has_compare = result.has_compare
        # A new destination only moves the row outline and refills the text view.
        heatmaps = (id(result), scale, mask, title)
        redraw = heatmaps != self._drawn
        if redraw:
            display = display_values(main, scale, mask, result.causal)
            self.main_view.show_pattern(main, display, labels, colour_limits(display, scale), title=title, log=scale == "log", masked_first=mask, causal=result.causal)
            self._drawn = heatmaps
        self.main_view.mark_row(destination)
        self.main_tokens.set_tokens(labels, main[destination], destination, scale, mask)
        self.compare_view.setVisible(has_compare)
        self.compare_tokens.scroll_area.setVisible(has_compare)
        if has_compare:
            other, other_labels = result.compare_pattern, list(result.compare_str_tokens)
            other_destination = min(destination, other.shape[0] - 1)
            if redraw:
                shown = display_values(other, scale, mask, result.causal)
                self.compare_view.show_pattern(
                    other, shown, other_labels, colour_limits(shown, scale), title=f"{title} · {result.compare_prompt[:40]!r}",
                    log=scale == "log", masked_first=mask, causal=result.causal,
                )
            self.compare_view.mark_row(other_destination)
            self.compare_tokens.set_tokens(other_labels, other[other_destination], other_destination, scale, mask)
        self.text_heading.setText(
            f"What {labels[destination]!r} (position {destination}) reads: white = 0, red = the largest weight "
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
        result = self.result
        shown = (result.layer, None if result.average == "layer" else result.head, result.average, result.compare_prompt.strip())
        wanted = self._data_key(options)
        if wanted[:3] != shown[:3] or (force and wanted != shown):
            self.load_selection()
        else:
            self._draw_grid()
            self._draw_selected()

    def load_selection(self):
        """Ask the plugin's `pattern` query for what the form selects; the answer is drawn
        when it arrives (a head is one store read). Returns the task, or None."""
        options = self.options()
        params = {name: options[name] for name in ("layer", "head", "average", "compare_prompt")}
        return self.run_query("pattern", params, title=f"{self.plugin.name}: {self._title(options)}")

    # -- exports and state ---------------------------------------------------------------------------

    def figure_name(self) -> str:
        result = self.result
        if result is None:
            return "attention"
        label = f"L{result.layer}-mean" if result.average == "layer" else f"L{result.layer}H{result.head}"
        return f"attention-{label}" + ("-prompt-mean" if result.average == "prompts" else "")

    def figure_svg(self) -> str | None:
        """The selected pattern (and the compare prompt's) as drawn now, as report-quality SVG."""
        result = self.result
        if result is None or result.pattern.size == 0:
            return None
        options = self.options()
        scale, mask = options["scale"], options["mask_first_token"]
        n = result.pattern.shape[0]
        destination = min(max(options["destination"] if options["destination"] >= 0 else n + options["destination"], 0), n - 1)
        labels = list(result.str_tokens)
        parts = [pattern_svg(display_values(result.pattern, scale, mask, result.causal), labels, labels, title=self._title(options), scale=scale, highlight_row=destination)]
        if result.has_compare:
            other = list(result.compare_str_tokens)
            parts.append(
                pattern_svg(
                    display_values(result.compare_pattern, scale, mask, result.causal), other, other,
                    title=f"{self._title(options)}, second prompt", scale=scale, highlight_row=min(destination, result.compare_pattern.shape[0] - 1),
                )
            )
        return side_by_side(parts) if len(parts) > 1 else parts[0][0]
