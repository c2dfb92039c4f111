"""Notifications: where every error of a job, a plugin or the app itself ends up.

Errors are shown as one line (a WorkbenchError's "problem (fix)"), never as a modal
box that stops the work; "Details…" opens the traceback on demand. Uncaught
exceptions of any thread are routed here too, so a bug in a plugin's slot or a
stray thread is visible instead of lost on a terminal nobody watches.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from dataclasses import dataclass, field

import shiboken6
from PySide6.QtCore import QObject, Qt, QThread, Signal
from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ..errors import WorkbenchError
from .widgets.style import ERROR_COLOUR, MUTED_COLOUR, WARNING_COLOUR, label, set_text_colour

ERROR, WARNING, INFO = "error", "warning", "info"
_LEVEL_COLOURS = {ERROR: ERROR_COLOUR, WARNING: WARNING_COLOUR, INFO: "#1f5f99"}


@dataclass
class Notification:
    title: str
    message: str  # one line, shown as is
    details: str = ""  # a traceback or longer text, shown on demand
    level: str = ERROR
    time: str = field(default_factory=lambda: time.strftime("%H:%M:%S"))


def describe_error(exc: BaseException, details: str = "") -> tuple[str, str]:
    """(one-line message, details) for an exception.

    User errors are their own message and need no traceback; anything else is
    a bug somewhere, so its traceback is kept for the details view.
    """
    if isinstance(exc, WorkbenchError):
        return str(exc), getattr(exc, "details", "") or details
    message = f"{type(exc).__name__}: {exc}"
    if not details:
        details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return message, details


class NotificationCenter(QObject):
    """Collects notifications; safe to post to from any thread."""

    posted = Signal(object)  # Notification, in the GUI thread
    _posted_elsewhere = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.items: list[Notification] = []
        # Queued: a post from a worker thread is handled in the thread this object lives in.
        self._posted_elsewhere.connect(self._add, Qt.QueuedConnection)
        self._previous_hooks = None

    def post(self, notification: Notification) -> Notification:
        if QThread.currentThread() == self.thread():
            self._add(notification)
        else:
            self._posted_elsewhere.emit(notification)
        return notification

    def error(self, title: str, exc: BaseException, details: str = "") -> Notification:
        message, details = describe_error(exc, details)
        return self.post(Notification(title, message, details, ERROR))

    def warning(self, title: str, message: str, details: str = "") -> Notification:
        return self.post(Notification(title, message, details, WARNING))

    def info(self, title: str, message: str) -> Notification:
        return self.post(Notification(title, message, "", INFO))

    def _add(self, notification: Notification) -> None:
        self.items.append(notification)
        self.posted.emit(notification)

    # -- uncaught exceptions ------------------------------------------------------------------

    def install_exception_hooks(self) -> None:
        """Route sys.excepthook and threading.excepthook here (chaining to the previous hooks)."""
        if self._previous_hooks is not None:
            return
        previous_sys, previous_threading = sys.excepthook, threading.excepthook
        self._previous_hooks = (previous_sys, previous_threading)

        # A window closed without uninstalling leaves its hooks in the chain; once its Qt
        # object is gone they only pass the exception on.
        def on_exception(exc_type, exc, tb):
            if shiboken6.isValid(self):
                details = "".join(traceback.format_exception(exc_type, exc, tb))
                self.post(Notification("Unexpected error", *describe_error(exc, details), ERROR))
            previous_sys(exc_type, exc, tb)

        def on_thread_exception(args):
            if args.exc_type is SystemExit:
                return
            if shiboken6.isValid(self):
                details = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
                where = args.thread.name if args.thread is not None else "a thread"
                self.post(Notification(f"Unexpected error in {where}", *describe_error(args.exc_value, details), ERROR))
            previous_threading(args)

        sys.excepthook = on_exception
        threading.excepthook = on_thread_exception

    def uninstall_exception_hooks(self) -> None:
        if self._previous_hooks is not None:
            sys.excepthook, threading.excepthook = self._previous_hooks
            self._previous_hooks = None


class DetailsDialog(QDialog):
    """The traceback (or other details) of one notification, copyable."""

    def __init__(self, notification: Notification, parent=None):
        super().__init__(parent)
        self.setWindowTitle(notification.title)
        self.resize(760, 420)
        summary = QLabel(notification.message)
        summary.setWordWrap(True)
        summary.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.text = QPlainTextEdit(notification.details or "No further details.")
        self.text.setReadOnly(True)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        copy = buttons.addButton("Copy", QDialogButtonBox.ActionRole)
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(f"{notification.message}\n\n{notification.details}"))
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(summary)
        layout.addWidget(self.text, 1)
        layout.addWidget(buttons)


class NotificationRow(QFrame):
    def __init__(self, notification: Notification, parent=None):
        super().__init__(parent)
        self.notification = notification
        self.setFrameShape(QFrame.StyledPanel)
        colour = _LEVEL_COLOURS.get(notification.level, "")
        heading = QLabel(f"{notification.time}  <b>{_escape(notification.title)}</b>")
        if colour:
            set_text_colour(heading, colour)
        self.message = QLabel(notification.message)
        self.message.setToolTip(notification.message)
        self.message.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.message.setWordWrap(True)
        self.message.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.details_button = QPushButton("Details…")
        self.details_button.setVisible(bool(notification.details))
        self.details_button.clicked.connect(self.show_details)
        top = QHBoxLayout()
        top.addWidget(heading, 1)
        top.addWidget(self.details_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 2, 6, 2)
        layout.setSpacing(1)
        layout.addLayout(top)
        layout.addWidget(self.message)
        self.dialog: DetailsDialog | None = None

    def show_details(self) -> DetailsDialog:
        self.dialog = DetailsDialog(self.notification, self.window())
        self.dialog.show()  # non-modal: the app keeps working while it is open
        return self.dialog


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class NotificationList(QWidget):
    """The non-modal list of notifications, newest first."""

    count_changed = Signal(int)

    def __init__(self, center: NotificationCenter, parent=None):
        super().__init__(parent)
        self.center = center
        self._rows: list[NotificationRow] = []
        inner = QWidget()
        self._rows_layout = QVBoxLayout(inner)
        self._rows_layout.setContentsMargins(2, 2, 2, 2)
        self._rows_layout.setSpacing(2)
        self._placeholder = label("No notifications.", colour=MUTED_COLOUR)
        self._rows_layout.addWidget(self._placeholder)
        self._rows_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setWidget(inner)
        clear = QPushButton("Clear all")
        clear.clicked.connect(self.clear)
        top = QVBoxLayout()
        top.addWidget(clear)
        top.addStretch(1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll, 1)
        layout.addLayout(top)
        for notification in center.items:
            self._add(notification)
        center.posted.connect(self._add)

    def rows(self) -> list[NotificationRow]:
        """Newest first, as shown."""
        return list(reversed(self._rows))

    def _add(self, notification: Notification) -> None:
        row = NotificationRow(notification)
        self._rows.append(row)
        self._rows_layout.insertWidget(0, row)
        self._placeholder.hide()
        self.count_changed.emit(len(self._rows))

    def clear(self) -> None:
        for row in self._rows:
            row.deleteLater()
        self._rows.clear()
        self._placeholder.show()
        self.count_changed.emit(0)
