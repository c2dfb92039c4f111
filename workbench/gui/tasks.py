"""The task area: every long job (model load, analysis, export) runs off the GUI thread as a task.

A job is a generator function's generator: it yields `workbench.progress.Progress`
and returns its value, exactly as the CLI drives it. Each task gets its own worker
thread that pulls `next(job)`; progress, the result and errors travel back to the
GUI thread as queued signals, so nothing here touches a widget from a worker.

Cancelling sets a flag the worker checks between yields; it then closes the
generator, which runs the job's own clean-up (a capture marks its run
interrupted, for example). A step that is already running is not interrupted,
so a task shows "cancelling" until that step returns.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from enum import Enum
from typing import Any

from PySide6.QtCore import QObject, QThread, QTimer, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ..hooks.interrupt import Interrupted, cancellable
from ..job_context import reporting
from ..progress import Progress
from .widgets.style import ERROR_COLOUR, MUTED_COLOUR, TEXT_COLOUR, WARNING_COLOUR, label, set_text_colour

JobFactory = Callable[[], Any]

# Progress faster than this is coalesced: a job yielding thousands of times a second
# would otherwise flood the GUI thread's event queue.
PROGRESS_INTERVAL_S = 0.05
# How long a successful task's row stays visible before it tidies itself away.
DONE_ROW_SECONDS = 6.0
# How much lower a worker thread runs than the GUI thread (Unix nice levels).
WORKER_NICENESS = 10


def lower_thread_priority() -> None:
    """Make the calling (worker) thread yield the CPU to the GUI thread.

    On two cores a model load and an analysis already fill the machine; at equal
    priority the GUI thread waited its turn and the window stalled for 100+ ms.
    Linux gives each thread its own nice level; elsewhere this does nothing and
    QThread priorities (set on start) apply.
    """
    if hasattr(os, "setpriority") and sys.platform.startswith("linux"):
        try:
            current = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, current + WORKER_NICENESS))
        except OSError:
            pass


class TaskState(str, Enum):
    WAITING = "waiting"  # queued behind another job that uses the model
    RUNNING = "running"
    CANCELLING = "cancelling"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        return self in (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED)


class _JobThread(QThread):
    """Drives one job generator. Its signals are emitted from the worker thread and
    delivered queued to receivers in the GUI thread."""

    progressed = Signal(object)  # Progress
    started_running = Signal()
    succeeded = Signal(object)
    failed = Signal(object, str)  # exception, traceback text
    cancelled = Signal()

    def __init__(self, job_factory: JobFactory, cancel_flag: threading.Event, lock: threading.Lock | None):
        super().__init__()
        self._factory = job_factory
        self._cancel = cancel_flag
        self._lock = lock
        self._last_progress: Progress | None = None

    def run(self) -> None:
        lower_thread_priority()
        if self._lock is not None and not self._wait_for_lock():
            self.cancelled.emit()
            return
        try:
            self.started_running.emit()
            self._drive()
        finally:
            if self._lock is not None:
                self._lock.release()

    def _wait_for_lock(self) -> bool:
        while not self._lock.acquire(timeout=0.05):
            if self._cancel.is_set():
                return False
        return True

    def _drive(self) -> None:
        # Cancel also stops a forward pass of this thread between two blocks (hooks/interrupt.py),
        # and the wait for a remote job; that job's states ("NDIF: queued") show as its message.
        with cancellable(self._cancel), reporting(self._report_status):
            self._drive_job()

    def _report_status(self, message: str) -> None:
        last = self._last_progress
        self.progressed.emit(Progress(last.done, last.total, message) if last is not None else Progress(0, 0, message))

    def _drive_job(self) -> None:
        try:
            job = self._factory()
            if not hasattr(job, "send"):  # a plain value, not a generator: that is the result
                self._finish(job)
                return
            last_emit = 0.0
            while True:
                if self._cancel.is_set():
                    self._close(job)
                    self.cancelled.emit()
                    return
                try:
                    progress = next(job)
                except StopIteration as stop:
                    self._finish(stop.value)
                    return
                now = time.monotonic()
                if isinstance(progress, Progress):
                    self._last_progress = progress
                if isinstance(progress, Progress) and now - last_emit >= PROGRESS_INTERVAL_S:
                    last_emit = now
                    self.progressed.emit(progress)
        except Interrupted:
            self.cancelled.emit()  # the job's own cleanup ran as the exception passed through it
        except BaseException as exc:  # every failure must reach the GUI, not die with the thread
            if self._cancel.is_set() and isinstance(exc.__context__, Interrupted):
                self.cancelled.emit()  # a job that wrapped the interruption in its own error
            else:
                self.failed.emit(exc, traceback.format_exc())

    def _finish(self, value: Any) -> None:
        if self._cancel.is_set():
            self.cancelled.emit()
        else:
            self.succeeded.emit(value)

    @staticmethod
    def _close(job) -> None:
        try:
            job.close()
        except Exception:  # a job that fails to clean up is still cancelled
            traceback.print_exc()


class Task(QObject):
    """One job as the GUI sees it. Lives in the GUI thread; all attributes are GUI-thread state."""

    changed = Signal()  # state, progress or message changed
    ended = Signal(object)  # self, once, in any end state

    def __init__(
        self,
        title: str,
        job_factory: JobFactory,
        on_result: Callable[[Any], None] | None,
        lock: threading.Lock | None,
        visible: bool = True,
        parent=None,
    ):
        super().__init__(parent)
        self.title = title
        self.visible = visible  # False: housekeeping too quick to deserve a row
        self.state = TaskState.WAITING if lock is not None else TaskState.RUNNING
        self.progress: Progress | None = None
        self.message = "waiting for the model (another job is using it)" if lock is not None else "starting"
        self.result: Any = None
        self.error: BaseException | None = None
        self.details = ""
        self.started = time.monotonic()
        self.seconds = 0.0
        self._on_result = on_result
        self._cancel = threading.Event()
        self._thread: _JobThread | None = _JobThread(job_factory, self._cancel, lock)
        self._thread.progressed.connect(self._on_progress)
        self._thread.started_running.connect(self._on_running)
        self._thread.succeeded.connect(self._on_succeeded)
        self._thread.failed.connect(self._on_failed)
        self._thread.cancelled.connect(self._on_cancelled)
        self._thread.finished.connect(self._on_thread_finished)
        self._disposed = False

    def start(self) -> None:
        self._thread.start(QThread.LowPriority)

    def cancel(self) -> None:
        if self.state.ended or self._cancel.is_set():
            return
        self._cancel.set()
        self.state = TaskState.CANCELLING
        self.message = "cancelling (after the current step)"
        self.changed.emit()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def wait(self, timeout_ms: int | None = None) -> bool:
        """Block until the worker thread has ended (used on quit). True when it has."""
        thread = self._thread
        if thread is None:
            return True
        return thread.wait() if timeout_ms is None else thread.wait(timeout_ms)

    # -- slots, in the GUI thread ---------------------------------------------------------------

    def _on_running(self) -> None:
        if self.state is TaskState.WAITING:
            self.state = TaskState.RUNNING
            self.message = "running"
            self.changed.emit()

    def _on_progress(self, progress: Progress) -> None:
        if self.state.ended:
            return
        self.progress = progress
        if progress.message and not self._cancel.is_set():
            self.message = progress.message
        self.changed.emit()

    def _on_succeeded(self, value: Any) -> None:
        self.result = value
        if self._on_result is not None:
            try:
                self._on_result(value)
            except Exception as exc:
                self._end(TaskState.FAILED, f"failed while showing its result: {type(exc).__name__}: {exc}", exc, traceback.format_exc())
                return
        self._end(TaskState.DONE, f"done in {time.monotonic() - self.started:.1f} s")

    def _on_failed(self, exc: BaseException, details: str) -> None:
        self._end(TaskState.FAILED, _one_line(exc), exc, getattr(exc, "details", "") or details)

    def _on_cancelled(self) -> None:
        self._end(TaskState.CANCELLED, "cancelled")

    def _end(self, state: TaskState, message: str, error: BaseException | None = None, details: str = "") -> None:
        if self.state.ended:
            return
        self.state, self.message, self.error, self.details = state, message, error, details
        self.seconds = time.monotonic() - self.started
        self.changed.emit()
        self.ended.emit(self)

    def _on_thread_finished(self) -> None:
        # Dropping the reference lets Python free the finished thread object.
        self._thread = None
        if self._disposed:
            self.deleteLater()

    def dispose(self) -> None:
        """Free the task once its worker thread has finished (a QThread must outlive its run)."""
        self._disposed = True
        self.result = None
        if self._thread is None:
            self.deleteLater()


def _one_line(exc: BaseException) -> str:
    from ..errors import WorkbenchError

    if isinstance(exc, WorkbenchError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class TaskManager(QObject):
    """Starts tasks and keeps them until they end; the one entry point for background work."""

    task_started = Signal(object)  # Task
    task_failed = Signal(object)  # Task, after it ended in TaskState.FAILED

    def __init__(self, parent=None):
        super().__init__(parent)
        self._tasks: list[Task] = []
        self._released: list[Task] = []  # ended, but their threads may still be winding down

    def start(
        self,
        title: str,
        job_factory: JobFactory,
        on_result: Callable[[Any], None] | None = None,
        *,
        lock: threading.Lock | None = None,
        visible: bool = True,
    ) -> Task:
        """Run job_factory() (a generator, or any callable) on a worker thread.

        on_result runs in the GUI thread with the job's return value. lock, when
        given, is held for the whole job, so jobs sharing it run one at a time.
        """
        task = Task(title, job_factory, on_result, lock, visible, parent=self)
        task.ended.connect(self._on_ended)
        self._tasks.append(task)
        self.task_started.emit(task)
        task.start()
        return task

    def running(self) -> list[Task]:
        return [t for t in self._tasks if not t.state.ended]

    def _on_ended(self, task: Task) -> None:
        if task.state is TaskState.FAILED:
            self.task_failed.emit(task)
        if not task.visible:
            self.release(task)

    def release(self, task: Task) -> None:
        """Forget an ended task (its row was cleared, or it never had one)."""
        if task.state.ended and task in self._tasks:
            self._tasks.remove(task)
            self._released = [t for t in self._released if t._thread is not None] + [task]
            task.dispose()

    def shutdown(self, timeout_ms: int | None = None) -> bool:
        """Cancel every task and wait for the worker threads (without a timeout: until they
        end, since a QThread destroyed while running aborts the process). True when all ended."""
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        for task in self._tasks:
            task.cancel()
        ok = True
        for task in list(self._tasks) + self._released:
            remaining = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            ok = task.wait(remaining) and ok
        return ok


class TaskRow(QFrame):
    """One task: title, progress bar, message, and Cancel (or Clear once it ended)."""

    def __init__(self, task: Task, on_clear: Callable[[TaskRow], None], parent=None):
        super().__init__(parent)
        self.task = task
        self._on_clear = on_clear
        self.setFrameShape(QFrame.StyledPanel)
        self.title = label(task.title, bold=True)
        self._colour = ""
        self.bar = QProgressBar()
        self.bar.setMaximumHeight(14)
        self.bar.setTextVisible(False)
        self.bar.setRange(0, 0)  # busy until the first progress report
        self.message = QLabel()
        self.message.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.button = QPushButton("Cancel")
        self.button.clicked.connect(self._clicked)
        self.bar.setFixedWidth(140)
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.button)
        bottom = QHBoxLayout()
        bottom.addWidget(self.bar)
        bottom.addWidget(self.message, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 2, 6, 2)
        layout.setSpacing(1)
        layout.addLayout(top)
        layout.addLayout(bottom)
        task.changed.connect(self.refresh)
        self.refresh()

    def _clicked(self) -> None:
        if self.task.state.ended:
            self._on_clear(self)
        else:
            self.task.cancel()

    def refresh(self) -> None:
        task = self.task
        progress = task.progress
        if task.state.ended:
            self.bar.setRange(0, 100)
            self.bar.setValue(100 if task.state is TaskState.DONE else self.bar.value())
            self.button.setText("Clear")
            self.button.setEnabled(True)
        elif progress is not None and progress.total > 0:
            self.bar.setRange(0, 1000)
            self.bar.setValue(round(1000 * progress.fraction))
        self.button.setEnabled(task.state is not TaskState.CANCELLING)
        colour = {TaskState.FAILED: ERROR_COLOUR, TaskState.CANCELLED: WARNING_COLOUR}.get(task.state, TEXT_COLOUR)
        if colour != self._colour:
            self._colour = colour
            set_text_colour(self.message, colour)
        self.message.setText(task.message)
        self.message.setToolTip(task.message)


class TaskList(QWidget):
    """The task area widget: one row per task, newest at the top."""

    def __init__(self, manager: TaskManager, parent=None):
        super().__init__(parent)
        self.manager = manager
        self._rows: list[TaskRow] = []
        self._inner = QWidget()
        self._rows_layout = QVBoxLayout(self._inner)
        self._rows_layout.setContentsMargins(2, 2, 2, 2)
        self._rows_layout.setSpacing(2)
        self._placeholder = label("No tasks. Loading a model or running a panel shows its progress here.", colour=MUTED_COLOUR, wrap=True)
        self._rows_layout.addWidget(self._placeholder)
        self._rows_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setWidget(self._inner)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)
        manager.task_started.connect(self._add)

    def rows(self) -> list[TaskRow]:
        return list(self._rows)

    def _add(self, task: Task) -> None:
        if not task.visible:
            return
        row = TaskRow(task, self._clear)
        self._rows.append(row)
        self._rows_layout.insertWidget(0, row)
        self._placeholder.hide()
        task.ended.connect(lambda t, r=row: self._schedule_tidy(r))

    def _schedule_tidy(self, row: TaskRow) -> None:
        if row.task.state is TaskState.DONE:
            QTimer.singleShot(int(DONE_ROW_SECONDS * 1000), self, lambda: self._clear(row))

    def _clear(self, row: TaskRow) -> None:
        if row not in self._rows:
            return
        self._rows.remove(row)
        row.task.changed.disconnect(row.refresh)
        row.deleteLater()
        self.manager.release(row.task)
        self._placeholder.setVisible(not self._rows)
