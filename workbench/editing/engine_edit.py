"""ROME through the engine seam: the edit computed from runs of the model and applied as an
intervention, for engines whose weights ROME does not edit (nnsight here, nnsight on NDIF).

The algorithm is rome.py's, step for step, reached only through `model.engine`:

- k* and v0 = W k* + b: one run reading `mlp.hook_post` (the keys, the output
  projection's input) and `hook_mlp_out` at each context's last subject token. The
  projection is affine, so the mean of its outputs is its output at the mean key: W
  itself is never read.
- v*: `Engine.fit_delta` with rome's objective (v_objective.py): in one nnsight session,
  which on NDIF is one job whose gradients stay on the server.
- C: `Engine.second_moment` of the keys over the corpus (covariance.key_statistics),
  summed where the model runs.
- The edit: a `RankOneEdit` (W + right ⊗ u as an intervention), passed to every run that
  should see it; the model's weights, here or hosted, are never changed.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..engines.base import RankOneEdit
from ..errors import InputError
from ..job_context import raise_if_cancelled, report_status
from ..progress import Progress
from .edits import RomeEdit
from .prompts import EditRequest, padded_batch
from .rome import RomeHparams, _history, _step_message, delta_fit, edit_contexts, finished_edit, v_search
from .target import check_layer


def check_engine_edit(model, layer: int) -> None:
    """InputError/EngineError before any work when ROME cannot run on this engine at layer."""
    check_layer(model, layer)
    model.engine.check_edit(layer)
    if not model.engine.mlp_out_is_projection():
        raise InputError(
            f"On {model.name}, hook_mlp_out is a norm's output after the MLP's projection, so ROME's v* there is not the projection's output.",
            "run ROME on this family on TransformerBridge (load the model without the engine prefix)",
        )


def intervention(edit: RomeEdit) -> RankOneEdit:
    """A RomeEdit as the engines apply it: W + right ⊗ left, the weights untouched."""
    return RankOneEdit(edit.layer, torch.from_numpy(np.asarray(edit.left, dtype=np.float32)), torch.from_numpy(np.asarray(edit.right, dtype=np.float32)))


@torch.inference_mode()
def keys_and_values(model, layer: int, ids: list[list[int]], positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(k*, v0): the mean key and the mean MLP output at each row's position."""
    key, value = f"blocks.{layer}.mlp.hook_post", f"blocks.{layer}.hook_mlp_out"
    run = model.engine.run(padded_batch(ids), reads={key: None, value: None}, logits=False)
    rows, at = torch.arange(len(ids)), torch.tensor(positions)
    k = run.activations[key].float().cpu()[rows, at].mean(dim=0)
    v = run.activations[value].float().cpu()[rows, at].mean(dim=0)
    return k, v


def compute_edit_on_engine(model, request: EditRequest, layer: int, second_moment: np.ndarray, hp: RomeHparams | None = None):
    """Generator: yields Progress, returns a RomeComputation (its edit to be applied as an intervention)."""
    hp = hp or RomeHparams()
    check_engine_edit(model, layer)
    started = time.perf_counter()
    yield Progress(0, hp.v_steps + 2, "sampling context prefixes")
    texts, ids, positions = edit_contexts(model, request, hp)
    yield Progress(1, hp.v_steps + 2, "computing k*")
    k_star, v0 = keys_and_values(model, layer, ids, positions)
    seconds_k = time.perf_counter() - started
    search = v_search(model, request, ids, positions, v0, hp, texts)
    fit = delta_fit(search, f"blocks.{layer}.hook_mlp_out", int(v0.numel()), hp)
    yield Progress(2, hp.v_steps + 2, "optimising v*" + (" on NDIF, every step in one job" if model.engine.remote else ""))

    def on_step(step: int, record: list[float]) -> None:
        # The steps run inside one engine call: report and check Cancel between them.
        report_status(_step_message(step, record))
        raise_if_cancelled()

    fitted = model.engine.fit_delta(fit, on_step=on_step)
    v_star = v0 + fitted.delta.float()
    losses, probs = _history(fitted.records)
    weight_name = f"blocks.{layer} MLP output projection (as an intervention)"
    return finished_edit(second_moment, request, layer, hp, weight_name, texts, k_star, v_star, v0, losses, probs, started, seconds_k)
