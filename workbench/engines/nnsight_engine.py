"""The nnsight engine: the seam over an nnsight `TransformersModel` trace.

A run is one `with model.trace(ids):` block that visits the hook points asked for in
the order the model computes them (nnsight 0.8 serves a module's values as the forward
pass reaches it, and refuses one it has already run past), writes by replacing the
module's input or output, and saves only what was asked for. Which module holds which
hook point is the family's `ModuleMap` (families.py).

The runs of one `run_many` are the traces of one nnsight session, which runs here or, for
a remote engine, is sent whole to NDIF as one job (engines/remote.py): the remote path is
this path plus a backend. That is why everything the analysis gets back is chosen inside
the trace (positions sliced before saving). nnsight reads the session's body from this
file's source, so the body must stay a plain `with` block here, not code built at run time.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..errors import EngineError
from .base import (
    Decode,
    Decoded,
    DeltaFit,
    Engine,
    EngineRun,
    FittedDelta,
    HookPoint,
    ModelShape,
    Positions,
    RankOneEdit,
    TokenChoice,
    Write,
    _PreparedRun,
    choose_tokens,
    parse_hook,
    score_tokens,
    select_positions,
)
from .families import ModuleMap, module_map_for
from .fitting import fit_steps, gather_positions
from .remote import RemoteMode, remote_backend, remote_errors
from .trace_ops import TraceShape, add_at_point, apply_edits, apply_writes, decode, head_logits, module_at, read_point

_LOGITS = "\0logits"  # the logits' key among the saved values (no hook name starts with NUL)
_SCORES = "\0scores"


_DECODE = "\0decode:"  # a residual read for a Decode, then the Decode's answer
_DECODED = "\0decoded:"


def _detached(value: torch.Tensor | None) -> torch.Tensor | None:
    """A value as the caller's own: a remote run's come back from a server that tracked grads."""
    return None if value is None else value.detach()


def _path(dotted: str) -> tuple[str | int, ...]:
    """A module path as module_at takes it: attribute names and list indices."""
    return tuple(int(step) if step.isdigit() else step for step in dotted.split("."))


def _decodes(run: _PreparedRun) -> list[tuple[str, Positions, int]]:
    return [(name, decode.positions, decode.top_k) for name, (_, decode) in run.decode.items()]


def _engine_run(saved: dict[str, Any]) -> EngineRun:
    logits = _detached(saved.pop(_LOGITS, None))
    scores = _detached(saved.pop(_SCORES, None))
    answers = {name[len(_DECODED) :]: saved.pop(name) for name in [n for n in saved if n.startswith(_DECODED)]}
    answers = {name: Decoded(*(value.detach() for value in (a.top_probs, a.top_ids, a.model_top_probs))) for name, a in answers.items()}
    return EngineRun(logits, {name: value.detach() for name, value in saved.items()}, answers, scores)


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
    edits: list[RankOneEdit] = field(default_factory=list)  # on the output of the module whose input this is


class NnsightEngine(Engine):
    name: ClassVar[str] = "nnsight"

    def __init__(self, hf_model: Any, tokenizer: Any, *, remote: RemoteMode | None = None) -> None:
        """hf_model: a transformers causal LM (switched to eager attention in place), or a
        Hub id for a model whose weights stay remote (built on the meta device from its
        config, as nnsight builds the models it sends to NDIF). remote: where sessions run
        when not here (engines/remote.py)."""
        nnsight = import_nnsight()
        from nnsight import TransformersModel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=nnsight.NNsightDeprecationWarning)
            self.model = TransformersModel(hf_model, tokenizer=tokenizer, task="text-generation")
        hf_model = self.model._module
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
        self._hf = hf_model
        self.remote_mode = remote
        self.remote = remote is not None
        self.model_name = str(getattr(config, "_name_or_path", "") or self.shape.architecture)
        final_norm = hf_model.get_submodule(self.modules.final_norm)
        eps = getattr(final_norm, "eps", None)  # nn.LayerNorm; Llama-style RMSNorms call it variance_epsilon
        norm_eps = float(eps if eps is not None else getattr(final_norm, "variance_epsilon", 1e-6))
        cap = getattr(config, "final_logit_softcapping", None)  # Gemma 2's final soft cap
        self.trace_shape = TraceShape(self.shape.n_heads, self.shape.d_head, self.modules.norm, norm_eps, _path(self.modules.final_norm), _path(self.modules.unembed), float(cap) if cap else None)

    @property
    def hf_model(self) -> torch.nn.Module:
        return self._hf

    @property
    def cfg(self) -> ModelShape:
        return self.shape

    @property
    def device(self) -> torch.device:
        # A remote model's weights are on the meta device; its inputs go from here, on the CPU.
        return torch.device("cpu") if self.remote else super().device

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
            "mlp.hook_post": (6, m.mlp_proj, "input"),
            "hook_mlp_out": (7, m.mlp_out, "output"),
            "hook_resid_post": (8, "", "output"),
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

    def mlp_out_is_projection(self) -> bool:
        return self.modules.mlp_out == "mlp"

    def check_write(self, name: str) -> None:
        point = parse_hook(name, self.shape.n_layers)
        if point.point == "ln_final.hook_normalized" or (point.point == "attn.hook_pattern" and not self.modules.pattern_source):
            raise EngineError(
                f"The nnsight engine cannot write {name} yet: the value is not one a module hands over.",
                "write hook_z, hook_attn_out or the residual stream instead, or run on TransformerBridge",
            )

    def _steps(self, visit: _Visit) -> tuple:
        """A visit as the session body takes it: (module path, operations inside its
        forward, output?, writes, reads, edits of its output)."""
        return _path(visit.access.path), visit.access.source, visit.access.which == "output", visit.writes, visit.reads, visit.edits

    def _module(self, path: str) -> torch.nn.Module:
        return self._hf.get_submodule(path)

    def _plan(
        self,
        reads: dict[str, tuple[HookPoint, Positions]],
        writes: dict[str, tuple[HookPoint, Write]],
        decode: dict[str, tuple[HookPoint, Decode]],
        edits: tuple[RankOneEdit, ...] = (),
    ) -> list[_Visit]:
        """The values to visit, in the order the model computes them. Two hook points in
        one value (the attention output and the pattern) share a visit. A residual to decode
        is read too, and decoded once the model's logits are there. A RankOneEdit rides on
        the visit of its projection's input (the keys, after any write to them), and changes
        the projection's output before the model goes on."""
        reads = {**reads, **{_DECODE + name: (point, item.positions) for name, (point, item) in decode.items()}}
        visits: dict[tuple[str, str, tuple[str, ...]], _Visit] = {}
        for name, (point, write) in writes.items():
            self.check_write(name)
            self._visit(visits, self._write_access(point)).writes.append((point, write))
        for name, (point, positions) in reads.items():
            self._visit(visits, self._access(point)).reads.append((name, point, positions))
        for edit in edits:
            self._visit(visits, self._access(HookPoint(f"blocks.{edit.layer}.mlp.hook_post", edit.layer, "mlp.hook_post"))).edits.append(edit)
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
        edits: tuple[RankOneEdit, ...] = (),
    ) -> EngineRun:
        return self._run_many([_PreparedRun(ids, reads, writes, logits, logit_positions, edits=edits)])[0]

    def _run_many(self, runs: list[_PreparedRun]) -> list[EngineRun]:
        """The runs as the traces of one nnsight session: on NDIF, one queued job."""
        nnsight = import_nnsight()
        # The session body below refers to plain values only (no `self`): on NDIF it is
        # rebuilt from them, with the helpers of trace_ops, where no engine exists.
        model, shape = self.model, self.trace_shape
        planned = [(run.ids, [self._steps(visit) for visit in self._plan(run.reads, run.writes, run.decode, run.edits)], run.logits, run.logit_positions, _decodes(run), run.scores) for run in runs]
        with remote_errors(self.remote_mode, self.model_name):
            backend = self._backend()
            with model.session(backend=backend):
                results = []
                for ids, plan, want_logits, logit_positions, decodes, scores in planned:
                    with model.trace(ids) as tracer:
                        saved: dict[str, Any] = {}
                        for path, operations, output, writes, reads, edits in plan:
                            envoy = module_at(model, path)
                            for operation in operations:  # an operation inside the module's forward
                                envoy = getattr(envoy.source, operation)
                            value = envoy.output if output else envoy.input
                            if writes:
                                value = apply_writes(value, writes, bool(operations), shape)
                                if output:
                                    envoy.output = value
                                else:
                                    envoy.input = value
                            for name, point, positions in reads:
                                saved[name] = read_point(value, point, positions, shape)
                            if edits:  # value: the projection's input, the keys
                                envoy.output = apply_edits(envoy.output, value, edits)
                        if want_logits or decodes or scores is not None:
                            # The model's output, not the unembedding's: Gemma 2 soft-caps the logits after it.
                            model_logits = model.output.logits
                            if want_logits:
                                saved[_LOGITS] = select_positions(model_logits, 1, logit_positions)
                            for name, positions, top_k in decodes:
                                residual = saved.pop(_DECODE + name)
                                saved[_DECODED + name] = decode(model, residual, select_positions(model_logits, 1, positions), top_k, shape)
                            if scores is not None:
                                saved[_SCORES] = score_tokens(model_logits, scores)
                        else:
                            tracer.stop()  # nothing after the last visit is needed
                    results.append(saved)
                nnsight.save(results)
        return [_engine_run(saved) for saved in results]

    def fit_delta(self, fit: DeltaFit, on_step: Callable[[int, list[float]], None] | None = None) -> FittedDelta:
        """Every step in one nnsight session: here, or on NDIF as one job, where the server
        keeps the gradients (only δ and the records come back). on_step is called where the
        steps run here; a remote session cannot call back."""
        nnsight = import_nnsight()
        point = parse_hook(fit.point, self.shape.n_layers)
        self.check_write(fit.point)
        access = self._access(point)
        if access.source:
            raise EngineError(f"A fitted vector cannot be added at {fit.point}.", "add it to a residual or sublayer output")
        model, shape = self.model, self.trace_shape
        path, output = _path(access.path), access.which == "output"
        ids = torch.as_tensor(fit.tokens, dtype=torch.long).to(self.device)
        positions = torch.as_tensor(list(fit.positions), dtype=torch.long)
        needed = fit.logit_positions
        report = None if self.remote else on_step
        device = self.device
        with remote_errors(self.remote_mode, self.model_name), torch.enable_grad():
            backend = self._backend()
            with model.session(backend=backend):

                def logits_with(delta: torch.Tensor) -> torch.Tensor:
                    with model.trace(ids):
                        envoy = module_at(model, path)
                        value = add_at_point(envoy.output if output else envoy.input, point, delta, positions, shape)
                        if output:
                            envoy.output = value
                        else:
                            envoy.input = value
                        logits = gather_positions(model.output.logits, needed)
                    return logits

                records: list[list[float]] = []
                fitted = torch.zeros(fit.size)
                for step, record, current in fit_steps(logits_with, fit, device):
                    fitted = current
                    records.append(record)
                    if report is not None:
                        report(step, record)
                answer = (fitted.detach(), records)
                nnsight.save(answer)
        return FittedDelta(answer[0].detach().cpu(), [list(record) for record in answer[1]])

    def extend(self, tokens: torch.Tensor | Sequence[Sequence[int]], n_tokens: int, choice: TokenChoice | None = None, edits: Sequence[RankOneEdit] = ()) -> torch.Tensor:
        """Every token in one nnsight session (one job on NDIF), each a trace of the rows so far."""
        nnsight = import_nnsight()
        choice = choice or TokenChoice()
        for edit in edits:
            self.check_edit(edit.layer)
        model = self.model
        # Each edit rides on the visit of its projection's input, as in a run (_plan).
        plan = [self._steps(visit) for visit in self._plan({}, {}, {}, tuple(edits))]
        ids = torch.as_tensor(tokens, dtype=torch.long).to(self.device)
        with remote_errors(self.remote_mode, self.model_name), torch.inference_mode():
            backend = self._backend()
            with model.session(backend=backend):
                generator = choice.generator()
                for _ in range(n_tokens):
                    with model.trace(ids):
                        for path, _operations, _output, _writes, _reads, layer_edits in plan:
                            envoy = module_at(model, path)
                            keys = envoy.input
                            envoy.output = apply_edits(envoy.output, keys, layer_edits)
                        last = model.output.logits[:, -1]
                    ids = torch.cat([ids, choose_tokens(last, choice, generator).to(ids.device)], dim=1)
                    if choice.stopped(ids):
                        break
                nnsight.save(ids)
        return ids.detach().cpu()

    def second_moment(self, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], point: str) -> tuple[torch.Tensor, int]:
        """Summed inside one session: on NDIF only the [d, d] sum comes back, not every
        position's vector (for an 8B model's MLP keys, 0.8 GB instead of 8 GB)."""
        nnsight = import_nnsight()
        hook = parse_hook(point, self.shape.n_layers)
        access = self._access(hook)
        model, shape = self.model, self.trace_shape
        path, output = _path(access.path), access.which == "output"
        planned = [(torch.as_tensor(ids, dtype=torch.long).to(self.device), torch.as_tensor(mask, dtype=torch.bool)) for ids, mask in batches]
        if not planned:
            raise EngineError("There are no batches to sum over.", "give at least one batch of token ids")
        with remote_errors(self.remote_mode, self.model_name), torch.inference_mode():
            backend = self._backend()
            with model.session(backend=backend):
                total: torch.Tensor | None = None
                count = 0
                for ids, mask in planned:
                    with model.trace(ids) as tracer:
                        envoy = module_at(model, path)
                        values = read_point(envoy.output if output else envoy.input, hook, None, shape)
                        flat = values.float()[mask.to(values.device)].double()
                        part = flat.T @ flat
                        tracer.stop()
                    total = part if total is None else total + part
                    count += int(mask.sum())
                answer = (total, count)
                nnsight.save(answer)
        moment, count = answer
        assert moment is not None  # there was a batch
        return moment.detach().cpu(), int(count)

    def _backend(self) -> Any:
        """None to run here; else the backend that ships the session (engines/remote.py)."""
        return remote_backend(self.model, self.remote_mode) if self.remote_mode else None

    def decode_residual(self, residual: torch.Tensor) -> torch.Tensor:
        if self.remote:
            raise EngineError(
                "Decoding a residual needs the final norm and unembedding here; a remote model's weights stay on NDIF.",
                "ask the run to decode it where the model runs: engine.run(..., decode={hook: Decode()})",
            )
        shape = self.trace_shape
        return head_logits(self._module(self.modules.final_norm), self._module(self.modules.unembed), residual.to(self.dtype), shape.logit_softcap)
