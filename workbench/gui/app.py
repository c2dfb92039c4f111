"""Starting the desktop app: `workbench` with no command calls main(args)."""

from __future__ import annotations

import os
import signal
import sys

from ..errors import WorkbenchError
from ..threads import apply_torch_threads

APP_NAME = "Interpretability Workbench"


def preload_libraries() -> None:
    """Import the heavy libraries on the main thread before the event loop starts, then
    exempt everything imported so far from garbage collection.

    Importing a C extension holds the GIL for its whole initialisation; done for
    the first time inside a worker (the first model load), it would freeze the
    window for seconds. And torch, transformers and TransformerLens leave about
    half a million objects behind: a full garbage collection, triggered by any
    thread's allocations, walks them all while holding the GIL and stalled the
    window for 200-300 ms. Frozen, they are skipped (they live as long as the
    process anyway).
    """
    import gc

    import h5py  # noqa: F401
    import torch  # noqa: F401
    import transformer_lens  # noqa: F401
    import transformers  # noqa: F401
    from transformer_lens.model_bridge import TransformerBridge  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    gc.collect()
    gc.freeze()


def leave_a_core_for_the_window() -> None:
    """Let torch use one CPU core fewer than the machine has.

    torch's intra-op threads fill every core (and spin on them for a while after
    each operation); with every core taken, the GUI thread got no CPU for
    100-200 ms at a time while an analysis ran. An explicit OMP_NUM_THREADS or
    WORKBENCH_TORCH_THREADS wins.
    """
    apply_torch_threads(default=(os.cpu_count() or 2) - 1)


def prepare_runtime() -> None:
    """Everything that must happen before the event loop starts, for a window that never freezes."""
    preload_libraries()
    leave_a_core_for_the_window()


def _check_display(screenshot: bool) -> None:
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return
    displays = [name for name, variable in (("wayland", "WAYLAND_DISPLAY"), ("xcb", "DISPLAY")) if os.environ.get(variable)]
    if screenshot:
        # A screenshot needs no screen: use the display when Qt can, offscreen otherwise
        # (Qt tries the platforms in order).
        os.environ["QT_QPA_PLATFORM"] = ";".join(displays + ["offscreen"])
        return
    if displays:
        return
    raise WorkbenchError(
        "No display to open the window on (neither DISPLAY nor WAYLAND_DISPLAY is set).",
        "run it in a desktop session, under xvfb-run, or with QT_QPA_PLATFORM=offscreen; --screenshot works without a display",
    )


# Harmless messages Qt prints on some platforms (the offscreen one cannot resize native windows).
_QUIET_QT_MESSAGES = ("propagateSizeHints",)


def _qt_message(mode, context, message: str) -> None:
    if not any(text in message for text in _QUIET_QT_MESSAGES):
        print(message, file=sys.stderr)


def create_application(argv: list[str] | None = None):
    """The QApplication (created once), configured for the workbench."""
    import pyqtgraph as pg
    from PySide6.QtCore import qInstallMessageHandler
    from PySide6.QtWidgets import QApplication

    qInstallMessageHandler(_qt_message)
    app = QApplication.instance() or QApplication(argv if argv is not None else [sys.argv[0]])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName("interpretability-workbench")
    pg.setConfigOptions(antialias=True)
    collect_garbage_on_gui_thread(app)
    return app


def collect_garbage_on_gui_thread(app):
    """Python's cyclic garbage collector runs in whichever thread happens to allocate; when
    that is a worker (a model loading) and it frees a Qt object of a closed window, Qt
    crashes (seen as a segmentation fault in the GUI tests). So automatic collection is
    off while the app runs, and a timer on the GUI thread collects with the same
    thresholds (pyqtgraph's GarbageCollector). Returns it; it lives as long as app."""
    from pyqtgraph.util.garbage_collector import GarbageCollector

    collector = getattr(app, "_workbench_garbage_collector", None)
    if collector is None:
        collector = GarbageCollector(interval=0.5)
        collector.timer.setParent(app)
        app._workbench_garbage_collector = collector
    return collector


def _let_python_handle_ctrl_c(app, window) -> None:
    from PySide6.QtCore import QTimer

    # Qt's event loop runs in C++; a timer gives the interpreter regular chances to run signal handlers.
    signal.signal(signal.SIGINT, lambda *_: window.close())
    timer = QTimer(app)
    timer.timeout.connect(lambda: None)
    timer.start(250)


def main(args) -> int:
    """Run the app. With args.screenshot, run the screenshot script and exit (0, or 2 with a message)."""
    screenshot = getattr(args, "screenshot", None)
    try:
        _check_display(bool(screenshot))
        prepare_runtime()
        app = create_application()
        return _run(app, args, screenshot)
    except WorkbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(app, args, screenshot) -> int:
    from PySide6.QtCore import QTimer

    from .main_window import MainWindow

    window = MainWindow(remember=not screenshot)
    # Quitting cancels jobs and waits at most this long: a job still running then is left
    # behind by ending the process, never by a process computing on without a window.
    window.quit_wait_s, window.exit_if_stuck = 4.0, True
    try:
        script = None
        model = getattr(args, "gui_model", None)
        prompt = getattr(args, "gui_prompt", None)
        panel = getattr(args, "gui_panel", None)
        workspace = getattr(args, "gui_workspace", None)
        size = getattr(args, "gui_window_size", None) or ((1400, 880) if screenshot else None)
        if size:
            window.resize(*size)
        if screenshot:
            from ..models.specs import DEFAULT_MODEL
            from .screenshot import ScreenshotScript

            if (panel or prompt) and not model and not workspace:
                model = DEFAULT_MODEL
            script = ScreenshotScript(window, screenshot, model=model, prompt=prompt, panel=panel, workspace=workspace,
                                      panel_params=getattr(args, "gui_panel_params", None))
            QTimer.singleShot(0, script.start)  # after exec() starts, so an early exit() is not lost
        else:
            _start_session(window, model, prompt, panel, workspace, run=bool(getattr(args, "gui_run", False)), panel_params=getattr(args, "gui_panel_params", None))
        _let_python_handle_ctrl_c(app, window)
        window.show()
        code = app.exec()
        if script is not None:
            if script.error:
                print(f"error: {script.error}", file=sys.stderr)
                return 2
            if not script.finished:
                print("error: the window was closed before the screenshot was taken", file=sys.stderr)
                return 2
            print(f"wrote {screenshot}", file=sys.stderr)
        return int(code)
    finally:
        window.shutdown()
        window.deleteLater()
        app.processEvents()


def _start_session(window, model: str | None, prompt: str | None, panel: str | None, workspace: str | None, *, run: bool = False, panel_params=None) -> None:
    if workspace:
        window.open_workspace(workspace)
    if model:
        window.load_model(model)
    if prompt is not None:
        window.set_prompt(prompt)
    if panel:
        opened = window.open_panel(panel)
        if opened is not None and panel_params:
            from ..plugin_api.params import parse_assignments

            opened.set_parameters(parse_assignments(panel_params))
        if opened is not None and run:
            window.run_when_loaded(opened)
