"""The rome-eval result: CounterFact metrics per case and their means (Meng et al. 2022, §3)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from workbench.figures import bar_chart
from workbench.plugin_api import Figure, ReportSection, Result, Table

METRICS = ("ES", "PS", "NS", "EM", "PM", "NM")


def _mean(values) -> float | None:
    kept = [v for v in values if v is not None]
    return round(float(np.mean(kept)), 5) if kept else None


def harmonic_mean(values) -> float | None:
    if any(v is None for v in values):
        return None
    if any(v <= 0 for v in values):
        return 0.0
    return round(len(values) / sum(1 / v for v in values), 5)


@dataclass
class RomeEvalResult(Result):
    kind = "rome-eval/counterfact"

    cases: list  # [{"case_id", "ES", "PS", "NS", "EM", "PM", "NM", "seconds"}]
    layer: int
    traced_layers: list = field(default_factory=list)
    fluency: float | None = None  # ROME's generation entropy ×100 (GE), when generations were made
    keys_corpus: str = ""
    n_keys: int = 0
    seconds_keys: float = 0.0
    dataset: str = ""

    def means(self) -> dict:
        out = {m: _mean(c[m] for c in self.cases) for m in METRICS}
        out["S"] = harmonic_mean([out["ES"], out["PS"], out["NS"]])
        out["seconds_per_edit"] = _mean(c["seconds"] for c in self.cases)
        return out

    def summary(self) -> dict:
        means = self.means()
        summary = {k: means[k] for k in ("ES", "PS", "NS", "S", "EM", "PM", "NM", "seconds_per_edit")}
        details = {"n_cases": len(self.cases), "layer": self.layer, "traced_layers": self.traced_layers, "fluency": self.fluency, "keys": f"{self.n_keys} keys, {self.keys_corpus}", "seconds_keys": round(self.seconds_keys, 3)}
        return {"cases": self.cases, "summary": summary, "details": details}

    def report(self) -> ReportSection:
        means = self.means()
        names = ["ES", "PS", "NS", "S"]
        figure = Figure(
            "CounterFact scores",
            svg=bar_chart(names, [means[n] or 0.0 for n in names], title=f"ROME at layer {self.layer}: scores over {len(self.cases)} cases", value_title="fraction"),
        )
        rows = [[str(c["case_id"])] + [None if c[m] is None else round(c[m], 3) for m in METRICS] + [c["seconds"]] for c in self.cases]
        summary = Table("Means", ["quantity", "value"], [[k, v] for k, v in means.items()] + ([["fluency (GE)", round(self.fluency, 1)]] if self.fluency is not None else []))
        return ReportSection(
            title=f"ROME evaluation ({len(self.cases)} cases)",
            how_to_read=(
                "ES: share of cases where the edited model prefers the new object on the rewrite prompt; PS: the same on paraphrases; "
                "NS: share of neighbourhood prompts (other subjects with the same true object) where it still prefers the true object. "
                "EM/PM/NM are the mean probability differences; S is the harmonic mean of ES, PS and NS."
            ),
            figures=[figure],
            tables=[summary, Table("Cases", ["case"] + list(METRICS) + ["seconds"], rows)],
            notes=[f"Key statistics: {self.n_keys} keys, {self.keys_corpus}. Every edit was undone (bit-exact) before the next case."],
        )
