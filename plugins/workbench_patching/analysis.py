"""Activation patching (denoising): clean activations patched into the corrupted run, cell by cell.

For every chosen target, layer and cell (a position, a head, or both) the corrupted prompt
is run with that one slice of the clean run's activation copied in, and the metric is read
at the last position. A cell that brings the metric back to the clean value carries the
information that distinguishes the two prompts there. The numbers equal those of
`transformer_lens.patching`'s `get_act_patch_*` functions; cells whose clean and corrupted
activations are identical are not run at all (patching them is a no-op: their value is the
corrupted one). On TransformerBridge a patched run starts at its cell's layer and position
from the corrupted run's residual stream and keys and values (from_layer.py); elsewhere
(nnsight) every run is a whole pass through the engine seam (ctx.engine), cells of
consecutive layers batched (patcher.py). A target whose hook the engine cannot write is
refused before any work.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from workbench.errors import EngineError, InputError
from workbench.plugin_api import AnalysisContext, Cost, Progress

from .from_layer import bridge_for_runs_from_layer, corrupted_pass, patched_metrics_from_layer, planned_passes
from .inputs import answer_token, metric_columns, metric_values, prompt_pair
from .patcher import chunk_size, patched_metrics, unchanged_cells
from .result import ActivationPatchingResult
from .targets import TARGETS, parse_targets

# Below this |clean - corrupted| the metric does not tell the prompts apart, and normalising divides by ~0.
MIN_METRIC_GAP = 1e-6


def hooks_for(target_names: tuple[str, ...], n_layers: int) -> list[str]:
    names: list[str] = []
    for name in target_names:
        for layer in range(n_layers):
            hook = TARGETS[name].hook_name(layer)
            if hook not in names:
                names.append(hook)
    return names


def clean_activations(ctx: AnalysisContext, hooks: list[str], ids: torch.Tensor, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The clean run's activations: from the activation store when it holds them at full precision."""
    reused_before = ctx.reused_activations
    arrays = ctx.activations(hooks, 0)
    if all(np.dtype(a.dtype).itemsize >= torch.finfo(dtype).bits // 8 for a in arrays.values()):
        return {name: torch.as_tensor(np.asarray(a), device=ids.device).to(dtype) for name, a in arrays.items()}
    # A float16 store would patch rounded values into the run: recompute instead.
    ctx.reused_activations = reused_before
    with torch.inference_mode():
        run = ctx.engine.run(ids, reads=dict.fromkeys(hooks), logits=False)
    return {name: run.activations[name][0] for name in hooks}


def check_targets(ctx: AnalysisContext, chosen: tuple[str, ...]) -> None:
    """EngineError naming the targets the model's engine cannot write, before any work."""
    refused = []
    for name in chosen:
        try:
            ctx.engine.check_write(TARGETS[name].hook_name(0))
        except EngineError as exc:
            refused.append((name, exc))
    if refused:
        names = ", ".join(name for name, _ in refused)
        kept = [name for name in chosen if name not in dict(refused)]
        raise EngineError(
            f"Activation patching cannot patch {names} on the {ctx.engine.name} engine: {refused[0][1].message}",
            (f"leave it out (targets={','.join(kept)}), or " if kept else "") + f"load the model without the '{ctx.model.source.engine}:' prefix to run it on TransformerBridge",
        )


def run(
    ctx: AnalysisContext,
    corrupted: str = "",
    metric: str = "logit-diff",
    answer: str = "",
    wrong_answer: str = "",
    normalise: bool = True,
    targets: str = "all",
    max_batch: int = 64,
):
    started = time.perf_counter()
    chosen = parse_targets(targets)
    model = ctx.model
    engine = ctx.engine
    check_targets(ctx, chosen)
    pair = prompt_pair(ctx, corrupted)
    device = ctx.device
    dtype = engine.dtype
    n_layers, n_heads, n_positions = model.n_layers, model.n_heads, pair.length
    hooks = hooks_for(chosen, n_layers)
    yield Progress(0, 1, "clean and corrupted runs")

    clean_ids = torch.tensor([pair.clean_ids], device=device)
    corrupted_ids = torch.tensor([pair.corrupted_ids], device=device)
    # On TransformerBridge patched runs start at their layer and position (from_layer.py).
    bridge = bridge_for_runs_from_layer(engine)
    with torch.inference_mode():
        base = corrupted_pass(bridge, corrupted_ids, hooks) if bridge is not None else None
        corrupted_run = base.run if base is not None else engine.run(corrupted_ids, reads=dict.fromkeys(hooks), logit_positions=[-1])
        if ctx.store_path is None:  # one run gives the clean logits and activations
            clean_run = engine.run(clean_ids, reads=dict.fromkeys(hooks), logit_positions=[-1])
            clean_logits, clean_acts = clean_run.logits, {name: clean_run.activations.pop(name)[0] for name in hooks}
            del clean_run
        else:  # the store may hold the clean activations (or take them, when the context fills it)
            clean_logits = engine.run(clean_ids, logit_positions=[-1]).logits
    if ctx.store_path is not None:
        clean_acts = clean_activations(ctx, hooks, clean_ids, dtype)
    corrupted_logits = corrupted_run.logits
    corrupted_acts = {name: corrupted_run.activations.pop(name)[0] for name in hooks}
    del corrupted_run

    answer_id = answer_token(model, answer, "answer") if answer else int(clean_logits[0, -1].argmax())
    wrong_id = answer_token(model, wrong_answer, "wrong answer") if wrong_answer else int(corrupted_logits[0, -1].argmax())
    answer_str, wrong_str = model.str_tokens([answer_id])[0], model.str_tokens([wrong_id])[0]
    if metric == "logit-diff" and answer_id == wrong_id:
        raise InputError(
            f"The answer and the wrong answer are the same token ({answer_str!r}), so their logit difference is always 0"
            + ("; both prompts predict it first." if not (answer or wrong_answer) else "."),
            "type the two answers (answer, wrong_answer), choose a corrupted prompt that changes the prediction, or use the prob metric",
        )

    def measure(logits: torch.Tensor) -> torch.Tensor:
        return metric_values(logits, metric, answer_id, wrong_id)

    # Runs from the patched layer project only the columns the metric reads: [answer, wrong] of a logit difference.
    columns = metric_columns(metric, answer_id, wrong_id)

    def measure_columns(logits: torch.Tensor) -> torch.Tensor:
        return measure(logits) if columns is None else metric_values(logits, metric, 0, 1)

    clean_value = float(measure(clean_logits))
    corrupted_value = float(measure(corrupted_logits))
    if normalise and abs(clean_value - corrupted_value) < MIN_METRIC_GAP:
        raise InputError(
            f"The metric is the same on both prompts ({clean_value:.4g}), so it cannot be normalised: nothing to restore.",
            "choose answers or prompts the model tells apart, or turn 'normalise' off",
        )

    # Which cells need a run at all, so the progress total is the real work.
    plan = []
    for name in chosen:
        target = TARGETS[name]
        cells = target.cells(n_positions, n_heads)
        todo, unchanged = [], []
        for layer in range(n_layers):
            hook = target.hook_name(layer)
            same = unchanged_cells(target, cells, clean_acts[hook], corrupted_acts[hook])
            todo += [(layer, c) for c, s in zip(cells, same) if not s]
            unchanged += [(layer, c) for c, s in zip(cells, same) if s]
        plan.append((target, todo, unchanged))
    total = sum(len(todo) for _, todo, _ in plan)
    chunk = chunk_size(model.cfg, n_positions, max_batch)

    grids = {name: np.full(TARGETS[name].shape(n_layers, n_positions, n_heads), np.nan, dtype=np.float64) for name in chosen}
    seconds = {name: 0.0 for name in chosen}
    done, runs, skipped = 0, 0, 0
    yield Progress(0, max(total, 1), f"patching {total} cells")
    for target, todo, unchanged in plan:
        target_started = time.perf_counter()
        grid = grids[target.name]
        for layer, cell in unchanged:
            grid[(layer, *cell)] = corrupted_value
        skipped += len(unchanged)
        if todo:
            clean = {layer: clean_acts[target.hook_name(layer)] for layer in range(n_layers)}
            if base is not None:
                corrupted = {layer: corrupted_acts[target.hook_name(layer)] for layer in range(n_layers)}
                job = patched_metrics_from_layer(base, target, todo, clean, corrupted, measure_columns, columns, chunk)
            else:  # rows of a pass come from consecutive layers: about cells / chunk passes per target
                job = patched_metrics(engine, corrupted_ids, target, todo, clean, measure, chunk)
            while True:
                try:
                    finished, layer = next(job)
                except StopIteration as stop:
                    values = stop.value
                    break
                done += finished
                runs += 1
                yield Progress(done, total, f"{target.name}: layer {layer + 1} of {n_layers}")
            for (layer, cell), value in zip(todo, values.tolist()):
                grid[(layer, *cell)] = value
        else:
            yield Progress(done, max(total, 1), f"{target.name}: nothing differs")
        seconds[target.name] += time.perf_counter() - target_started

    return ActivationPatchingResult(
        clean_prompt=pair.clean,
        corrupted_prompt=pair.corrupted,
        clean_tokens=np.asarray(pair.clean_ids, dtype=np.int64),
        corrupted_tokens=np.asarray(pair.corrupted_ids, dtype=np.int64),
        clean_str_tokens=pair.clean_str,
        corrupted_str_tokens=pair.corrupted_str,
        metric=metric,
        answer=answer_str,
        answer_id=answer_id,
        wrong_answer=wrong_str,
        wrong_answer_id=wrong_id,
        clean_value=clean_value,
        corrupted_value=corrupted_value,
        normalise=normalise,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=model.n_kv_heads,
        targets=list(chosen),
        resid_pre=grids.get("resid_pre"),
        attn_out=grids.get("attn_out"),
        mlp_out=grids.get("mlp_out"),
        head_out=grids.get("head_out"),
        head_pattern=grids.get("head_pattern"),
        head_out_by_pos=grids.get("head_out_by_pos"),
        cells_run=done,
        cells_skipped=skipped,
        patched_passes=runs,
        seconds_per_target={name: round(s, 3) for name, s in seconds.items()},
        seconds_total=round(time.perf_counter() - started, 3),
    )


def cost(ctx: AnalysisContext, corrupted: str = "", targets: str = "all", max_batch: int = 64, **params) -> Cost:
    """Besides the clean and corrupted runs, one run per cell of every target's grid; cells at
    positions before the first token where the prompts differ are skipped (the two runs are
    equal there). On the seam each run is a whole pass; on TransformerBridge it starts at the
    cell's layer and position (from_layer.py), batched as the run will batch it."""
    model = ctx.model
    pair = prompt_pair(ctx, corrupted)
    tokens = pair.length
    first = next((i for i, (a, b) in enumerate(zip(pair.clean_ids, pair.corrupted_ids)) if a != b), tokens)
    from_layer = bridge_for_runs_from_layer(ctx.engine) is not None
    passes: list[tuple[float, int]] = [(2, tokens)]
    for name in parse_targets(targets):
        target = TARGETS[name]
        # A head's activation at every position differs from the first differing token on.
        starts = range(first, tokens) if "position" in target.axes else [first]
        per_start = int(np.prod([model.n_heads for axis in target.axes if axis == "head"]))
        if from_layer:
            cells = [(start, layer) for start in starts for layer in range(model.n_layers) for _ in range(per_start)]
            passes += planned_passes(cells, model.n_layers, tokens, chunk_size(model.cfg, tokens, max_batch))
        else:
            passes.append((model.n_layers * len(starts) * per_start, tokens))
    growth = "layers × (tokens + heads) × " + ("tokens × layers / 2 (runs start at their layer and position)" if from_layer else "tokens (one pass per cell)")
    return Cost(tuple(passes), growth)
