"""The family matrix: every built-in analysis on a tiny model of every family in the zoo,
each cell run through the plugin runner (what `workbench run` does) and checked against a
computation that does not go through the analysis' own code.

A cell is "ok" when the analysis ran and agreed with its check, "refused" when the analysis
declined with a message naming why (an InputError: it does not apply to this family), and
"failed" when it ran and was wrong or broke. The independent side of each check:

- cache: the store read back against the Hugging Face model's own decoder-layer outputs
  (forward hooks on the HF modules) and its eager `output_attentions`;
- logit-lens: each layer's output through the HF model's own final norm and unembedding
  (with Gemma's final soft-capping), and the last layer against HF's logits;
- attention: every head's pattern against HF's eager `output_attentions`;
- induction: the scores recomputed from HF's attentions on the same token blocks, finding
  earlier copies by token identity;
- qk-ov: composition scores against TransformerLens' `all_composition_scores`, and the
  token circuits against W_E W_Q W_Kᵀ W_Eᵀ and W_E W_V W_O W_U multiplied out here;
- causal-trace: the fast path against the reference algorithm (same noise);
- patching: against `transformer_lens.patching`;
- rome: the rank-one update's defining identities (W_new k* = v*, keys C⁻¹-orthogonal to
  k* untouched) and an undo that restores every parameter bit for bit;
- rome-eval: two CounterFact-format cases, every parameter bit for bit afterwards.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, WorkbenchError
from .selfcheck import CheckFailed, changed_weights, unexpected_failure, weights_snapshot

PROMPT = "The Eiffel Tower is located in the city of"
CORRUPTED = "The Colosseum is located in the city of"  # as many SmolLM2 tokens as PROMPT
SUBJECT = "The Eiffel Tower"
ANALYSES = ("cache", "logit-lens", "attention", "induction", "qk-ov", "causal-trace", "patching", "rome", "rome-eval")
TOLERANCE = 1e-4  # absolute, float32 (the largest difference measured is in the cell's detail)
ROME_LAYER = 1
# The subject ends the prompt: a random model's attention carries little from an earlier
# subject token to the last position, so only there can an edit show in P(new).
ROME_TEMPLATE = "Paris, France: the {}"
ROME_SETTINGS: dict[str, Any] = dict(subject="Eiffel Tower", template=ROME_TEMPLATE, target_new="Rome", layer=ROME_LAYER, gen_tokens=0, v_steps=20, short_prefixes=2, long_prefixes=2)
COUNTERFACT = [
    {
        "case_id": 0,
        "requested_rewrite": {"prompt": ROME_TEMPLATE, "subject": "Eiffel Tower", "target_new": {"str": "Rome"}, "target_true": {"str": "Paris"}},
        "paraphrase_prompts": ["In France, Paris: the Eiffel Tower"],
        "neighborhood_prompts": ["Paris, France: the Louvre"],
    },
    {
        "case_id": 1,
        "requested_rewrite": {"prompt": "Jazz on the trumpet: {}", "subject": "Miles Davis", "target_new": {"str": "piano"}, "target_true": {"str": "trumpet"}},
        "paraphrase_prompts": ["The trumpet player Miles Davis"],
        "neighborhood_prompts": ["Jazz on the trumpet: Louis Armstrong"],
    },
]


@dataclass
class Cell:
    family: str
    analysis: str
    status: str  # ok | refused | failed
    detail: str
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"family": self.family, "analysis": self.analysis, "status": self.status, "detail": self.detail, "seconds": round(self.seconds, 2)}


class FamilyChecks:
    """The checks of one family's model; `run(analysis)` gives its cell."""

    def __init__(self, family: str, scratch: Path):
        from ..models import load_model
        from ..models.loading import load_hf_model

        self.family = family
        self.scratch = scratch
        self.model = load_model(f"zoo:{family}")
        # A second copy of the HF model, never wrapped: the bridge replaces the attention
        # modules, after which HF's own output_attentions comes back empty.
        _, self.hf, _ = load_hf_model(f"zoo:{family}")
        self.hf.set_attn_implementation("eager")
        self.ids = self.model.tokenize(PROMPT)

    def run(self, analysis: str) -> Cell:
        started = time.perf_counter()
        check: Callable[[], str] = getattr(self, "check_" + analysis.replace("-", "_"))
        try:
            detail, status = check(), "ok"
        except InputError as exc:  # the analysis declined: a named refusal
            detail, status = str(exc), "refused"
        except (CheckFailed, WorkbenchError) as exc:
            detail, status = str(exc), "failed"
        except Exception as exc:  # where it broke, for the bug report
            detail, status = unexpected_failure(exc), "failed"
        return Cell(self.family, analysis, status, " ".join(detail.split()), time.perf_counter() - started)

    # -- helpers -------------------------------------------------------------------------

    def _run(self, plugin_id: str, prompts: list[str], **params: Any) -> Any:
        from ..plugin_api import AnalysisContext, discover_plugins, run_analysis
        from ..progress import run_to_completion

        plugin = discover_plugins().get(plugin_id)
        return run_to_completion(run_analysis(plugin, AnalysisContext(self.model, prompts), params))

    def _hf_forward(self, ids: list[int] | np.ndarray) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray], np.ndarray]:
        """HF's own numbers: the embedding output, each decoder layer's output (forward hooks
        on the HF modules), the attentions [layer][batch, head, q, k] and the logits."""
        import torch

        layers = _decoder_layers(self.hf, self.model.n_layers)
        outputs: list[Any] = [None] * len(layers)

        def keep(index: int):
            def hook(module, args, output):
                outputs[index] = (output[0] if isinstance(output, tuple) else output).detach().float().numpy()

            return hook

        handles = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(layers)]
        try:
            batch = torch.as_tensor(np.atleast_2d(np.asarray(ids)), dtype=torch.long)
            with torch.inference_mode():
                out = self.hf(batch, output_hidden_states=True, output_attentions=True)
        finally:
            for handle in handles:
                handle.remove()
        embedded = out.hidden_states[0].float().numpy()
        return [embedded, *outputs], out.logits.float().numpy(), [a.float().numpy() for a in out.attentions], batch.numpy()

    # -- the checks ------------------------------------------------------------------------

    def check_cache(self) -> str:
        from ..capture import capture_activations
        from ..progress import run_to_completion
        from ..store import ActivationStore

        path = self.scratch / f"{self.family}.h5"
        run_to_completion(capture_activations(self.model, [PROMPT], ["residual", "attention"], path))
        states, _, attentions, _ = self._hf_forward(self.ids)
        worst = 0.0
        with ActivationStore(path) as store:
            run = store.run()
            if list(run.tokens(0)) != self.ids:
                raise CheckFailed("the stored tokens differ from the prompt's")
            pairs = [("blocks.0.hook_resid_pre", states[0][0])]
            pairs += [(f"blocks.{layer}.hook_resid_post", states[layer + 1][0]) for layer in range(self.model.n_layers)]
            pairs += [(f"blocks.{layer}.attn.hook_pattern", attentions[layer][0]) for layer in range(self.model.n_layers)]
            for name, expected in pairs:
                stored = run.read(name, 0)
                worst = max(worst, _compare(stored, expected, name, scale=float(np.abs(expected).max()) or 1.0))
        return f"{len(pairs)} hooks equal HF's layer outputs and attentions (max relative |difference| {worst:.1e})"

    def check_logit_lens(self) -> str:
        import torch

        result = self._run("logit-lens", [PROMPT], top_k=3, include_embeddings=True)
        states, logits, _, _ = self._hf_forward(self.ids)
        final_top = logits[0].argmax(-1)
        norm, unembed = _final_norm(self.hf), self.hf.get_output_embeddings()
        cap = getattr(self.hf.config, "final_logit_softcapping", None)
        expected = []
        with torch.inference_mode():
            for state in states[:-1]:
                lens = unembed(norm(torch.from_numpy(state)))
                if cap:
                    lens = torch.tanh(lens / cap) * cap
                expected.append(torch.softmax(lens[0].float(), -1).numpy())
        expected.append(torch.softmax(torch.from_numpy(logits[0]), -1).numpy())  # the last layer is the model's own output
        reference = np.stack([p[np.arange(len(final_top)), final_top] for p in expected])
        if result.p_final_top.shape != reference.shape:
            raise CheckFailed(f"shape {result.p_final_top.shape}, expected {reference.shape} (embeddings + every layer)")
        worst = _compare(result.p_final_top, reference, "P(final prediction)")
        return f"{reference.size} cells equal HF's final norm and unembedding (max |difference| {worst:.1e})"

    def check_attention(self) -> str:
        _, _, attentions, _ = self._hf_forward(self.ids)
        layer, head = self.model.n_layers - 1, self.model.n_heads - 1
        result = self._run("attention", [PROMPT], layer=layer, head=head)
        worst = _compare(result.pattern, attentions[layer][0, head], f"L{layer}H{head}")
        # Fewer than 32 tokens: every thumbnail block is one cell, so the thumbnails are the patterns.
        worst = max(worst, _compare(result.thumbnails, np.stack([a[0] for a in attentions]), "every head"))
        return f"{self.model.n_layers * self.model.n_heads} heads equal HF's eager attentions (max |difference| {worst:.1e})"

    def check_induction(self) -> str:
        result = self._run("induction", [], batch=4, seed=0)
        _, _, attentions, tokens = self._hf_forward(result.tokens)
        worst = 0.0
        for layer in range(self.model.n_layers):
            expected = stripe_scores(attentions[layer].astype(np.float64), tokens)
            for kind, values in expected.items():
                worst = max(worst, _compare(result.scores(kind)[layer], values, f"{kind} L{layer}"))
        return f"induction, duplicate- and previous-token scores of {self.model.n_layers * self.model.n_heads} heads equal HF's attentions (max |difference| {worst:.1e})"

    def check_qk_ov(self) -> str:
        import torch

        layer, head = self.model.n_layers - 1, 1
        result = self._run("qk-ov", [PROMPT], head=f"{layer}.{head}", fold_ln=False, token_set="prompt")
        bridge = self.model.bridge
        worst = 0.0
        for mode in "qkv":
            theirs = bridge.all_composition_scores(mode.upper()).scores.detach().float().numpy()
            worst = max(worst, _compare(getattr(result, f"composition_{mode}"), theirs, f"{mode.upper()}-composition"))
        kv = head // (self.model.n_heads // self.model.n_kv_heads)
        with torch.no_grad():
            tokens = torch.as_tensor(result.token_ids)
            E = bridge.W_E.detach().float()[tokens]
            q, k = bridge.W_Q.detach().float()[layer, head], bridge.W_K.detach().float()[layer, kv]
            v, o = bridge.W_V.detach().float()[layer, kv], bridge.W_O.detach().float()[layer, head]
            qk = (E @ q @ k.T @ E.T).numpy()
            ov = (E @ v @ o @ bridge.W_U.detach().float()[:, tokens]).numpy()
        worst = max(worst, _compare(result.qk, qk, "QK circuit", scale=float(np.abs(qk).max()) or 1.0))
        worst = max(worst, _compare(result.ov, ov, "OV circuit", scale=float(np.abs(ov).max()) or 1.0))
        return f"composition scores equal TransformerLens'; L{layer}H{head}'s QK and OV circuits equal the weights multiplied out (max |difference| {worst:.1e})"

    def check_causal_trace(self) -> str:
        common = dict(subject=SUBJECT, samples=3, seed=1, window=2)
        fast = self._run("causal-trace", [PROMPT], method="fast", **common)
        reference = self._run("causal-trace", [PROMPT], method="reference", **common)
        worst = _compare(fast.scores, reference.scores, "trace scores")
        return f"{fast.scores.size} cells of the fast path equal the reference algorithm (max |difference| {worst:.1e})"

    def check_patching(self) -> str:
        import torch
        import transformer_lens.patching as tl_patching

        # Typed answers: a random model may predict the same token after both prompts.
        result = self._run("patching", [PROMPT, CORRUPTED], targets="resid_pre,attn_out,mlp_out,head_out", answer=" Paris", wrong_answer=" Rome")
        functions = {
            "resid_pre": tl_patching.get_act_patch_resid_pre,
            "attn_out": tl_patching.get_act_patch_attn_out,
            "mlp_out": tl_patching.get_act_patch_mlp_out,
            "head_out": tl_patching.get_act_patch_attn_head_out_all_pos,
        }

        def metric(logits):
            return logits[0, -1, result.answer_id] - logits[0, -1, result.wrong_answer_id]

        clean, corrupted = torch.tensor([result.clean_tokens.tolist()]), torch.tensor([result.corrupted_tokens.tolist()])
        worst = 0.0
        with torch.inference_mode():
            _, cache = self.model.bridge.run_with_cache(clean)
            for target, function in functions.items():
                theirs = function(self.model.bridge, corrupted, cache, metric).cpu().float().numpy()
                worst = max(worst, _compare(getattr(result, target), theirs, target, scale=max(1.0, float(np.abs(theirs).max()))))
        return f"resid_pre, attn_out, mlp_out and head_out equal transformer_lens.patching (max relative |difference| {worst:.1e})"

    def check_rome(self) -> str:
        import torch

        from ..editing import EditStack, mlp_output
        from ..editing.covariance import key_statistics
        from ..editing.prompts import make_request
        from ..editing.rome import RomeHparams, compute_edit
        from ..progress import run_to_completion

        before = weights_snapshot(self.model)
        result = self._run("rome", [], **ROME_SETTINGS)
        stack = EditStack.of(self.model)
        stack.undo()
        changed = changed_weights(self.model, before)
        if changed:
            raise CheckFailed(f"undo left {len(changed)} parameters changed ({', '.join(changed[:3])})")
        # The defining identities, on an edit computed again with the same request and C.
        target = mlp_output(self.model, ROME_LAYER)
        request = make_request(ROME_SETTINGS["subject"], ROME_SETTINGS["target_new"], template=ROME_TEMPLATE)
        stats = run_to_completion(key_statistics(self.model, ROME_LAYER))
        hp = RomeHparams(**{k: v for k, v in ROME_SETTINGS.items() if k in RomeHparams.__dataclass_fields__})
        computation = run_to_completion(compute_edit(self.model, request, ROME_LAYER, stats.second_moment, hp))
        k_star, u = torch.from_numpy(computation.k_star), torch.from_numpy(computation.edit.left)
        keys = torch.randn(4, k_star.shape[0], generator=torch.Generator().manual_seed(0))
        orthogonal = keys - (keys @ u)[:, None] / torch.dot(u, k_star) * k_star[None, :]  # u·k = 0
        untouched = target.output(orthogonal)
        stack.apply(computation.edit)
        try:
            written = target.output(k_star)
            v_star = torch.from_numpy(computation.v_star)
            error = float((written - v_star).norm() / v_star.norm())
            if error > TOLERANCE:
                raise CheckFailed(f"W_new k* differs from v* by {error:.2e} of ‖v*‖")
            spared = float((target.output(orthogonal) - untouched).abs().max() / (untouched.abs().max() + 1e-12))
            if spared > TOLERANCE:
                raise CheckFailed(f"keys C⁻¹-orthogonal to k* changed by {spared:.2e}")
        finally:
            stack.undo()
        changed = changed_weights(self.model, before)
        if changed:
            raise CheckFailed(f"undo left {len(changed)} parameters changed")
        p_new, p_true = result.p_after[0]
        if not p_new > result.p_before[0, 0]:
            raise CheckFailed(f"the edit did not raise P(new): {result.p_before[0, 0]:.2e} -> {p_new:.2e}")
        return (
            f"{target.name} ({target.layout}): W_new k* = v* to {error:.1e}, C⁻¹-orthogonal keys kept to {spared:.1e}; "
            f"{self._delta_pass(target)}; P(new) {result.p_before[0, 0]:.1e} -> {p_new:.1e}, P(true) {result.p_before[0, 1]:.1e} -> {p_true:.1e}; undo bit-exact"
        )

    def _delta_pass(self, target) -> str:
        """v*'s search pass from the edited block (KV prefix, suffix only) against the whole
        model with δ added by a hook: the same logits."""
        import torch

        from ..editing.delta_pass import DeltaPass

        rows = [self.model.tokenize(text) for text in (PROMPT, "Paris is the capital of France. The Eiffel Tower", CORRUPTED)]
        edit_pos = [3, 7, 2]
        needed = torch.tensor([[len(row) - 1, max(e, len(row) - 2), e] for row, e in zip(rows, edit_pos)])
        fast = DeltaPass(self.model, target, rows, edit_pos, needed)
        if fast.full_pass:
            return "v* search runs whole-model passes (the block's output is not residual + MLP output)"
        reference = DeltaPass(self.model, target, rows, edit_pos, needed, full_pass=True)
        delta = torch.randn(int(self.model.cfg.d_model), generator=torch.Generator().manual_seed(2)) * 2
        with torch.no_grad():
            got, expected = fast(delta), reference(delta)
        worst = _compare(got.numpy(), expected.numpy(), "v* search pass", scale=max(1.0, float(expected.abs().max())))
        return f"v* search from the edit equals the whole model to {worst:.1e}"

    def check_rome_eval(self) -> str:
        dataset = self.scratch / "counterfact-zoo.json"
        dataset.write_text(json.dumps(COUNTERFACT), encoding="utf-8")
        before = weights_snapshot(self.model)
        settings = {k: v for k, v in ROME_SETTINGS.items() if k not in ("subject", "template", "target_new")}
        result = self._run("rome-eval", [], dataset=str(dataset), **settings)
        changed = changed_weights(self.model, before)
        if changed:
            raise CheckFailed(f"the evaluation left {len(changed)} parameters changed ({', '.join(changed[:3])})")
        if len(result.cases) != len(COUNTERFACT):
            raise CheckFailed(f"{len(result.cases)} cases evaluated of {len(COUNTERFACT)}")
        scores = {key: float(np.mean([case[key] for case in result.cases])) for key in ("ES", "PS", "NS")}
        if not all(0.0 <= value <= 1.0 for value in scores.values()):
            raise CheckFailed(f"scores outside [0, 1]: {scores}")
        return f"{len(result.cases)} cases, " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()) + "; every parameter bit-exact afterwards"


