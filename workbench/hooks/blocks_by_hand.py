"""A model's later blocks run one by one, by hand, only at the positions still needed.

ROME's v* search runs the blocks after the edited one forward and backward about twenty
times per edit, on a dozen rows of which it reads the logits at a few positions. What the
bridge's pass cannot leave out is left out here:

- Every position behind a row's last read one. A position reaches later blocks only
  through attention, that is only positions after it in its own row, so nothing behind
  the last read position of a row is needed: v*'s KL prompt, read at its subject and
  padded to the longest row, is most of such a row. The residual stream is carried at
  the needed positions alone (gathered into one matrix), and attention reads the others
  as zeros: they are later in their row than any needed query, or padding the mask hides.
- In the last block, the queries, the output projection and the MLP everywhere but where
  logits are read (its keys and values are still needed at every kept position).
- The bridge's wrapping of the model and of each block (its hook points, the filtering of
  arguments, the HF model's mask and rotary set-up on every pass).

A block is x + attn(ln1(x)), then x + mlp(ln2(x)), with the bridge's own submodules and the
arguments the model hands the block, taken from a pass of the model itself
(block_arguments). Attention of the plain rotary kind (Llama, Mistral, Qwen2, ...) is
computed op for op as TransformerLens's PositionEmbeddingsAttentionBridge computes it, with
the projections at the kept positions alone; any other runs through the bridge's module on
the whole rows. A row of a matrix product does not depend on the other rows (MKL on a CPU,
given a dozen rows), and backward sums each position's gradient in the order the whole
block does, so logits and gradients come out bit for bit those of the bridge's pass
(plugins/workbench_rome/tests/test_rome.py). That the blocks are of this kind is not
assumed: the caller compares a run by hand with the bridge's pass once per model and layer
(workbench.editing.delta_pass) and uses the bridge where they differ (Gemma 2's norms after
attention and MLP, parallel blocks, attention that wants other arguments than the block).
Causal tracing's restored passes run blocks from the same parts (the norms, attention_by_hand,
the MLP), with checks of their own (plugins/workbench_causal_trace/joined.py).
"""

from __future__ import annotations

from typing import Any

import torch

from ..job_context import raise_if_cancelled
from .partial_run import run_blocks, skipping_blocks_before

_PARTS = ("ln1", "attn", "ln2", "mlp")


def _hooked(blocks) -> bool:
    """Whether a hook is registered on a hook point of these blocks (a run by hand skips the
    blocks' own hook points and hands the MLP gathered positions)."""
    for block in blocks:
        for module in block.modules():
            if getattr(module, "fwd_hooks", None) or getattr(module, "bwd_hooks", None):
                return True
    return False


def block_arguments(bridge, start: int, residual: torch.Tensor, **forward_kwargs) -> tuple[list[dict[str, Any]], str | None] | None:
    """The keyword arguments the model hands blocks start.. in a pass that enters block
    `start` with `residual` [batch, pos, d_model]; forward_kwargs (past_key_values,
    attention_mask, position_ids) go to the bridge's forward as in that pass. Every block
    is the identity in the pass, and it ends after the last one: it costs the model's set-up
    of masks and positions.

    Returns (one dict per block, without the cache; the name under which the blocks receive
    the cache passed as past_key_values, or None without one). None when these blocks
    cannot be run by hand: a block without ln1/attn/ln2/mlp, a hook on one of them, or a
    cache that does not reach the blocks as it was passed.
    """
    from transformers.cache_utils import Cache

    blocks = list(bridge.blocks)[start:]
    if not blocks or not all(isinstance(getattr(block, part, None), torch.nn.Module) for block in blocks for part in _PARTS) or _hooked(blocks):
        return None
    cache = forward_kwargs.get("past_key_values")
    captured: list[dict[str, Any] | None] = [None] * len(blocks)

    def grab(index: int):
        def hook(_module, args, kwargs):
            captured[index] = dict(kwargs, hidden_states=args[0] if args else kwargs.get("hidden_states"))

        return hook

    handles = [block.register_forward_pre_hook(grab(index), with_kwargs=True) for index, block in enumerate(blocks)]
    try:
        with torch.no_grad(), skipping_blocks_before(bridge, len(bridge.blocks)):
            run_blocks(bridge, residual, start_at_layer=start, return_type=None, **forward_kwargs)
    finally:
        for handle in handles:
            handle.remove()
    arguments, names = [], set()
    for kwargs in captured:
        if kwargs is None or kwargs.pop("hidden_states", None) is None:
            return None
        for name, value in list(kwargs.items()):
            if cache is not None and value is cache:
                names.add(name)
                del kwargs[name]
            elif isinstance(value, Cache):  # a cache the model made for itself would grow on every run
                return None
        arguments.append(kwargs)
    if cache is not None and len(names) != 1:
        return None
    return arguments, next(iter(names), None)


