"""The result of a causal trace: P(answer) for every restored (kind, token, layer) cell."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from workbench.figures import heatmap
from workbench.plugin_api import Figure, ReportSection, Result, Table

KIND_TITLES = {
    "resid": "residual stream (single layer)",
    "mlp": "MLP output (window of layers)",
    "attn": "attention output (window of layers)",
}


@dataclass
class CausalTraceResult(Result):
    kind: ClassVar[str] = "causal-trace/trace"

    tokens: list[str]
    subject_range: list[int]  # [start, end) token positions
    answer: str
    answer_tokens: list[str]
    high_score: float  # P(answer), clean
    low_score: float  # mean P(answer), subject noised, nothing restored
    noise: float
    samples: int
    window: int
    method: str
    kinds: list[str]
    scores: np.ndarray  # [kinds, tokens, layers]
    seconds: dict = field(default_factory=dict)

    def table(self, kind: str) -> np.ndarray:
        return self.scores[self.kinds.index(kind)]

    def indirect_effect(self, kind: str) -> np.ndarray:
        """Restored minus corrupted P(answer): what restoring that one state brings back."""
        return self.table(kind) - self.low_score

    def token_labels(self) -> list[str]:
        start, end = self.subject_range
        return [f"{token}*" if start <= i < end else token for i, token in enumerate(self.tokens)]

    def peak(self, kind: str) -> tuple[int, int, float]:
        """(token, layer, indirect effect) of the strongest cell."""
        effect = self.indirect_effect(kind)
        token, layer = np.unravel_index(int(np.argmax(effect)), effect.shape)
        return int(token), int(layer), float(effect[token, layer])

    def last_subject_peak(self, kind: str) -> tuple[int, float]:
        """(layer, indirect effect) of the strongest cell at the last subject token."""
        row = self.indirect_effect(kind)[self.subject_range[1] - 1]
        layer = int(np.argmax(row))
        return layer, float(row[layer])

    def summary(self) -> dict:
        return {
            "tokens": list(self.tokens),
            "subject_range": [int(v) for v in self.subject_range],
            "answer": self.answer,
            "answer_tokens": list(self.answer_tokens),
            "high_score": float(self.high_score),
            "low_score": float(self.low_score),
            "noise": float(self.noise),
            "samples": int(self.samples),
            "window": int(self.window),
            "method": self.method,
            "scores": {kind: self.table(kind).astype(float).round(6).tolist() for kind in self.kinds},
            "seconds": dict(self.seconds),
            "peaks": {
                kind: dict(zip(("token", "layer", "indirect_effect"), self.peak(kind)))
                | dict(zip(("last_subject_layer", "last_subject_indirect_effect"), self.last_subject_peak(kind)))
                for kind in self.kinds
            },
        }

    def colour_limits(self, kind: str) -> tuple[float, float]:
        """From the lowest cell (or the corrupted P) to the highest (or the clean P).

        Cells can fall below the corrupted probability (noise); the scale takes them in
        rather than clipping them to the corrupted run's colour."""
        table = self.table(kind)
        return min(self.low_score, float(table.min())), max(self.high_score, float(table.max()))

    def report(self) -> ReportSection:
        labels = self.token_labels()
        figures = []
        for kind in self.kinds:
            table = self.table(kind)
            low, high = self.colour_limits(kind)
            svg = heatmap(
                table,
                x_labels=[str(layer) for layer in range(table.shape[1])],
                y_labels=labels,
                title=f"P({self.answer.strip()}) with the {KIND_TITLES[kind]} restored",
                x_title="layer",
                y_title="token (* = subject)",
                colormap={"resid": "purples", "mlp": "greens", "attn": "reds"}.get(kind, "viridis"),
                vmin=low,
                vmax=high,
            )
            token, layer, effect = self.peak(kind)
            figures.append(Figure(
                title=KIND_TITLES[kind],
                svg=svg,
                caption=f"Colours run from {low:.3g} to {high:.3g}; P({self.answer.strip()}) is {self.low_score:.3f} corrupted and {self.high_score:.3f} clean. "
                f"Strongest cell: {self.tokens[token]!r} at layer {layer} (indirect effect {effect:+.3f}).",
            ))
        rows = []
        for kind in self.kinds:
            token, layer, effect = self.peak(kind)
            last_layer, last_effect = self.last_subject_peak(kind)
            rows.append([kind, f"{self.tokens[token]!r} L{layer}", round(effect, 4), f"L{last_layer}", round(last_effect, 4), self.seconds.get(kind, "")])
        numbers = Table("Key numbers", ["quantity", "value"], [
            ["answer", self.answer],
            ["P(answer) clean", round(self.high_score, 4)],
            ["P(answer) subject noised", round(self.low_score, 4)],
            ["total effect", round(self.high_score - self.low_score, 4)],
            ["noise std / samples", f"{self.noise:.4g} / {self.samples}"],
            ["subject tokens", " ".join(repr(t) for t in self.tokens[self.subject_range[0]:self.subject_range[1]])],
        ])
        peaks = Table("Strongest restorations", ["kind", "peak cell", "indirect effect", "peak layer at last subject token", "its effect", "seconds"], rows)
        return ReportSection(
            title=f"Causal trace of {self.answer.strip()!r}",
            how_to_read=(
                "The subject's token embeddings are noised; each cell restores one clean state (a token at a layer) "
                "and shows the probability of the answer that comes back. Bright cells carry the fact. "
                "Indirect effect = restored − corrupted probability."
            ),
            figures=figures,
            tables=[numbers, peaks],
        )
