"""Constants and small helpers shared by the GUI tests."""

from __future__ import annotations

LAB_MODEL = "lab:induction"
LAB_PROMPT = "t1 t2 t3 t4 t1 t2 t3"


def wait_for_task(qtbot, task, timeout: int = 60_000):
    """Wait until a workbench.gui.tasks.Task has ended (in any state); returns it."""
    qtbot.waitUntil(lambda: task.state.ended, timeout=timeout)
    return task
