"""The engine seam: what an analysis needs from a model run, and nothing else.

An analysis asks an engine for one forward pass over a batch of token ids, naming the
hook points it wants to read (at which positions) and the values it wants to write
there, and gets the logits and the read tensors back:

    out = engine.run(ids, reads={"blocks.3.hook_resid_post": None},          # every position
                     writes={"blocks.1.hook_resid_post": Write(value, [4])})  # position 4 only
    out.logits            # [batch, pos, d_vocab] (or the positions asked for)
    out.activations["blocks.3.hook_resid_post"]                                # [batch, pos, d_model]

Hook points are named as everywhere in the workbench: TransformerLens' legacy names
(`SEAM_POINTS`), the same on every engine and every family. Each engine maps them onto
its own machinery: `BridgeEngine` onto TransformerBridge's hook points, `NnsightEngine`
onto the Hugging Face module tree through one `ModuleMap` per family. An analysis written
against this interface runs on both, and (later) on NDIF, where the nnsight engine's run is
the same trace sent with `remote=True`.

Beyond one pass, three calls keep a loop where the model runs (on NDIF, one job each):
`extend` (tokens chosen one at a time), `fit_delta` (gradient steps on an added vector)
and `second_moment` (Σ x xᵀ of a hook point over many batches).

The engine sets no grad mode: callers wrap runs in `torch.inference_mode()` as they did.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch

from ..errors import EngineError, HookError

# Positions along a hook's token axis: None for every position, else a list of positions
# (negative ones count from the end). For attention patterns they select query positions.
Positions = None | int | Sequence[int]

# The hook points every engine reads and writes, per block and outside the blocks, with
# what each holds. Shapes are batched: b = batch, p = positions asked for.
SEAM_POINTS: dict[str, str] = {
    "hook_resid_pre": "[b, p, d_model] the residual stream entering the block",
    "hook_resid_mid": "[b, p, d_model] the residual stream after attention, before the MLP (sequential blocks only)",
    "hook_resid_post": "[b, p, d_model] the residual stream leaving the block",
    "hook_attn_out": "[b, p, d_model] the attention sublayer's output, as added to the residual",
    "mlp.hook_post": "[b, p, d_mlp] the MLP's hidden activation: the input of its output projection (the keys a rank-one edit reads)",
    "hook_mlp_out": "[b, p, d_model] the MLP sublayer's output, as added to the residual",
    "attn.hook_pattern": "[b, heads, p (query), key] attention weights after the softmax",
    "attn.hook_z": "[b, p, heads, d_head] each head's weighted values, before the output projection",
}
GLOBAL_POINTS: dict[str, str] = {
    "hook_embed": "[b, p, d_model] the token embeddings",
    "ln_final.hook_normalized": "[b, p, d_model] the final norm's output, what the unembedding reads",
}
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class HookPoint:
    """A seam hook name taken apart: blocks.{layer}.{point}, or a point outside the blocks."""

    name: str
    layer: int | None
    point: str

    @property
    def position_axis(self) -> int:
        """The axis of the batched tensor that runs over (query) positions."""
        return 2 if self.point == "attn.hook_pattern" else 1


def parse_hook(name: str, n_layers: int) -> HookPoint:
    """The HookPoint of a seam hook name, or HookError naming the names an engine knows."""
    match = _BLOCK.match(name)
    if match:
        layer, point = int(match.group(1)), match.group(2)
        if point in SEAM_POINTS:
            if layer >= n_layers:
                raise HookError(f"Hook {name!r} names layer {layer}; the model has layers 0..{n_layers - 1}.", "use a layer the model has")
            return HookPoint(name, layer, point)
    elif name in GLOBAL_POINTS:
        return HookPoint(name, None, name)
    raise HookError(
        f"Hook {name!r} is not one the engines read or write.",
        f"use blocks.L.<point> with <point> one of {', '.join(SEAM_POINTS)}, or {', '.join(GLOBAL_POINTS)}",
    )


def seam_hook_names(n_layers: int, points: Sequence[str] | None = None) -> list[str]:
    """Every seam hook name of a model, in the order a forward pass computes them."""
    per_block = [p for p in ("hook_resid_pre", "attn.hook_z", "attn.hook_pattern", "hook_attn_out", "hook_resid_mid", "mlp.hook_post", "hook_mlp_out", "hook_resid_post") if points is None or p in points]
    return ["hook_embed"] + [f"blocks.{layer}.{p}" for layer in range(n_layers) for p in per_block] + ["ln_final.hook_normalized"]


def seam_shape(cfg: Any, name: str, rows: int, width: int) -> tuple[int, ...]:
    """The batched shape of a seam hook point's activation over [rows, width] tokens (SEAM_POINTS)."""
    if name.endswith("attn.hook_pattern"):
        return (rows, int(cfg.n_heads), width, width)
    if name.endswith("attn.hook_z"):
        return (rows, width, int(cfg.n_heads), int(cfg.d_head))
    if name.endswith("mlp.hook_post"):
        return (rows, width, int(cfg.d_mlp))
    return (rows, width, int(cfg.d_model))


