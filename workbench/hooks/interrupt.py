"""Cancelling a forward pass between two blocks, not only between two progress reports.

A job checks for Cancel at each `yield`; one step of a job (the next-token predictions of
a 3,000-token prompt, one row of a trace on a big model) can take minutes. A forward
pre-hook on every block asks whether the thread running the pass belongs to a cancelled
job and, if so, raises `Interrupted`, so the pass stops within one block's compute.

The job runner marks its thread with `cancellable(event)` (workbench/job_context.py); passes run on other threads
(or outside a job) are never interrupted. The check is one thread-local lookup per block.
"""

from __future__ import annotations

from typing import Any

import torch

from ..job_context import Interrupted, cancellable, raise_if_cancelled

__all__ = ["Interrupted", "cancellable", "install", "raise_if_cancelled"]

_HOOKED = "_workbench_interrupt_hooked"


def _check(_module: torch.nn.Module, _args: Any) -> None:
    raise_if_cancelled()


def install(model: torch.nn.Module) -> None:
    """Add the check before every block of a TransformerBridge (once per model)."""
    if getattr(model, _HOOKED, False):
        return
    blocks = getattr(model, "blocks", None)
    for block in blocks if blocks is not None else []:
        block.register_forward_pre_hook(_check)
    setattr(model, _HOOKED, True)
