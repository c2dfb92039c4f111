"""The one place that knows how a key/value cache passes through the bridge.

The partial runs (causal tracing's fast path, ROME's v* search) compute the keys and
values of a prompt's first positions once and hand them to later passes as a Hugging
Face cache. Two things about that are not ours and have changed under us:

- how HF hands the cache to an attention module: `past_key_values=` up to transformers
  5.24, `cache=` from 5.25 on. TransformerLens 4.3's attention reads only the old name,
  so on 5.25 it neither fills nor reads the cache: a cached pass silently attends to
  its own positions alone.
- where a cache keeps its tensors (`cache.layers[i].keys` in transformers 5.x).

So the protocol is not assumed: `check_kv_cache` proves it once per model, by comparing
a pass that reads a prefix's cache with a whole pass, and renames the argument for the
bridge's attention modules when that is what it takes. A model whose cache cannot be
proven raises KVCacheUnsupported, naming the versions, instead of computing wrong numbers.
"""

from __future__ import annotations

import warnings
import weakref

import torch

from ..errors import WorkbenchError

# What a pass with a prefix cache may differ by from a whole pass, relative to the logits'
# scale: the same arithmetic in another order (fp32), or rounding of the cached K/V (half).
_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-8}
_HALF_TOLERANCE = 2e-2
_PROBE_TOKENS = 7
_PROBE_PREFIX = 4

# Bridges whose cache round trip is proven; failures are not remembered (a later version
# of the environment is a new process anyway, and the probe costs three short passes).
_checked: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()


class KVCacheUnsupported(WorkbenchError):
    pass


def versions() -> str:
    """The versions whose protocol a failure concerns, for messages and bug reports."""
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for package in ("transformers", "transformer-lens", "torch"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            parts.append(f"{package} (not installed)")
    return ", ".join(parts)


def _unsupported(what: str) -> KVCacheUnsupported:
    return KVCacheUnsupported(
        f"passes that reuse a prompt's keys and values do not work with {versions()}: {what}",
        "install the versions the workbench was tested with (`make setup` installs the lock), "
        "or run causal tracing with method=reference",
    )


def kv_tensors(cache, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's (keys, values) [batch, kv_heads, pos, d_head] of an HF cache, from layer
    `start` on (a pass that entered the model at block `start` filled only those)."""
    if cache is None:
        raise _unsupported("the model returned no cache")
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise _unsupported(f"a {type(cache).__name__} keeps its tensors in an unknown layout")
    tensors = []
    for index, layer in enumerate(layers):
        if index < start:
            continue
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if not isinstance(keys, torch.Tensor) or not isinstance(values, torch.Tensor) or keys.ndim != 4:
            raise _unsupported(f"layer {index} of the returned {type(cache).__name__} holds no keys and values")
        tensors.append((keys, values))
    return tensors


def empty_cache():
    """An HF cache for a pass to fill. It is made here, not from the model's config: a
    config-made cache keeps only the last `sliding_window` positions of sliding-window layers
    (Mistral, Gemma 2 and 3), and a prefix cannot be cut from that. The attention masks still
    apply each layer's window."""
    from transformers import DynamicCache

    return DynamicCache()


def logits_and_cache(bridge, ids: torch.Tensor, **kwargs):
    """A whole pass's logits and an HF cache of every position (see empty_cache)."""
    return bridge(ids, past_key_values=empty_cache(), return_type="logits_and_cache", **kwargs)


def prefix_cache(kv, length: int, copies: int = 1):
    """A new HF cache with the first `length` positions of `kv` (an HF cache of an earlier
    pass, or its kv_tensors), its rows tiled `copies` times; None when there is no prefix.
    kv stays intact."""
    if length == 0:
        return None
    cache = empty_cache()
    for index, (keys, values) in enumerate(kv if isinstance(kv, list) else kv_tensors(kv)):
        keys, values = keys[:, :, :length], values[:, :, :length]
        if copies > 1:
            keys, values = keys.repeat(copies, 1, 1, 1), values.repeat(copies, 1, 1, 1)
        cache.update(keys, values, index)  # DynamicCache grows by new tensors
    return cache


def check_kv_cache(bridge) -> None:
    """Prove once per bridge that a pass reading a prefix's cache equals a whole pass,
    renaming the cache argument for the attention modules if that is what it takes."""
    # The bridge hands HF the cache by its old name, which 5.25+ answers with a FutureWarning
    # on every pass; the probe below is what tells whether the name still works.
    warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated", category=FutureWarning)
    if bridge in _checked:
        return
    problem = _probe(bridge)
    if problem == "empty" and _rename_cache_argument(bridge):
        problem = _probe(bridge)
    if problem is not None:
        raise _unsupported(problem if problem != "empty" else "the attention modules never fill the cache")
    _checked.add(bridge)


def _probe(bridge) -> str | None:
    """None when the cache round trip is exact; otherwise what went wrong."""
    device = next(bridge.parameters()).device
    vocab = int(bridge.cfg.d_vocab)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (2, _PROBE_TOKENS), generator=generator).to(device)
    with torch.no_grad():
        whole, kv = logits_and_cache(bridge, ids)
        try:
            tensors = kv_tensors(kv)
        except KVCacheUnsupported:
            return "empty"
        if len(tensors) != len(bridge.blocks) or any(k.shape[2] != _PROBE_TOKENS for k, _ in tensors):
            return "empty" if all(k.shape[2] == 0 for k, _ in tensors) else "the cache holds the wrong number of positions"
        positions = torch.arange(_PROBE_PREFIX, _PROBE_TOKENS, device=device).expand(2, -1)
        cached = bridge(
            ids[:, _PROBE_PREFIX:],
            past_key_values=prefix_cache(kv, _PROBE_PREFIX),
            position_ids=positions,
            return_type="logits",
        )
    expected = whole[:, _PROBE_PREFIX:].float()
    scale = float(expected.abs().max().clamp(min=1.0))
    tolerance = _TOLERANCE.get(whole.dtype, _HALF_TOLERANCE)
    difference = float((cached.float() - expected).abs().max())
    if difference > tolerance * scale:
        return f"a pass reading the cache differs from a whole pass by {difference:.3g} (logits up to {scale:.3g})"
    return None


def _rename_cache_argument(bridge) -> bool:
    """Hand each attention module the cache under the name it reads (`past_key_values`)
    when HF passes it as `cache` (transformers 5.25+). True when a module was changed."""
    changed = False
    for block in bridge.blocks:
        attention = getattr(block, "attn", None)
        if attention is None or getattr(attention, "_workbench_cache_rename", False):
            continue
        attention.register_forward_pre_hook(_cache_as_past_key_values, with_kwargs=True)
        attention.__dict__["_workbench_cache_rename"] = True
        changed = True
    return changed


def _cache_as_past_key_values(module, args, kwargs):
    if "cache" in kwargs and kwargs.get("past_key_values") is None:
        kwargs = dict(kwargs)
        kwargs["past_key_values"] = kwargs.pop("cache")
        return args, kwargs
    return None