# -- independent helpers ----------------------------------------------------------------------


def _compare(ours: Any, reference: Any, what: str, scale: float = 1.0) -> float:
    ours, reference = np.asarray(ours, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if ours.shape != reference.shape:
        raise CheckFailed(f"{what}: shape {ours.shape}, expected {reference.shape}")
    if not np.isfinite(ours).all():
        raise CheckFailed(f"{what}: not finite")
    difference = float(np.abs(ours - reference).max()) / scale if ours.size else 0.0
    if difference > TOLERANCE:
        raise CheckFailed(f"{what} differs from the reference by {difference:.3g} (tolerance {TOLERANCE:g})")
    return difference


def _decoder_layers(hf, n_layers: int):
    """The HF model's list of decoder layers: its one ModuleList of n_layers blocks."""
    import torch

    for module in hf.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers:
            return list(module)
    raise CheckFailed(f"no list of {n_layers} decoder layers in {type(hf).__name__}")


def _final_norm(hf):
    base = hf.base_model
    for name in ("norm", "ln_f", "final_layer_norm", "final_norm", "final_layernorm"):
        if hasattr(base, name):
            return getattr(base, name)
    raise CheckFailed(f"no final norm found in {type(base).__name__}")


def stripe_scores(patterns: np.ndarray, tokens: np.ndarray) -> dict[str, np.ndarray]:
    """Induction, duplicate- and previous-token scores from full patterns [batch, head, q, k],
    finding earlier copies by token identity (not by the analysis' position arithmetic)."""
    batch, n_heads, seq_len, _ = patterns.shape
    sums = {kind: np.zeros(n_heads) for kind in ("induction", "duplicate_token", "previous_token")}
    counts = dict.fromkeys(sums, 0)
    for b in range(batch):
        row = tokens[b].tolist()
        for q in range(1, seq_len):
            sums["previous_token"] += patterns[b, :, q, q - 1]
            counts["previous_token"] += 1
            earlier = [j for j in range(q) if row[j] == row[q]]
            if earlier:
                sums["duplicate_token"] += patterns[b, :, q, earlier[0]]
                sums["induction"] += patterns[b, :, q, earlier[0] + 1]
                counts["duplicate_token"] += 1
                counts["induction"] += 1
    return {kind: sums[kind] / max(counts[kind], 1) for kind in sums}


def family_matrix(families: list[str] | None = None, analyses: list[str] | None = None, report: Callable[[Cell], None] = lambda cell: None) -> list[Cell]:
    """Every (family, analysis) cell, in order; each cell is also passed to `report` as it is known."""
    from ..models.zoo import FAMILIES

    cells: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="workbench-families-") as scratch:
        for family in families or list(FAMILIES):
            started = time.perf_counter()
            try:
                checks = FamilyChecks(family, Path(scratch))
            except WorkbenchError as exc:
                for analysis in analyses or ANALYSES:
                    cell = Cell(family, analysis, "refused", f"the model does not load: {exc}", time.perf_counter() - started)
                    cells.append(cell)
                    report(cell)
                continue
            for analysis in analyses or ANALYSES:
                cell = checks.run(analysis)
                cells.append(cell)
                report(cell)
    return cells


