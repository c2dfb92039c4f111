"""Cancelling a forward pass between two blocks (workbench/hooks/interrupt.py)."""

from __future__ import annotations

import threading

import pytest
import torch

from workbench.hooks.interrupt import Interrupted, cancellable, install


def test_a_cancelled_thread_stops_at_the_next_block_and_others_run_on(lab_model):
    install(lab_model.bridge)
    install(lab_model.bridge)  # once per model: a second call adds nothing
    ids = torch.tensor([lab_model.tokenize("t1 t2 t3")])
    reached = []
    handle = lab_model.bridge.blocks[1].register_forward_pre_hook(lambda module, args: reached.append(1))
    try:
        event = threading.Event()
        with cancellable(event):
            lab_model.bridge(ids, return_type=None)  # not cancelled: runs through
            assert reached == [1]
            event.set()
            with pytest.raises(Interrupted):
                lab_model.bridge(ids, return_type=None)
            assert reached == [1]  # stopped before block 1
        reached.clear()
        lab_model.bridge(ids, return_type=None)  # outside the block: never interrupted
        errors = []

        def other_thread():
            try:
                lab_model.bridge(ids, return_type=None)
            except Exception as exc:  # recorded for the assertion below
                errors.append(exc)

        with cancellable(event):
            thread = threading.Thread(target=other_thread)
            thread.start()
            thread.join()
        assert errors == [] and len(reached) == 2  # another thread's pass is not this job's
    finally:
        handle.remove()