def norm_by_hand(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the bridge's norm returns, without its hook points: on its native path with no
    hook registered it computes the hooks' values (scale, normalized) and then returns the HF
    module's own output, which this computes alone."""
    module = getattr(norm, "original_component", None)
    if getattr(norm, "use_native_layernorm_autograd", False) and isinstance(module, torch.nn.Module):
        out = module(x)
        return out if out.dtype == x.dtype else out.to(x.dtype)
    return norm(x)


# TransformerLens's PositionEmbeddingsAttentionBridge.forward computes attention itself (for its
# hooks); what it does besides plain rotary attention depends on these, all absent here.
_ATTENTION_VARIANTS = ("attn_logit_softcapping", "sinks", "key_multiplier")
_CONFIG_VARIANTS = ("use_split_qkv_input", "use_attn_in", "gated_q_proj", "rotary_interleaved_cos_sin", "rotary_adjacent_pairs", "use_attn_result", "qk_norm_after_rope")


def is_plain_rotary_attention(attention: torch.nn.Module) -> bool:
    """Whether the bridge computes this attention as plain rotary attention (Llama, Mistral,
    Qwen2, ...), which a block by hand then computes the same way at the positions it keeps:
    Q, K and V projections, rotary embedding, the cache, grouped heads, scaled scores plus the
    model's additive mask, softmax in float32, the output projection."""
    try:
        from transformer_lens.model_bridge.generalized_components.position_embeddings_attention import PositionEmbeddingsAttentionBridge
    except ImportError:
        return False
    module = getattr(attention, "original_component", None)
    config = getattr(attention, "config", None)
    submodules = getattr(attention, "submodules", None) or {}
    rope = getattr(getattr(module, "config", None), "rope_parameters", None)
    return (
        type(attention) is PositionEmbeddingsAttentionBridge
        and all(isinstance(getattr(getattr(attention, part, None), "original_component", None), torch.nn.Linear) for part in ("q", "k", "v", "o"))
        and not any(part in submodules for part in ("q_norm", "k_norm", "gate"))
        and all(getattr(module, name, None) is None for name in _ATTENTION_VARIANTS)
        and getattr(getattr(module, "config", None), "clip_qkv", None) is None
        and not any(getattr(config, name, False) for name in _CONFIG_VARIANTS)
        and not getattr(attention, "compatibility_mode", True)
        and not (isinstance(rope, dict) and rope.get("llama_4_scaling_beta") is not None)
        and isinstance(getattr(attention, "_layer_idx", None), int)
        and isinstance(getattr(module, "head_dim", None), int)
    )


def takes_plain_arguments(arguments: dict[str, Any], head_dim: int) -> bool:
    """Whether the model hands the block what plain rotary attention takes: an additive float
    mask [batch, 1, pos, keys], and cos and sin over the whole head."""
    mask, rotary = arguments.get("attention_mask"), arguments.get("position_embeddings")
    return (
        isinstance(mask, torch.Tensor) and mask.is_floating_point() and mask.ndim == 4
        and isinstance(rotary, tuple) and len(rotary) == 2 and all(isinstance(t, torch.Tensor) and t.shape[-1] == head_dim for t in rotary)
    )


def _spread(rows: torch.Tensor, where: torch.Tensor | None, shape: tuple[int, int], head_dim: int) -> torch.Tensor:
    """Rows [n, heads * head_dim] at positions `where` of [batch * pos] (None: all, in order)
    as [batch, heads, pos, head_dim], zero elsewhere."""
    batch, width = shape
    if where is not None:
        rows = rows.new_zeros(batch * width, rows.shape[-1]).index_copy(0, where, rows)
    return rows.view(batch, width, -1, head_dim).transpose(1, 2)


class BlocksByHand:
    """Blocks start.. of a bridge, run on the residual entering block `start` with the
    arguments block_arguments took from a pass of the same shape. The residual is carried
    at the positions that are still needed alone; attention reads the others as zeros, at
    positions no needed query sees (later in the row, or padding the mask hides)."""

    def __init__(self, bridge, start: int, arguments: list[dict[str, Any]], cache_name: str | None):
        self.blocks = list(bridge.blocks)[start:]
        self.arguments = arguments
        self.cache_name = cache_name
        self.plain_attention = [is_plain_rotary_attention(block.attn) and takes_plain_arguments(given, block.attn.original_component.head_dim) for block, given in zip(self.blocks, arguments)]

    def run(self, x: torch.Tensor, cache, kept: torch.Tensor | None, scored: torch.Tensor | None) -> torch.Tensor:
        """The residual leaving the last block [batch, pos, d_model], at the scored positions
        (zero elsewhere). x: the residual entering block start. cache: a new HF cache of the
        prefix for each run, empty without one (the blocks append to it). kept: the positions [batch * pos] whose
        residual a later block or the output needs (None: all), ascending; scored: those of them
        whose output of the last block is needed (None: all kept)."""
        batch, width, d_model = x.shape
        out = self._blocks(x, cache, kept, scored)
        where = scored if scored is not None else kept
        if where is None:
            return out.view(batch, width, d_model)
        return out.new_zeros(batch * width, d_model).index_copy(0, where, out).view(batch, width, d_model)

    def fill_cache(self, x: torch.Tensor, cache, kept: torch.Tensor | None) -> None:
        """Only the keys and values the blocks append to cache (a pass for a prefix's cache):
        the last block's MLP, whose output nothing reads, is left out."""
        self._blocks(x, cache, kept, None, last_mlp=False)

    def _blocks(self, x: torch.Tensor, cache, kept: torch.Tensor | None, scored: torch.Tensor | None, last_mlp: bool = True) -> torch.Tensor:
        batch, width, d_model = x.shape
        residual = x.reshape(batch * width, d_model)
        if kept is not None:
            residual = residual.index_select(0, kept)
        last = len(self.blocks) - 1
        for index, (block, arguments, plain) in enumerate(zip(self.blocks, self.arguments, self.plain_attention)):
            raise_if_cancelled()  # what the GUI's interrupt hook on every block does
            # The rows of `residual` whose output of this block is needed (None: all of them).
            queries = None
            if index == last and scored is not None:
                queries = scored if kept is None else torch.searchsorted(kept, scored)
            if self.cache_name is not None:
                arguments = {**arguments, self.cache_name: cache}
            normed = norm_by_hand(block.ln1, residual)
            if plain:
                attended = attention_by_hand(block, arguments, cache, normed, kept, queries, (batch, width))
            else:
                spread = normed if kept is None else normed.new_zeros(batch * width, d_model).index_copy(0, kept, normed)
                attended = block.attn(hidden_states=spread.view(batch, width, d_model), **arguments)
                attended = (attended[0] if isinstance(attended, tuple) else attended).reshape(batch * width, d_model)
                if kept is not None:
                    attended = attended.index_select(0, kept)
                if queries is not None:
                    attended = attended.index_select(0, queries)
            middle = (residual if queries is None else residual.index_select(0, queries)) + attended
            if index == last and not last_mlp:
                break
            residual = middle + block.mlp(norm_by_hand(block.ln2, middle))
        return residual


def attention_by_hand(block, arguments: dict[str, Any], cache, normed: torch.Tensor, kept: torch.Tensor | None, queries: torch.Tensor | None, shape: tuple[int, int]) -> torch.Tensor:
    """PositionEmbeddingsAttentionBridge.forward's arithmetic, op for op, with the
    projections at the kept positions alone, and queries and the output projection only
    at those whose output is needed."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

    attention = block.attn
    module = attention.original_component
    head_dim = module.head_dim
    at_queries = kept if queries is None else (queries if kept is None else kept[queries])
    query = _spread(attention.q.original_component(normed if queries is None else normed.index_select(0, queries)), at_queries, shape, head_dim)
    key = _spread(attention.k.original_component(normed), kept, shape, head_dim)
    value = _spread(attention.v.original_component(normed), kept, shape, head_dim)
    cos, sin = arguments["position_embeddings"]
    query, key = apply_rotary_pos_emb(query, key, cos, sin)
    key, value = cache.update(key, value, attention._layer_idx)
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scores = torch.matmul(query, key.transpose(-2, -1)) * getattr(module, "scaling", head_dim**-0.5)
    mask = arguments["attention_mask"]
    if mask.shape[-1] != key.shape[-2]:
        mask = mask[..., : key.shape[-2]]
    if mask.shape[-2] != query.shape[-2]:
        mask = mask[..., -query.shape[-2] :, :]
    scores = scores + mask.to(dtype=scores.dtype)
    weights = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous().reshape(shape[0] * shape[1], -1)
    if at_queries is not None:
        out = out.index_select(0, at_queries)
    projection = attention.o.original_component
    if out.dtype != projection.weight.dtype and projection.weight.dtype.is_floating_point:
        out = out.to(projection.weight.dtype)
    return projection(out)
