"""Induction-head detection on repeated random tokens, and the causal check by ablation.

Each sequence is `[BOS?] r_1 .. r_n r_1 .. r_n` with r drawn from the model's ordinary
tokens. On such data nothing but the earlier copy helps predict the second copy, so:

- an induction head at r_k of the second copy attends to r_{k+1} of the first copy
  (the token after the earlier occurrence of the current token);
- a duplicate-token head attends to r_k of the first copy (the earlier copy of itself);
- a previous-token head attends to the position just before the query.

All three scores for every head come from one batched forward pass: a hook on each
layer's attention pattern reduces it on the spot to per-head sums, so no pattern is
kept (on other engines than TransformerBridge the patterns are read through the engine
seam, in runs whose reads fit READ_BUDGET_BYTES, and reduced the same way). A batch whose logits and attention would not fit MEMORY_BUDGET_BYTES is split
into a few passes with the same sums. The ablation passes then replace one head's
output (`hook_z`) with zeros or its mean and measure the loss on the repeat.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from workbench.engines import BridgeEngine, Engine, RunRequest, Write, read_chunks
from workbench.errors import InputError
from workbench.plugin_api import AnalysisContext, Cost, Progress

from .result import SCORE_KINDS, InductionResult

DEFAULT_MAX_LENGTH = 50
# Memory for one forward pass's logits and one layer's attention; larger batches are split.
MEMORY_BUDGET_BYTES = 1 << 30
# Engines other than TransformerBridge hand a run's reads back at once: the patterns (and
# head outputs) one run reads stay within this; more take more runs of the same sequences.
READ_BUDGET_BYTES = 256 << 20


@dataclass(frozen=True)
class RepeatLayout:
    """Where things are in `[BOS?] r_1..r_n r_1..r_n` (0-indexed positions)."""

    length: int  # n: tokens per block
    prefix: int  # 1 with a BOS token in front, else 0

    @property
    def seq_len(self) -> int:
        return self.prefix + 2 * self.length

    @property
    def first_start(self) -> int:
        return self.prefix

    @property
    def second_start(self) -> int:
        return self.prefix + self.length

    def second_copy_queries(self) -> torch.Tensor:
        """Positions of r_1..r_n in the second copy."""
        return torch.arange(self.second_start, self.seq_len)

    def induction_keys(self) -> torch.Tensor:
        """For r_k of the second copy, the position of r_{k+1} after its first occurrence
        (for r_n that is r_1 of the second copy, which does follow r_n's first occurrence)."""
        return torch.arange(self.first_start + 1, self.second_start + 1)

    def duplicate_keys(self) -> torch.Tensor:
        """For r_k of the second copy, the position of r_k in the first copy."""
        return torch.arange(self.first_start, self.second_start)

    def repeat_targets(self) -> slice:
        """Indices into a per-token loss [seq_len - 1] (index t predicts position t + 1) for
        the tokens r_2..r_n of the second copy: the ones the earlier copy makes predictable.
        r_1 of the second copy is excluded; nothing announces the repeat before it."""
        return slice(self.second_start, self.seq_len - 1)

    def first_copy_targets(self) -> slice:
        """r_2..r_n of the first copy: unpredictable, so their loss is the no-context baseline."""
        return slice(self.first_start, self.second_start - 1)


def default_length(n_ctx: int) -> int:
    # (n_ctx - 2) // 2 keeps BOS + two blocks strictly inside the context, which
    # transformer_lens' head detector also requires (seq_len < n_ctx).
    return max(2, min(DEFAULT_MAX_LENGTH, (n_ctx - 2) // 2))


def ordinary_token_ids(model) -> np.ndarray:
    """Ids of tokens that are neither special nor added, and decode to visible text.

    Special tokens (BOS, chat markers) and byte fragments would make the sequences
    unlike anything the model reads, and a BOS inside the block would act as an
    attention sink, so random blocks draw only from ordinary tokens.
    """
    tokenizer = model.tokenizer
    vocab = min(int(model.cfg.d_vocab), len(tokenizer))
    excluded = set(int(i) for i in getattr(tokenizer, "all_special_ids", []) or [])
    excluded.update(int(i) for i in (getattr(tokenizer, "added_tokens_decoder", None) or {}))
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            excluded.add(int(value))
    texts = tokenizer.batch_decode([[i] for i in range(vocab)])
    keep = [i for i, text in enumerate(texts) if i not in excluded and text.strip() and "\ufffd" not in text]
    return np.asarray(keep, dtype=np.int64)


def repeated_random_tokens(pool: np.ndarray, batch: int, layout: RepeatLayout, seed: int, bos_id: int | None) -> torch.Tensor:
    """[batch, seq_len] sequences: an optional BOS, then a random block twice.

    Each block draws without replacement when the pool allows, so every token occurs
    once per block and "the earlier occurrence" of a token is unambiguous.
    """
    generator = torch.Generator().manual_seed(seed)
    pool_t = torch.as_tensor(pool)
    n = layout.length
    rows = []
    for _ in range(batch):
        if n <= len(pool_t):
            block = pool_t[torch.randperm(len(pool_t), generator=generator)[:n]]
        else:
            block = pool_t[torch.randint(len(pool_t), (n,), generator=generator)]
        prefix = [torch.tensor([bos_id], dtype=torch.int64)] if layout.prefix else []
        rows.append(torch.cat(prefix + [block, block]))
    return torch.stack(rows)


def per_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """[batch, seq_len - 1] cross-entropy (nats); index t is the loss of predicting token t + 1."""
    return F.cross_entropy(logits[:, :-1].float().transpose(1, 2), tokens[:, 1:], reduction="none")


class PatternScorer:
    """Forward hooks on every `blocks.L.attn.hook_pattern` that reduce it to head scores.

    Patterns are [batch, query head, query, key]; with grouped-query attention the
    pattern is still per query head (the shared keys are expanded), so the scores are
    per query head too. Sums over sequences accumulate across chunks of the batch;
    `scores()` divides by the number of sequences seen.
    """

    def __init__(self, n_layers: int, n_heads: int, layout: RepeatLayout, kinds=SCORE_KINDS, keep_examples: bool = False):
        self.layout = layout
        self.n_layers, self.n_heads = n_layers, n_heads
        self.kinds = tuple(kinds)
        self.sums = {kind: torch.zeros(n_layers, n_heads, dtype=torch.float64) for kind in self.kinds}
        self.sequences = 0
        self.keep_examples = keep_examples
        # For display, per score: [layer, head, sum over sequences of its pattern]. The head is
        # the best one of the first chunk (the whole batch unless it is split for memory);
        # later chunks add to that same head, so the stored pattern is an exact mean.
        self.examples: dict[str, list] = {}
        self._examples_fixed = False
        queries = layout.second_copy_queries()
        self._index = {
            "induction": (queries, layout.induction_keys()),
            "duplicate_token": (queries, layout.duplicate_keys()),
            "previous_token": (torch.arange(1, layout.seq_len), torch.arange(0, layout.seq_len - 1)),
        }
        self.seen_layers: set[int] = set()

    def hooks(self) -> list:
        return [(f"blocks.{layer}.attn.hook_pattern", self._hook(layer)) for layer in range(self.n_layers)]

    def chunk_done(self, sequences: int) -> None:
        self.sequences += sequences
        self._examples_fixed = True

    def scores(self) -> dict[str, np.ndarray]:
        return {kind: (self.sums[kind] / max(1, self.sequences)).numpy().astype(np.float32) for kind in self.kinds}

    def example_patterns(self) -> tuple[list[list[int]], np.ndarray]:
        heads = [[self.examples[k][0], self.examples[k][1]] for k in self.kinds]
        patterns = np.stack([(self.examples[k][2] / max(1, self.sequences)).numpy() for k in self.kinds]).astype(np.float32)
        return heads, patterns

    def add(self, layer: int, pattern: torch.Tensor, name: str) -> None:
        """Reduce one layer's pattern [batch, head, query, key] of a chunk of sequences."""
        expected = (self.n_heads, self.layout.seq_len, self.layout.seq_len)
        if tuple(pattern.shape[1:]) != expected:
            raise RuntimeError(f"{name} has shape {tuple(pattern.shape)}; expected [batch, {expected[0]}, {expected[1]}, {expected[2]}]")
        self.seen_layers.add(layer)
        for kind in self.kinds:
            queries, keys = self._index[kind]
            # pattern[:, :, queries[i], keys[i]] for each i: [batch, head, row]; mean over rows.
            per_sequence = pattern[:, :, queries.to(pattern.device), keys.to(pattern.device)].double().mean(dim=2)
            self.sums[kind][layer] += per_sequence.sum(0).cpu()
            if self.keep_examples:
                self._keep_example(kind, layer, per_sequence.mean(0), pattern)

    def _hook(self, layer: int):
        def reduce_pattern(pattern: torch.Tensor, hook) -> None:
            self.add(layer, pattern, hook.name)
            return None

        return reduce_pattern

    def _keep_example(self, kind: str, layer: int, chunk_scores: torch.Tensor, pattern: torch.Tensor) -> None:
        example = self.examples.get(kind)
        if self._examples_fixed:
            if example[0] == layer:
                example[2] += pattern[:, example[1]].double().sum(0).cpu()
            return
        head = int(chunk_scores.argmax())
        if example is None or float(chunk_scores[head]) > example[3]:
            self.examples[kind] = [layer, head, pattern[:, head].double().sum(0).cpu(), float(chunk_scores[head])]


class HeadMeans:
    """Forward hooks on `blocks.L.attn.hook_z` ([batch, pos, head, d_head]) summing each head's
    output over sequences and block positions; `mean(layer)` is the replacement used by mean ablation."""

    def __init__(self, n_layers: int, first_position: int):
        self.first_position = first_position
        self.sums: list[torch.Tensor | None] = [None] * n_layers
        self.counts = [0] * n_layers

    def hooks(self) -> list:
        return [(f"blocks.{layer}.attn.hook_z", self._hook(layer)) for layer in range(len(self.sums))]

    def mean(self, layer: int) -> torch.Tensor:
        return self.sums[layer] / self.counts[layer]

    def add(self, layer: int, z: torch.Tensor) -> None:
        """Add one layer's hook_z [batch, pos, head, d_head] of a chunk of sequences."""
        # BOS is left out: its output is the same in every sequence and unlike any block token's.
        block = z[:, self.first_position :].double()
        total = block.sum(dim=(0, 1))
        self.sums[layer] = total if self.sums[layer] is None else self.sums[layer] + total
        self.counts[layer] += block.shape[0] * block.shape[1]

    def _hook(self, layer: int):
        def record(z: torch.Tensor, hook) -> None:
            self.add(layer, z)
            return None

        return record


def chunk_size(n_heads: int, seq_len: int, d_vocab: int) -> int:
    """Sequences per forward pass so that the logits (and the loss's copy of them) and one layer's
    attention scores and pattern stay within MEMORY_BUDGET_BYTES; the default batch is one pass."""
    per_sequence = seq_len * d_vocab * 4 * 2 + n_heads * seq_len * seq_len * 4 * 3
    return max(1, MEMORY_BUDGET_BYTES // per_sequence)


def forward_loss_sum(bridge, tokens: torch.Tensor, chunk: int, hooks_for_chunk, after_chunk=None) -> torch.Tensor:
    """Run tokens in chunks with hooks; returns the per-token loss [seq_len - 1] summed over sequences."""
    total = torch.zeros(tokens.shape[1] - 1, dtype=torch.float64)
    for start in range(0, tokens.shape[0], chunk):
        part = tokens[start : start + chunk]
        with torch.inference_mode():
            logits = bridge.run_with_hooks(part, fwd_hooks=hooks_for_chunk(), return_type="logits")
            total += per_token_loss(logits, part).double().sum(0).cpu()
        del logits
        if after_chunk is not None:
            after_chunk(part.shape[0])
    return total


def engine_loss_sum(engine: Engine, tokens: torch.Tensor, chunk: int, scorer: PatternScorer, means: HeadMeans | None = None, ablate: tuple | None = None) -> torch.Tensor:
    """forward_loss_sum through the engine seam (nnsight): per chunk of sequences, the patterns
    (and hook_z, for `means`) of every layer read in runs that hand back at most
    READ_BUDGET_BYTES, the last with the logits; an ablation (layer, head, replacement) is a
    write to that head's hook_z in each run. The same reductions as the bridge's hooks."""
    n_layers = scorer.n_layers
    names = [name for layer in range(n_layers) for name in ([f"blocks.{layer}.attn.hook_pattern"] + ([f"blocks.{layer}.attn.hook_z"] if means else []))]
    writes = {}
    if ablate is not None:
        layer, head, replacement = ablate
        mask = torch.zeros(1, 1, scorer.n_heads, 1, dtype=torch.bool)
        mask[0, 0, head] = True
        value = torch.zeros(engine.cfg.d_head) if replacement is None else replacement
        writes[f"blocks.{layer}.attn.hook_z"] = Write(value, None, mask)
    steps = []  # (sequences, reads, last of its chunk?)
    for start in range(0, tokens.shape[0], chunk):
        part = tokens[start : start + chunk]
        groups = read_chunks(names, engine.cfg, part.shape[0], part.shape[1], READ_BUDGET_BYTES)
        steps += [(part, group, number == len(groups) - 1) for number, group in enumerate(groups)]
    # On NDIF the pass's runs are one job; here they go one at a time, each result used and dropped.
    batches = [steps] if engine.remote else [[step] for step in steps]
    total = torch.zeros(tokens.shape[1] - 1, dtype=torch.float64)
    for batch in batches:
        with torch.inference_mode():
            outs = engine.run_many([RunRequest(part, dict.fromkeys(group), writes, logits=last) for part, group, last in batch])
            for (part, group, last), out in zip(batch, outs):
                for name in group:
                    layer = int(name.split(".")[1])
                    if name.endswith("hook_pattern"):
                        scorer.add(layer, out.activations.pop(name), name)
                    elif means is not None:
                        means.add(layer, out.activations.pop(name))
                if last:
                    total += per_token_loss(out.logits, part).double().sum(0).cpu()
                    scorer.chunk_done(part.shape[0])
        del outs
    return total


def loss_sum(engine: Engine, tokens: torch.Tensor, chunk: int, scorer: PatternScorer, means: HeadMeans | None = None, ablate: tuple | None = None) -> torch.Tensor:
    """The per-token loss summed over sequences, every head's pattern scored on the way (and
    each head's output summed, for `means`), with one head ablated when `ablate` is given:
    on TransformerBridge from hooks that reduce each pattern as it is computed, on other
    engines through the seam (engine_loss_sum)."""
    if not isinstance(engine, BridgeEngine):
        return engine_loss_sum(engine, tokens, chunk, scorer, means, ablate)
    hooks = ([ablation_hook(*ablate)] if ablate is not None else []) + scorer.hooks() + (means.hooks() if means is not None else [])
    return forward_loss_sum(engine.bridge, tokens, chunk, lambda: hooks, scorer.chunk_done)


def ablation_hook(layer: int, head: int, replacement: torch.Tensor | None):
    """A hook on `blocks.{layer}.attn.hook_z` replacing one head's output with zeros (None) or a vector."""

    def ablate(z: torch.Tensor, hook) -> torch.Tensor:
        z = z.clone()
        if replacement is None:
            z[:, :, head, :] = 0.0
        else:
            z[:, :, head, :] = replacement.to(z.dtype)
        return z

    return (f"blocks.{layer}.attn.hook_z", ablate)


def ranked(scores: np.ndarray, count: int) -> list[tuple[int, int]]:
    """(layer, head) of the `count` highest scores, highest first (ties: lower layer, then head)."""
    flat = scores.reshape(-1)
    order = sorted(range(flat.size), key=lambda i: (-float(flat[i]), i))[:count]
    n_heads = scores.shape[1]
    return [(i // n_heads, i % n_heads) for i in order]


def heads_to_ablate(induction: np.ndarray, previous: np.ndarray, top_n: int) -> list[tuple[int, int]]:
    """The top induction heads, then the top previous-token heads not already listed."""
    heads = ranked(induction, top_n)
    heads += [h for h in ranked(previous, top_n) if h not in heads]
    return heads


def wants_bos(ctx: AnalysisContext) -> bool:
    """Whether the random sequences start with BOS: the context's choice, else the tokenizer's convention."""
    return ctx.model.tokenizer_prepends_bos if ctx.prepend_bos is None else bool(ctx.prepend_bos)


def planned_ablations(top_n: int, n_layers: int, n_heads: int) -> int:
    """Heads ablated at most: top_n induction heads plus top_n previous-token heads (one
    that is both is ablated once), and no more than the model has."""
    return min(2 * top_n, n_layers * n_heads)


def run(ctx: AnalysisContext, length: int = 0, batch: int = 8, seed: int = 0, top_n: int = 3, ablation: str = "both"):
    model = ctx.model
    engine = ctx.engine
    n_layers, n_heads, n_ctx = model.n_layers, model.n_heads, model.n_ctx
    want_bos = wants_bos(ctx)
    bos_id = model.bos_token_id
    if want_bos and bos_id is None:
        raise InputError(f"{model.name}'s tokenizer has no BOS token.", "turn 'prepend BOS' off (CLI: --bos off)")
    prefix = 1 if want_bos else 0
    longest = (n_ctx - prefix) // 2
    length = length or default_length(n_ctx)
    if length < 2 or length > longest:
        raise InputError(
            f"A block of {length} tokens does not fit: {model.name} reads {n_ctx} tokens, so a block repeated twice can hold 2 to {longest}.",
            f"choose length from 2 to {longest} (0 picks {default_length(n_ctx)})",
        )
    layout = RepeatLayout(length=length, prefix=prefix)
    kinds = ["zero", "mean"] if ablation == "both" else [ablation]

    yield Progress(0, 1, "drawing random token blocks")
    pool = ordinary_token_ids(model)
    if len(pool) < 2:
        raise InputError(f"{model.name} has fewer than two ordinary tokens to draw from.", "use a model with a real vocabulary")
    tokens = repeated_random_tokens(pool, batch, layout, seed, bos_id).to(ctx.device)

    # One batched pass (split only when the batch would not fit MEMORY_BUDGET_BYTES) gives
    # every head's three scores from the pattern hooks and each head's mean output for mean ablation.
    started = time.perf_counter()
    chunk = chunk_size(n_heads, layout.seq_len, int(model.cfg.d_vocab))
    scorer = PatternScorer(n_layers, n_heads, layout, keep_examples=True)
    head_means = HeadMeans(n_layers, layout.first_start)
    planned = planned_ablations(top_n, n_layers, n_heads)
    yield Progress(0, 1 + planned * len(kinds), f"scoring {n_layers * n_heads} heads on {batch} sequences of {layout.seq_len} tokens")
    clean_curve = loss_sum(engine, tokens, chunk, scorer, head_means) / batch
    if len(scorer.seen_layers) != n_layers:
        raise RuntimeError(f"attention patterns were seen for {len(scorer.seen_layers)} of {n_layers} layers; the model may not use eager attention")
    scores = scorer.scores()
    example_heads, example_patterns = scorer.example_patterns()
    seconds_scores = time.perf_counter() - started

    # Causal check: each ablation pass also records every head's induction score, so the
    # result shows which induction heads lose their stripe without a given head.
    started = time.perf_counter()
    heads = heads_to_ablate(scores["induction"], scores["previous_token"], top_n)
    total_steps = 1 + len(heads) * len(kinds)
    yield Progress(1, total_steps, "scored every head; ablating the top heads")
    curves = np.zeros((len(heads), len(kinds), layout.seq_len - 1), dtype=np.float32)
    ablated_induction = np.zeros((len(heads), len(kinds), n_layers, n_heads), dtype=np.float32)
    step = 1
    for i, (layer, head) in enumerate(heads):
        for j, kind in enumerate(kinds):
            replacement = None if kind == "zero" else head_means.mean(layer)[head]
            after = PatternScorer(n_layers, n_heads, layout, kinds=("induction",))
            curves[i, j] = (loss_sum(engine, tokens, chunk, after, ablate=(layer, head, replacement)) / batch).numpy()
            ablated_induction[i, j] = after.scores()["induction"]
            step += 1
            yield Progress(step, total_steps, f"{kind}-ablated L{layer}H{head}")
    seconds_ablation = time.perf_counter() - started

    return InductionResult(
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=model.n_kv_heads,
        length=length,
        batch=batch,
        seed=seed,
        prepend_bos=want_bos,
        token_pool_size=int(len(pool)),
        tokens=tokens.cpu().numpy().astype(np.int64),
        induction=scores["induction"],
        previous_token=scores["previous_token"],
        duplicate_token=scores["duplicate_token"],
        clean_loss_curve=clean_curve.numpy().astype(np.float32),
        ablated_heads=[[int(layer), int(head)] for layer, head in heads],
        ablation_kinds=kinds,
        ablated_loss_curves=curves,
        ablated_induction=ablated_induction,
        example_heads=example_heads,
        example_patterns=example_patterns,
        chance_loss=float(math.log(len(pool))),
        seconds_scores=round(seconds_scores, 3),
        seconds_ablation=round(seconds_ablation, 3),
    )


def cost(ctx: AnalysisContext, length: int = 0, batch: int = 8, top_n: int = 3, ablation: str = "both", **params) -> Cost:
    """One batched pass over the random sequences, then one per ablated head and ablation kind
    (top_n induction heads and top_n previous-token heads, fewer where they overlap).
    Independent of the prompt."""
    model = ctx.model
    layout = RepeatLayout(length=length or default_length(model.n_ctx), prefix=int(wants_bos(ctx)))
    passes = batch * (1 + planned_ablations(top_n, model.n_layers, model.n_heads) * (2 if ablation == "both" else 1))
    return Cost(((passes, layout.seq_len),), "batch × ablated heads × length² (random sequences, not the prompt)")
