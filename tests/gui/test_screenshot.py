"""`workbench --screenshot`: the real command, in a subprocess, offscreen."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PySide6.QtGui import QImage

from tests.gui.helpers import LAB_MODEL, LAB_PROMPT

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _workbench(*args: str, tmp_path) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(tmp_path / "config"), WORKBENCH_PLUGIN_PATH="")
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True, timeout=300, env=env, cwd=REPO)


@pytest.mark.slow
def test_screenshot_of_the_window_with_a_panel(tmp_path):
    out = tmp_path / "shots" / "window.png"
    done = _workbench("--screenshot", str(out), "--model", LAB_MODEL, "--prompt", LAB_PROMPT, "--panel", "logit-lens", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    image = QImage(str(out))
    assert not image.isNull() and (image.width(), image.height()) == (1400, 880)
    colours = {image.pixel(x, y) for x in range(0, image.width(), 4) for y in range(0, image.height(), 4)}
    assert len(colours) > 100  # widgets, text and a coloured heatmap, not a blank window
    # The user's settings are left alone.
    assert not (tmp_path / "config" / "interpretability-workbench").exists()


@pytest.mark.slow
def test_screenshot_errors_are_one_line_with_status_2(tmp_path):
    done = _workbench("--screenshot", str(tmp_path / "x.png"), "--model", LAB_MODEL, "--panel", "no-such-panel", tmp_path=tmp_path)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert lines == [lines[0]] and "No plugin 'no-such-panel'" in lines[0] and "logit-lens" in lines[0]
    assert not (tmp_path / "x.png").exists()
