"""SVG figures: axis ticks fall on round values inside the plotted range."""

from __future__ import annotations

import re

import numpy as np
import pytest

from workbench.figures.svg import heatmap, line_chart, nice_ticks


@pytest.mark.parametrize(
    ("lo", "hi", "target", "whole", "expected"),
    [
        (0, 19, 6, True, [0, 5, 10, 15]),
        (-0.28, 5.93, 5, False, [0, 1, 2, 3, 4, 5]),
        (0.0001, 9128, 5, False, [2000, 4000, 6000, 8000]),
        (0.0012, 0.0031, 5, False, [0.0015, 0.002, 0.0025, 0.003]),
        (-1e-3, 1e-3, 5, False, [-0.001, -0.0005, 0.0, 0.0005, 0.001]),
        (1, 3, 6, True, [1, 2, 3]),  # whole numbers never step by less than 1
    ],
)
def test_nice_ticks(lo, hi, target, whole, expected):
    ticks = nice_ticks(lo, hi, target=target, whole=whole)
    np.testing.assert_allclose(ticks, expected, atol=1e-12)
    assert all(lo <= t <= hi for t in ticks)
    assert not any(str(t) == "-0.0" for t in ticks)


def test_random_ranges_get_a_few_evenly_spaced_round_ticks():
    rng = np.random.default_rng(0)
    for _ in range(500):
        lo = float(rng.normal() * 10.0 ** rng.integers(-4, 5))
        hi = lo + float(rng.uniform(0.01, 10) * 10.0 ** rng.integers(-4, 5))
        ticks = nice_ticks(lo, hi)
        assert 2 <= len(ticks) <= 6 and ticks.min() >= lo - 1e-12 * abs(lo) and ticks.max() <= hi + 1e-12 * abs(hi)
        step = ticks[1] - ticks[0]
        mantissa = step / 10 ** np.floor(np.log10(step))
        assert any(np.isclose(mantissa, m) for m in (1, 2, 5, 10))
        np.testing.assert_allclose(np.diff(ticks), step, rtol=1e-6, atol=1e-12 * np.abs(ticks).max())


def test_line_chart_of_steps_labels_round_whole_steps():
    svg = line_chart({"loss": np.linspace(5.6, 0.01, 20)}, x=range(20), x_title="step")
    labels = re.findall(r"text-anchor='middle'>([^<]+)</text>", svg)
    assert labels[:4] == ["0", "5", "10", "15"]
    y_labels = re.findall(r"text-anchor='end'>([^<]+)</text>", svg)
    assert y_labels == ["0", "1", "2", "3", "4", "5"]


def test_heatmap_shows_missing_cells_as_missing_not_as_the_lowest_colour():
    from workbench.figures.svg import NAN_HEX

    svg = heatmap(np.array([[1.0, np.nan], [0.5, 0.0]]), x_labels=["a", "b"], y_labels=["r1", "r2"])
    assert svg.count(f"fill='{NAN_HEX}'") == 1 and "r1 / b: no value" in svg
    assert "r2 / b: 0" in svg  # a real zero keeps its colour and value


def test_large_heatmap_is_one_image_that_keeps_a_one_cell_stripe():
    import base64
    import re
    import zlib

    data = np.zeros((1000, 1000))
    data[np.arange(1, 1000), np.arange(999)] = 1.0  # a previous-token diagonal, one cell wide
    svg = heatmap(data, title="big")
    assert svg.count("<image") == 1 and svg.count("<rect") < 50 and len(svg) < 2_000_000
    png = base64.b64decode(re.search(r"base64,([^']+)'", svg).group(1))
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert max(width, height) <= 600
    rows = np.frombuffer(zlib.decompress(png[png.index(b"IDAT") + 4 : png.index(b"IEND") - 8]), dtype=np.uint8).reshape(height, 1 + 3 * width)[:, 1:]
    bright = rows.reshape(height, width, 3).sum(-1)
    lit = [int(np.argmax(bright[r])) for r in range(1, height)]
    assert all(abs(c - r * width / height) <= 2 for r, c in zip(range(1, height), lit))  # the diagonal survives block maxima


def test_line_chart_has_room_for_its_tick_labels_and_dots_keep_equal_series_visible():
    values = np.linspace(3e4, 1e3, 20)
    svg = line_chart({"|λ|": values, "Re λ": values}, markers=("Re λ",), y_title="value")
    ends = [float(x) for x, text in re.findall(r"<text x='([0-9.]+)'[^>]*text-anchor='end'>([^<]+)<", svg) if "e+04" in text]
    assert ends and all(x - 6.4 * len("2.00e+04") > 18 for x in ends)  # the whole label, right of the axis title
    assert svg.count("<circle") == len(values) + 1  # Re λ's dots (and its legend), drawn over the |λ| line


def test_heatmap_token_labels_show_their_leading_space():
    # SVG collapses whitespace: " Tower" would read "Tower", the same as the token "Tower".
    svg = heatmap(np.eye(3), x_labels=["The", " E", "head 3"], y_labels=[" Tower*", "Tower", ""])
    labels = re.findall(r">([^<>]*)</text>", svg)
    assert "␣E" in labels and "␣Tower*" in labels and "Tower" in labels and "∅" in labels
    assert "head 3" in labels  # a name with spaces only inside stays as it is


def test_cells_that_print_tokens_are_wide_enough_to_read_them():
    # A 31-layer logit lens: square cells were 17 px wide and cut every token to a letter.
    values = np.random.default_rng(0).random((31, 10))
    tokens = [[" Paris"] * 10 for _ in range(31)]
    svg = heatmap(values, cell_text=tokens, x_labels=[f"t{i}" for i in range(10)], y_labels=[f"L{i}" for i in range(31)])
    widths = {float(w) for w in re.findall(r"<rect x='[^']*' y='[^']*' width='([\d.]+)' height='[\d.]+' fill='#\w+'><title>", svg)}
    assert min(widths) >= 50  # about 64 px: room for a short word
    assert "␣Paris" in svg  # printed whole, not cut to "␣…"
