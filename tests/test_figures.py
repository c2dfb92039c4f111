"""SVG figures: axis ticks fall on round values inside the plotted range."""

from __future__ import annotations

import re

import numpy as np
import pytest

from workbench.figures.svg import line_chart, nice_ticks


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
