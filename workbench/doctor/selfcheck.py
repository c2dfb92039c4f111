"""The doctor's self-check: the workbench's own machinery on the lab model, each step
checked against an independent computation, in about ten seconds.

Steps run in order; a step whose prerequisite failed is skipped, never run on a broken
state. Each returns a one-line detail of what it measured.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import WorkbenchError

if TYPE_CHECKING:
    from ..models import LoadedModel

LAB_MODEL = "lab:induction"
LAB_PROMPT = "t1 t2 t3 t4 t5 t6 t1 t2 t3"  # its induction head answers t4
ROME_TEMPLATE = "t1 t2 t3 t4 t1 t2 {}"
ROME_SETTINGS = dict(
    subject="t3", template=ROME_TEMPLATE, target_new="t9", layer=0, gen_tokens=0,
    v_steps=25, v_weight_decay=0.01, clamp_norm_factor=40.0, short_prefixes=3, long_prefixes=3,
)
TRACE_TOLERANCE = 1e-5


class CheckFailed(Exception):
    """A step ran and its result was wrong."""


@dataclass
class StepOutcome:
    name: str
    status: str  # ok | failed | skipped
    seconds: float
    detail: str

    def to_dict(self) -> dict:
        return {"step": self.name, "status": self.status, "seconds": round(self.seconds, 3), "detail": self.detail}


class SelfCheck:
    """Run with `run()`; each step's outcome is also passed to `report` as it finishes."""

    def __init__(self, report: Callable[[StepOutcome], None] = lambda outcome: None):
        self.report = report
        self.model: LoadedModel | None = None  # set by the load step
        self.scratch: Path | None = None  # set while run() runs

    def steps(self) -> list[tuple[str, Callable[[], str], tuple[str, ...]]]:
        """(name, step, names of the steps it needs)."""
        return [
            ("cache folder is writable", self.cache_folder, ()),
            (f"load {LAB_MODEL}", self.load, ()),
            ("activation store round trip", self.store_round_trip, (f"load {LAB_MODEL}",)),
            ("causal trace equals the reference algorithm", self.causal_trace, (f"load {LAB_MODEL}",)),
            ("ROME edit and its exact undo", self.rome_edit, (f"load {LAB_MODEL}", "cache folder is writable")),
        ]

    def run(self) -> list[StepOutcome]:
        outcomes: dict[str, StepOutcome] = {}
        with tempfile.TemporaryDirectory(prefix="workbench-doctor-") as scratch:
            self.scratch = Path(scratch)
            for name, step, needs in self.steps():
                missing = [need for need in needs if outcomes[need].status != "ok"]
                if missing:
                    outcome = StepOutcome(name, "skipped", 0.0, f"needs: {', '.join(missing)}")
                else:
                    outcome = _timed(name, step)
                outcomes[name] = outcome
                self.report(outcome)
        return list(outcomes.values())

    def _loaded(self) -> LoadedModel:
        if self.model is None:
            raise RuntimeError("the step needs the model, which is loaded by an earlier step")
        return self.model

    def _scratch(self) -> Path:
        if self.scratch is None:
            raise RuntimeError("the step needs the scratch folder, which exists while run() runs")
        return self.scratch

    # -- the steps -------------------------------------------------------------------

    def cache_folder(self) -> str:
        from ..paths import cache_dir_location

        folder = cache_dir_location()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-") as probe:
                probe.write(b"ok")
                probe.flush()
        except OSError as exc:
            raise WorkbenchError(
                f"the cache folder {folder} cannot be written ({exc.strerror or exc})",
                "make it writable, or set WORKBENCH_CACHE_DIR to a writable folder",
            ) from None
        return str(folder)

    def load(self) -> str:
        from ..models import load_model

        self.model = model = load_model(LAB_MODEL)
        return f"{model.n_layers} layers, {model.n_heads} heads, fingerprint {model.fingerprint}"

    def store_round_trip(self) -> str:
        """What the store gives back equals what the model computes, bit for bit."""
        import torch

        from ..capture import capture_activations
        from ..progress import run_to_completion
        from ..store import ActivationStore

        model = self._loaded()
        path = self._scratch() / "round-trip.h5"
        run_to_completion(capture_activations(model, [LAB_PROMPT], ["residual", "attention"], path))
        tokens = model.tokenize(LAB_PROMPT)
        names = [f"blocks.{model.n_layers - 1}.hook_resid_post", "blocks.0.attn.hook_pattern"]
        with torch.no_grad():
            _, cache = model.bridge.run_with_cache(torch.tensor([tokens]), names_filter=names)
        compared = 0
        with ActivationStore(path) as store:
            run = store.run()
            if list(run.tokens(0)) != list(tokens):
                raise CheckFailed("the stored tokens differ from the prompt's")
            for name in names:
                stored = run.read(name, 0)
                expected = cache[name][0].float().numpy()
                if stored.shape != expected.shape or not np.array_equal(stored, expected):
                    raise CheckFailed(f"{name} read back differs from the model's (max |difference| {np.abs(stored - expected).max():.3g})")
                compared += expected.size
        return f"{compared} values read back exactly"

    def causal_trace(self) -> str:
        """The fast path (partial runs from a KV prefix) against the reference algorithm,
        both through the plugin runner with the same noise."""
        from ..plugin_api import AnalysisContext, discover_plugins, run_analysis
        from ..progress import run_to_completion

        plugin = discover_plugins().get("causal-trace")
        model = self._loaded()
        # The plugin's result type, which the core does not import (it finds plugins by entry point).
        results: dict[str, Any] = {}
        for method in ("fast", "reference"):
            params = dict(subject="t2 t3", samples=4, seed=1, window=1, method=method)
            results[method] = run_to_completion(run_analysis(plugin, AnalysisContext(model, [LAB_PROMPT]), params))
        fast, reference = results["fast"], results["reference"]
        difference = float(np.abs(fast.scores - reference.scores).max())
        if difference > TRACE_TOLERANCE:
            raise CheckFailed(f"the fast path differs from the reference by {difference:.3g} (tolerance {TRACE_TOLERANCE:g})")
        if not fast.high_score > 10 * fast.low_score:
            raise CheckFailed(f"the noise does not corrupt the answer (P {fast.high_score:.3f} clean, {fast.low_score:.3f} corrupted)")
        return f"{fast.scores.size} cells, max |difference| {difference:.1e}; P(answer) {fast.high_score:.3f} clean, {fast.low_score:.3f} corrupted"

    def rome_edit(self) -> str:
        """An edit must change the answer; its undo must give back every weight bit for bit."""
        from ..editing import EditStack
        from ..paths import cache_dir
        from ..plugin_api import AnalysisContext, discover_plugins, run_analysis
        from ..progress import run_to_completion

        model = self._loaded()
        before = weights_snapshot(model)
        fingerprint = model.fingerprint
        plugin = discover_plugins().get("rome")
        params = dict(ROME_SETTINGS, corpus=str(_lab_corpus(cache_dir())))
        # The rome plugin's result type, which the core does not import.
        result: Any = run_to_completion(run_analysis(plugin, AnalysisContext(model, []), params))
        stack = EditStack.of(model)
        try:
            if not result.p_after[0, 0] > result.p_after[0, 1]:
                raise CheckFailed(f"after the edit P(new) {result.p_after[0, 0]:.3f} is not above P(true) {result.p_after[0, 1]:.3f}")
            if model.fingerprint == fingerprint:
                raise CheckFailed("the edit left the weights unchanged")
        finally:
            stack.undo()
        changed = changed_weights(model, before)
        if changed or model.fingerprint != fingerprint:
            raise CheckFailed(f"undo left {len(changed)} weight tensors changed ({', '.join(changed[:3])})")
        return (
            f"P(new) {result.p_before[0, 0]:.3f} -> {result.p_after[0, 0]:.3f}, "
            f"P(true) {result.p_before[0, 1]:.3f} -> {result.p_after[0, 1]:.3f}; undo restored all {len(before)} tensors bit for bit"
        )


