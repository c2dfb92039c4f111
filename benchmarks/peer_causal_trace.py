"""Causal tracing the way the peer's code runs it: kmeng01/rome's `trace_with_patch`,
`trace_important_states` and `trace_important_window` (experiments/causal_trace.py),
written again for the plain Hugging Face model (no TransformerBridge) as the baseline of
benchmarks/bench_causal_trace.py.

What makes it the peer's algorithm, not ours:
- one forward pass per cell (token, layer, kind) of a batch of samples + 1 rows: row 0
  clean, rows 1.. with noise added to the subject's embeddings;
- the clean state is restored by forward hooks on the HF modules (the decoder layer's
  output for the residual stream; the MLP or self-attention output at every layer of the
  window l - window // 2 .. l + ceil(window / 2) - 1): rows 1.. at the token take row 0's value;
- the score is the mean over the noised rows of softmax(last position)[target].

Two deliberate differences, so that the scores can be compared number for number: the
noise is the tensor our run uses (the peer draws its own from a seeded RandomState), and
only single-token targets are scored (as the peer does).
"""

from __future__ import annotations

import numpy as np
import torch

KINDS = ("resid", "mlp", "attn")


def _layers(hf_model) -> list[torch.nn.Module]:
    """The decoder layers, as the peer's layername() finds them per family: model.layers
    (Llama-like), transformer.h (GPT-2, GPT-J), gpt_neox.layers (Pythia)."""
    inner = getattr(hf_model, "base_model", None) or hf_model
    layers = getattr(inner, "layers", None) or getattr(inner, "h", None)
    if layers is None:
        raise ValueError(f"{type(hf_model).__name__}: no decoder layers found")
    return list(layers)


def _module(layer: torch.nn.Module, kind: str) -> torch.nn.Module:
    if kind == "resid":
        return layer
    if kind == "mlp":
        return layer.mlp
    return getattr(layer, "self_attn", None) or getattr(layer, "attention", None) or layer.attn


def _restore_hook(position: int):
    """Rows 1.. at `position` take row 0's (the clean run's) value, as the peer's patch_rep does."""

    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden[1:, position] = hidden[0, position]
        return output

    return hook


def _noise_hook(noise: torch.Tensor, subject_range: tuple[int, int]):
    start, end = subject_range

    def hook(module, args, output):
        output[1:, start:end] += noise.to(output.device, output.dtype)
        return output

    return hook


@torch.inference_mode()
def trace_with_patch(hf_model, batch: torch.Tensor, noise: torch.Tensor, subject_range, target_id: int, states: list[tuple[int, torch.nn.Module]]) -> float:
    """One cell: P(target) averaged over the noised rows, with `states` (position, module) restored."""
    handles = [hf_model.get_input_embeddings().register_forward_hook(_noise_hook(noise, subject_range))]
    handles += [module.register_forward_hook(_restore_hook(position)) for position, module in states]
    try:
        logits = hf_model(input_ids=batch).logits
    finally:
        for handle in handles:
            handle.remove()
    return float(torch.softmax(logits[1:, -1].float(), dim=-1).mean(dim=0)[target_id])


def peer_trace(hf_model, token_ids: list[int], subject_range: tuple[int, int], target_id: int, noise: torch.Tensor, kind: str, window: int = 10):
    """(scores [tokens, layers], P clean, P corrupted) for one kind, one pass per cell."""
    layers = _layers(hf_model)
    n_layers, n_tokens = len(layers), len(token_ids)
    device = next(hf_model.parameters()).device
    batch = torch.tensor([token_ids] * (noise.shape[0] + 1), device=device)
    with torch.inference_mode():
        clean = float(torch.softmax(hf_model(input_ids=batch[:1]).logits[0, -1].float(), dim=-1)[target_id])
    corrupted = trace_with_patch(hf_model, batch, noise, subject_range, target_id, [])
    scores = np.zeros((n_tokens, n_layers), dtype=np.float32)
    for position in range(n_tokens):
        for layer in range(n_layers):
            if kind == "resid":
                chosen = [layer]
            else:
                chosen = list(range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2))))
            states = [(position, _module(layers[index], kind)) for index in chosen]
            scores[position, layer] = trace_with_patch(hf_model, batch, noise, subject_range, target_id, states)
    return scores, clean, corrupted
