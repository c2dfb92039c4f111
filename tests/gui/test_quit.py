"""Quitting and long steps (issue 18): a job running when the window closes is cancelled and
the window goes within 5 s; quitting with unsaved work asks first; the predictions say what
they wait for instead of sitting silent."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("pytestqt")

from tests.gui.helpers import wait_for_task  # noqa: E402
from workbench.gui.tasks import TaskState  # noqa: E402


def test_closing_the_window_during_a_long_step_cancels_it_within_5_s(qtbot, lab_window):
    window = lab_window
    panel = window.open_panel("busy-test")
    task = panel.run()
    qtbot.waitUntil(lambda: task.progress is not None and task.state is TaskState.RUNNING, timeout=30_000)
    time.sleep(0.5)  # well inside the loop of forward passes, which never yields
    started = time.monotonic()
    window.close()  # cancels, then waits for the worker thread (no time limit in tests)
    assert time.monotonic() - started < 5.0
    wait_for_task(qtbot, task, timeout=5_000)
    assert task.state is TaskState.CANCELLED


def test_cancel_stops_a_step_that_never_yields(qtbot, lab_window):
    panel = lab_window.open_panel("busy-test")
    task = panel.run()
    qtbot.waitUntil(lambda: task.progress is not None, timeout=30_000)
    started = time.monotonic()
    task.cancel()
    wait_for_task(qtbot, task, timeout=5_000)
    assert task.state is TaskState.CANCELLED and time.monotonic() - started < 5.0
    assert "Cancelled" in panel.status.text()
    # The model is free again and works: the next run of another panel completes.
    lens = lab_window.open_panel("logit-lens")
    assert wait_for_task(qtbot, lens.run()).state is TaskState.DONE


def test_quitting_with_results_not_in_a_workspace_asks_first(qtbot, lab_window, tmp_path, monkeypatch):
    window = lab_window
    window.confirm_quit = True
    asked = []
    monkeypatch.setattr(window, "_confirm_quit", lambda lost: asked.append(lost) or False)  # the user cancels
    lens = window.open_panel("logit-lens")
    assert wait_for_task(qtbot, lens.run()).state is TaskState.DONE
    assert window.unsaved_work() and "Logit lens" in window.unsaved_work()[0]
    window.close()
    assert asked and window.isVisible()  # still open: nothing was lost
    with qtbot.waitSignal(window.workspace_saved, timeout=30_000):
        window.save_workspace(tmp_path / "session.wbws")
    assert window.unsaved_work() == []
    window.close()
    assert len(asked) == 1 and not window.isVisible()  # saved: no question


def test_predictions_say_they_wait_for_the_model(qtbot, model_window):
    window = model_window
    window.model_lock.acquire()  # a job holds the model
    try:
        window.set_prompt("t1 t2 t3 t4")
        qtbot.waitUntil(lambda: "Waiting for the model" in window.predictions.message, timeout=10_000)
        assert "after 4 tokens" in window.predictions.message or "tokens" in window.predictions.message
    finally:
        window.model_lock.release()
    with qtbot.waitSignal(window.predictions_shown, timeout=30_000):
        pass
    assert window.predictions.predictions and window.predictions.message == ""
