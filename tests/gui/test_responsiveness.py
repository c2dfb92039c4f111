"""The window never freezes: the GUI thread's event loop keeps ticking while long jobs run."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, QTimer

from tests.gui.helpers import LAB_MODEL, wait_for_task
from workbench.gui.tasks import TaskState

TICK_MS = 10
MAX_STALL_MS = 100


class StallMeter:
    """A 10 ms timer on the GUI thread; the longest gap between its ticks is the worst stall."""

    def __init__(self):
        self.timer = QTimer()
        self.timer.setTimerType(Qt.PreciseTimer)
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.gaps: list[float] = []
        self._last = None

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.gaps.append((now - self._last) * 1000)
        self._last = now

    def start(self) -> None:
        self._last = None
        self.gaps.clear()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    @property
    def worst_ms(self) -> float:
        return max(self.gaps, default=0.0)


# The stall is wall time, so a machine busy with other work adds its own delays: a stall over
# the limit is measured again, up to ATTEMPTS times. What the test guards against (a model load or
# a garbage collection on the GUI thread, a worker that never releases the GIL) stalls every time.
ATTEMPTS = 3


def _worst_stall_during_load(qtbot, window, meter) -> float:
    meter.start()
    qtbot.wait(100)
    loading = window.load_model(LAB_MODEL)
    wait_for_task(qtbot, loading)
    meter.stop()
    assert loading.state is TaskState.DONE
    return meter.worst_ms


def _worst_stall_during_load_and_analysis(qtbot, window, meter) -> float:
    # An analysis (a forward pass and a progress report at every step) and a second model load at once,
    # while the prompt's tokens and predictions are computed in the background too.
    meter.start()
    window.set_prompt("t1 t2 t3 t4 t5 t6 t1 t2 t3 t4 t5")
    panel = window.open_panel("slow-test")
    panel.set_parameters({"steps": 150, "sleep_ms": 5})
    analysis = panel.run()
    reloading = window.load_model(LAB_MODEL)
    wait_for_task(qtbot, analysis)
    wait_for_task(qtbot, reloading)
    qtbot.waitUntil(lambda: bool(window.predictions.predictions), timeout=20_000)
    meter.stop()
    assert analysis.state is TaskState.DONE and reloading.state is TaskState.DONE
    assert panel.result is not None and len(panel.result.values) == 150
    return meter.worst_ms


def _measured_until_under_the_limit(measure) -> list[float]:
    stalls = []
    while len(stalls) < ATTEMPTS and (not stalls or stalls[-1] >= MAX_STALL_MS):
        stalls.append(round(measure(), 1))
    return stalls


def test_event_loop_keeps_ticking_during_model_load_and_analysis(qtbot, window):
    meter = StallMeter()
    load = _measured_until_under_the_limit(lambda: _worst_stall_during_load(qtbot, window, meter))
    busy = _measured_until_under_the_limit(lambda: _worst_stall_during_load_and_analysis(qtbot, window, meter))
    print(f"\nworst event-loop stall (ms, per attempt): {load} during a model load, {busy} during load + analysis")
    assert min(load) < MAX_STALL_MS, f"the GUI thread stalled {load} ms while a model loaded"
    assert min(busy) < MAX_STALL_MS, f"the GUI thread stalled {busy} ms during an analysis and a model load"