# -- the table users read ----------------------------------------------------------------------

README_BEGIN = "<!-- family-matrix:begin (written by `workbench doctor --families --readme README.md`) -->"
README_END = "<!-- family-matrix:end -->"
_MARK = {"ok": "✓", "failed": "✗"}


def matrix_markdown(cells: list[Cell]) -> str:
    """The matrix as a Markdown table: ✓, ✗ (failed) or a numbered refusal whose reason is
    listed under the table. Only statuses and reasons, never measured numbers, so the
    table is the same on every run that finds the same."""
    from ..models.zoo import FAMILIES

    families = list(dict.fromkeys(cell.family for cell in cells))
    analyses = list(dict.fromkeys(cell.analysis for cell in cells))
    by_key = {(cell.family, cell.analysis): cell for cell in cells}
    reasons: list[str] = []
    lines = [
        "| family | stands for | " + " | ".join(f"`{a}`" for a in analyses) + " |",
        "|---|---|" + "---|" * len(analyses),
    ]
    for family in families:
        marks = []
        for analysis in analyses:
            cell = by_key.get((family, analysis))
            if cell is None:
                marks.append("")
            elif cell.status == "refused":
                reason = cell.detail.replace(f"zoo:{family}", "the model")
                if reason not in reasons:
                    reasons.append(reason)
                marks.append(f"refused ({reasons.index(reason) + 1})")
            else:
                marks.append(_MARK[cell.status])
        stands_for = ", ".join(FAMILIES[family].checkpoints[:2]) if family in FAMILIES else ""
        lines.append(f"| `zoo:{family}` | {stands_for} | " + " | ".join(marks) + " |")
    if reasons:
        lines.append("")
        lines += [f"- ({number}) {reason}" for number, reason in enumerate(reasons, start=1)]
    return "\n".join(lines)


def readme_table(text: str) -> str | None:
    """The matrix section of a README, or None when it has none."""
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        return None
    return text[start + len(README_BEGIN) : end].strip()


def with_readme_table(text: str, table: str) -> str:
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise WorkbenchError("The README has no family matrix section.", f"add the two lines {README_BEGIN} and {README_END} where the table goes")
    return text[: start + len(README_BEGIN)] + "\n" + table + "\n" + text[end:]
