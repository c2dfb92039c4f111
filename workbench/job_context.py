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
from contextlib import AbstractContextManager, contextmanager

_current = threading.local()


class Interrupted(Exception):
    """Raised inside work whose job was cancelled."""


@contextmanager
def _bound(name: str, value: object) -> Iterator[None]:
    """`value` as this thread's `name` inside the block (nested blocks restore the outer one)."""
    previous = getattr(_current, name, None)
    setattr(_current, name, value)
    try:
        yield
    finally:
        setattr(_current, name, previous)


def cancellable(event: threading.Event) -> AbstractContextManager[None]:
    """Work done by this thread inside the block stops when event is set."""
    return _bound("event", event)


def cancelled() -> bool:
    event = getattr(_current, "event", None)
    return event is not None and event.is_set()


def raise_if_cancelled() -> None:
    if cancelled():
        raise Interrupted("cancelled")


def reporting(listener: Callable[[str], object]) -> AbstractContextManager[None]:
    """Status messages reported by this thread inside the block go to listener."""
    return _bound("listener", listener)


def report_status(message: str) -> None:
    listener = getattr(_current, "listener", None)
    if listener is not None:
        listener(message)
