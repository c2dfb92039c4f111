"""A forward hook that keeps an activation for use after the pass."""

from __future__ import annotations

import torch


def keeping(store: dict, key: str, rows: int | None = None, copy: bool = False):
    """Hook putting the activation, detached, in store[key]: only its first `rows` rows when
    given, and a copy when `copy` (when it must outlive later in-place writes to the original)."""

    def keep(activation: torch.Tensor, hook=None) -> None:
        kept = activation[:rows].detach()
        store[key] = kept.clone() if copy else kept

    return keep