def read_chunks(names: Sequence[str], cfg: Any, rows: int, width: int, budget: int) -> list[list[str]]:
    """Consecutive hook names (in the order given, the model's for the fewest recomputed
    layers) grouped so each group's activations over [rows, width] tokens take at most
    `budget` bytes in float32 (a hook larger than that alone): the reads of one run each,
    when an analysis bounds what a run hands back."""
    chunks: list[list[str]] = []
    used = 0
    for name in names:
        size = 4 * math.prod(seam_shape(cfg, name, rows, width))
        if chunks and used + size <= budget:
            chunks[-1].append(name)
            used += size
        else:
            chunks.append([name])
            used = size
    return chunks


@dataclass(frozen=True)
class Write:
    """A value written into a hook point: `value` replaces the activation at `positions`
    (None: every position) and must broadcast to that slice, e.g. [d_model] or
    [b, len(positions), d_model] for a residual, [b, len(positions), heads, d_head] for hook_z.

    `mask` (optional, bool, broadcast to the same slice) writes only where it is True and
    keeps the model's own value elsewhere, so one batched run can write a different cell in
    each row: activation patching puts one cell per row, e.g. a [b, pos, 1] mask on a
    residual with row i True at position i only."""

    value: torch.Tensor
    positions: Positions = None
    mask: torch.Tensor | None = None


def as_write(item: Write | tuple[Positions, torch.Tensor]) -> Write:
    """A Write, also from the shorthand (positions, value)."""
    if isinstance(item, Write):
        return item
    positions, value = item
    return Write(value, positions)


def position_index(positions: Positions) -> slice | list[int]:
    """An index for one tensor axis: every position, or the listed ones (the axis is kept)."""
    if positions is None:
        return slice(None)
    if isinstance(positions, int):
        return [positions]
    return [int(p) for p in positions]


def select_positions(tensor: torch.Tensor, axis: int, positions: Positions) -> torch.Tensor:
    index: list[Any] = [slice(None)] * tensor.dim()
    index[axis] = position_index(positions)
    return tensor[tuple(index)]


def replace_positions(tensor: torch.Tensor, axis: int, write: Write) -> torch.Tensor:
    """A copy of tensor with the written positions replaced (the original stays as it was:
    other parts of the model may still hold it)."""
    out = tensor.clone()
    index: list[Any] = [slice(None)] * tensor.dim()
    index[axis] = position_index(write.positions)
    where = tuple(index)
    value = write.value.to(device=out.device, dtype=out.dtype)
    if write.mask is None:
        out[where] = value
    else:
        out[where] = torch.where(write.mask.to(out.device), value, out[where])
    return out


