"""The token strip wraps its chips onto as many rows as the left column's width needs."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from tests.gui.helpers import LAB_MODEL  # noqa: E402


@pytest.mark.parametrize("size", [(1280, 800), (1920, 1080)])
def test_every_chip_is_visible_after_the_window_is_resized(qtbot, window, size):
    # At 1280 x 800 the last of SmolLM2's ten Eiffel tokens wrapped onto a second row that
    # the strip, sized for one row at the earlier width, cut off.
    window.resize(*size)
    window.show()
    window.set_prompt(" ".join(f"t{i % 60}" for i in range(40)))  # typed first, as `--screenshot` does
    with qtbot.waitSignal(window.model_loaded, timeout=60_000):
        window.load_model(LAB_MODEL)
    qtbot.waitUntil(lambda: len(window.token_strip.chips()) == 41, timeout=20_000)
    window.open_panel("logit-lens")  # the panel's dock narrows the left column

    def all_visible() -> bool:
        strip = window.token_strip
        viewport = strip._scroll.viewport()
        bottom = max(chip.rect.bottom() for chip in strip.chips())
        return strip._scroll.verticalScrollBar().isVisible() or bottom <= viewport.height()

    qtbot.waitUntil(all_visible, timeout=5_000)
