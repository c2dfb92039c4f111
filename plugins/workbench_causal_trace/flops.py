"""How much arithmetic a causal trace takes: the peer's algorithm against the fast path.

Counted in multiply-accumulates (MACs; FLOPs are twice as many) of the matrix products,
from the model's sizes: each weight of a block's projections once per token (of an
expert MLP, the experts a token is routed to), the attention scores and the mixing of
values (n_heads × d_head per query and key, each), and the unembedding (d_model ×
d_vocab per projected position). Norms, activations and softmaxes are left out: a few
percent on any model.

Both algorithms are bound by these products on a CPU (the matrix multiplies take ~87%
of the fast path's time on SmolLM2), so the ratio of the counts is the speed-up the fast
path can reach at equal throughput. On SmolLM2-135M with the Eiffel Tower prompt (10
tokens, the subject from token 0, so no token row is skipped), 10 samples, all three
kinds, window 10: the peer needs 13.4 T MACs; the fast path 3.3 T with a pass per cell
(what its joined passes run, joined.py), 3.6 T where its cells are grouped into passes
through the bridge. The products a restored run cannot skip (positions from the
restored token on, blocks from the first restored layer on) bound the speed-up near 4×
at equal throughput; what the fast path gains beyond that comes from bigger matrix
products running faster per MAC. In two `make bench` runs on 2026-12-06 (peer 271–281 s,
fast path 51–55 s) the peer ran at 48–49 G MACs/s and the fast path at 61–65: 10× (27–28
s) would take 120–124 G MACs/s, more than that 2-core CPU's measured float32 peak (73–95).

What exact arithmetic a pass per cell still holds, counted the same way on that trace:
the last block needs its query, output projection and MLP at the scored positions only
(~4%; joined passes, joined.py, compute no more, while pass_macs counts the whole block);
a window's MLP outputs at the restored token are replaced, so their MLP need not run
(~2%, the MLP kind only, not built); the windows clipped at layer 0 (l <= window // 2)
agree up to their shorter one's end and could share those blocks (~3.5%, not built: it
nets ~1% once the extra pass per token row it needs is paid). Together they would move
the bound to 4.4×. Half precision is no way out: it moves scores by ~1e-2
(tests/test_half_precision.py), a hundred times the tolerance of equal scores.
"""

from __future__ import annotations

from dataclasses import dataclass

# The share of a pass per cell's arithmetic, as pass_macs counts it, that the exact cuts
# above save: 4% + 2% + 3.5%, counted on the Eiffel Tower trace. The benchmark's bound on
# the speed-up a machine allows leaves it out, so the bound errs high.
UNCOUNTED_EXACT_CUTS = 0.095


@dataclass(frozen=True)
class ModelSizes:
    n_layers: int
    block_weights: int  # MACs per token through one block: the entries of its projection weights
    attention_width: int  # n_heads × d_head: MACs per query and key, for the scores and again for the values
    unembedding: int  # d_model × d_vocab: MACs per projected position

    @classmethod
    def of(cls, model) -> ModelSizes:
        """The sizes of a loaded model (LoadedModel), from its config: the bridge's modules hold
        some weights twice (GPT-2's fused and split query/key/value), so they are not counted."""
        cfg = model.cfg
        d_model, d_head = int(cfg.d_model), int(cfg.d_head)
        attention = d_model * d_head * 2 * (model.n_heads + model.n_kv_heads)  # query and output; key and value
        matrices = 3 if getattr(cfg, "gated_mlp", False) else 2
        experts = int(getattr(cfg, "experts_per_token", None) or 1)  # the experts a token runs through
        mlp = d_model * int(cfg.d_mlp) * matrices * experts
        return cls(model.n_layers, attention + mlp, model.n_heads * d_head, d_model * int(cfg.d_vocab))


@dataclass(frozen=True)
class RestoredPass:
    """A pass of the fast path: cells of one token row batched, starting at the first cell's entry layer."""

    position: int  # the restored token: the pass computes it and every later position
    entries: tuple[int, ...]  # each cell's entry layer, ascending
    rows_per_cell: int  # the noise samples
    projected: int  # positions per row projected onto the vocabulary (the scored ones)
    joined: bool = False  # each cell joined the pass at its own entry layer (joined.py), so it ran only its own blocks


def pass_macs(sizes: ModelSizes, rows: int, first_position: int, n_tokens: int, start_layer: int, projected: int) -> int:
    """A pass of `rows` rows over positions first_position..n_tokens - 1 (the earlier keys and
    values read from a cache) through the blocks from start_layer on, and the unembedding
    of `projected` positions per row."""
    positions = n_tokens - first_position
    keys = sum(range(first_position + 1, n_tokens + 1))  # a query attends to itself and every earlier position
    blocks = max(0, sizes.n_layers - start_layer)
    return rows * (blocks * (positions * sizes.block_weights + 2 * keys * sizes.attention_width) + projected * sizes.unembedding)


def peer_macs(sizes: ModelSizes, n_tokens: int, n_kinds: int, samples: int) -> int:
    """kmeng01/rome as benchmarks/peer_causal_trace.py runs it: per kind, a clean pass of one
    row, a corrupted pass and one pass per (token, layer) cell of samples + 1 rows, each
    through every block with the logits of every position (the HF model's output)."""
    clean = pass_macs(sizes, 1, 0, n_tokens, 0, n_tokens)
    noised = pass_macs(sizes, samples + 1, 0, n_tokens, 0, n_tokens)
    return n_kinds * (clean + noised + n_tokens * sizes.n_layers * noised)


def fast_path_macs(sizes: ModelSizes, n_tokens: int, samples: int, passes: list[RestoredPass]) -> tuple[int, int]:
    """(MACs of the passes the fast path ran, MACs had every cell had a pass of its own),
    both with its clean pass (one row) and corrupted pass (the samples). The difference is
    what grouping cells costs: a cell batched with one of an earlier entry layer runs the
    blocks in between. n_tokens: the positions of a whole pass (the prompt, and a target's
    tokens but the last, which are teacher-forced)."""
    baselines = pass_macs(sizes, 1 + samples, 0, n_tokens, 0, n_tokens)
    ran = sum(
        pass_macs(sizes, p.rows_per_cell * len(p.entries), p.position, n_tokens, p.entries[0], p.projected)
        for p in passes
        if not p.joined
    )
    ran += sum(pass_macs(sizes, p.rows_per_cell, p.position, n_tokens, entry, p.projected) for p in passes if p.joined for entry in p.entries)
    alone = sum(pass_macs(sizes, p.rows_per_cell, p.position, n_tokens, entry, p.projected) for p in passes for entry in p.entries)
    return baselines + ran, baselines + alone
