"""Pure numpy helpers on attention patterns, shared by the analysis, the report and the panel.

A pattern is [destination (query), source (key)]: row q holds how much the token at q
reads from every earlier token, and sums to 1. Everything here is Qt-free and torch-free,
so the report and the panel transform patterns the same way.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from workbench.figures.raster import block_edges

THUMBNAIL_SIZE = 32  # overview tiles are at most this many cells a side
LOG_FLOOR = 1e-4  # log scale: weights below this are drawn as this (log10 = -4)
SCALES = ("linear", "log")
AVERAGES = ("none", "layer", "prompts")


def kv_head_of(head: int, n_heads: int, n_kv_heads: int) -> int:
    """The key/value head a query head reads (grouped-query attention).

    TransformerLens (and Hugging Face) expand K/V with repeat_interleave, so query
    heads 0..g-1 share KV head 0, g..2g-1 KV head 1, and so on, with g = n_heads / n_kv_heads.
    """
    group = max(1, n_heads // max(1, n_kv_heads))
    return head // group


def head_label(layer: int, head: int, n_heads: int, n_kv_heads: int) -> str:
    """"L3H5", plus the shared KV head when the model uses grouped-query attention."""
    label = f"L{layer}H{head}"
    if n_kv_heads < n_heads:
        label += f" (KV {kv_head_of(head, n_heads, n_kv_heads)})"
    return label


def resolve_position(position: int, length: int, what: str = "destination") -> int:
    """A token index where negative counts from the end (-1 = the last token)."""
    from workbench.errors import InputError

    index = position + length if position < 0 else position
    if not 0 <= index < length:
        raise InputError(
            f"The {what} token index {position} is outside the prompt ({length} tokens).",
            f"use 0..{length - 1}, or -1 for the last token",
        )
    return index


def block_average(patterns: np.ndarray, size: int = THUMBNAIL_SIZE, mask_first_token: bool = False) -> np.ndarray:
    """Downsample [..., n, n] to [..., t, t] (t = min(n, size)) by averaging each block.

    With mask_first_token the source column 0 is left out of the averages (a block made
    only of it becomes NaN), so a thumbnail shows what the head reads besides the sink.
    """
    # float32 sums: a block holds at most (n/size)^2 weights <= 1, far inside float32 precision.
    data = np.asarray(patterns, dtype=np.float32)
    n = data.shape[-1]
    edges = block_edges(n, size)
    starts = edges[:-1]
    sums = np.add.reduceat(np.add.reduceat(data, starts, axis=-1), starts, axis=-2)
    sums = sums.astype(np.float64)
    widths = np.diff(edges).astype(np.float64)
    col_counts = widths.copy()
    if mask_first_token:
        first = data[..., :, :1]  # [..., n, 1]: column 0 of every row
        sums[..., :, 0] -= np.add.reduceat(first, starts, axis=-2)[..., 0]
        col_counts[0] -= 1
    counts = np.outer(widths, col_counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = sums / counts
    out[..., counts == 0] = np.nan
    return out.astype(np.float32)


def first_column_blocks(patterns: np.ndarray, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """[..., n, n] -> [..., t]: the mean weight on source 0 within each block of destination rows.

    Kept beside the thumbnails so a masked thumbnail can be derived from an unmasked one.
    """
    data = np.asarray(patterns, dtype=np.float32)
    edges = block_edges(data.shape[-1], size)
    sums = np.add.reduceat(data[..., :, 0].astype(np.float64), edges[:-1], axis=-1)
    return (sums / np.diff(edges)).astype(np.float32)


def mask_thumbnails(thumbnails: np.ndarray, first_column: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Thumbnails with source 0 left out of the first block column (NaN when that block is only source 0).

    Block (i, 0) averages w0 source columns; removing column 0 leaves
    (mean * w0 - mean of column 0) / (w0 - 1). Equals block_average(..., mask_first_token=True).
    """
    out = np.array(thumbnails, dtype=np.float32, copy=True)
    w0 = int(edges[1] - edges[0])
    if w0 <= 1:
        out[..., 0] = np.nan
    else:
        out[..., 0] = (out[..., 0].astype(np.float64) * w0 - first_column) / (w0 - 1)
    return out


def thumbnail_display(
    thumbnails: np.ndarray, first_column: np.ndarray, edges: np.ndarray, scale: str = "linear", mask_first_token: bool = False, causal: bool = True
) -> np.ndarray:
    """Thumbnails as drawn: masked as asked, blocks wholly above the diagonal NaN, log10 on the log scale."""
    edges = np.asarray(edges)
    values = mask_thumbnails(thumbnails, first_column, edges) if mask_first_token else np.array(thumbnails, dtype=np.float32, copy=True)
    if causal:
        # Block (i, j) holds only future tokens when its first source comes after its last destination.
        future = edges[:-1][None, :] > (edges[1:][:, None] - 1)
        values[..., future] = np.nan
    if scale == "log":
        with np.errstate(invalid="ignore"):
            values = np.log10(np.maximum(values, LOG_FLOOR))
    return values


