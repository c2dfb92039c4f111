"""The logit lens result: per layer and position, the decoded distribution's top tokens."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from workbench.figures import heatmap
from workbench.figures.tokens import visible_token
from workbench.plugin_api import Figure, ReportSection, Result, Table


@dataclass
class LogitLensResult(Result):
    kind = "logit-lens/lens"

    layer_names: list
    tokens: list
    str_tokens: list
    final_top_tokens: list  # the model's own top prediction at each position
    p_final_top: np.ndarray  # [layer, position]: P(final top token) decoded at that layer
    top_ids: np.ndarray  # [layer, position, k]
    top_probs: np.ndarray  # [layer, position, k]
    top_strings: list  # [layer][position]: the top-1 token decoded at that layer
    top_k_strings: list = field(default_factory=list)  # [layer][position][k]: every kept token, decoded

    def top_strings_at(self, layer: int, position: int, rank: int = 0) -> str:
        """The rank-th token decoded after `layer` at `position` (results saved before
        top_k_strings existed decode only the top one)."""
        if self.top_k_strings:
            return str(self.top_k_strings[layer][position][rank])
        return str(self.top_strings[layer][position]) if rank == 0 else f"#{int(self.top_ids[layer, position, rank])}"

    def first_layer_agreeing(self, position: int = -1) -> str | None:
        """The earliest layer whose top-1 token equals the model's final prediction."""
        final = self.top_ids[-1, position, 0]
        for name, ids in zip(self.layer_names, self.top_ids):
            if ids[position, 0] == final:
                return name
        return None

    def summary(self) -> dict:
        return {
            "tokens": self.str_tokens,
            "layers": self.layer_names,
            "prediction": self.final_top_tokens[-1],
            "p_prediction_by_layer": [round(float(v), 6) for v in self.p_final_top[:, -1]],
            "first_layer_agreeing": self.first_layer_agreeing(),
        }

    def report(self) -> ReportSection:
        figure = heatmap(
            self.p_final_top,
            cell_text=self.top_strings,
            x_labels=self.str_tokens,
            y_labels=self.layer_names,
            title="P(final prediction) decoded after each layer",
            x_title="position (token)",
            y_title="layer",
            vmin=0.0,
            vmax=1.0,
        )
        last = -1
        # Tokens as the figures write them: a leading space is part of a token and must show.
        rows = [[name, visible_token(self.top_strings[i][last]), float(self.top_probs[i, last, 0]), float(self.p_final_top[i, last])] for i, name in enumerate(self.layer_names)]
        every = [[name, *(visible_token(self.top_strings[i][p]) for p in range(len(self.str_tokens)))] for i, name in enumerate(self.layer_names)]
        return ReportSection(
            title="Logit lens",
            how_to_read=(
                "Each cell decodes the residual stream after a layer with the model's final norm and unembedding. "
                "Colour is the probability of the model's final prediction at that position; a bright column from "
                "an early layer means the prediction is settled early."
            ),
            figures=[Figure("Logit lens", svg=figure, caption=f"Final prediction at the last position: {self.final_top_tokens[-1]!r}")],
            tables=[
                Table("Last position, by layer", ["layer", "top-1 token", "P(top-1)", "P(final prediction)"], rows),
                Table("Top-1 token decoded after each layer, at every position", ["layer", *(f"{p} {visible_token(t)}" for p, t in enumerate(self.str_tokens))], every),
            ],
        )
