"""What an analysis will cost before it runs: its forward passes, their FLOPs, and the time
they take on this model here.

An analysis states its cost as the forward passes it makes (`Cost.passes`: how many, of
how many tokens) and how that grows (`Cost.growth`, e.g. "layers × tokens² forward
tokens"). The runner turns the passes into FLOPs, the FLOPs into seconds with the rate a
short timed forward pass of this model measured (once per loaded model), and refuses a
job estimated over LONG_JOB_SECONDS until the user says to go on. The estimate is a
guide, not a promise: short calibration passes run below the machine's peak rate, so
estimates of long jobs err on the long side.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import WorkbenchError

if TYPE_CHECKING:
    from ..models import LoadedModel

LONG_JOB_SECONDS = 15 * 60
CALIBRATION_TOKENS = 64
# A job below this many FLOPs ends in seconds on any machine: no calibration pass for it.
TRIVIAL_FLOPS = 2e11
BIG_PASS_FLOPS = 2e11  # a calibration pass this large (a 1.5B model) needs no warm-up pass
_RATE_KEY = "flops_per_second"


@dataclass(frozen=True)
class Cost:
    """passes: (count, tokens) pairs, `count` forward passes of one sequence of `tokens`
    tokens; a backward pass counts as two forward passes, a pass through part of the
    layers as its fraction. growth says how the count grows with the inputs."""

    passes: tuple[tuple[float, int], ...]
    growth: str
    extra_flops: float = 0.0  # work outside forward passes (readouts through the unembedding, weight products)

    @property
    def forward_tokens(self) -> float:
        return sum(count * tokens for count, tokens in self.passes)


@dataclass(frozen=True)
class Estimate:
    cost: Cost
    flops: float
    seconds: float | None  # None: not measured (a trivial job)

    def describe(self) -> str:
        passes = sum(count for count, _ in self.cost.passes)
        text = f"about {passes:,.0f} forward passes ({self.cost.forward_tokens:,.0f} tokens, {self.flops / 1e12:,.1f} TFLOP; grows as {self.cost.growth})"
        return text + (f", about {human_seconds(self.seconds)} here" if self.seconds is not None else "")


class LongJobError(WorkbenchError):
    """The job's estimate is over LONG_JOB_SECONDS: it runs only when the user goes on."""

    def __init__(self, name: str, estimate: Estimate):
        super().__init__(
            f"{name} would take {estimate.describe()}.",
            "go on if you mean it (CLI: --yes; app: Run anyway), or make the job smaller: a shorter prompt, fewer layers, samples or targets",
        )
        self.estimate = estimate


def human_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def forward_flops(model: LoadedModel, tokens: int) -> float:
    """FLOPs of one forward pass of `tokens` tokens: 2 per weight per token through the
    layers and the unembedding, plus attention's scores and weighted sums (the causal
    half of tokens² per head dimension, for QKᵀ and for the sum over values)."""
    cfg = model.cfg
    d_model, d_vocab, n_layers = int(cfg.d_model), int(cfg.d_vocab), int(cfg.n_layers)
    d_attention = int(cfg.n_heads) * int(getattr(cfg, "d_head", d_model // int(cfg.n_heads)))
    block_weights = _block_weights(model)
    return 2.0 * tokens * (block_weights + d_model * d_vocab) + 2.0 * n_layers * d_attention * tokens * (tokens + 1)


def _block_weights(model: LoadedModel) -> int:
    """Weights in the layers (all of them for a mixture of experts: an upper bound)."""
    key = "block_weights"
    if key not in model.extra:
        hf: Any = model.engine.hf_model
        embeddings = {id(p) for m in (hf.get_input_embeddings(), hf.get_output_embeddings()) if m is not None for p in m.parameters()}
        model.extra[key] = sum(p.numel() for p in hf.parameters() if id(p) not in embeddings)
    return int(model.extra[key])


def measured_rate(model: LoadedModel) -> float:
    """FLOPs per second of this model's forward pass here, timed once (the second of two
    passes of CALIBRATION_TOKENS tokens; a big model's first pass is timed alone, its
    start-up cost being small beside it) and kept on the model."""
    if _RATE_KEY not in model.extra:
        import torch

        tokens = torch.randint(0, int(model.cfg.d_vocab), (1, CALIBRATION_TOKENS), device=model.device)
        with torch.inference_mode():
            if forward_flops(model, CALIBRATION_TOKENS) < BIG_PASS_FLOPS:
                model.engine.run(tokens)
            started = time.perf_counter()
            model.engine.run(tokens)
            seconds = max(time.perf_counter() - started, 1e-6)
        model.extra[_RATE_KEY] = forward_flops(model, CALIBRATION_TOKENS) / seconds
    return float(model.extra[_RATE_KEY])


def estimate(model: LoadedModel, cost: Cost, measure: bool = False) -> Estimate:
    """The cost in FLOPs and, when measure or when not trivial, in seconds here."""
    flops = cost.extra_flops + sum(count * forward_flops(model, tokens) for count, tokens in cost.passes)
    seconds = flops / measured_rate(model) if measure or flops >= TRIVIAL_FLOPS else None
    return Estimate(cost, flops, seconds)
