"""What the nnsight engine's session body does to a module's value: apply writes, take
out a hook point's tensor. Plain functions of tensors and small records, so the session
can travel to NDIF by value without the engine object (engines/remote.py): nothing here
may reach an engine, a model or any state of this process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import EngineError
from .base import Decoded, HookPoint, Positions, RankOneEdit, Write, decoded, replace_positions, select_positions
from .fitting import add_at


@dataclass(frozen=True)
class TraceShape:
    """What reading hook points needs to know about a model: its heads, its final norm
    (hook_normalized is the norm's normalization without its weight, from the norm's input),
    and its output head (module paths as module_at takes them; Gemma 2's final soft cap)."""

    n_heads: int
    d_head: int
    norm: str  # "rms" or "layer"
    norm_eps: float
    final_norm: tuple[str | int, ...]
    unembed: tuple[str | int, ...]
    logit_softcap: float | None


def module_at(model: Any, path: tuple[str | int, ...]) -> Any:
    """The envoy of the module at `path` (attribute names and list indices) under `model`."""
    for step in path:
        model = model[step] if isinstance(step, int) else getattr(model, step)
    return model


def head_logits(final_norm: Any, unembed: Any, residual: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """Logits of a residual made as the model's own: final norm, unembedding, then the
    family's soft cap (Gemma 2). The modules are envoys inside a trace, or the modules here."""
    logits = unembed(final_norm(residual))
    return torch.tanh(logits / softcap) * softcap if softcap else logits


def decode(model: Any, residual: torch.Tensor, model_logits: torch.Tensor, top_k: int, shape: TraceShape) -> Decoded:
    """A residual's Decode through the model's own output head, called inside the trace."""
    logits = head_logits(module_at(model, shape.final_norm), module_at(model, shape.unembed), residual, shape.logit_softcap)
    return decoded(logits, model_logits, top_k)


def read_point(value: Any, point: HookPoint, positions: Positions, shape: TraceShape) -> torch.Tensor:
    """The hook point's tensor in the value its module hands over, at `positions`."""
    return select_positions(_view(_part(value, point, shape), point, shape), point.position_axis, positions)


def apply_writes(value: Any, writes: list[tuple[HookPoint, Write]], inner: bool, shape: TraceShape) -> Any:
    """The module's value with the writes applied (a new tuple or tensor; the old one is left
    as it was). inner: the value is an operation's tensor inside a forward (a pattern)."""
    for point, write in writes:
        tensor = value if inner else _part(value, point, shape)
        new = replace_positions(_view(tensor, point, shape), point.position_axis, write).reshape(tensor.shape)
        # hook_attn_out is element 0 of the attention's (output, weights); so is a block's
        # hidden state in the (hidden_states, ...) tuple of transformers before 5.
        value = value[:0] + (new,) + value[1:] if isinstance(value, tuple) else new
    return value


def apply_edits(output: torch.Tensor, keys: torch.Tensor, edits: list[RankOneEdit]) -> torch.Tensor:
    """An MLP output projection's output with RankOneEdits applied: + right · (left · k)."""
    for edit in edits:
        output = output + (keys @ edit.left.to(keys))[..., None] * edit.right.to(output)
    return output


def add_at_point(value: Any, point: HookPoint, delta: torch.Tensor, positions: torch.Tensor, shape: TraceShape) -> Any:
    """The module's value with δ added to the hook point's tensor at positions[r] of each row r."""
    tensor = _part(value, point, shape)
    new = add_at(tensor, delta, positions)
    return value[:0] + (new,) + value[1:] if isinstance(value, tuple) else new


def _part(value: Any, point: HookPoint, shape: TraceShape) -> torch.Tensor:
    if point.point == "ln_final.hook_normalized":
        return _normalized(value, shape)
    if point.point == "attn.hook_pattern":
        if value[1] is None:
            raise EngineError("The attention module returned no weights.", "attention weights need eager attention; the engine sets it when it loads a local model")
        return value[1]
    return value[0] if isinstance(value, tuple) else value


def _normalized(residual: torch.Tensor, shape: TraceShape) -> torch.Tensor:
    """The final norm's normalization, computed in float32 as the families' norms do."""
    x = residual.float()
    if shape.norm == "layer":
        x = x - x.mean(-1, keepdim=True)
    return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + shape.norm_eps)).to(residual.dtype)


def _view(tensor: torch.Tensor, point: HookPoint, shape: TraceShape) -> torch.Tensor:
    """hook_z with its heads apart ([b, p, heads, d_head]), as TransformerBridge gives it."""
    if point.point == "attn.hook_z":
        return tensor.reshape(*tensor.shape[:-1], shape.n_heads, shape.d_head)
    return tensor
