"""Qt-free SVG figures for reports and exports: heatmaps with token labels, line and bar charts.

Plain SVG text, so reports stay self-contained, print sharply and need neither Qt
nor a plotting library in headless runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

import numpy as np

from .colormaps import colormap_hex
from .raster import NAN_RGB, colourise, downsample_for_display, svg_image
from .tokens import visible_token

FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"


def _label(text: object, limit: int = 14) -> str:
    text = str(text).replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _axis_label(text: object, limit: int = 14) -> str:
    """A heatmap's row or column name. Names there are often tokens, whose leading space
    SVG would swallow (" Paris" would read "Paris"): whitespace at either end is made
    visible as in every token view; names with spaces only inside ("head 3") stay as they are."""
    text = str(text)
    if text == "" or text != text.strip():
        return visible_token(text, limit)
    return _label(text, limit)


def _fmt(value: float) -> str:
    if value != value:
        return "nan"
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-2 or magnitude >= 1e4):
        return f"{value:.2e}"
    return f"{value:.3g}"


def nice_ticks(lo: float, hi: float, target: int = 5, whole: bool = False) -> np.ndarray:
    """Round tick values (multiples of 1, 2 or 5 × 10^k) inside [lo, hi]: the finest such step
    that gives at most target + 1 ticks.

    whole: only whole numbers (steps, layers, positions)."""
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        return np.array([lo])
    raw = (hi - lo) / max(target - 1, 1)
    exponent = math.floor(math.log10(raw))

    def count(step: float) -> int:
        return math.floor(hi / step + 1e-9) - math.ceil(lo / step - 1e-9) + 1

    steps = (m * 10.0**k for k in range(exponent - 1, exponent + 3) for m in (1, 2, 5))
    step = next(s for s in steps if (s >= 1 or not whole) and count(s) <= target + 1)
    first = math.ceil(lo / step - 1e-9)
    ticks = (first + np.arange(count(step))) * step
    ticks[np.abs(ticks) < step * 1e-9] = 0.0  # no "-0"
    return ticks


RASTER_CELLS = 96 * 96
RASTER_SIDE = 600  # the embedded image's largest side, in cells (block maxima beyond it)
NAN_HEX = "#{:02x}{:02x}{:02x}".format(*NAN_RGB)


def _shown_blocks(data: np.ndarray, diverging: bool) -> np.ndarray:
    """The map at no more than RASTER_SIDE cells a side: each block shows its largest value
    (its largest magnitude, with its sign, on a diverging scale), so a thin stripe stays visible."""
    largest, _, _ = downsample_for_display(data, RASTER_SIDE, RASTER_SIDE)
    if not diverging:
        return largest
    smallest = -downsample_for_display(-data, RASTER_SIDE, RASTER_SIDE)[0]
    return np.where(np.abs(smallest) > np.abs(largest), smallest, largest)


def heatmap(
    values,
    *,
    x_labels: Sequence[str] | None = None,
    y_labels: Sequence[str] | None = None,
    title: str = "",
    x_title: str = "",
    y_title: str = "",
    colormap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    diverging: bool = False,
    cell: float | None = None,
    annotate: bool = False,
    cell_text: Sequence[Sequence[object]] | None = None,
    max_width: float = 760.0,
) -> str:
    """An SVG heatmap of a 2-D array (rows top to bottom), with labels and a colour bar.

    diverging=True centres the colour scale on zero (symmetric limits) and uses a
    blue-white-red map, as signed quantities need. cell_text prints a short text in each cell
    (a decoded token, say) when cells are big enough to read it.
    """
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"heatmap needs a 2-D array, not shape {data.shape}")
    rows, cols = data.shape
    finite = data[np.isfinite(data)]
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 1.0
    if diverging:
        bound = max(abs(lo), abs(hi)) or 1.0
        lo, hi = -bound, bound
        colormap = "diverging" if colormap == "viridis" else colormap
    lo = lo if vmin is None else float(vmin)
    hi = hi if vmax is None else float(vmax)
    span = (hi - lo) or 1.0
    y_names = [_axis_label(t) for t in (y_labels if y_labels is not None else range(rows))]
    x_names = [_axis_label(t) for t in (x_labels if x_labels is not None else range(cols))]
    left = 12 + 6.5 * max((len(s) for s in y_names), default=2) + (16 if y_title else 0)
    top = 30 if title else 10
    label_height = 6.2 * max((len(s) for s in x_names), default=2) + 12 + (16 if x_title else 0)
    colorbar_width = 70
    # Beyond RASTER_CELLS cells the map is one embedded image (a rectangle per cell would make
    # a million-element SVG); cells may then be smaller than a pixel.
    raster = rows * cols > RASTER_CELLS
    if cell is None:
        cell = min(28.0, (max_width - left - colorbar_width) / max(cols, 1), 520.0 / max(rows, 1))
        cell = cell if raster else max(4.0, cell)
    cw = ch = cell
    if cell_text is not None and not raster:
        # Cells that print a token are as wide as a short word fits (up to 64 px), not square:
        # square cells of a 31-layer logit lens were 17 px wide, too narrow to read a token.
        cw = max(ch, min(64.0, (max_width - left - colorbar_width) / max(cols, 1)))
    # Wide enough for the title too: a narrow map would clip it.
    width = max(left + cols * cw + colorbar_width, left + 7.8 * len(title) + 10)
    height = top + rows * ch + label_height
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' height='{height:.0f}' viewBox='0 0 {width:.1f} {height:.1f}' {FONT} font-size='11'>",
        "<rect width='100%' height='100%' fill='white'/>",
    ]
    if title:
        out.append(f"<text x='{left:.1f}' y='18' font-size='13' font-weight='bold'>{escape(title)}</text>")
    if raster:
        out.append(svg_image(colourise(_shown_blocks(data, diverging), lo, hi, colormap), left, top, cols * cw, rows * ch))
    colours = colormap_hex(np.clip((np.nan_to_num(data, nan=lo) - lo) / span, 0, 1), colormap) if not raster else []
    for r in range(rows if not raster else 0):
        for c in range(cols):
            x, y = left + c * cw, top + r * ch
            missing = not np.isfinite(data[r, c])  # NaN: nothing to show here (a masked or future cell), not the lowest colour
            tip = f"{y_names[r]} / {x_names[c]}: {'no value' if missing else _fmt(data[r, c])}"
            out.append(
                f"<rect x='{x:.1f}' y='{y:.1f}' width='{cw + 0.2:.1f}' height='{ch + 0.2:.1f}' fill='{NAN_HEX if missing else colours[r][c]}'><title>{escape(tip)}</title></rect>"
            )
            if cell_text is not None and cw >= 16 and ch >= 11:
                text = escape(visible_token(cell_text[r][c], max(2, int(cw / 5.5))))
            elif annotate and cell >= 22 and not missing:
                text = _fmt(data[r, c])
            else:
                continue
            # Light ink on dark cells (both ends of a diverging scale), dark ink elsewhere.
            shade = 0.5 if missing else (data[r, c] - lo) / span
            ink = "white" if (not diverging and shade < 0.55) or (diverging and abs(shade - 0.5) > 0.3) else "black"
            out.append(f"<text x='{x + cw / 2:.1f}' y='{y + ch / 2 + 3:.1f}' font-size='8' text-anchor='middle' fill='{ink}'>{text}</text>")
    step_y = max(1, int(np.ceil(11 / ch)))
    for r in range(0, rows, step_y):
        out.append(f"<text x='{left - 4:.1f}' y='{top + (r + 0.5) * ch + 4:.1f}' text-anchor='end'>{escape(y_names[r])}</text>")
    step_x = max(1, int(np.ceil(11 / cw)))
    base = top + rows * ch + 4
    for c in range(0, cols, step_x):
        x = left + (c + 0.5) * cw + 3
        out.append(f"<text transform='translate({x:.1f},{base:.1f}) rotate(-90)' text-anchor='end'>{escape(x_names[c])}</text>")
    if x_title:
        out.append(f"<text x='{left + cols * cw / 2:.1f}' y='{height - 4:.1f}' text-anchor='middle' font-style='italic'>{escape(x_title)}</text>")
    if y_title:
        mid = top + rows * ch / 2
        out.append(f"<text transform='translate(12,{mid:.1f}) rotate(-90)' text-anchor='middle' font-style='italic'>{escape(y_title)}</text>")
    bar_x, bar_h = left + cols * cw + 14, max(60.0, min(rows * ch, 240.0))
    steps = 32
    ramp = colormap_hex(np.linspace(1, 0, steps)[:, None], colormap)
    for i in range(steps):
        out.append(f"<rect x='{bar_x:.1f}' y='{top + i * bar_h / steps:.1f}' width='12' height='{bar_h / steps + 0.3:.1f}' fill='{ramp[i][0]}'/>")
    out.append(f"<text x='{bar_x + 16:.1f}' y='{top + 9:.1f}'>{_fmt(hi)}</text>")
    out.append(f"<text x='{bar_x + 16:.1f}' y='{top + bar_h:.1f}'>{_fmt(lo)}</text>")
    out.append("</svg>")
    return "\n".join(out)


def line_chart(
    series: dict[str, Sequence[float]],
    *,
    x: Sequence[float] | None = None,
    title: str = "",
    x_title: str = "",
    y_title: str = "",
    width: float = 640.0,
    height: float = 300.0,
    markers: Sequence[str] = (),
) -> str:
    """An SVG line chart of one or more named series sharing an x axis. Series named in
    markers are drawn as dots over the lines, so a series equal to another stays visible."""
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    arrays = {name: np.asarray(v, dtype=np.float64) for name, v in series.items()}
    length = max((len(a) for a in arrays.values()), default=0)
    xs = np.asarray(x if x is not None else np.arange(length), dtype=np.float64)
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays.values()]) if arrays else np.zeros(0)
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi == lo:
        hi = lo + 1.0
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    y_ticks = nice_ticks(lo, hi)
    # Room for the widest tick label (2.00e+04 was cut to .00e+04) and the axis title.
    left = 14.0 + 6.4 * max((len(_fmt(float(t))) for t in y_ticks), default=4) + (18.0 if y_title else 0.0)
    right, top, bottom = 130.0, 30.0 if title else 12.0, 40.0
    plot_w, plot_h = width - left - right, height - top - bottom
    x0, x1 = (float(xs.min()), float(xs.max())) if xs.size else (0.0, 1.0)
    x1 = x1 if x1 > x0 else x0 + 1

    def px(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * plot_w

    def py(v: float) -> float:
        return top + (hi - v) / (hi - lo) * plot_h

    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' height='{height:.0f}' viewBox='0 0 {width:.0f} {height:.0f}' {FONT} font-size='11'>",
        "<rect width='100%' height='100%' fill='white'/>",
    ]
    if title:
        out.append(f"<text x='{left:.0f}' y='18' font-size='13' font-weight='bold'>{escape(title)}</text>")
    out.append(f"<rect x='{left}' y='{top}' width='{plot_w:.1f}' height='{plot_h:.1f}' fill='none' stroke='#999'/>")
    for tick in y_ticks:
        out.append(f"<line x1='{left - 4}' x2='{left}' y1='{py(tick):.1f}' y2='{py(tick):.1f}' stroke='#999'/>")
        out.append(f"<text x='{left - 6}' y='{py(tick) + 4:.1f}' text-anchor='end'>{_fmt(float(tick))}</text>")
    whole = bool(xs.size) and bool(np.all(xs == np.round(xs)))  # steps, layers: whole-number ticks only
    for tick in nice_ticks(x0, x1, target=min(6, max(2, len(xs))), whole=whole):
        out.append(f"<text x='{px(tick):.1f}' y='{top + plot_h + 14:.1f}' text-anchor='middle'>{_fmt(float(tick))}</text>")
    for i, (name, values) in enumerate(arrays.items()):
        colour = palette[i % len(palette)]
        ly = top + 12 + 16 * i
        if name in markers:
            dots = "".join(f"<circle cx='{px(float(a)):.1f}' cy='{py(float(b)):.1f}' r='2.6' fill='{colour}'/>" for a, b in zip(xs, values) if np.isfinite(b))
            out.append(f"<g><title>{escape(name)}</title>{dots}</g>")
            out.append(f"<circle cx='{width - right + 19}' cy='{ly}' r='3' fill='{colour}'/>")
        else:
            points = " ".join(f"{px(float(a)):.1f},{py(float(b)):.1f}" for a, b in zip(xs, values) if np.isfinite(b))
            out.append(f"<polyline points='{points}' fill='none' stroke='{colour}' stroke-width='1.8'><title>{escape(name)}</title></polyline>")
            out.append(f"<line x1='{width - right + 10}' x2='{width - right + 28}' y1='{ly}' y2='{ly}' stroke='{colour}' stroke-width='2'/>")
        out.append(f"<text x='{width - right + 32}' y='{ly + 4}'>{escape(_label(name, 16))}</text>")
    if x_title:
        out.append(f"<text x='{left + plot_w / 2:.1f}' y='{height - 6}' text-anchor='middle' font-style='italic'>{escape(x_title)}</text>")
    if y_title:
        out.append(f"<text transform='translate(14,{top + plot_h / 2:.1f}) rotate(-90)' text-anchor='middle' font-style='italic'>{escape(y_title)}</text>")
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str = "",
    value_title: str = "",
    width: float = 640.0,
    bar_height: float = 16.0,
) -> str:
    """A horizontal SVG bar chart (e.g. top predictions or ranked heads); negative bars go left."""
    vals = np.asarray(values, dtype=np.float64)
    names = [_label(t, 24) for t in labels]
    left = 14 + 6.5 * max((len(n) for n in names), default=4)
    top = 30 if title else 10
    plot_w = width - left - 70
    lo, hi = min(0.0, float(vals.min()) if vals.size else 0.0), max(0.0, float(vals.max()) if vals.size else 1.0)
    span = (hi - lo) or 1.0
    zero = left + (0 - lo) / span * plot_w
    height = top + len(names) * (bar_height + 4) + (28 if value_title else 12)
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' height='{height:.0f}' viewBox='0 0 {width:.0f} {height:.0f}' {FONT} font-size='11'>",
        "<rect width='100%' height='100%' fill='white'/>",
    ]
    if title:
        out.append(f"<text x='{left:.0f}' y='18' font-size='13' font-weight='bold'>{escape(title)}</text>")
    for i, (name, value) in enumerate(zip(names, vals)):
        y = top + i * (bar_height + 4)
        x_end = left + (value - lo) / span * plot_w
        x, w = min(zero, x_end), abs(x_end - zero)
        colour = "#1f77b4" if value >= 0 else "#d62728"
        out.append(f"<rect x='{x:.1f}' y='{y:.1f}' width='{max(w, 0.5):.1f}' height='{bar_height}' fill='{colour}'><title>{escape(str(labels[i]))}: {_fmt(float(value))}</title></rect>")
        out.append(f"<text x='{left - 4:.1f}' y='{y + bar_height - 4:.1f}' text-anchor='end'>{escape(name)}</text>")
        out.append(f"<text x='{max(x_end, zero) + 4:.1f}' y='{y + bar_height - 4:.1f}'>{_fmt(float(value))}</text>")
    out.append(f"<line x1='{zero:.1f}' x2='{zero:.1f}' y1='{top - 2}' y2='{top + len(names) * (bar_height + 4)}' stroke='#444'/>")
    if value_title:
        out.append(f"<text x='{left + plot_w / 2:.1f}' y='{height - 8:.1f}' text-anchor='middle' font-style='italic'>{escape(value_title)}</text>")
    out.append("</svg>")
    return "\n".join(out)