def weights_snapshot(model) -> dict:
    """A copy of every tensor of the model's state (parameters and buffers)."""
    return {name: tensor.detach().clone() for name, tensor in model.bridge.original_model.state_dict().items()}


def changed_weights(model, before: dict) -> list[str]:
    """Names of the tensors that are not bit for bit what weights_snapshot saw."""
    import torch

    return [name for name, tensor in model.bridge.original_model.state_dict().items() if not torch.equal(tensor, before[name])]


def unexpected_failure(exc: BaseException) -> str:
    """A bug's one-line account for a report: its type, message and where it broke."""
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{type(exc).__name__}: {exc} (at {Path(frame.filename).name}:{frame.lineno})"


def _lab_corpus(cache: Path) -> Path:
    """Random lab tokens for the key statistics, written once: the statistics are cached
    by corpus, so the same file makes later checks quick."""
    path = cache / "doctor" / "lab-tokens.txt"
    if not path.exists():
        rng = np.random.default_rng(0)
        lines = [" ".join(f"t{i}" for i in rng.integers(0, 64, size=60)) for _ in range(40)]
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text("\n".join(lines), encoding="utf-8")
        partial.replace(path)
    return path


def _timed(name: str, step: Callable[[], str]) -> StepOutcome:
    started = time.perf_counter()
    try:
        detail = step()
        status = "ok"
    except (CheckFailed, WorkbenchError) as exc:
        detail, status = str(exc), "failed"
    except Exception as exc:  # a bug report needs where it broke, not only that it did
        detail, status = unexpected_failure(exc), "failed"
    return StepOutcome(name, status, time.perf_counter() - started, detail)