@dataclass(frozen=True)
class RankOneEdit:
    """A rank-one change to one layer's MLP output projection, applied as an intervention:
    the projection acts as W + right ⊗ left, so its output gains right · (left · k) at every
    position, k being its input (`mlp.hook_post`). The weights themselves are untouched, which
    is how an edit runs on a model whose weights stay on NDIF. left: [d_mlp]; right: [d_model]."""

    layer: int
    left: torch.Tensor
    right: torch.Tensor


@dataclass(frozen=True)
class TokenScores:
    """Teacher-forced log-probabilities taken where the model runs: for each i, log P(tokens[i]
    | row rows[i] up to position positions[i]), from the model's logits at that position.
    What comes back is one number per pair instead of a vocabulary of logits per position
    (a 128k-token vocabulary on NDIF). rows, positions, tokens: int64 [n]."""

    rows: torch.Tensor
    positions: torch.Tensor
    tokens: torch.Tensor


def score_tokens(logits: torch.Tensor, scores: TokenScores) -> torch.Tensor:
    """TokenScores' answer [n] from logits [b, p, vocab] (inside a trace, or here)."""
    picked = logits[scores.rows, scores.positions].float()
    return torch.log_softmax(picked, dim=-1).gather(-1, scores.tokens[:, None])[:, 0]


@dataclass(frozen=True)
class RunRequest:
    """One run of `Engine.run_many`: the arguments of `Engine.run`."""

    tokens: torch.Tensor | Sequence[Sequence[int]]
    reads: Mapping[str, Positions] = field(default_factory=dict)
    writes: Mapping[str, Write | tuple[Positions, torch.Tensor]] = field(default_factory=dict)
    logits: bool = True
    logit_positions: Positions = None
    decode: Mapping[str, Decode] = field(default_factory=dict)
    edits: Sequence[RankOneEdit] = ()
    scores: TokenScores | None = None


@dataclass(frozen=True)
class _PreparedRun:
    """A RunRequest checked: ids on the engine's device, hook names parsed."""

    ids: torch.Tensor
    reads: dict[str, tuple[HookPoint, Positions]]
    writes: dict[str, tuple[HookPoint, Write]]
    logits: bool
    logit_positions: Positions
    decode: dict[str, tuple[HookPoint, Decode]] = field(default_factory=dict)
    edits: tuple[RankOneEdit, ...] = ()
    scores: TokenScores | None = None


@dataclass(frozen=True)
class Decode:
    """A residual-stream point read through the model's own output head (final norm,
    unembedding, the family's logit transform) where the model runs, at `positions`: the
    `top_k` most probable tokens, and the probability of the token the model itself ranks
    first at that position (the logit lens's readout). On NDIF it is what comes back
    instead of the residual, whose decoding needs weights that stay there."""

    positions: Positions = None
    top_k: int = 5


@dataclass
class Decoded:
    """A Decode's answer: top_probs and top_ids [b, p, top_k], model_top_probs [b, p]."""

    top_probs: torch.Tensor
    top_ids: torch.Tensor
    model_top_probs: torch.Tensor


DECODABLE_POINTS = ("hook_embed", "hook_resid_pre", "hook_resid_mid", "hook_resid_post")


def decoded(logits: torch.Tensor, model_logits: torch.Tensor, top_k: int) -> Decoded:
    """A Decode's answer from the decoded logits and the model's own, at the same positions."""
    probs = logits.float().softmax(-1)
    top = probs.topk(top_k, dim=-1)
    model_top = model_logits.argmax(-1, keepdim=True)
    return Decoded(top.values, top.indices, probs.gather(-1, model_top)[..., 0])


@dataclass
class EngineRun:
    """What one engine run gives back. logits: [batch, pos, d_vocab] at the positions asked
    for (None when not asked for); activations: {hook name: batched tensor}; decoded: {hook
    name: Decoded} for the points asked to be decoded."""

    logits: torch.Tensor | None
    activations: dict[str, torch.Tensor] = field(default_factory=dict)
    decoded: dict[str, Decoded] = field(default_factory=dict)
    scores: torch.Tensor | None = None  # [n] log-probabilities, when TokenScores were asked for


