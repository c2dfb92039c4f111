"""The task area and error handling: cancelling a long job, broken plugins, uncaught exceptions."""

from __future__ import annotations

import threading

import pytest

from tests.gui.helpers import wait_for_task
from workbench.gui.notifications import ERROR
from workbench.gui.tasks import TaskManager, TaskState
from workbench.progress import Progress


def _run_logit_lens(qtbot, window):
    panel = window.panel_for("logit-lens") or window.open_panel("logit-lens")
    with qtbot.waitSignal(panel.result_changed, timeout=60_000):
        panel.run()
    return panel


def test_cancel_a_long_analysis_and_keep_working(qtbot, lab_window):
    window = lab_window
    panel = window.open_panel("slow-test")
    panel.set_parameters({"steps": 5000, "sleep_ms": 5})
    task = panel.run()
    assert panel.run_button.text() == "Cancel"
    qtbot.waitUntil(lambda: task.progress is not None and task.progress.done >= 5, timeout=30_000)
    row = next(r for r in window.task_list.rows() if r.task is task)
    assert row.bar.value() > 0 and row.message.text().startswith("step ")
    row.button.click()  # Cancel, as a user does
    wait_for_task(qtbot, task, timeout=10_000)
    assert task.state is TaskState.CANCELLED and task.result is None
    assert panel.result is None and panel.run_button.text() == "Run" and "Cancelled" in panel.status.text()
    assert row.message.text() == "cancelled" and row.button.text() == "Clear"
    # The model lock was released: other analyses and predictions still run.
    _run_logit_lens(qtbot, window)
    window.set_prompt("t5 t6 t7")
    qtbot.waitUntil(lambda: [c.info.text for c in window.token_strip.chips()] == ["<bos>", "t5", "t6", "t7"], timeout=20_000)


def test_jobs_using_the_model_queue_and_a_waiting_job_can_be_cancelled(qtbot, lab_window):
    window = lab_window
    slow = window.open_panel("slow-test")
    slow.set_parameters({"steps": 5000})
    first = slow.run()
    qtbot.waitUntil(lambda: first.state is TaskState.RUNNING and first.progress is not None, timeout=30_000)
    lens = window.open_panel("logit-lens")
    second = lens.run()
    qtbot.wait(100)
    assert second.state is TaskState.WAITING and "waiting for the model" in second.message
    second.cancel()
    wait_for_task(qtbot, second, timeout=10_000)
    assert second.state is TaskState.CANCELLED
    first.cancel()
    wait_for_task(qtbot, first, timeout=10_000)


def test_a_plugin_failing_at_run_time_is_reported_and_stays_usable(qtbot, lab_window):
    window = lab_window
    panel = window.open_panel("run-error-test")
    task = wait_for_task(qtbot, panel.run())
    assert task.state is TaskState.FAILED
    note = window.notifications.items[-1]
    assert note.level == ERROR and note.title == "Run error test failed"
    assert "Plugin 'run-error-test' failed: ValueError: deliberate failure inside the plugin" in note.message
    assert "Traceback" in note.details and "deliberate failure" in note.details

    # Details on demand, non-modal.
    row = window.notification_list.rows()[0]
    assert row.notification is note and row.details_button.isVisibleTo(row)
    dialog = row.show_details()
    assert not dialog.isModal() and "deliberate failure" in dialog.text.toPlainText()
    dialog.close()

    # A failed run is a failed run: the plugin stays in the menu and runs again (issue 18: after
    # one failure causal tracing vanished from the Panels menu until a restart).
    assert window.registry.record("run-error-test").ok
    window.rebuild_panels_menu()
    assert "run-error-test" in {a.data() for a in window.panels_menu.actions()}
    assert panel.run_button.isEnabled()  # no "disabled for this session" state exists any more
    assert "Failed" in panel.status.text()
    again = wait_for_task(qtbot, panel.run())
    assert again is not task and again.state is TaskState.FAILED
    # The rest of the app keeps working.
    _run_logit_lens(qtbot, window)


def test_a_panel_whose_render_raises_is_reported_and_its_plugin_stays(qtbot, lab_window):
    window = lab_window
    panel = window.open_panel("params-test")
    panel.set_parameters({"note": "x"})

    def broken_render(result):
        raise KeyError("render bug")

    panel.render = broken_render
    task = wait_for_task(qtbot, panel.run())
    assert task.state is TaskState.DONE  # the job itself succeeded
    assert "render bug" in window.notifications.items[-1].message
    assert "Traceback" in window.notifications.items[-1].details
    assert window.registry.record("params-test").ok and panel.run_button.isEnabled()
    assert "Could not show the result" in panel.status.text()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_uncaught_exceptions_in_threads_become_notifications(qtbot, window):
    def fail():
        raise RuntimeError("stray thread failure")

    thread = threading.Thread(target=fail, name="stray")
    thread.start()
    thread.join()
    qtbot.waitUntil(lambda: any("stray thread failure" in n.message for n in window.notifications.items), timeout=5_000)
    note = next(n for n in window.notifications.items if "stray thread failure" in n.message)
    assert note.title == "Unexpected error in stray" and "Traceback" in note.details


def test_task_manager_drives_plain_generators_and_reports_errors(qtbot):
    manager = TaskManager()
    results = []

    def job():
        for i in range(3):
            yield Progress(i + 1, 3, f"step {i}")
        return "value"

    done = manager.start("ok", job, results.append)
    wait_for_task(qtbot, done)
    assert done.state is TaskState.DONE and results == ["value"]

    def broken():
        yield Progress(0, 1)
        raise OSError("disk on fire")

    with qtbot.waitSignal(manager.task_failed) as failed:
        manager.start("broken", broken)
    task = failed.args[0]
    assert task.state is TaskState.FAILED and task.message == "OSError: disk on fire" and "Traceback" in task.details

    def raising_on_result(value):
        raise ValueError("GUI side bug")

    shown = wait_for_task(qtbot, manager.start("plain call", lambda: 42, raising_on_result))
    assert shown.state is TaskState.FAILED and "GUI side bug" in shown.message
    assert manager.shutdown(5_000)


def test_a_remote_jobs_states_show_in_its_task_and_cancel_stops_the_wait(qtbot):
    """What the NDIF backend's wait does (engines/remote.py), on a task's thread: the job's
    states from nnsight's own responses become the task's message, and Cancel ends the wait
    at its next wake (every 0.1 s), with no further step of the job."""
    import time

    from nnsight.schema.response import ResponseModel, Status

    from workbench.engines.remote import _JobStatus

    manager = TaskManager()
    queued = threading.Event()

    def job():
        yield Progress(1, 4, "sending the job")
        status = _JobStatus()
        status.update(ResponseModel(id="job", status=Status.QUEUED))
        queued.set()
        while True:  # the websocket's idle wakes
            time.sleep(0.1)
            status.refresh()

    task = manager.start("remote", job)
    qtbot.waitUntil(lambda: task.message == "NDIF: queued", timeout=10_000)
    assert task.progress is not None and task.progress.done == 1 and task.progress.total == 4  # the bar stays where it was
    task.cancel()
    wait_for_task(qtbot, task, timeout=5_000)
    assert task.state is TaskState.CANCELLED
