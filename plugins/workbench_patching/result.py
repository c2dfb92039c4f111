"""The activation-patching result: one grid of patched metric values per target.

The grids hold the raw metric of each patched run; normalised values, effects and the
ranking of cells are derived from them and the clean and corrupted metric, so the saved
file has one source of truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from workbench.figures import heatmap
from workbench.plugin_api import Figure, ReportSection, Result, Table

from .targets import TARGETS

TOP_CELLS = 8  # cells per target in the summary and the report table


def _r(value: float, digits: int = 5):
    value = float(value)
    return None if value != value else round(value, digits)


def kv_head_of(head: int, n_heads: int, n_kv_heads: int) -> int:
    """The key/value head a query head reads: K/V are expanded with repeat_interleave (as in the attention plugin)."""
    return head // max(1, n_heads // max(1, n_kv_heads))


def head_label(layer: int, head: int, n_heads: int, n_kv_heads: int) -> str:
    label = f"L{layer}H{head}"
    if n_kv_heads < n_heads:
        label += f" (KV {kv_head_of(head, n_heads, n_kv_heads)})"
    return label


@dataclass
class ActivationPatchingResult(Result):
    kind = "patching/activation-patching"

    clean_prompt: str
    corrupted_prompt: str
    clean_tokens: np.ndarray  # [pos]
    corrupted_tokens: np.ndarray  # [pos]
    clean_str_tokens: list
    corrupted_str_tokens: list
    metric: str  # "logit-diff" or "prob"
    answer: str
    answer_id: int
    wrong_answer: str
    wrong_answer_id: int
    clean_value: float
    corrupted_value: float
    normalise: bool  # what figures show by default
    n_layers: int
    n_heads: int
    n_kv_heads: int
    targets: list  # names of the computed targets, in TARGETS order
    # Patched metric per cell; None when the target was not chosen.
    resid_pre: np.ndarray | None = None  # [layer, pos]
    attn_out: np.ndarray | None = None  # [layer, pos]
    mlp_out: np.ndarray | None = None  # [layer, pos]
    head_out: np.ndarray | None = None  # [layer, head]: hook_z of one query head at every position
    head_pattern: np.ndarray | None = None  # [layer, head]
    head_out_by_pos: np.ndarray | None = None  # [layer, pos, head]
    cells_run: int = 0
    cells_skipped: int = 0  # clean and corrupted activation equal there: the value is the corrupted metric
    patched_passes: int = 0  # forward passes of the patched runs (up to max_batch cells of consecutive layers share one)
    seconds_per_target: dict = field(default_factory=dict)
    seconds_total: float = 0.0

    # -- values -----------------------------------------------------------------------------------

    def raw(self, target: str) -> np.ndarray:
        values = getattr(self, target)
        if values is None:
            raise KeyError(f"target {target!r} was not computed (computed: {', '.join(self.targets)})")
        return np.asarray(values, dtype=np.float64)

    def normalised(self, target: str) -> np.ndarray:
        """(patched − corrupted) / (clean − corrupted): 1 restores the clean metric, 0 changes nothing."""
        return (self.raw(target) - self.corrupted_value) / (self.clean_value - self.corrupted_value)

    def shown(self, target: str, normalised: bool | None = None) -> np.ndarray:
        return self.normalised(target) if (self.normalise if normalised is None else normalised) else self.raw(target)

    def grid(self, target: str, normalised: bool | None = None) -> np.ndarray:
        """A 2-D view for drawing: [layer, pos], [layer, head], or [layer·head, pos] for by-position heads."""
        values = self.shown(target, normalised)
        if target == "head_out_by_pos":
            return values.transpose(0, 2, 1).reshape(self.n_layers * self.n_heads, -1)
        return values

    # -- labels -------------------------------------------------------------------------------------

    @property
    def position_labels(self) -> list[str]:
        return [c if c == x else f"{c}/{x}" for c, x in zip(self.clean_str_tokens, self.corrupted_str_tokens)]

    @property
    def differing_positions(self) -> list[int]:
        return [i for i, (a, b) in enumerate(zip(self.clean_tokens.tolist(), self.corrupted_tokens.tolist())) if a != b]

    @property
    def short_position_labels(self) -> list[str]:
        """Clean tokens with a * where the prompts differ: short enough for every one to fit on an axis."""
        return [c if c == x else f"{c}*" for c, x in zip(self.clean_str_tokens, self.corrupted_str_tokens)]

    def axis_labels(self, target: str, short: bool = False) -> tuple[list[str], list[str]]:
        """(x labels, y labels) of grid(target); short: positions as short_position_labels."""
        positions = self.short_position_labels if short else self.position_labels
        if target == "head_out_by_pos":
            return positions, [f"L{layer}H{head}" for layer in range(self.n_layers) for head in range(self.n_heads)]
        layers = [f"L{layer}" for layer in range(self.n_layers)]
        if TARGETS[target].axes == ("head",):
            return [f"H{h}" for h in range(self.n_heads)], layers
        return positions, layers

    def cell_name(self, target: str, cell: tuple[int, ...]) -> str:
        layer = cell[0]
        axes = TARGETS[target].axes
        if axes == ("head",):
            return head_label(layer, cell[1], self.n_heads, self.n_kv_heads)
        position = cell[1]
        token = f"{self.position_labels[position]!r} (pos {position})"
        if axes == ("position", "head"):
            return f"{head_label(layer, cell[2], self.n_heads, self.n_kv_heads)} at {token}"
        return f"L{layer} at {token}"

    def metric_text(self) -> str:
        if self.metric == "logit-diff":
            return f"logit({self.answer!r}) − logit({self.wrong_answer!r})"
        return f"P({self.answer!r})"

    # -- key numbers --------------------------------------------------------------------------------

    def top_cells(self, target: str, count: int = TOP_CELLS) -> list[tuple[tuple[int, ...], float, float]]:
        """(cell, patched value, normalised value) of the cells that move the metric most towards clean."""
        norm = self.normalised(target)
        order = np.argsort(-norm, axis=None, kind="stable")[:count]
        raw = self.raw(target)
        return [(tuple(int(i) for i in np.unravel_index(flat, norm.shape)), float(raw.flat[flat]), float(norm.flat[flat])) for flat in order]

    def summary(self) -> dict:
        top = {}
        for target in self.targets:
            top[target] = [
                {"cell": self.cell_name(target, cell), "index": list(cell), "value": _r(value), "normalised": _r(norm)}
                for cell, value, norm in self.top_cells(target)
            ]
        return {
            "clean_prompt": self.clean_prompt,
            "corrupted_prompt": self.corrupted_prompt,
            "tokens": self.position_labels,
            "differing_positions": self.differing_positions,
            "metric": self.metric,
            "metric_text": self.metric_text(),
            "answer": self.answer,
            "wrong_answer": self.wrong_answer if self.metric == "logit-diff" else None,
            "clean_value": _r(self.clean_value),
            "corrupted_value": _r(self.corrupted_value),
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "targets": list(self.targets),
            "top_cells": top,
            "normalised": {target: (np.round(self.normalised(target), 5) + 0.0).tolist() for target in self.targets},
            "cells_run": self.cells_run,
            "cells_skipped": self.cells_skipped,
            "patched_passes": self.patched_passes,
            "seconds_per_target": self.seconds_per_target,
            "seconds_total": self.seconds_total,
        }

    # -- report ----------------------------------------------------------------------------------------

    def caption(self, normalised: bool | None = None) -> str:
        if self.normalise if normalised is None else normalised:
            scale = (
                f"Normalised: (patched − corrupted) / (clean − corrupted) of {self.metric_text()}; 1 = this cell alone "
                f"restores the clean run ({self.clean_value:.3g}), 0 = no change from the corrupted run ({self.corrupted_value:.3g})."
            )
        else:
            scale = f"Raw {self.metric_text()} of each patched run (clean {self.clean_value:.3g}, corrupted {self.corrupted_value:.3g})."
        return scale + " Colours are centred at 0 (red up, blue down)."

    def figure(self, target: str, normalised: bool | None = None) -> Figure:
        x_labels, y_labels = self.axis_labels(target)
        values = self.grid(target, normalised)
        by_head = TARGETS[target].axes == ("head",)
        small = values.shape[0] <= 12 and values.shape[1] <= 16
        svg = heatmap(
            # Printed in the cells when small: float noise like 3e-08 would read as an effect.
            np.round(values, 3) + 0.0 if small else values,
            x_labels=x_labels,
            y_labels=y_labels,
            title=TARGETS[target].title,
            x_title="head" if by_head else "position (clean/corrupted where they differ)",
            y_title="layer · head" if target == "head_out_by_pos" else "layer",
            diverging=True,
            annotate=small,
            cell=40.0 if small else None,
        )
        gqa = ""
        if by_head and self.n_kv_heads < self.n_heads:
            group = self.n_heads // self.n_kv_heads
            gqa = f" Query heads; head h reads key/value head h // {group}."
        return Figure(TARGETS[target].title, svg=svg, caption=self.caption(normalised) + gqa)

    def report(self) -> ReportSection:
        figures = [self.figure(target) for target in self.targets]
        rows = []
        for target in self.targets:
            for cell, value, norm in self.top_cells(target, 3):
                rows.append([target, self.cell_name(target, cell), round(value, 4), round(norm, 3)])
        tables = [
            Table(
                "Metric",
                ["run", self.metric_text()],
                [["clean", round(self.clean_value, 4)], ["corrupted", round(self.corrupted_value, 4)]],
            ),
            Table("Cells that restore the clean run most", ["target", "cell", "patched", "normalised"], rows),
        ]
        notes = [
            f"Clean: {self.clean_prompt!r}; corrupted: {self.corrupted_prompt!r}; they differ at positions "
            + ", ".join(f"{p} ({self.position_labels[p]!r})" for p in self.differing_positions)
            + ".",
            f"{self.cells_run} patched runs in {self.patched_passes} forward passes; {self.cells_skipped} cells were not run "
            "because their clean and corrupted activations are identical (patching them changes nothing).",
        ]
        return ReportSection(
            title="Activation patching",
            how_to_read=(
                "Each cell is the corrupted prompt run with one activation copied in from the clean prompt (denoising). "
                "A cell near 1 (normalised) carries, on its own, what makes the clean answer win; near 0 it does not matter. "
                "Per-position maps show where the information sits, layer by layer: before the changed token nothing can "
                "matter, and it moves to the last position in the layers that read it."
            ),
            figures=figures,
            tables=tables,
            notes=notes,
        )
