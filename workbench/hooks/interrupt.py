"""Cancelling a forward pass between two blocks, not only between two progress reports.

A job checks for Cancel at each `yield`; one step of a job (the next-token predictions of
a 3,000-token prompt, one row of a trace on a big model) can take minutes. A forward
pre-hook on every block asks whether the thread running the pass belongs to a cancelled
job and, if so, raises `Interrupted`, so the pass stops within one block's compute.

The job runner marks its thread with `cancellable(event)`; passes run on other threads
(or outside a job) are never interrupted. The check is one thread-local lookup per block.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

_current = threading.local()
_HOOKED = "_workbench_interrupt_hooked"


class Interrupted(Exception):
    """Raised inside a forward pass whose job was cancelled."""


@contextmanager
def cancellable(event: threading.Event) -> Iterator[None]:
    """Passes run by this thread inside the block stop when event is set."""
    previous = getattr(_current, "event", None)
    _current.event = event
    try:
        yield
    finally:
        _current.event = previous


def raise_if_cancelled() -> None:
    event = getattr(_current, "event", None)
    if event is not None and event.is_set():
        raise Interrupted("cancelled")


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
