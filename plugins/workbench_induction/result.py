"""The induction result: per-head scores, ablation losses and the in-context learning curve.

Everything shown (repeat loss, rises, shares of the in-context gain) is derived from the
stored per-token loss curves, so the saved file holds one source of truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.figures import heatmap, line_chart
from workbench.plugin_api import Figure, ReportSection, Result, Table

SCORE_KINDS = ("induction", "previous_token", "duplicate_token")
SCORE_TITLES = {"induction": "Induction score", "previous_token": "Previous-token score", "duplicate_token": "Duplicate-token score"}
TOP_LISTED = 10  # heads per list in the JSON's top_heads and the ranked table

# A head "matters" when ablating it alone undoes at least this share of the in-context
# gain (first-copy loss minus repeat loss). Below it, the model does as well without it.
MATTERS_SHARE = 0.05
# A head "attends like an induction head" from this induction score on.
INDUCTION_LIKE = 0.3
# An ablation "takes away" an induction head's stripe when its score falls by this share.
STRIPE_LOSS = 0.25


def head_name(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def _r(value: float, digits: int = 5):
    value = float(value)
    return None if value != value else round(value, digits)


@dataclass
class InductionResult(Result):
    kind = "induction/scores"

    n_layers: int
    n_heads: int
    n_kv_heads: int
    length: int  # n: random tokens per block; each sequence is [BOS?] block block
    batch: int
    seed: int
    prepend_bos: bool
    token_pool_size: int  # ordinary tokens the blocks were drawn from
    tokens: np.ndarray  # [batch, seq_len] the sequences
    induction: np.ndarray  # [layer, head] mean attention from r_k (second copy) to r_{k+1} (first copy)
    previous_token: np.ndarray  # [layer, head] mean attention from position i to i - 1 (every i >= 1)
    duplicate_token: np.ndarray  # [layer, head] mean attention from r_k (second copy) to r_k (first copy)
    clean_loss_curve: np.ndarray  # [seq_len - 1] batch-mean loss; index t predicts the token at position t + 1
    ablated_heads: list  # [[layer, head], ...]: top induction heads, then top previous-token heads
    ablation_kinds: list  # ["zero", "mean"] or one of them
    ablated_loss_curves: np.ndarray  # [ablated head, kind, seq_len - 1]
    ablated_induction: np.ndarray  # [ablated head, kind, layer, head]: every head's induction score under that ablation
    example_heads: list  # [[layer, head]] the top head for each of SCORE_KINDS
    example_patterns: np.ndarray  # [3, seq_len, seq_len] their batch-mean attention patterns
    chance_loss: float = 0.0  # ln(token pool size): the loss of a uniform guess over the pool
    seconds_scores: float = 0.0
    seconds_ablation: float = 0.0

    # -- layout and derived numbers -------------------------------------------------------------

    @property
    def prefix(self) -> int:
        return 1 if self.prepend_bos else 0

    @property
    def seq_len(self) -> int:
        return self.prefix + 2 * self.length

    @property
    def second_start(self) -> int:
        return self.prefix + self.length

    def scores(self, kind: str) -> np.ndarray:
        return np.asarray(getattr(self, kind))

    def repeat_loss(self, curve: np.ndarray) -> float:
        """Mean loss on r_2..r_n of the second copy (the predictable part of the repeat)."""
        return float(np.mean(np.asarray(curve)[self.second_start : self.seq_len - 1]))

    def first_copy_loss(self, curve: np.ndarray) -> float:
        """Mean loss on r_2..r_n of the first copy, where no context helps."""
        return float(np.mean(np.asarray(curve)[self.prefix : self.second_start - 1]))

    @property
    def clean_loss(self) -> float:
        return self.repeat_loss(self.clean_loss_curve)

    @property
    def in_context_gain(self) -> float:
        """How much lower the loss on the repeat is than on the first copy (nats)."""
        return self.first_copy_loss(self.clean_loss_curve) - self.clean_loss

    def ablated_loss(self, index: int, kind: str) -> float:
        return self.repeat_loss(self.ablated_loss_curves[index, self.ablation_kinds.index(kind)])

    @property
    def verdict_kind(self) -> str:
        # Mean ablation keeps the head's typical output and removes only what varies with the
        # input, so it is the fairer test of whether the head matters; zero ablation can hurt
        # by pushing the residual stream off distribution.
        return "mean" if "mean" in self.ablation_kinds else self.ablation_kinds[0]

    def share_of_gain(self, index: int, kind: str) -> float | None:
        gain = self.in_context_gain
        if gain <= 0:
            return None
        return (self.ablated_loss(index, kind) - self.clean_loss) / gain

    def matters(self, index: int) -> bool | None:
        share = self.share_of_gain(index, self.verdict_kind)
        return None if share is None else share >= MATTERS_SHARE

    def top(self, kind: str, count: int = TOP_LISTED) -> list[list]:
        """[[layer, head, score], ...] highest first (ties: lower layer, then head)."""
        values = self.scores(kind)
        order = sorted(np.ndindex(values.shape), key=lambda lh: (-float(values[lh]), lh))[:count]
        return [[int(layer), int(head), float(values[layer, head])] for layer, head in order]

    def kv_head(self, head: int) -> int:
        """The key/value head a query head reads under grouped-query attention."""
        return head // max(1, self.n_heads // max(1, self.n_kv_heads))

    # -- JSON ---------------------------------------------------------------------------------

    def summary(self) -> dict:
        top_induction = [tuple(h[:2]) for h in self.top("induction", min(3, self.n_layers * self.n_heads))]
        heads = []
        for index, (layer, head) in enumerate(self.ablated_heads):
            entry = {
                "layer": layer,
                "head": head,
                **{f"{kind}_score": _r(self.scores(kind)[layer, head]) for kind in SCORE_KINDS},
            }
            for j, kind in enumerate(self.ablation_kinds):
                loss = self.ablated_loss(index, kind)
                share = self.share_of_gain(index, kind)
                entry[kind] = {
                    "loss": _r(loss),
                    "rise": _r(loss - self.clean_loss),
                    "share_of_gain": None if share is None else _r(share),
                    "induction_scores_after": {head_name(*h): _r(self.ablated_induction[index, j][h]) for h in top_induction},
                }
            entry["matters"] = self.matters(index)
            heads.append(entry)
        curve_head = self.ablated_heads.index(list(top_induction[0])) if top_induction and list(top_induction[0]) in self.ablated_heads else None
        return {
            "sequences": {
                "length": self.length,
                "batch": self.batch,
                "seed": self.seed,
                "prepend_bos": self.prepend_bos,
                "seq_len": self.seq_len,
                "token_pool_size": self.token_pool_size,
            },
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "scores": {kind: [[_r(v) for v in row] for row in self.scores(kind)] for kind in SCORE_KINDS},
            "top_heads": {kind: [[layer, head, _r(score)] for layer, head, score in self.top(kind)] for kind in SCORE_KINDS},
            "ablation": {
                "metric": "mean cross-entropy (nats) on tokens 2..n of the second copy",
                "clean_loss": _r(self.clean_loss),
                "first_copy_loss": _r(self.first_copy_loss(self.clean_loss_curve)),
                "in_context_gain": _r(self.in_context_gain),
                "chance_loss": _r(self.chance_loss),
                "kinds": list(self.ablation_kinds),
                "verdict_kind": self.verdict_kind,
                "matters_share": MATTERS_SHARE,
                "heads": heads,
            },
            "loss_curve": {
                "target_positions": list(range(1, self.seq_len)),
                "second_copy_start": self.second_start,
                "clean": [_r(v) for v in self.clean_loss_curve],
                "ablated": (
                    [
                        {"layer": top_induction[0][0], "head": top_induction[0][1], "kind": kind, "loss": [_r(v) for v in self.ablated_loss_curves[curve_head, j]]}
                        for j, kind in enumerate(self.ablation_kinds)
                    ]
                    if curve_head is not None
                    else []
                ),
            },
            "seconds_scores": self.seconds_scores,
            "seconds_ablation": self.seconds_ablation,
        }

    # -- report -------------------------------------------------------------------------------

    def ranked_rows(self, count: int = TOP_LISTED) -> list[list]:
        rows = []
        for rank, (layer, head, _) in enumerate(self.top("induction", count), start=1):
            rows.append([rank, head_name(layer, head)] + [round(float(self.scores(kind)[layer, head]), 3) for kind in SCORE_KINDS])
        return rows

    def ablation_rows(self) -> list[list]:
        rows = []
        for index, (layer, head) in enumerate(self.ablated_heads):
            row = [head_name(layer, head), round(float(self.induction[layer, head]), 3), round(float(self.previous_token[layer, head]), 3)]
            for kind in self.ablation_kinds:
                loss = self.ablated_loss(index, kind)
                row += [round(loss, 3), round(loss - self.clean_loss, 3)]
            share = self.share_of_gain(index, self.verdict_kind)
            row.append("n/a" if share is None else f"{round(100 * share) + 0:d}%")
            verdict = self.matters(index)
            row.append("n/a" if verdict is None else ("yes" if verdict else "no"))
            rows.append(row)
        return rows

    def ablation_columns(self) -> list[str]:
        columns = ["head", "induction", "prev-token"]
        for kind in self.ablation_kinds:
            columns += [f"{kind}-ablated loss", f"{kind}-ablated rise"]
        return columns + [f"share of ICL gain ({self.verdict_kind})", "matters"]

    def notes(self) -> list[str]:
        notes = [
            f"Clean loss on the repeat: {self.clean_loss:.3f} nats; on the first copy: {self.first_copy_loss(self.clean_loss_curve):.3f} "
            f"(chance over the {self.token_pool_size} tokens drawn from: {self.chance_loss:.3f})."
        ]
        idle = [
            head_name(layer, head)
            for index, (layer, head) in enumerate(self.ablated_heads)
            if self.induction[layer, head] >= INDUCTION_LIKE and self.matters(index) is False
        ]
        if idle:
            notes.append(
                f"{', '.join(idle)} attend{'s' if len(idle) == 1 else ''} like an induction head (score ≥ {INDUCTION_LIKE}) but "
                f"{'its' if len(idle) == 1 else 'their'} {self.verdict_kind} ablation alone undoes less than {MATTERS_SHARE:.0%} of the in-context gain."
            )
        # Which induction heads lose their stripe without an earlier head: their attention
        # depends on that head's output (for induction heads, usually through their keys).
        j = self.ablation_kinds.index(self.verdict_kind)
        induction_heads = [tuple(h[:2]) for h in self.top("induction", TOP_LISTED) if h[2] >= INDUCTION_LIKE]
        for index, (layer, head) in enumerate(self.ablated_heads):
            hit = []
            for target in induction_heads:
                before, after = float(self.induction[target]), float(self.ablated_induction[index, j][target])
                if target[0] > layer and after < (1 - STRIPE_LOSS) * before:
                    hit.append(f"{head_name(*target)} ({before:.3f} → {after:.3f})")
            if hit:
                notes.append(f"{self.verdict_kind.capitalize()}-ablating {head_name(layer, head)} lowers the induction score of {', '.join(hit)}: {'their' if len(hit) > 1 else 'its'} attention depends on that head's output.")
        return notes

    def report(self) -> ReportSection:
        layers = [f"L{i}" for i in range(self.n_layers)]
        heads = [f"H{i}" for i in range(self.n_heads)]
        # Small grids get cells wide enough to print each score in its cell.
        big_cells = self.n_heads <= 14 and self.n_layers <= 12
        figures = [
            Figure(
                SCORE_TITLES[kind],
                svg=heatmap(self.scores(kind), x_labels=heads, y_labels=layers, title=SCORE_TITLES[kind], x_title="head", y_title="layer", vmin=0.0, vmax=1.0, annotate=big_cells, cell=44.0 if big_cells else None),
                caption="Share of attention on the expected token, averaged over the batch; the colour scale is fixed to 0..1.",
            )
            for kind in SCORE_KINDS
        ]
        series = {"clean": self.clean_loss_curve}
        kind = self.verdict_kind
        j = self.ablation_kinds.index(kind)
        for label_kind in ("induction", "previous_token"):
            layer, head = self.top(label_kind, 1)[0][:2]
            if [layer, head] in self.ablated_heads:
                series[f"{head_name(layer, head)} {kind}-abl."] = self.ablated_loss_curves[self.ablated_heads.index([layer, head]), j]
        figures.append(
            Figure(
                "In-context learning curve",
                svg=line_chart(series, x=list(range(1, self.seq_len)), title="Loss along the repeated sequence", x_title="position of the predicted token", y_title="loss (nats)"),
                caption=f"The second copy starts at position {self.second_start}; a model that copies drops there, and the drop is what an ablation takes away.",
            )
        )
        layer, head = self.example_heads[0]
        positions = [str(i) for i in range(self.seq_len)]
        figures.append(
            Figure(
                f"Mean attention pattern of {head_name(layer, head)}",
                svg=heatmap(self.example_patterns[0], x_labels=positions, y_labels=positions, title=f"{head_name(layer, head)}: mean attention", x_title="key position", y_title="query position", vmin=0.0),
                caption="An induction head shows a stripe from the second copy to one position after the first copy.",
            )
        )
        tables = [
            Table("Heads ranked by induction score", ["rank", "head", "induction", "previous-token", "duplicate-token"], self.ranked_rows()),
            Table(f"Ablations (loss on the repeat; clean {self.clean_loss:.3f} nats)", self.ablation_columns(), self.ablation_rows()),
        ]
        gqa = f" With grouped-query attention ({self.n_heads} query heads over {self.n_kv_heads} key/value heads) scores are per query head." if self.n_kv_heads < self.n_heads else ""
        return ReportSection(
            title="Induction heads",
            how_to_read=(
                f"The model reads {self.batch} random blocks of {self.length} tokens, each repeated twice. A bright cell in the induction "
                "map is a head that, at a token of the repeat, looks at the token that followed its earlier copy; the previous-token "
                "map shows heads that look one token back, which induction heads need. The ablation table is the causal check: the "
                "rise in loss on the repeat when a head is removed. A head with a high score but no rise attends like an induction head "
                "without the model relying on it." + gqa
            ),
            figures=figures,
            tables=tables,
            notes=self.notes(),
        )
