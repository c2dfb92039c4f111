"""What a running job tells the code beneath it, on the job's own thread: whether the job
was cancelled, and where to report what it is waiting for.

A job checks for Cancel at each `yield`, but one step can be a long wait below any yield:
a forward pass of a big model (hooks/interrupt.py stops it between two blocks), or a
remote job queued on NDIF (engines/remote.py stops waiting for it). Both ask this module.
The same remote wait reports its state ("queued", "running", "downloading") through
`report_status` to whoever runs the job: the app's task row, the command line's bar.

Everything here is thread-local: code run on other threads, or outside a job, is never
cancelled and reports to nobody.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_current = threading.local()


class Interrupted(Exception):
    """Raised inside work whose job was cancelled."""


@contextmanager
def cancellable(event: threading.Event) -> Iterator[None]:
    """Work done by this thread inside the block stops when event is set."""
    previous = getattr(_current, "event", None)
    _current.event = event
    try:
        yield
    finally:
        _current.event = previous


def cancelled() -> bool:
    event = getattr(_current, "event", None)
    return event is not None and event.is_set()


def raise_if_cancelled() -> None:
    if cancelled():
        raise Interrupted("cancelled")


@contextmanager
def reporting(listener: Callable[[str], object]) -> Iterator[None]:
    """Status messages reported by this thread inside the block go to listener."""
    previous = getattr(_current, "listener", None)
    _current.listener = listener
    try:
        yield
    finally:
        _current.listener = previous


def report_status(message: str) -> None:
    listener = getattr(_current, "listener", None)
    if listener is not None:
        listener(message)
