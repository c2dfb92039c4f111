"""The nnsight engine: the seam over an nnsight `TransformersModel` trace.

A run is one `with model.trace(ids):` block that visits the hook points asked for in
the order the model computes them (nnsight 0.8 serves a module's values as the forward
pass reaches it, and refuses one it has already run past), writes by replacing the
module's input or output, and saves only what was asked for. Which module holds which
hook point is the family's `ModuleMap` (families.py).

The same trace runs on NDIF when `remote` is set: that is why everything the analysis
gets back is chosen inside the trace (positions sliced before saving). nnsight reads
the trace body from this file's source, so the body must stay a plain `with` block
here, not code built at run time.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..errors import EngineError
from .base import Engine, EngineRun, HookPoint, ModelShape, Positions, Write, parse_hook, replace_positions, select_positions
from .families import ModuleMap, module_map_for

_LOGITS = "\0logits"  # the logits' key among the saved values (no hook name starts with NUL)


@functools.lru_cache(maxsize=1)
def import_nnsight() -> Any:
    """nnsight, imported once. nnsight mounts a `.save()` method on every Python object
    when imported (its PYMOUNT setting); the engine calls `nnsight.save(x)` instead, so the
    mount is taken off again and no other object in the workbench grows a `save`."""
    import nnsight

    try:
        from nnsight._c import unmount

        if unmount is not None:
            unmount("save")
    except (ImportError, AttributeError, RuntimeError):  # an nnsight without the extension
        pass
    return nnsight


def model_shape(config: Any) -> ModelShape:
    """A Hugging Face config's sizes under TransformerBridge's names."""
    n_heads = int(config.num_attention_heads)
    d_model = int(config.hidden_size)
    d_mlp = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d_model
    return ModelShape(
        n_layers=int(config.num_hidden_layers),
        n_heads=n_heads,
        n_key_value_heads=int(getattr(config, "num_key_value_heads", None) or n_heads),
        d_model=d_model,
        d_head=int(getattr(config, "head_dim", None) or d_model // n_heads),
        d_mlp=int(d_mlp),
        d_vocab=int(config.vocab_size),
        n_ctx=int(config.max_position_embeddings),
        architecture=str((getattr(config, "architectures", None) or [config.model_type])[0]),
    )


@dataclass(frozen=True)
class _Access:
    """Where a hook point's value is: a module's input (its first argument) or output, or
    the output of an operation inside the module's forward (`source`: the names nnsight's
    `.source` gives it, outermost first). Which part of that value is the hook point's
    tensor is `NnsightEngine._part`."""

    order: tuple[int, int]
    path: str
    which: str  # "input" or "output"
    source: tuple[str, ...] = ()


@dataclass
class _Visit:
    """A value the trace visits, the writes made to it and then the reads taken from it."""

    access: _Access
    writes: list[tuple[HookPoint, Write]] = field(default_factory=list)
    reads: list[tuple[str, HookPoint, Positions]] = field(default_factory=list)


class NnsightEngine(Engine):
    name: ClassVar[str] = "nnsight"

    def __init__(self, hf_model: Any, tokenizer: Any, *, remote: bool = False) -> None:
        """hf_model: a transformers causal LM (switched to eager attention in place)."""
        config = hf_model.config
        self.modules: ModuleMap = module_map_for(config)
        self.shape = model_shape(config)
        # Attention weights are an output of eager attention only (TransformerBridge switches
        # the model the same way, so both engines compute the same function).
        set_attention = getattr(hf_model, "set_attn_implementation", None)
        if set_attention is not None:
            set_attention("eager")
        else:
            config._attn_implementation = "eager"
        nnsight = import_nnsight()
        from nnsight import TransformersModel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=nnsight.NNsightDeprecationWarning)
            self.model = TransformersModel(hf_model, tokenizer=tokenizer, task="text-generation")
        self._hf = hf_model
        self.remote = remote
        final_norm = hf_model.get_submodule(self.modules.final_norm)
        eps = getattr(final_norm, "eps", None)  # nn.LayerNorm; Llama-style RMSNorms call it variance_epsilon
        self._norm_eps = float(eps if eps is not None else getattr(final_norm, "variance_epsilon", 1e-6))

    @property
    def hf_model(self) -> torch.nn.Module:
        return self._hf

    @property
    def cfg(self) -> ModelShape:
        return self.shape

    # -- where the hook points are ----------------------------------------------------------

    def _access(self, point: HookPoint) -> _Access:
        m = self.modules
        if point.layer is None:
            if point.point == "hook_embed":
                return _Access((-1, 0), m.embed, "output")
            return _Access((self.shape.n_layers, 0), m.final_norm, "input")
        block = f"{m.blocks}.{point.layer}"
        # (order in the block, module, input or output), the order being the one a block computes them in
        where = {
            "hook_resid_pre": (0, "", "input"),
            "attn.hook_z": (2, m.z, "input"),
            "attn.hook_pattern": (3, m.attention, "output"),
            "hook_attn_out": (4, m.attn_out, "output"),
            "hook_resid_mid": (5, m.resid_mid, "input"),
            "hook_mlp_out": (6, m.mlp_out, "output"),
            "hook_resid_post": (7, "", "output"),
        }
        step, path, which = where[point.point]
        return _Access((point.layer, step), f"{block}.{path}" if path else block, which)

    def _write_access(self, point: HookPoint) -> _Access:
        """Where a write goes: where the value is read, except a pattern, which is written
        inside the attention function before the values are weighted by it (step 1: after
        the block's input, before hook_z)."""
        if point.point != "attn.hook_pattern":
            return self._access(point)
        return _Access((int(point.layer or 0), 1), f"{self.modules.blocks}.{point.layer}.{self.modules.attention}", "output", self.modules.pattern_source)

    def check_write(self, name: str) -> None:
        point = parse_hook(name, self.shape.n_layers)
        if point.point == "ln_final.hook_normalized" or (point.point == "attn.hook_pattern" and not self.modules.pattern_source):
            raise EngineError(
                f"The nnsight engine cannot write {name} yet: the value is not one a module hands over.",
                "write hook_z, hook_attn_out or the residual stream instead, or run on TransformerBridge",
            )

    def _envoy(self, path: str) -> Any:
        envoy = self.model
        for step in path.split("."):
            envoy = envoy[int(step)] if step.isdigit() else getattr(envoy, step)
        return envoy

    def _module(self, path: str) -> torch.nn.Module:
        return self._hf.get_submodule(path)

    def _plan(self, reads: dict[str, tuple[HookPoint, Positions]], writes: dict[str, tuple[HookPoint, Write]]) -> list[_Visit]:
        """The values to visit, in the order the model computes them. Two hook points in
        one value (the attention output and the pattern) share a visit."""
        visits: dict[tuple[str, str, tuple[str, ...]], _Visit] = {}
        for name, (point, write) in writes.items():
            self.check_write(name)
            self._visit(visits, self._write_access(point)).writes.append((point, write))
        for name, (point, positions) in reads.items():
            self._visit(visits, self._access(point)).reads.append((name, point, positions))
        return sorted(visits.values(), key=lambda visit: visit.access.order)

    def _visit(self, visits: dict[tuple[str, str, tuple[str, ...]], _Visit], access: _Access) -> _Visit:
        visit = visits.setdefault((access.path, access.which, access.source), _Visit(access))
        if access.order < visit.access.order:  # the attention output holds the pattern (2) and hook_attn_out (3)
            visit.access = access
        return visit

    # -- running -----------------------------------------------------------------------------

    def _run(
        self,
        ids: torch.Tensor,
        reads: dict[str, tuple[HookPoint, Positions]],
        writes: dict[str, tuple[HookPoint, Write]],
        logits: bool,
        logit_positions: Positions,
    ) -> EngineRun:
        nnsight = import_nnsight()
        plan = [(visit, self._envoy(visit.access.path)) for visit in self._plan(reads, writes)]
        trace_kwargs = {"remote": True} if self.remote else {}
        with self.model.trace(ids, **trace_kwargs) as tracer:
            saved = {}
            for visit, envoy in plan:
                for operation in visit.access.source:  # an operation inside the module's forward
                    envoy = getattr(envoy.source, operation)
                output = visit.access.which == "output"
                value = envoy.output if output else envoy.input
                if visit.writes:
                    for point, write in visit.writes:
                        value = self._write(value, point, write, bool(visit.access.source))
                    if output:
                        envoy.output = value
                    else:
                        envoy.input = value
                for name, point, positions in visit.reads:
                    saved[name] = select_positions(self._view(self._part(value, point), point), point.position_axis, positions)
            nnsight.save(saved)
            if logits:
                # The model's output, not the unembedding's: Gemma 2 soft-caps the logits after it.
                saved[_LOGITS] = select_positions(self.model.output.logits, 1, logit_positions)
            else:
                tracer.stop()  # nothing after the last visit is needed
        out = saved.pop(_LOGITS, None)
        return EngineRun(out, saved)

    def _part(self, value: Any, point: HookPoint) -> torch.Tensor:
        """The tensor of a hook point in the value its module hands over."""
        if point.point == "ln_final.hook_normalized":
            return self._normalized(value)
        if point.point == "attn.hook_pattern":
            if value[1] is None:
                raise EngineError("The attention module returned no weights.", "attention weights need eager attention; the engine sets it when it loads the model")
            return value[1]
        # hook_attn_out at the attention module: element 0 of (attn_output, attn_weights);
        # a block that returns (hidden_states, ...) (transformers before 5): element 0 too.
        return value[0] if isinstance(value, tuple) else value

    def _normalized(self, residual: torch.Tensor) -> torch.Tensor:
        """The final norm's normalization without its weight and bias, computed in float32 as
        the families' norms do, from the norm's input."""
        x = residual.float()
        if self.modules.norm == "layer":
            x = x - x.mean(-1, keepdim=True)
        return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self._norm_eps)).to(residual.dtype)

    def _view(self, tensor: torch.Tensor, point: HookPoint) -> torch.Tensor:
        """hook_z with its heads apart ([b, p, heads, d_head]), as TransformerBridge gives it."""
        if point.point == "attn.hook_z":
            return tensor.reshape(*tensor.shape[:-1], self.shape.n_heads, self.shape.d_head)
        return tensor

    def _write(self, value: Any, point: HookPoint, write: Write, inner: bool = False) -> Any:
        """The module's value with the write applied (a new tuple or tensor; the old one is
        left as it was). inner: the value is an operation's tensor inside a forward (a pattern)."""
        tensor = value if inner else self._part(value, point)
        new = replace_positions(self._view(tensor, point), point.position_axis, write).reshape(tensor.shape)
        if isinstance(value, tuple):
            index = 0  # hook_attn_out, or a block returning (hidden_states, ...)
            return value[:index] + (new,) + value[index + 1 :]
        return new

    def decode_residual(self, residual: torch.Tensor) -> torch.Tensor:
        if self.remote:
            raise EngineError("Decoding a residual needs the final norm and unembedding here; a remote model's weights stay on NDIF.", "decode inside the trace (not built yet)")
        residual = residual.to(self.dtype)
        logits = self._module(self.modules.unembed)(self._module(self.modules.final_norm)(residual))
        cap = getattr(self._hf.config, "final_logit_softcapping", None)  # Gemma 2's final soft cap
        return torch.tanh(logits / cap) * cap if cap else logits
