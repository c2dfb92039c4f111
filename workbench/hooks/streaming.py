"""One forward pass, its activations handed out one hook at a time with bounded memory.

Forward hooks call back; analyses want to iterate. The pass runs on a helper thread
whose hooks hand each activation over a one-slot queue and wait until it is taken, so at
most two hooks' activations exist at once whatever the prompt length. When the consumer
stops early (a cancel), the next hook raises and the pass ends.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np
import torch


class _Stopped(Exception):
    """Raised inside a hook when the consumer has gone."""


_DONE = object()


def stream_activations(bridge, ids: torch.Tensor, hooks: list[tuple[str, str]]) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (name, float32 array without the batch axis) for hooks [(name, canonical)] of one
    prompt's pass, in the order the model computes them."""
    handoff: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    failure: list[BaseException] = []

    def make_hook(name: str):
        def hand_over(tensor, hook):
            value = tensor[0].detach().float().cpu().numpy()
            while True:
                if stop.is_set():
                    raise _Stopped()
                try:
                    handoff.put((name, value), timeout=0.1)
                    return None
                except queue.Full:
                    continue

        return hand_over

    def forward() -> None:
        try:
            with torch.inference_mode():
                bridge.run_with_hooks(ids, fwd_hooks=[(canonical, make_hook(name)) for name, canonical in hooks], return_type=None)
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the consumer below
            failure.append(exc)
        finally:
            while not stop.is_set():
                try:
                    handoff.put(_DONE, timeout=0.1)
                    break
                except queue.Full:
                    continue

    thread = threading.Thread(target=forward, name="stream-activations", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                break
            yield item
        if failure:
            raise failure[0]
    finally:
        stop.set()
        thread.join()