@dataclass(frozen=True)
class TokenChoice:
    """How `Engine.extend` picks each next token: the most probable one (top_k 1), or one
    drawn from the top_k most probable by a torch.Generator seeded with `seed` (ROME's
    context prefixes: top 5). `banned` ids are never chosen; `stop_token` ends the rows."""

    top_k: int = 1
    seed: int = 0
    banned: tuple[int, ...] = ()
    stop_token: int | None = None

    def generator(self) -> torch.Generator | None:
        return torch.Generator().manual_seed(self.seed) if self.top_k > 1 else None

    def stopped(self, ids: torch.Tensor) -> bool:
        return self.stop_token is not None and bool((ids[:, -1] == self.stop_token).all())


def choose_tokens(logits: torch.Tensor, choice: TokenChoice, generator: torch.Generator | None) -> torch.Tensor:
    """The next token of each row [batch, 1] from its last logits [batch, vocab] (inside a
    session, or here); the draw runs on the CPU, so a seed gives the same tokens anywhere."""
    logits = logits.float().cpu().clone()  # the bans below must not reach the caller's logits
    for banned in choice.banned:
        if 0 <= banned < logits.shape[-1]:
            logits[:, banned] = -torch.inf
    if choice.top_k <= 1:
        return logits.argmax(-1, keepdim=True)
    top = torch.topk(logits, choice.top_k, dim=-1)
    drawn = torch.multinomial(torch.softmax(top.values, dim=-1), 1, generator=generator)
    return top.indices.gather(1, drawn)


def _on(scores: TokenScores, device: torch.device) -> TokenScores:
    return TokenScores(scores.rows.to(device), scores.positions.to(device), scores.tokens.to(device))


class FitObjective(Protocol):
    """What a DeltaFit minimises. It travels to NDIF by value with the session, so it holds
    plain tensors and numbers and its class lives in the workbench (registered by value)."""

    def loss(self, logits: torch.Tensor, delta: torch.Tensor, step: int) -> tuple[torch.Tensor, list[float], bool]:
        """(loss to minimise, a record of numbers for this step, stop now?) from the logits
        [rows, needed, vocab] of a pass with δ added."""
        ...

    def constrain(self, delta: torch.Tensor) -> None:
        """Change δ in place after an optimiser step (e.g. clamp its norm)."""
        ...


@dataclass(frozen=True)
class DeltaFit:
    """A vector δ [size] added to hook point `point` at positions[r] of each row r of
    `tokens` [rows, width], fitted by Adam (lr) for at most `steps` passes to minimise
    `objective` of the logits at logit_positions [rows, needed] (each row's own positions)."""

    tokens: torch.Tensor
    point: str
    positions: Sequence[int]
    logit_positions: torch.Tensor
    objective: FitObjective
    size: int
    steps: int
    lr: float


@dataclass
class FittedDelta:
    """A DeltaFit's answer: δ and each step's record (FitObjective.loss), in order."""

    delta: torch.Tensor
    records: list[list[float]]


@dataclass(frozen=True)
class ModelShape:
    """A model's sizes, as TransformerBridge's config names them (the fields analyses read
    from `LoadedModel.cfg`), for engines that have no bridge."""

    n_layers: int
    n_heads: int
    n_key_value_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    architecture: str


