"""What an edit did: the request, the update's size, the v* optimisation, P(new) and P(true)
before and after on the prompt, paraphrases and neighbours, and greedy generations."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from workbench.figures import bar_chart, heatmap, line_chart
from workbench.plugin_api import Figure, ReportSection, Result, Table

PROBE_KINDS = ("prompt", "paraphrase", "neighbour")


def _r(value: float, digits: int = 5) -> float:
    return round(float(value), digits)


@dataclass
class RomeEditResult(Result):
    kind = "rome/edit"

    subject: str
    template: str
    target_new: str
    target_true: str
    layer: int
    layer_source: str  # "user" or "causal trace"
    weight_name: str
    u_norm: float  # ‖u‖ (u = C⁻¹k* normalised: 1)
    right_norm: float  # ‖(v* - W k*) / (u · k*)‖ = ‖ΔW‖_F
    delta_norm: float  # ‖v* - v0‖
    v0_norm: float
    k_norm: float
    probe_prompts: list  # the prompts P(new) and P(true) were measured on
    probe_kinds: list  # "prompt" | "paraphrase" | "neighbour" per probe
    p_before: np.ndarray  # [probe, 2]: P(new), P(true) before the edit
    p_after: np.ndarray  # [probe, 2]: after
    losses: np.ndarray  # [step, 4]: total, target NLL, KL, norm penalty
    target_prob: np.ndarray  # [step] mean P(new) over the prefixed prompts during the v* search
    generation_prompts: list
    generations_before: list
    generations_after: list
    n_contexts: int
    contexts: list
    keys_corpus: str
    n_keys: int
    seconds_keys: float  # computing C (0 when read from the cache)
    seconds_edit: float  # k*, v* and the update, C excluded
    fingerprint_before: str = ""
    fingerprint_after: str = ""
    trace_scores: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))  # [token, layer] MLP restoration
    trace_tokens: list = field(default_factory=list)
    trace_subject: list = field(default_factory=list)  # [start, end)
    trace_high: float = 0.0
    trace_low: float = 0.0
    # "weights": the model's weights were edited (TransformerBridge; the model stays edited);
    # "intervention": the edit was added to the runs that measured it (nnsight, NDIF), the
    # weights untouched.
    applied_as: str = "weights"

    @property
    def prompt(self) -> str:
        return self.template.replace("{}", self.subject, 1)

    def _rows(self, kind: str) -> list[int]:
        return [i for i, k in enumerate(self.probe_kinds) if k == kind]

    def success(self, kind: str, after: bool = True) -> float | None:
        """Share of the probes of kind where the edit 'holds': new > true (prompt, paraphrase) or true > new (neighbour)."""
        rows = self._rows(kind)
        if not rows:
            return None
        p = self.p_after if after else self.p_before
        wins = [(p[i, 0] > p[i, 1]) if kind != "neighbour" else (p[i, 1] > p[i, 0]) for i in rows]
        return float(np.mean(wins))

    def summary(self) -> dict:
        out = {
            "subject": self.subject,
            "prompt": self.prompt,
            "target_new": self.target_new,
            "target_true": self.target_true,
            "layer": self.layer,
            "layer_source": self.layer_source,
            "u_norm": _r(self.u_norm),
            "update_norm": _r(self.right_norm),
            "v_delta_norm": _r(self.delta_norm),
            "v0_norm": _r(self.v0_norm),
            "steps": int(len(self.losses)),
            "final_loss": _r(self.losses[-1, 0]) if len(self.losses) else None,
            "p_new_before": _r(self.p_before[0, 0]),
            "p_true_before": _r(self.p_before[0, 1]),
            "p_new_after": _r(self.p_after[0, 0]),
            "p_true_after": _r(self.p_after[0, 1]),
            "efficacy": self.success("prompt"),
            "paraphrase_success": self.success("paraphrase"),
            "neighbour_success": self.success("neighbour"),
            "generation_before": self.generations_before[0] if self.generations_before else "",
            "generation_after": self.generations_after[0] if self.generations_after else "",
            "seconds_keys": _r(self.seconds_keys, 3),
            "seconds_edit": _r(self.seconds_edit, 3),
            "fingerprint_before": self.fingerprint_before,
            "fingerprint_after": self.fingerprint_after,
            "applied_as": self.applied_as,
        }
        return out

    def probe_labels(self) -> list[str]:
        """Short names for the bars ("paraphrase 2"); the probes table gives each prompt."""
        counts = {kind: self.probe_kinds.count(kind) for kind in set(self.probe_kinds)}
        seen: dict[str, int] = {}
        labels = []
        for kind in self.probe_kinds:
            seen[kind] = seen.get(kind, 0) + 1
            labels.append(kind if counts[kind] == 1 else f"{kind} {seen[kind]}")
        return labels

    def report(self) -> ReportSection:
        labels = self.probe_labels()
        bar_labels, bar_values = [], []
        for i, label in enumerate(labels):
            for when, p in (("before", self.p_before), ("after", self.p_after)):
                bar_labels.append(f"{label}, {when}")
                bar_values.append(float(p[i, 0] - p[i, 1]))
        figures = [
            Figure(
                "P(new) − P(true), before and after",
                svg=bar_chart(bar_labels, bar_values, title="P(new) − P(true) before / after the edit", value_title="P(new) − P(true)", width=600),
                caption="Right of zero the model prefers the new target. Neighbours should stay left of zero.",
            ),
        ]
        if len(self.losses):
            figures.append(
                Figure(
                    "v* optimisation",
                    svg=line_chart(
                        {"total loss": self.losses[:, 0], "target NLL": self.losses[:, 1], "KL": self.losses[:, 2], "norm penalty": self.losses[:, 3], "mean P(new)": self.target_prob},
                        title="Finding v*: loss per step",
                        x_title="step",
                        y_title="loss / probability",
                    ),
                )
            )
        if self.trace_scores.size:
            figures.append(
                Figure(
                    "Causal trace (MLP)",
                    svg=heatmap(self.trace_scores, x_labels=[f"L{i}" for i in range(self.trace_scores.shape[1])], y_labels=self.trace_tokens, title="P(answer) with the MLP window restored", x_title="layer", y_title="token", vmin=self.trace_low),
                    caption=f"Clean P {self.trace_high:.3f}, corrupted {self.trace_low:.3f}; the layer with the highest cell on the last subject token was proposed (layer {self.layer}).",
                )
            )
        probes = Table(
            "Probes",
            ["kind", "prompt", "P(new) before", "P(true) before", "P(new) after", "P(true) after"],
            [[k, p, _r(b[0]), _r(b[1]), _r(a[0]), _r(a[1])] for k, p, b, a in zip(labels, self.probe_prompts, self.p_before, self.p_after)],
        )
        gens = Table("Greedy generations", ["prompt", "before", "after"], [[p, b, a] for p, b, a in zip(self.generation_prompts, self.generations_before, self.generations_after)])
        numbers = Table(
            "The edit",
            ["quantity", "value"],
            [
                ["layer", f"{self.layer} ({self.layer_source})"],
                ["weight", self.weight_name],
                ["‖u‖", _r(self.u_norm)],
                ["‖ΔW‖ (= ‖right vector‖)", _r(self.right_norm)],
                ["‖v* − v0‖ / ‖v0‖", f"{self.delta_norm:.3f} / {self.v0_norm:.3f}"],
                ["‖k*‖", _r(self.k_norm)],
                ["contexts for k*, v*", self.n_contexts],
                ["key statistics", f"{self.n_keys} keys, {self.keys_corpus}"],
                ["seconds: C / edit", f"{self.seconds_keys:.2f} / {self.seconds_edit:.2f}"],
            ],
        )
        return ReportSection(
            title=f"ROME: {self.subject} → {self.target_new.strip()}",
            how_to_read=(
                f"The edit {'rewrote' if self.applied_as == 'weights' else 'added, as an intervention,'} layer {self.layer}'s MLP output weight by a rank-one update so that '{self.prompt}' continues with "
                f"'{self.target_new.strip()}' instead of '{self.target_true.strip()}'. Prompt and paraphrase bars should move right of zero; "
                "neighbour bars (other subjects with the same true answer) should stay left of it."
            ),
            figures=figures,
            tables=[numbers, probes, gens],
            notes=[
                f"Model fingerprint after the edit: {self.fingerprint_after}. Undo restores {self.fingerprint_before}."
                if self.applied_as == "weights"
                else f"The edit was applied as an intervention (W + right ⊗ u added to the MLP projection's output in the runs that measured it); the model's weights were not changed (fingerprint {self.fingerprint_before})."
            ],
        )
