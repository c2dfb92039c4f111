"""The qk-ov result: one head's restricted QK/OV circuits, and per-head tables for the whole model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from workbench.figures import heatmap, line_chart
from workbench.figures.tokens import visible_token
from workbench.plugin_api import Figure, ReportSection, Result, Table

# Above this many heads, composition heatmaps are drawn layer × layer (the largest score
# between any two heads of the two layers): a 270 × 270 SVG is neither readable nor small.
MAX_HEADS_DRAWN = 64
TOP_LISTED = 10


def head_label(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def _r(value, digits: int = 6):
    value = float(value)
    return None if value != value else round(value, digits)


def _nested(array, digits: int = 6):
    if array is None:
        return None
    return np.round(np.asarray(array, dtype=np.float64), digits).tolist()


@dataclass
class QKOVResult(Result):
    kind = "qk-ov/circuits"

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    fold_ln: bool  # norms folded in as TransformerLens' compatibility mode does (see circuits.py)
    rotary: bool  # RoPE model: the weight-only QK circuit ignores the rotation (approximate)
    positional_embedding_type: str
    # the chosen head, restricted to a token set
    layer: int
    head: int
    token_set: str  # typed | prompt | top-norm
    token_ids: list
    token_strings: list
    qk: np.ndarray  # [query token, key token] of W_E W_Q W_Kᵀ W_Eᵀ
    ov: np.ndarray  # [attended token, output token] of W_E W_V W_O W_U
    positional_qk: np.ndarray | None  # [query position, key position] of W_pos W_Q W_Kᵀ W_posᵀ, when asked for
    ov_top_ids: np.ndarray  # [token, k]: output tokens each attended token raises most (whole vocabulary)
    ov_top_strings: list
    ov_top_values: np.ndarray
    ov_self_rank: np.ndarray  # [token]: output tokens raised more than the token itself (0: it is the top)
    # whole model, per head
    ov_eig_real: np.ndarray  # [layer, head, d_head]: eigenvalues of the full OV circuit (non-zero part)
    ov_eig_imag: np.ndarray
    qk_eig_real: np.ndarray  # [layer, head, d_head]: eigenvalues of the full QK circuit
    qk_eig_imag: np.ndarray
    copying_score: np.ndarray  # [layer, head]: Re Σλ / Σ|λ| of the full OV circuit
    qk_copying_score: np.ndarray  # [layer, head]: the same for the full QK circuit (positive: attends to its own token)
    ov_self_top_fraction: np.ndarray  # [layer, head]: tokens whose OV row has its maximum at themselves
    self_top_tokens: int  # tokens the self-top fraction was measured on (d_vocab: all of them)
    composition_q: np.ndarray | None  # [L, H, L, H]: from (l1, h1) into (l2, h2), zero unless l1 < l2
    composition_k: np.ndarray | None
    composition_v: np.ndarray | None
    baseline_mean: float = 0.0  # composition score of random Gaussian factors of the same shapes
    baseline_std: float = 0.0
    baseline_samples: int = 0
    seconds_tables: float = 0.0

    # -- derived --------------------------------------------------------------------------------

    def with_head(self, circuit, token_set: str | None = None, params: dict | None = None) -> QKOVResult:
        """This result with another head's restricted circuits (an analysis.HeadCircuits); the tables stay.

        The provenance's parameters follow, so a saved or exported result says which head it shows.
        """
        updated = dataclasses.replace(
            self,
            layer=int(circuit.layer),
            head=int(circuit.head),
            token_set=token_set or self.token_set,
            token_ids=list(circuit.token_ids),
            token_strings=list(circuit.token_strings),
            qk=circuit.qk,
            ov=circuit.ov,
            positional_qk=circuit.positional_qk,
            ov_top_ids=circuit.ov_top_ids,
            ov_top_strings=circuit.ov_top_strings,
            ov_top_values=circuit.ov_top_values,
            ov_self_rank=circuit.ov_self_rank,
        )
        if self.meta is not None:
            merged = {**dict(self.meta.params), **(params or {}), "head": f"{circuit.layer}.{circuit.head}"}
            updated.meta = dataclasses.replace(self.meta, params=merged)
        return updated

    @property
    def head_name(self) -> str:
        return head_label(self.layer, self.head)

    @property
    def head_labels(self) -> list[str]:
        return [head_label(layer, head) for layer in range(self.n_layers) for head in range(self.n_heads)]

    @property
    def self_top_sampled(self) -> bool:
        return self.self_top_tokens < self.d_vocab

    def composition(self, mode: str) -> np.ndarray | None:
        return {"q": self.composition_q, "k": self.composition_k, "v": self.composition_v}[mode.lower()]

    def ov_eigenvalues(self, layer: int | None = None, head: int | None = None) -> np.ndarray:
        layer = self.layer if layer is None else layer
        head = self.head if head is None else head
        return self.ov_eig_real[layer, head].astype(np.complex128) + 1j * self.ov_eig_imag[layer, head]

    def qk_eigenvalues(self, layer: int | None = None, head: int | None = None) -> np.ndarray:
        layer = self.layer if layer is None else layer
        head = self.head if head is None else head
        return self.qk_eig_real[layer, head].astype(np.complex128) + 1j * self.qk_eig_imag[layer, head]

    def top_copying_heads(self, n: int = TOP_LISTED) -> list[tuple[int, int]]:
        order = np.argsort(-np.asarray(self.copying_score).ravel(), kind="stable")[:n]
        return [(int(i) // self.n_heads, int(i) % self.n_heads) for i in order]

    def top_compositions(self, mode: str, n: int = TOP_LISTED) -> list[tuple[int, int, int, int, float]]:
        """The n largest (l1, h1, l2, h2, score) of one mode."""
        scores = self.composition(mode)
        if scores is None:
            return []
        flat = np.asarray(scores).ravel()
        order = np.argsort(-flat, kind="stable")[:n]
        out = []
        for index in order:
            l1, h1, l2, h2 = np.unravel_index(int(index), scores.shape)
            if flat[index] > 0:
                out.append((int(l1), int(h1), int(l2), int(h2), float(flat[index])))
        return out

    def self_top_stderr(self) -> np.ndarray:
        """Sampling error of the self-top fractions (zero when every token was tested)."""
        if not self.self_top_sampled:
            return np.zeros_like(self.ov_self_top_fraction)
        p = np.asarray(self.ov_self_top_fraction, dtype=np.float64)
        n, population = self.self_top_tokens, self.d_vocab
        return np.sqrt(p * (1 - p) / n * (population - n) / (population - 1))

    # -- JSON -----------------------------------------------------------------------------------

    def summary(self) -> dict:
        return {
            "head": self.head_name,
            "layer": self.layer,
            "head_index": self.head,
            "kv_head": self.head // max(1, self.n_heads // self.n_kv_heads),
            "fold_ln": self.fold_ln,
            "qk_approximate": self.rotary,
            "token_set": self.token_set,
            "tokens": list(self.token_strings),
            "token_ids": [int(t) for t in self.token_ids],
            "qk": _nested(self.qk),
            "ov": _nested(self.ov),
            **({"positional_qk": _nested(self.positional_qk)} if self.positional_qk is not None else {}),
            "ov_top_outputs": {
                str(token): [[s, _r(v)] for s, v in zip(strings, values)]
                for token, strings, values in zip(self.token_strings, self.ov_top_strings, np.asarray(self.ov_top_values).tolist())
            },
            "ov_eigenvalues": [[_r(re), _r(im)] for re, im in zip(self.ov_eig_real[self.layer, self.head], self.ov_eig_imag[self.layer, self.head])],
            "copying_score": _nested(self.copying_score),
            "ov_self_top_fraction": _nested(self.ov_self_top_fraction),
            "self_top_tokens": self.self_top_tokens,
            "qk_copying_score": _nested(self.qk_copying_score),
            "composition": {mode: _nested(self.composition(mode), 5) for mode in ("q", "k", "v")},
            "composition_baseline": {"mean": _r(self.baseline_mean), "std": _r(self.baseline_std), "samples": self.baseline_samples},
            "top_copying_heads": [head_label(layer, h) for layer, h in self.top_copying_heads()],
            "seconds_tables": self.seconds_tables,
        }

    # -- report ---------------------------------------------------------------------------------

    def _token_labels(self) -> list[str]:
        return [visible_token(t) for t in self.token_strings]

    def qk_title(self) -> str:
        approx = " — approximate (RoPE ignored)" if self.rotary else ""
        return f"QK circuit of {self.head_name}: W_E W_Q W_Kᵀ W_Eᵀ{approx}"

    def ov_title(self) -> str:
        return f"OV circuit of {self.head_name}: W_E W_V W_O W_U"

    def positional_masked(self) -> np.ndarray | None:
        """The positional QK term with keys after the query (never attended, causal mask) set to 0."""
        if self.positional_qk is None:
            return None
        return np.tril(np.asarray(self.positional_qk))

    def composition_block(self, mode: str) -> tuple[np.ndarray, list[str], list[str]] | None:
        """(matrix, writer labels, reader labels): every head that can write (layers 0..L-2) by every
        head that can read (layers 1..L-1); the rest of [L·H, L·H] is zero by definition."""
        scores = self.composition(mode)
        if scores is None or self.n_layers < 2:
            return None
        H, L = self.n_heads, self.n_layers
        matrix = np.asarray(scores).reshape(L * H, L * H)[: (L - 1) * H, H:]
        labels = self.head_labels
        return matrix, labels[: (L - 1) * H], labels[H:]

    def composition_view(self, mode: str) -> tuple[np.ndarray, list[str], list[str], str] | None:
        """What a report draws: composition_block, or on big models layer × layer (the largest score
        over the two layers' head pairs), since a 270 × 270 SVG is neither readable nor small."""
        block = self.composition_block(mode)
        if block is None:
            return None
        if self.n_layers * self.n_heads <= MAX_HEADS_DRAWN:
            return (*block, "head")
        scores = np.asarray(self.composition(mode)).max(axis=(1, 3))[:-1, 1:]
        return scores, [f"L{layer}" for layer in range(self.n_layers - 1)], [f"L{layer}" for layer in range(1, self.n_layers)], "layer"

    def report(self) -> ReportSection:
        labels = self._token_labels()
        n_tokens = len(labels)
        set_text = {"typed": "typed tokens", "prompt": "the prompt's tokens", "top-norm": f"the {n_tokens} tokens of largest embedding norm"}.get(self.token_set, self.token_set)
        fold_text = "layer norms folded in (TransformerLens compatibility-mode processing)" if self.fold_ln else "raw weights (layer norms not folded)"
        figures = [
            Figure(
                self.qk_title(),
                svg=heatmap(self.qk, x_labels=labels, y_labels=labels, title=f"QK {self.head_name}" + (" (≈)" if self.rotary else ""), x_title="key (source) token", y_title="query (destination) token", diverging=True, annotate=n_tokens <= 16),
                caption=f"Token set: {set_text}; {fold_text}."
                + (" On a RoPE model the map is exact only for a query and key at the same position." if self.rotary else ""),
            ),
            Figure(
                self.ov_title(),
                svg=heatmap(self.ov, x_labels=labels, y_labels=labels, title=f"OV {self.head_name}", x_title="output logit", y_title="attended token", diverging=True, annotate=n_tokens <= 16),
                caption="A red diagonal is copying: attending to a token raises that same token's logit.",
            ),
        ]
        masked = self.positional_masked()
        if masked is not None:
            positions = [str(p) for p in range(masked.shape[0])]
            figures.append(
                Figure(
                    f"Positional QK term of {self.head_name}: W_pos W_Q W_Kᵀ W_posᵀ",
                    svg=heatmap(masked, x_labels=positions, y_labels=positions, title=f"Positional QK {self.head_name}", x_title="key position", y_title="query position", diverging=True),
                    caption="Keys after the query (never attended under the causal mask) are drawn as 0. A stripe just below the diagonal is a previous-token head.",
                )
            )
        eig = self.ov_eigenvalues()
        order = np.argsort(-np.abs(eig))
        figures.append(
            Figure(
                f"OV eigenvalues of {self.head_name}",
                # |λ| as the line, Re λ as dots over it: on a copying head they coincide, and a
                # line drawn over another one hid Re λ entirely.
                svg=line_chart(
                    {"|λ|": np.abs(eig)[order], "Re λ": eig.real[order]}, x=np.arange(1, len(eig) + 1), markers=("Re λ",),
                    title=f"OV eigenvalues of {self.head_name}, largest |λ| first", x_title="eigenvalue rank", y_title="value",
                ),
                caption=f"Copying score {float(self.copying_score[self.layer, self.head]):+.3f}: Re λ close to |λ| everywhere means positive eigenvalues, i.e. copying.",
            )
        )
        heads = [f"H{h}" for h in range(self.n_heads)]
        layers = [f"L{layer}" for layer in range(self.n_layers)]
        sample_text = "all tokens" if not self.self_top_sampled else f"{self.self_top_tokens} random tokens of {self.d_vocab} (±{float(self.self_top_stderr().max()):.3f} at most)"
        figures += [
            Figure(
                "OV copying score, every head",
                svg=heatmap(self.copying_score, x_labels=heads, y_labels=layers, title="OV copying score", x_title="head", y_title="layer", diverging=True, vmin=-1, vmax=1, annotate=True),
                caption="Re Σλ / Σ|λ| of each head's full OV circuit. +1: every eigenvalue of the head's full OV circuit is positive (it copies the attended token); −1: it suppresses it.",
            ),
            Figure(
                "OV self-top fraction",
                svg=heatmap(self.ov_self_top_fraction, x_labels=heads, y_labels=layers, title="OV self-top fraction", x_title="head", y_title="layer", vmin=0, vmax=1, annotate=True),
                caption=f"Measured on {sample_text}; chance is 1/{self.d_vocab}.",
            ),
            Figure(
                "QK copying score",
                svg=heatmap(self.qk_copying_score, x_labels=heads, y_labels=layers, title="QK eigenvalue score", x_title="head", y_title="layer", diverging=True, vmin=-1, vmax=1, annotate=True),
                caption="Re Σλ / Σ|λ| of each head's full QK circuit. Positive: the head's query token prefers keys equal to itself (weights only" + (", RoPE ignored)." if self.rotary else ")."),
            ),
        ]
        for mode in ("q", "k", "v"):
            view = self.composition_view(mode)
            if view is None:
                continue
            matrix, writers, readers, unit = view
            per_layer = " (largest over the two layers' head pairs)" if unit == "layer" else ""
            figures.append(
                Figure(
                    f"{mode.upper()}-composition ‖W_OV(writer) M(reader)‖ / (‖W_OV‖‖M‖)",
                    svg=heatmap(matrix, x_labels=readers, y_labels=writers, title=f"{mode.upper()}-composition", x_title=f"reading {unit}", y_title=f"writing {unit}", vmin=0),
                    caption=(
                        f"Rows: the earlier {unit} whose output is read; columns: the later {unit} reading it{per_layer}. "
                        f"Random matrices of the same shapes score {self.baseline_mean:.3f} ± {self.baseline_std:.3f}; cells well above that "
                        "are real composition. Cells whose reader is not in a later layer than the writer are 0."
                    ),
                )
            )
        tables = [self._copying_table(), self._composition_table(), self._top_outputs_table()]
        notes = []
        if self.rotary:
            notes.append("RoPE model: weight-only QK maps ignore the rotation of queries and keys, so they are approximate (exact for a query and key at the same position).")
        if self.self_top_sampled:
            notes.append(f"Self-top fractions: {self.self_top_tokens} random tokens of {self.d_vocab}, each against the whole vocabulary (sampling error ±{float(self.self_top_stderr().max()):.3f} at most).")
        notes.append("Weight-only circuits: the norms' per-position scale, biases and the 1/√d_head attention scale are left out.")
        if self.n_kv_heads != self.n_heads:
            notes.append(f"Grouped-query attention: query head h reads key/value head h // {self.n_heads // self.n_kv_heads}.")
        return ReportSection(
            title=f"QK and OV circuits ({self.head_name})",
            how_to_read=(
                "QK map: how much a query token (row) wants to attend to a key token (column), before softmax. "
                "OV map: how attending to a token (row) changes each output token's logit (column); a red diagonal is copying. "
                "Copying score: +1 when every eigenvalue of the full OV circuit is positive. Self-top: share of tokens whose "
                "largest OV output is themselves. Composition: how strongly an earlier head's output is read by a later head's "
                "query (Q), key (K) or value (V), compared with random matrices of the same shape."
            ),
            figures=figures,
            tables=[t for t in tables if t is not None],
            notes=notes,
        )

    def _copying_table(self) -> Table:
        rows = []
        for layer, head in self.top_copying_heads():
            rows.append([head_label(layer, head), _r(self.copying_score[layer, head], 4), _r(self.ov_self_top_fraction[layer, head], 4), _r(self.qk_copying_score[layer, head], 4)])
        return Table("Most copying heads", ["head", "OV copying score", "OV self-top fraction", "QK score"], rows)

    def _composition_table(self) -> Table | None:
        rows = []
        for mode in ("q", "k", "v"):
            for l1, h1, l2, h2, score in self.top_compositions(mode, 5):
                ratio = score / self.baseline_mean if self.baseline_mean else float("nan")
                rows.append([mode.upper(), head_label(l1, h1), head_label(l2, h2), _r(score, 4), _r(ratio, 2)])
        if not rows:
            return None
        return Table("Strongest compositions", ["mode", "writing head", "reading head", "score", "× random baseline"], rows)

    def _top_outputs_table(self) -> Table:
        rows = []
        for token, strings, values, rank in zip(self.token_strings, self.ov_top_strings, np.asarray(self.ov_top_values).tolist(), np.asarray(self.ov_self_rank).tolist()):
            tops = ", ".join(f"{visible_token(s)} ({v:+.2f})" for s, v in zip(strings, values))
            rows.append([visible_token(token), tops, int(rank) + 1])
        return Table(f"What attending to each token raises most ({self.head_name}, whole vocabulary)", ["attended token", "top output logits", "rank of the token itself"], rows)