def row_entropy_bits(patterns: np.ndarray) -> np.ndarray:
    """Entropy (bits) of every destination row: 0 = all weight on one token, log2(q+1) = uniform."""
    p = np.asarray(patterns)
    p = p if p.dtype in (np.float32, np.float64) else p.astype(np.float32)
    # float32 logs (SIMD, half the memory traffic), summed in float64; 0 log 0 = 0.
    logs = np.log2(p, out=np.zeros_like(p), where=p > 0)
    logs *= p
    return -logs.sum(-1, dtype=np.float64)


def head_statistics(patterns: np.ndarray) -> dict[str, np.ndarray]:
    """Per-head numbers for [heads, n, n] patterns, each averaged over destination rows.

    entropy_bits: spread of attention; first_token_weight: weight on position 0 (the
    usual attention sink), over rows 1.. (row 0 can only read itself);
    previous_token_weight: weight on the token just before; max_weight: the row's peak.
    """
    p = np.asarray(patterns)
    n = p.shape[-1]
    stats = {
        "entropy_bits": row_entropy_bits(p).mean(-1),
        "max_weight": p.max(-1).mean(-1, dtype=np.float64),
    }
    if n > 1:
        stats["first_token_weight"] = p[..., 1:, 0].mean(-1, dtype=np.float64)
        stats["previous_token_weight"] = np.diagonal(p, offset=-1, axis1=-2, axis2=-1).mean(-1, dtype=np.float64)
    else:
        stats["first_token_weight"] = p[..., 0, 0]
        stats["previous_token_weight"] = np.zeros(p.shape[:-2])
    return {k: np.asarray(v, dtype=np.float64) for k, v in stats.items()}


def text_shades(row: np.ndarray, destination: int, scale: str = "linear", mask_first_token: bool = False) -> tuple[np.ndarray, float]:
    """Shading of the token-centred view: per token 0..1 (NaN: not shaded), and the weight shaded fully.

    Tokens after the destination (unreadable for a causal head) and a masked first token
    are NaN. 1 is the largest shown weight; on the log scale shading runs from the log
    floor to it.
    """
    weights = np.asarray(row, dtype=np.float64)
    shown = np.zeros(weights.shape, dtype=bool)
    shown[: destination + 1] = True
    if mask_first_token and shown.size:
        shown[0] = False
    values = np.log10(np.maximum(weights, LOG_FLOOR)) if scale == "log" else weights.copy()
    lo = float(np.log10(LOG_FLOOR)) if scale == "log" else 0.0
    hi = float(values[shown].max()) if shown.any() else lo + 1.0
    hi = hi if hi > lo else lo + 1.0
    levels = np.clip((values - lo) / (hi - lo), 0.0, 1.0)
    levels[~shown] = np.nan
    return levels, (10 ** hi if scale == "log" else hi)


@lru_cache(maxsize=8)
def _future_mask(n: int) -> np.ndarray:
    mask = np.triu(np.ones((n, n), dtype=bool), 1)
    mask.flags.writeable = False
    return mask


def display_values(pattern: np.ndarray, scale: str = "linear", mask_first_token: bool = False, causal: bool = True) -> np.ndarray:
    """What is drawn for a pattern: NaN where nothing is drawn, log10 weights on the log scale.

    Masking only hides source column 0; the other weights keep their true values (they
    are not renormalised), and colour limits come from what is left, so the sink no
    longer takes the whole colour range. Cells above the diagonal (future tokens, which a
    causal head cannot read) are NaN too.
    """
    values = np.array(pattern, dtype=np.float32, copy=True)
    n = values.shape[-1]
    if causal and values.ndim >= 2 and n == values.shape[-2]:
        np.copyto(values, np.float32(np.nan), where=_future_mask(n))  # far faster than boolean-index assignment
    if mask_first_token:
        values[..., 0] = np.nan
    if scale == "log":
        with np.errstate(invalid="ignore"):
            np.maximum(values, LOG_FLOOR, out=values)
            np.log10(values, out=values)
    return values


def colour_limits(values: np.ndarray, scale: str = "linear") -> tuple[float, float]:
    """Colour range for display values: 0..max (linear) or log10(floor)..log10(max)."""
    finite = np.asarray(values)[np.isfinite(values)]
    if scale == "log":
        hi = float(finite.max()) if finite.size else 0.0
        lo = float(np.log10(LOG_FLOOR))
        return lo, max(hi, lo + 1e-6)
    hi = float(finite.max()) if finite.size else 1.0
    return 0.0, hi if hi > 0 else 1.0


def top_sources(row: np.ndarray, str_tokens: list[str], k: int = 5, mask_first_token: bool = False) -> list[dict]:
    """The k source tokens the destination row reads most, highest first."""
    weights = np.asarray(row, dtype=np.float64).copy()
    if mask_first_token and weights.size:
        weights[0] = -np.inf
    order = np.argsort(-weights, kind="stable")[:k]
    return [
        {"position": int(i), "token": str(str_tokens[i]) if i < len(str_tokens) else f"#{i}", "weight": round(float(weights[i]), 6)}
        for i in order
        if np.isfinite(weights[i])
    ]




def position_labels(str_token_lists: list[list[str]], length: int) -> list[str]:
    """Axis labels for patterns averaged over prompts: the token where all prompts agree, else "#i"."""
    labels = []
    for i in range(length):
        seen = {tokens[i] for tokens in str_token_lists if i < len(tokens)}
        labels.append(next(iter(seen)) if len(seen) == 1 else f"#{i}")
    return labels
