"""Fixtures for driving the real main window offscreen (pytest-qt), on the lab model.

Test-only plugins are written to a temporary folder put on WORKBENCH_PLUGIN_PATH,
so they are discovered exactly as a user's plugins are.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

pytest.importorskip("pytestqt")

from workbench.gui.app import prepare_runtime  # noqa: E402

# Heavy imports, garbage-collector freeze and torch threads: as the app does before its event loop.
prepare_runtime()

from tests.gui.helpers import LAB_MODEL, LAB_PROMPT  # noqa: E402

_RESULT = '''
from dataclasses import dataclass

import numpy as np

from workbench.figures import heatmap
from workbench.plugin_api import Figure, ReportSection, Result, Table


@dataclass
class StepsResult(Result):
    kind = "{plugin_id}/steps"

    values: np.ndarray
    label: str = ""

    def report(self):
        svg = heatmap(self.values[None, :], title="steps")
        return ReportSection("Steps", how_to_read="test result", figures=[Figure("steps", svg=svg)],
                             tables=[Table("values", ["i", "v"], [[i, float(v)] for i, v in enumerate(self.values)])])
'''

PLUGINS = {
    # Loops, yielding progress, with a forward pass of the model at every step: a long job.
    "wbtest_slow": '''
import time

import numpy as np
import torch

from workbench.plugin_api import Analysis, Int, Plugin, Progress

from .result import StepsResult


def run(ctx, steps=200, sleep_ms=5):
    ids = torch.tensor([ctx.tokens()])
    values = []
    for step in range(steps):
        with torch.inference_mode():
            logits = ctx.model.bridge(ids)
        values.append(float(logits[0, -1].max()))
        time.sleep(sleep_ms / 1000)
        yield Progress(step + 1, steps, f"step {step + 1} of {steps}")
    return StepsResult(np.asarray(values, dtype=np.float32), label="slow")


plugin = Plugin(
    id="slow-test",
    name="Slow test",
    analysis=Analysis(run=run, params=[Int("steps", default=200, minimum=1), Int("sleep_ms", default=5, minimum=0)]),
    result_types=[StepsResult],
)
''',
    # Every kind of parameter, and a quick run.
    "wbtest_params": '''
import numpy as np

from workbench.plugin_api import Analysis, Bool, Choice, Float, Int, IntList, Plugin, Text

from .result import StepsResult


def run(ctx, count=3, scale=0.5, flag=False, mode="a", layers=(0, 1), note=""):
    return StepsResult(np.arange(count, dtype=np.float32) * scale, label=f"{mode}:{note}:{list(layers)}:{flag}")
    yield  # a generator


plugin = Plugin(
    id="params-test",
    name="Params test",
    analysis=Analysis(run=run, needs_prompt=False, params=[
        Int("count", default=3, minimum=1, maximum=20, help="how many values"),
        Float("scale", default=0.5, minimum=0.0, maximum=2.0),
        Bool("flag", default=False),
        Choice("mode", default="a", choices=("a", "b")),
        IntList("layers", default=(0, 1), minimum=0),
        Text("note", default="", allow_empty=False),
    ]),
    result_types=[StepsResult],
)
''',
    # Raises while running: must be reported, the plugin and the app carrying on.
    "wbtest_run_error": '''
from workbench.plugin_api import Analysis, Plugin, Progress


def run(ctx):
    yield Progress(0, 1, "about to fail")
    raise ValueError("deliberate failure inside the plugin")


plugin = Plugin(id="run-error-test", name="Run error test", analysis=Analysis(run=run, needs_prompt=False))
''',
    # Runs the model for minutes without a progress report between its passes: only the
    # interrupt between two blocks can stop it (closing the window must not wait for it).
    "wbtest_busy": '''
import torch

from workbench.plugin_api import Analysis, Plugin, Progress


def run(ctx):
    ids = torch.tensor([ctx.tokens(0)])
    yield Progress(0, 1, "computing for a long time without yielding")
    for _ in range(1_000_000):
        ctx.model.bridge(ids, return_type=None)
    return None


plugin = Plugin(id="busy-test", name="Busy test", analysis=Analysis(run=run))
''',
    # A custom panel with an interactive HeatmapView (figure export paints it as SVG).
    "wbtest_heatmap_panel": '''
import numpy as np

from workbench.plugin_api import Analysis, Plugin

from .result import StepsResult


def run(ctx):
    return StepsResult(np.linspace(-1, 1, 12, dtype=np.float32), label="signed")
    yield


plugin = Plugin(
    id="heatmap-test",
    name="Heatmap test",
    analysis=Analysis(run=run, needs_prompt=False),
    result_types=[StepsResult],
    panel="wbtest_heatmap_panel.panel:HeatmapPanel",
)
''',
}

PANEL = '''
from workbench.gui.panels import AnalysisPanel
from workbench.gui.widgets.heatmap import HeatmapView


class HeatmapPanel(AnalysisPanel):
    def build_view(self):
        self.heatmap = HeatmapView()
        return self.heatmap

    def render(self, result):
        self.heatmap.set_data(result.values.reshape(3, 4), x_labels=list("abcd"), y_labels=["r0", "r1", "r2"])
'''

BROKEN_AT_IMPORT = '''
raise RuntimeError("this plugin is broken on purpose (import time)")
'''


@pytest.fixture(scope="session")
def plugin_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("plugins")
    for package, source in PLUGINS.items():
        path = folder / package
        path.mkdir()
        plugin_id = source.split('id="')[1].split('"')[0]
        (path / "result.py").write_text(textwrap.dedent(_RESULT.replace("{plugin_id}", plugin_id)))
        (path / "__init__.py").write_text(textwrap.dedent(source))
    (folder / "wbtest_heatmap_panel" / "panel.py").write_text(textwrap.dedent(PANEL))
    (folder / "wbtest_broken_import.py").write_text(BROKEN_AT_IMPORT)
    return folder


@pytest.fixture(scope="package", autouse=True)
def garbage_collected_on_the_gui_thread(qapp):
    """As in the app: no garbage collection in worker threads while windows exist. Automatic
    collection comes back after the GUI tests, for the headless tests that follow."""
    import gc

    from workbench.gui.app import collect_garbage_on_gui_thread

    collector = collect_garbage_on_gui_thread(qapp)
    yield collector
    collector.timer.stop()
    del qapp._workbench_garbage_collector
    gc.enable()
    gc.collect()


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, monkeypatch):
    """Never read or write the user's settings."""
    from PySide6.QtCore import QSettings

    folder = tmp_path / "settings"
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, str(folder))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(folder))
    return folder


@pytest.fixture
def make_window(qtbot, plugin_folder, monkeypatch):
    """A factory for real main windows that see the test plugins; all are closed after the test."""
    from workbench.gui.main_window import MainWindow

    monkeypatch.setenv("WORKBENCH_PLUGIN_PATH", str(plugin_folder))
    windows = []

    def make(remember: bool = False) -> MainWindow:
        window = MainWindow(remember=remember)
        qtbot.addWidget(window)
        window.resize(1400, 880)
        window.show()
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.close()


@pytest.fixture
def window(make_window):
    return make_window()


@pytest.fixture
def model_window(qtbot, window):
    """A window with the lab model loaded and no prompt typed."""
    with qtbot.waitSignal(window.model_loaded, timeout=120_000):
        window.load_model(LAB_MODEL)
    return window


@pytest.fixture
def lab_window(qtbot, model_window):
    """A window with the lab model loaded and the lab prompt typed."""
    window = model_window
    window.set_prompt(LAB_PROMPT)
    qtbot.waitUntil(lambda: len(window.token_strip.chips()) == 8, timeout=20_000)
    return window