class Engine(ABC):
    """One way of running a model. See the module docstring for the contract."""

    #: "bridge" or "nnsight": what results, errors and `describe()` call the engine.
    name: ClassVar[str]

    @property
    @abstractmethod
    def hf_model(self) -> torch.nn.Module:
        """The Hugging Face model the engine runs (its weights are the model's weights)."""

    @property
    @abstractmethod
    def cfg(self) -> Any:
        """The model's sizes: n_layers, n_heads, n_key_value_heads, d_model, d_head, d_mlp, d_vocab, n_ctx."""

    @property
    def device(self) -> torch.device:
        return next(self.hf_model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf_model.parameters()).dtype

    def hook_names(self) -> list[str]:
        """The seam hook names this engine reads on this model, in forward order."""
        return seam_hook_names(int(self.cfg.n_layers))

    def check_write(self, name: str) -> None:
        """EngineError (or HookError) when this engine cannot write hook point `name`, so an
        analysis can refuse a choice before any work. Every seam point, by default."""
        parse_hook(name, int(self.cfg.n_layers))

    #: Whether the model runs elsewhere (NDIF): its weights are not here, and every run
    #: is a round trip, so analyses batch runs with `run_many`.
    remote: bool = False

    def run(
        self,
        tokens: torch.Tensor | Sequence[Sequence[int]],
        reads: Mapping[str, Positions] | None = None,
        writes: Mapping[str, Write | tuple[Positions, torch.Tensor]] | None = None,
        *,
        logits: bool = True,
        logit_positions: Positions = None,
        decode: Mapping[str, Decode] | None = None,
        edits: Sequence[RankOneEdit] = (),
        scores: TokenScores | None = None,
    ) -> EngineRun:
        """One forward pass over `tokens` [batch, pos] (prompts of one length): `writes`
        applied where the model computes those points, `reads` taken after any write at the
        same point (what the rest of the model sees), logits at `logit_positions` unless
        `logits` is False, residual points decoded through the output head (`Decode`),
        `edits` applied to the MLPs as interventions, and `scores` taken from the logits."""
        return self.run_many([RunRequest(tokens, reads or {}, writes or {}, logits, logit_positions, decode or {}, tuple(edits), scores)])[0]

    def run_many(self, requests: Sequence[RunRequest]) -> list[EngineRun]:
        """Several independent runs, each as `run` does it, their results in order. An engine
        that pays per round trip (NDIF) sends them as one job; the others run them in turn."""
        return self._run_many([self._prepare(request) for request in requests])

    def _prepare(self, request: RunRequest) -> _PreparedRun:
        ids = torch.as_tensor(request.tokens, dtype=torch.long)
        if ids.dim() != 2 or ids.shape[1] == 0:
            raise EngineError(f"An engine runs a batch of token ids [batch, pos]; got shape {tuple(ids.shape)}.", "pass a 2-d tensor or a list of equal-length lists")
        n_layers = int(self.cfg.n_layers)
        reads = {name: (parse_hook(name, n_layers), positions) for name, positions in request.reads.items()}
        writes = {name: (parse_hook(name, n_layers), as_write(item)) for name, item in request.writes.items()}
        decode = {name: (parse_hook(name, n_layers), item) for name, item in request.decode.items()}
        for name, (point, _) in decode.items():
            if point.point not in DECODABLE_POINTS:
                raise HookError(f"{name} is not a residual stream, so the output head cannot decode it.", f"decode one of {', '.join(DECODABLE_POINTS)}")
        for edit in request.edits:
            self.check_edit(edit.layer)
        return _PreparedRun(ids.to(self.device), reads, writes, request.logits, request.logit_positions, decode, tuple(request.edits), request.scores)

    def mlp_out_is_projection(self) -> bool:
        """Whether hook_mlp_out is the MLP output projection's own output (no norm after it),
        so that a value read there is W k + b for the keys k at mlp.hook_post."""
        return True

    def check_edit(self, layer: int) -> None:
        """EngineError when this engine cannot apply a RankOneEdit at `layer` (before any work)."""
        parse_hook(f"blocks.{layer}.mlp.hook_post", int(self.cfg.n_layers))

    def _run_many(self, runs: list[_PreparedRun]) -> list[EngineRun]:
        return [self._run_decoding(run) for run in runs]

    def _run_decoding(self, run: _PreparedRun) -> EngineRun:
        """A run, with its Decodes and scores made here from what was read (the weights are here)."""
        if not run.decode and run.scores is None:
            return self._run(run.ids, run.reads, run.writes, run.logits, run.logit_positions, run.edits)
        # A decoded point is read at every position, then cut to what each asks.
        reads = {**run.reads, **{name: (point, None) for name, (point, _) in run.decode.items()}}
        out = self._run(run.ids, reads, run.writes, True, None, run.edits)
        assert out.logits is not None
        answers = {}
        for name, (point, decode) in run.decode.items():
            residual = select_positions(out.activations[name], point.position_axis, decode.positions)
            answers[name] = decoded(self.decode_residual(residual), select_positions(out.logits, 1, decode.positions), decode.top_k)
        activations = {
            name: select_positions(out.activations[name], point.position_axis, positions) if name in run.decode else out.activations[name]
            for name, (point, positions) in run.reads.items()
        }
        logits = select_positions(out.logits, 1, run.logit_positions) if run.logits else None
        scores = score_tokens(out.logits, _on(run.scores, out.logits.device)) if run.scores is not None else None
        return EngineRun(logits, activations, answers, scores)

    @abstractmethod
    def _run(
        self,
        ids: torch.Tensor,
        reads: dict[str, tuple[HookPoint, Positions]],
        writes: dict[str, tuple[HookPoint, Write]],
        logits: bool,
        logit_positions: Positions,
        edits: tuple[RankOneEdit, ...] = (),
    ) -> EngineRun: ...

    # -- beyond one forward pass -----------------------------------------------------------

    def extend(self, tokens: torch.Tensor | Sequence[Sequence[int]], n_tokens: int, choice: TokenChoice | None = None, edits: Sequence[RankOneEdit] = ()) -> torch.Tensor:
        """tokens [batch, pos] followed by up to n_tokens chosen one at a time (greedy, or
        sampled as `choice` says), with `edits` applied: [batch, pos + new]. It stops early
        once every row has chosen `choice.stop_token`. A remote engine makes every token in
        one job; here each token is one run."""
        choice = choice or TokenChoice()
        ids = torch.as_tensor(tokens, dtype=torch.long).cpu()
        generator = choice.generator()
        for _ in range(n_tokens):
            logits = self.run(ids, logit_positions=[-1], edits=edits).logits
            assert logits is not None
            ids = torch.cat([ids, choose_tokens(logits[:, -1], choice, generator)], dim=1)
            if choice.stopped(ids):
                break
        return ids

    def fit_delta(self, fit: DeltaFit, on_step: Callable[[int, list[float]], None] | None = None) -> FittedDelta:
        """δ fitted by gradient steps (engines/fitting.py): added at `fit.point` at one
        position per row, it minimises `fit.objective` of the logits at `fit.logit_positions`.
        on_step(step, record) is called after each step where the steps run here."""
        raise EngineError(f"The {self.name} engine cannot fit a vector by gradient steps.", "run this on TransformerBridge or nnsight")

    def second_moment(self, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], point: str) -> tuple[torch.Tensor, int]:
        """(Σ x xᵀ in float64 [d, d], count) of hook point `point`'s vectors over the positions
        where each batch's mask [b, p] is True, batches being (ids, mask). This engine reads
        the vectors and sums here; one that runs elsewhere sums there and sends the sum."""
        total: torch.Tensor | None = None
        count = 0
        for ids, mask in batches:
            values = self.run(ids, reads={point: None}, logits=False).activations[point]
            flat = values.float().cpu()[mask.cpu()].double()
            total = flat.T @ flat if total is None else total + flat.T @ flat
            count += flat.shape[0]
        if total is None:
            raise EngineError("There are no batches to sum over.", "give at least one batch of token ids")
        return total, count

    @abstractmethod
    def decode_residual(self, residual: torch.Tensor) -> torch.Tensor:
        """Logits of a residual stream [batch, pos, d_model] made the way the model's own
        output is: final norm, unembedding, the family's transform of the logits. Needs the
        weights where the engine runs (locally, for now)."""
