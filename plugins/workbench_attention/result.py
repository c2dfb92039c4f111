"""The attention result: thumbnails and numbers for every head, one pattern in full, and its report."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from workbench.plugin_api import Figure, ReportSection, Result, Table

from .figures import overview_svg, pattern_svg, side_by_side, tokens_svg
from .patterns import display_values, head_label, kv_head_of, thumbnail_display, top_sources

HOW_TO_READ = (
    "Each row of a pattern is one destination token (the one attending) and each column a source token "
    "(the one read); a row's weights sum to 1, and cells above the diagonal are future tokens a causal head "
    "cannot read (grey). A bright first column is the usual attention sink, a bright line just below the "
    "diagonal a previous-token head. The overview shows every head shrunk to at most 32x32 blocks (block "
    "averages), one row per layer; the text view shades each token by the weight the chosen destination "
    "token puts on it."
)


def _empty_matrix() -> np.ndarray:
    return np.zeros((0, 0), dtype=np.float32)


@dataclass
class AttentionResult(Result):
    kind = "attention/patterns"

    str_tokens: list  # axis labels: prompt 0's tokens (or "#i" where averaged prompts differ)
    tokens: list  # token ids of prompt 0 (cut to the shared length when averaging prompts)
    n_layers: int
    n_heads: int  # query heads: patterns are per query head, also under grouped-query attention
    n_kv_heads: int
    layer: int
    head: int  # the selected query head (unused when average == "layer")
    destination: int  # the token-centred view's destination position (resolved, >= 0)
    mask_first_token: bool  # display option: hide source column 0 (weights are not renormalised)
    scale: str  # "linear" or "log" (display only; stored weights are always linear)
    average: str  # "none", "layer" (mean over the layer's heads) or "prompts" (mean over prompts)
    n_prompts: int  # how many prompts were averaged (1 unless average == "prompts")
    causal: bool
    thumbnails: np.ndarray  # [layer, head, t, t], t <= 32: block-averaged patterns (raw: masking is applied when drawn)
    thumbnail_edges: np.ndarray  # [t + 1] token boundaries of the thumbnail blocks
    thumbnail_first_column: np.ndarray  # [layer, head, t] mean weight on source 0 per row block (to mask thumbnails)
    entropy_bits: np.ndarray  # [layer, head] mean entropy of a destination row
    first_token_weight: np.ndarray  # [layer, head] mean weight on position 0 (rows 1..)
    previous_token_weight: np.ndarray  # [layer, head] mean weight on the previous token
    max_weight: np.ndarray  # [layer, head] mean of each row's largest weight
    pattern: np.ndarray  # [n, n] the selected head's pattern (or the layer / prompt mean), raw weights
    compare_prompt: str = ""
    compare_str_tokens: list = field(default_factory=list)
    compare_pattern: np.ndarray = field(default_factory=_empty_matrix)  # [m, m] same head on the second prompt
    compare_destination: int = -1

    # -- derived ----------------------------------------------------------------------------

    @property
    def kv_heads(self) -> list[int]:
        """The key/value head each query head reads."""
        return [kv_head_of(h, self.n_heads, self.n_kv_heads) for h in range(self.n_heads)]

    @property
    def selected_label(self) -> str:
        if self.average == "layer":
            return f"L{self.layer}, mean of {self.n_heads} heads"
        label = head_label(self.layer, self.head, self.n_heads, self.n_kv_heads)
        return label + (f", mean of {self.n_prompts} prompts" if self.average == "prompts" else "")

    @property
    def destination_row(self) -> np.ndarray:
        return self.pattern[self.destination]

    @property
    def has_compare(self) -> bool:
        return bool(self.compare_prompt) and self.compare_pattern.size > 0

    def display(self, which: str = "main", scale: str | None = None, mask_first_token: bool | None = None) -> np.ndarray:
        """The selected pattern as drawn: NaN above the diagonal and in a masked column, log10 on the log scale.

        scale and mask_first_token default to the result's own options.
        """
        pattern = self.compare_pattern if which == "compare" else self.pattern
        return display_values(pattern, scale or self.scale, self.mask_first_token if mask_first_token is None else mask_first_token, self.causal)

    def thumbnail_display(self, scale: str | None = None, mask_first_token: bool | None = None) -> np.ndarray:
        """Thumbnails as drawn (see patterns.thumbnail_display), with the result's options unless given."""
        return thumbnail_display(
            self.thumbnails, self.thumbnail_first_column, self.thumbnail_edges, scale or self.scale,
            self.mask_first_token if mask_first_token is None else mask_first_token, self.causal,
        )

    def top_sources(self, k: int = 5, which: str = "main") -> list[dict]:
        if which == "compare":
            return top_sources(self.compare_pattern[self.compare_destination], self.compare_str_tokens, k, self.mask_first_token)
        return top_sources(self.destination_row, self.str_tokens, k, self.mask_first_token)

    def ranked_heads(self, stat: str, k: int = 5, highest: bool = True) -> list[list]:
        values = np.asarray(getattr(self, stat), dtype=np.float64)
        order = np.argsort(-values if highest else values, axis=None, kind="stable")[:k]
        return [[int(i // self.n_heads), int(i % self.n_heads), round(float(values.flat[i]), 4)] for i in order]

    # -- JSON and report --------------------------------------------------------------------

    def summary(self) -> dict:
        out = {
            "tokens": self.str_tokens,
            "n_tokens": len(self.str_tokens),
            "layers": self.n_layers,
            "query_heads": self.n_heads,
            "kv_heads": self.n_kv_heads,
            "kv_head_of_query_head": self.kv_heads,
            "selected": {
                "layer": self.layer,
                "head": None if self.average == "layer" else self.head,
                "kv_head": None if self.average == "layer" else kv_head_of(self.head, self.n_heads, self.n_kv_heads),
                "label": self.selected_label,
            },
            "options": {"mask_first_token": self.mask_first_token, "scale": self.scale, "average": self.average, "prompts_averaged": self.n_prompts},
            "destination": {"position": self.destination, "token": self.str_tokens[self.destination]},
            "top_sources": self.top_sources(),
            "head_stats": {
                name: [[round(float(v), 5) for v in row] for row in getattr(self, name)]
                for name in ("entropy_bits", "first_token_weight", "previous_token_weight", "max_weight")
            },
            "top_heads": {
                "previous_token": self.ranked_heads("previous_token_weight"),
                "first_token": self.ranked_heads("first_token_weight"),
                "lowest_entropy": self.ranked_heads("entropy_bits", highest=False),
            },
        }
        if self.has_compare:
            out["compare"] = {
                "prompt": self.compare_prompt,
                "tokens": self.compare_str_tokens,
                "destination": {"position": self.compare_destination, "token": self.compare_str_tokens[self.compare_destination]},
                "top_sources": self.top_sources(which="compare"),
            }
        return out

    def column_labels(self) -> list[str]:
        if self.n_kv_heads < self.n_heads:
            return [f"H{h}/kv{kv}" for h, kv in enumerate(self.kv_heads)]
        return [f"H{h}" for h in range(self.n_heads)]

    def report(self) -> ReportSection:
        scale_note = "log colour scale" if self.scale == "log" else "linear colour scale"
        mask_note = "; first token masked (weights not renormalised)" if self.mask_first_token else ""
        overview = overview_svg(
            self.thumbnail_display(),
            scale=self.scale,
            column_labels=self.column_labels(),
            selected=(self.layer, None if self.average == "layer" else self.head),
            title=f"Every head ({self.n_layers} layers x {self.n_heads} query heads)",
        )
        gqa = (
            f" Grouped-query attention: {self.n_heads} query heads share {self.n_kv_heads} key/value heads "
            f"(H{{h}}/kv{{k}}: query head h reads KV head k = h // {self.n_heads // self.n_kv_heads}); each query head has its own pattern."
            if self.n_kv_heads < self.n_heads
            else ""
        )
        figures = [Figure("Attention overview", svg=overview, caption=f"Block-averaged thumbnails, {scale_note}{mask_note}.{gqa}")]

        main = pattern_svg(self.display(), self.str_tokens, self.str_tokens, title=self.selected_label, scale=self.scale, highlight_row=self.destination)
        main_tokens_title = f"What {self.str_tokens[self.destination]!r} (position {self.destination}) reads"
        main_tokens = tokens_svg(
            self.str_tokens, self.destination_row, self.destination, scale=self.scale, mask_first_token=self.mask_first_token, title=main_tokens_title
        )
        if self.has_compare:
            other = pattern_svg(
                self.display("compare"), self.compare_str_tokens, self.compare_str_tokens, title=f"{self.selected_label}, second prompt",
                scale=self.scale, highlight_row=self.compare_destination,
            )
            figures.append(Figure("Selected pattern, two prompts", svg=side_by_side([main, other]), caption=f"Left: the prompt; right: {self.compare_prompt!r}. {scale_note}{mask_note}."))
            main_tokens = tokens_svg(
                self.str_tokens, self.destination_row, self.destination, scale=self.scale, mask_first_token=self.mask_first_token,
                title=main_tokens_title, width=520,
            )
            other_tokens = tokens_svg(
                self.compare_str_tokens, self.compare_pattern[self.compare_destination], self.compare_destination, scale=self.scale,
                mask_first_token=self.mask_first_token, title=f"Second prompt: what {self.compare_str_tokens[self.compare_destination]!r} reads", width=520,
            )
            figures.append(Figure("Token-centred view, two prompts", svg=side_by_side([main_tokens, other_tokens])))
        else:
            figures.append(Figure("Selected pattern", svg=main[0], caption=f"{self.selected_label}; {scale_note}{mask_note}. The red box marks the destination row of the text view."))
            figures.append(Figure("Token-centred view", svg=main_tokens[0]))

        tables = [
            Table(
                f"What {self.str_tokens[self.destination]!r} reads most ({self.selected_label})",
                ["position", "token", "weight"],
                [[s["position"], s["token"], s["weight"]] for s in self.top_sources()],
            ),
            Table(
                "Heads by behaviour (layer, head, mean weight or entropy)",
                ["measure", "heads"],
                [
                    ["previous token (weight on q-1)", "; ".join(f"L{layer}H{h} {v:.2f}" for layer, h, v in self.ranked_heads("previous_token_weight"))],
                    ["first token (sink weight)", "; ".join(f"L{layer}H{h} {v:.2f}" for layer, h, v in self.ranked_heads("first_token_weight"))],
                    ["most focused (entropy, bits)", "; ".join(f"L{layer}H{h} {v:.2f}" for layer, h, v in self.ranked_heads("entropy_bits", highest=False))],
                ],
            ),
        ]
        notes = []
        if self.average == "prompts":
            notes.append(f"Averaged position by position over {self.n_prompts} prompts, cut to the shortest ({len(self.str_tokens)} tokens); '#i' labels mark positions where the prompts' tokens differ.")
        return ReportSection(title="Attention maps", how_to_read=HOW_TO_READ, figures=figures, tables=tables, notes=notes)
