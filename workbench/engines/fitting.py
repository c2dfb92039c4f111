"""The gradient steps of `Engine.fit_delta`, written once for every engine.

`fit_steps` takes the pass as a function of δ (`logits_with`), so the same loop runs over
TransformerBridge's hooks, over ROME's faster pass from the edited layer on
(editing/delta_pass.py), and inside an nnsight session, here or on NDIF, where the whole
optimisation is one job because the server keeps the gradients. Like trace_ops, it is plain
torch on plain values: it travels to NDIF by value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from .base import DeltaFit


def fit_steps(logits_with: Callable[[torch.Tensor], torch.Tensor], fit: DeltaFit, device: torch.device | str = "cpu") -> Iterator[tuple[int, list[float], torch.Tensor]]:
    """Generator: (step, record, δ) after each pass; the last δ yielded is the answer.

    Each step runs the pass, asks the objective for the loss, and (unless the objective
    says stop or it was the last step) takes one Adam step and lets the objective
    constrain δ, as ROME's reference code does."""
    delta = torch.zeros(fit.size, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=fit.lr)
    for step in range(fit.steps):
        optimizer.zero_grad()
        loss, record, stop = fit.objective.loss(logits_with(delta), delta, step)
        yield step, record, delta
        if stop or step == fit.steps - 1:
            break
        loss.backward(inputs=[delta])  # δ's gradient only: no weight's .grad, here or on NDIF
        optimizer.step()
        with torch.no_grad():
            fit.objective.constrain(delta)


def add_at(value: torch.Tensor, delta: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """value [rows, width, d] with δ added at positions[r] of each row r (a new tensor)."""
    rows = torch.arange(value.shape[0], device=value.device)
    return value.index_put((rows, positions.to(value.device)), delta.to(value.dtype), accumulate=True)


def gather_positions(logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """logits [rows, width, vocab] at positions [rows, needed]: [rows, needed, vocab]."""
    index = positions.to(logits.device)
    return logits.gather(1, index[..., None].expand(-1, -1, logits.shape[-1]))
