"""The TransformerBridge engine: the seam over TransformerLens 4's `run_with_hooks`.

The seam's hook names are TransformerLens' legacy names, which the bridge resolves
itself, so a read is a forward hook that keeps the activation and a write one that
returns it changed. What every analysis computed before the seam is what this engine
computes: the same forward pass, the same hook points.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from .base import DeltaFit, Engine, EngineRun, FittedDelta, HookPoint, Positions, RankOneEdit, Write, replace_positions, select_positions
from .fitting import add_at, fit_steps, gather_positions
from .trace_ops import apply_edits

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


class BridgeEngine(Engine):
    name: ClassVar[str] = "bridge"

    def __init__(self, bridge: TransformerBridge) -> None:
        self.bridge = bridge

    @property
    def hf_model(self) -> torch.nn.Module:
        return self.bridge.original_model

    @property
    def cfg(self) -> Any:
        return self.bridge.cfg

    def _run(
        self,
        ids: torch.Tensor,
        reads: dict[str, tuple[HookPoint, Positions]],
        writes: dict[str, tuple[HookPoint, Write]],
        logits: bool,
        logit_positions: Positions,
        edits: tuple[RankOneEdit, ...] = (),
    ) -> EngineRun:
        captured: dict[str, torch.Tensor] = {}
        # Edits, then writes: hooks on one point run in the order added, so a read there sees
        # the edited and written value.
        hooks: list[tuple[str | Callable[..., Any], Callable[..., Any]]] = [hook for edit in edits for hook in _edit_hooks(edit)]
        hooks += [(name, _writer(point, write)) for name, (point, write) in writes.items()]
        hooks += [(name, _reader(name, point, positions, captured)) for name, (point, positions) in reads.items()]
        out = self.bridge.run_with_hooks(ids, fwd_hooks=hooks, return_type="logits" if logits else None)
        return EngineRun(select_positions(out, 1, logit_positions) if logits else None, captured)

    def decode_residual(self, residual: torch.Tensor) -> torch.Tensor:
        return decode_residual(self.bridge, residual)

    def fit_delta(self, fit: DeltaFit, on_step: Callable[[int, list[float]], None] | None = None) -> FittedDelta:
        """Whole passes with δ added by a hook (ROME's v* search has a faster pass of its own)."""
        ids = torch.as_tensor(fit.tokens, dtype=torch.long).to(self.device)
        positions = torch.as_tensor(list(fit.positions), dtype=torch.long, device=self.device)

        def logits_with(delta: torch.Tensor) -> torch.Tensor:
            hook = (fit.point, lambda value, hook=None: add_at(value, delta, positions))
            return gather_positions(self.bridge.run_with_hooks(ids, fwd_hooks=[hook], return_type="logits"), fit.logit_positions)

        records: list[list[float]] = []
        delta = torch.zeros(fit.size)
        with torch.enable_grad():
            for step, record, current in fit_steps(logits_with, fit, self.device):
                delta = current
                records.append(record)
                if on_step is not None:
                    on_step(step, record)
        return FittedDelta(delta.detach().cpu(), records)


def _edit_hooks(edit: RankOneEdit) -> list[tuple[str, Callable[..., Any]]]:
    """A RankOneEdit as two hooks on the MLP's output projection (the bridge's `mlp.out`):
    keep its input k, then add right · (left · k) to its output."""
    keys: dict[str, torch.Tensor] = {}

    def keep(activation: torch.Tensor, hook: Any = None) -> None:
        keys["k"] = activation

    def add(activation: torch.Tensor, hook: Any = None) -> torch.Tensor:
        return apply_edits(activation, keys.pop("k"), [edit])

    return [(f"blocks.{edit.layer}.mlp.out.hook_in", keep), (f"blocks.{edit.layer}.mlp.out.hook_out", add)]


def _writer(point: HookPoint, write: Write) -> Callable[..., torch.Tensor]:
    def hook(activation: torch.Tensor, hook: Any = None) -> torch.Tensor:
        return replace_positions(activation, point.position_axis, write)

    return hook


def _reader(name: str, point: HookPoint, positions: Positions, into: dict[str, torch.Tensor]) -> Callable[..., None]:
    def hook(activation: torch.Tensor, hook: Any = None) -> None:
        into[name] = select_positions(activation.detach(), point.position_axis, positions)

    return hook


def decode_residual(bridge: Any, residual: torch.Tensor) -> torch.Tensor:
    """Logits of a residual stream [batch, pos, d_model] made the way the model's own output
    is: final norm, unembedding, then the family's transform of the logits (Gemma 2's final
    soft cap, Granite's and Cohere's scaling), which TransformerLens applies after the
    unembedding module, so `unembed(ln_final(x))` alone misses it. A residual read back from
    the store (float32) is cast to the model's dtype first (bfloat16 and float16 models)."""
    residual = residual.to(next(bridge.parameters()).dtype)
    return output_logits(bridge, bridge.unembed(bridge.ln_final(residual)))


def output_logits(bridge: Any, logits: torch.Tensor) -> torch.Tensor:
    """The family's transform of the unembedding's output (identity for most families)."""
    transform = getattr(getattr(bridge, "adapter", None), "apply_output_logits_transform", None)
    if transform is not None:
        return transform(logits)
    cap = getattr(bridge.cfg, "output_logits_soft_cap", None)  # TransformerLens before the adapter hook
    return torch.tanh(logits / cap) * cap if cap and cap > 0 else logits
