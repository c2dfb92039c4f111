"""What a traced run is scored by, and which states a cell restores.

Shared by the reference implementation and the fast path, so both measure the
same quantity at the same hook points.
"""

from __future__ import annotations

import torch

KINDS = ("resid", "mlp", "attn")

# The hook whose output a cell of each kind restores (TransformerLens names).
RESTORED_HOOK = {
    "resid": "blocks.{}.hook_resid_post",
    "mlp": "blocks.{}.hook_mlp_out",
    "attn": "blocks.{}.hook_attn_out",
}


def restored_layers(kind: str, layer: int, n_layers: int, window: int) -> range:
    """Layers restored by the cell at `layer`: that layer for the residual stream; for
    MLP and attention a window of `window` layers, l - window//2 .. l + window - window//2 - 1
    clipped to the model (the reference code's l-5 .. l+4 for a window of 10)."""
    if kind == "resid":
        return range(layer, layer + 1)
    low = max(0, layer - window // 2)
    high = min(n_layers, layer - window // 2 + window)
    return range(low, high)


def target_probability(logits: torch.Tensor, target_ids: list[int], first_position: int) -> torch.Tensor:
    """P(target) per row: the product of the teacher-forced probabilities of its tokens.

    logits: [rows, positions, vocab]; the prediction of target token i sits at
    position first_position + i.
    """
    steps = len(target_ids)
    picked = logits[:, first_position : first_position + steps].float().log_softmax(-1)
    index = torch.tensor(target_ids, device=logits.device).view(1, steps, 1).expand(picked.shape[0], steps, 1)
    return picked.gather(-1, index).squeeze(-1).sum(-1).exp()
