"""SVG figures of attention: the heads overview, one pattern with token labels, weights over the text.

Small patterns are drawn cell by cell (each cell has a tooltip); large ones as one
embedded PNG at <= 512 cells a side, with token labels at a readable stride.
"""

from __future__ import annotations

import hashlib
from html import escape

import numpy as np

from workbench.figures.colormaps import lookup_table
from workbench.figures.raster import NAN_RGB, colourise, downsample_for_display, svg_image
from workbench.figures.svg import FONT
from workbench.figures.tokens import visible_token

from .patterns import colour_limits, text_shades

CELL_LIMIT = 48  # up to this many tokens a pattern is drawn as one rectangle per cell
RASTER_LIMIT = 512  # larger patterns are drawn as an image of at most this many cells a side
NAN_HEX = "#{:02x}{:02x}{:02x}".format(*NAN_RGB)
TEXT_RED = (214, 39, 40)  # the token-centred view shades from white to this


def _token_text(text: str, limit: int = 12) -> str:
    return visible_token(text, limit)


def _weight_text(value: float, scale: str) -> str:
    weight = 10 ** value if scale == "log" else value
    return f"{weight:.3g}" if weight >= 1e-3 or weight == 0 else f"{weight:.1e}"


def _hex(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb))


def _colour_bar(x: float, y: float, height: float, lo: float, hi: float, scale: str, colormap: str) -> list[str]:
    steps = 32
    table = lookup_table(colormap)
    out = []
    for i in range(steps):
        colour = table[int(round((steps - 1 - i) / (steps - 1) * 255))]
        out.append(f"<rect x='{x:.1f}' y='{y + i * height / steps:.1f}' width='12' height='{height / steps + 0.3:.1f}' fill='{_hex(colour)}'/>")
    out.append(f"<text x='{x + 16:.1f}' y='{y + 9:.1f}'>{_weight_text(hi, scale)}</text>")
    out.append(f"<text x='{x + 16:.1f}' y='{y + height:.1f}'>{_weight_text(lo, scale)}</text>")
    out.append(f"<text x='{x + 16:.1f}' y='{y + height / 2 + 4:.1f}' font-style='italic' fill='#555'>{'log' if scale == 'log' else 'linear'}</text>")
    return out


def pattern_svg(
    values: np.ndarray,
    row_labels: list[str],
    col_labels: list[str],
    *,
    title: str = "",
    scale: str = "linear",
    highlight_row: int | None = None,
    colormap: str = "viridis",
    size: float = 520.0,
) -> tuple[str, float, float]:
    """A destination x source heatmap of display values (see patterns.display_values).

    Returns (svg, width, height). NaN cells (future tokens, a masked column) are light grey.
    """
    data = np.asarray(values, dtype=np.float32)
    n_rows, n_cols = data.shape
    lo, hi = colour_limits(data, scale)
    row_names = [_token_text(t) for t in row_labels]
    col_names = [_token_text(t) for t in col_labels]
    left = 14 + 6.4 * max((len(s) for s in row_names), default=2) + 18
    top = 30 if title else 10
    cell = min(28.0, size / max(n_rows, n_cols, 1))
    label_height = 6.2 * max((len(s) for s in col_names), default=2) + 12 + 16
    width = left + n_cols * cell + 70
    height = top + n_rows * cell + label_height
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' height='{height:.0f}' viewBox='0 0 {width:.1f} {height:.1f}' {FONT} font-size='10'>",
        "<rect width='100%' height='100%' fill='white'/>",
    ]
    if title:
        out.append(f"<text x='{left:.1f}' y='18' font-size='13' font-weight='bold'>{escape(title)}</text>")
    if max(n_rows, n_cols) <= CELL_LIMIT:
        rgb = colourise(data, lo, hi, colormap)
        for r in range(n_rows):
            for c in range(n_cols):
                if np.isnan(data[r, c]):
                    fill, tip = NAN_HEX, "not drawn"
                else:
                    fill, tip = _hex(rgb[r, c]), _weight_text(float(data[r, c]), scale)
                out.append(
                    f"<rect x='{left + c * cell:.1f}' y='{top + r * cell:.1f}' width='{cell + 0.2:.1f}' height='{cell + 0.2:.1f}' fill='{fill}'>"
                    f"<title>{escape(f'{row_names[r]} → {col_names[c]}: {tip}')}</title></rect>"
                )
    else:
        image, _, _ = downsample_for_display(data, RASTER_LIMIT, RASTER_LIMIT)
        out.append(svg_image(colourise(image, lo, hi, colormap), left, top, n_cols * cell, n_rows * cell))
    if highlight_row is not None and 0 <= highlight_row < n_rows:
        out.append(
            f"<rect x='{left - 1:.1f}' y='{top + highlight_row * cell - 0.5:.1f}' width='{n_cols * cell + 2:.1f}' height='{max(cell, 1.5) + 1:.1f}' "
            "fill='none' stroke='#d62728' stroke-width='1.5'/>"
        )
    step = max(1, int(np.ceil(11 / cell)))
    for r in range(0, n_rows, step):
        out.append(f"<text x='{left - 4:.1f}' y='{top + (r + 0.5) * cell + 3.5:.1f}' text-anchor='end'>{escape(row_names[r])}</text>")
    base = top + n_rows * cell + 4
    for c in range(0, n_cols, step):
        x = left + (c + 0.5) * cell + 3
        out.append(f"<text transform='translate({x:.1f},{base:.1f}) rotate(-90)' text-anchor='end'>{escape(col_names[c])}</text>")
    out.append(f"<text x='{left + n_cols * cell / 2:.1f}' y='{height - 4:.1f}' text-anchor='middle' font-style='italic'>source token (attended to)</text>")
    mid = top + n_rows * cell / 2
    out.append(f"<text transform='translate(12,{mid:.1f}) rotate(-90)' text-anchor='middle' font-style='italic'>destination token (attending)</text>")
    out += _colour_bar(left + n_cols * cell + 14, top, max(60.0, min(n_rows * cell, 240.0)), lo, hi, scale, colormap)
    out.append("</svg>")
    return "\n".join(out), width, height


def overview_svg(
    thumbnails: np.ndarray,
    *,
    scale: str,
    column_labels: list[str],
    selected: tuple[int, int | None] | None = None,
    title: str = "",
    colormap: str = "viridis",
) -> str:
    """Every head at once: a layers x heads mosaic of thumbnail patterns (one embedded PNG)."""
    n_layers, n_heads, t, _ = thumbnails.shape
    lo, hi = colour_limits(thumbnails, scale)
    gap = 1 if t <= 8 else 2
    # Nearest-neighbour upscaling in the PNG itself, so viewers that smooth images stay sharp.
    zoom = max(1, int(np.ceil(24 / t)))
    tile = t * zoom
    mosaic = np.full((n_layers * (tile + gap) - gap, n_heads * (tile + gap) - gap, 3), 255, dtype=np.uint8)
    for layer in range(n_layers):
        for head in range(n_heads):
            rgb = colourise(thumbnails[layer, head], lo, hi, colormap)
            rgb = rgb.repeat(zoom, axis=0).repeat(zoom, axis=1)
            y, x = layer * (tile + gap), head * (tile + gap)
            mosaic[y : y + tile, x : x + tile] = rgb
    pixel = max(1.0, min(72.0 / tile, 640.0 / (n_heads * (tile + gap)), 1300.0 / (n_layers * (tile + gap))))
    left, top = 40.0, (46.0 if title else 26.0)
    width_px, height_px = mosaic.shape[1] * pixel, mosaic.shape[0] * pixel
    width, height = left + width_px + 70, top + height_px + 10
    step = (tile + gap) * pixel
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' height='{height:.0f}' viewBox='0 0 {width:.1f} {height:.1f}' {FONT} font-size='10'>",
        "<rect width='100%' height='100%' fill='white'/>",
    ]
    if title:
        out.append(f"<text x='{left:.1f}' y='18' font-size='13' font-weight='bold'>{escape(title)}</text>")
    out.append(svg_image(mosaic, left, top, width_px, height_px))
    for head, label in enumerate(column_labels):
        out.append(f"<text x='{left + (head + 0.5) * step:.1f}' y='{top - 5:.1f}' text-anchor='middle'>{escape(label)}</text>")
    label_step = max(1, int(np.ceil(11 / step)))
    for layer in range(0, n_layers, label_step):
        out.append(f"<text x='{left - 4:.1f}' y='{top + (layer + 0.5) * step + 3.5:.1f}' text-anchor='end'>L{layer}</text>")
    if selected is not None:
        layer, head = selected
        if head is None:  # a whole layer (the mean of its heads) is selected
            x, w = left - 1, n_heads * step - gap * pixel + 2
        else:
            x, w = left + head * step - 1, tile * pixel + 2
        out.append(f"<rect x='{x:.1f}' y='{top + layer * step - 1:.1f}' width='{w:.1f}' height='{tile * pixel + 2:.1f}' fill='none' stroke='#d62728' stroke-width='2'/>")
    out += _colour_bar(left + width_px + 14, top, max(60.0, min(height_px, 200.0)), lo, hi, scale, colormap)
    out.append("</svg>")
    return "\n".join(out)


def tokens_svg(
    str_tokens: list[str],
    row: np.ndarray,
    destination: int,
    *,
    scale: str = "linear",
    mask_first_token: bool = False,
    title: str = "",
    width: float = 760.0,
) -> tuple[str, float, float]:
    """The token-centred view: the text, each token shaded by the weight the destination puts on it.

    Shading runs from white (no weight) to red (the row's largest shown weight, or on the
    log scale from the log floor to it). The destination is boxed; tokens after it are
    grey, since a causal head cannot read them; a masked first token is hatched grey.
    """
    weights = np.asarray(row, dtype=np.float64)
    levels, top_weight = text_shades(weights, destination, scale, mask_first_token)
    red = np.array(TEXT_RED, dtype=np.float64)
    # A per-figure id, so two of these side by side do not define the same pattern twice.
    hatch = "masked-" + hashlib.blake2b(f"{title}{len(str_tokens)}{destination}".encode(), digest_size=4).hexdigest()
    line_height, pad, top = 22.0, 6.0, (30.0 if title else 8.0)
    out_items, x, y = [], pad, top
    for i, token in enumerate(str_tokens):
        text = _token_text(token, 24)
        box = 7.0 * max(len(text), 1) + 6
        if x + box > width - pad and x > pad:
            x, y = pad, y + line_height
        weight_text = f"{weights[i]:.3g}" if i <= destination else "future token"
        tip = f"{i} {str(token)!r}: {weight_text}"
        if not np.isnan(levels[i]):
            level = float(levels[i])
            fill = _hex(np.round(255 - level * (255 - red)))
            ink = "white" if level > 0.6 else "black"
        elif i == 0 and mask_first_token and destination >= 0:
            fill, ink = f"url(#{hatch})", "#555"
        else:
            fill, ink = "white", "#aaa"
        stroke = "stroke='black' stroke-width='2'" if i == destination else "stroke='#ddd' stroke-width='0.6'"
        out_items.append(f"<rect x='{x:.1f}' y='{y:.1f}' width='{box:.1f}' height='{line_height - 4:.1f}' rx='3' fill='{fill}' {stroke}><title>{escape(tip)}</title></rect>")
        out_items.append(f"<text x='{x + 3:.1f}' y='{y + 13:.1f}' fill='{ink}' xml:space='preserve'>{escape(text)}</text>")
        x += box + 2
    legend_parts = [f"white = 0, red = {top_weight:.3g}" + (" (log scale from 1e-4)" if scale == "log" else ""), "boxed: the destination token"]
    if mask_first_token:
        legend_parts.append("hatched: the first token (masked)")
    legend_lines, current = [], ""
    for part in legend_parts:  # wrapped to the figure's width (about 6 px a character)
        candidate = f"{current}; {part}" if current else part
        if current and len(candidate) * 6.0 > width - 2 * pad:
            legend_lines.append(current)
            candidate = part
        current = candidate
    legend_lines.append(current)
    height = y + line_height + 8 + 15 * len(legend_lines)
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' height='{height:.0f}' viewBox='0 0 {width:.1f} {height:.1f}' {FONT} font-size='11'>",
        f"<defs><pattern id='{hatch}' width='6' height='6' patternUnits='userSpaceOnUse' patternTransform='rotate(45)'>"
        "<rect width='6' height='6' fill='#eee'/><line x1='0' y1='0' x2='0' y2='6' stroke='#bbb' stroke-width='3'/></pattern></defs>",
        "<rect width='100%' height='100%' fill='white'/>",
    ]
    if title:
        out.append(f"<text x='{pad:.1f}' y='18' font-size='13' font-weight='bold'>{escape(title)}</text>")
    out += out_items
    for number, line in enumerate(legend_lines):
        out.append(f"<text x='{pad:.1f}' y='{y + line_height + 10 + 15 * number:.1f}' fill='#555' font-style='italic'>{escape(line)}</text>")
    out.append("</svg>")
    return "\n".join(out), width, height


def side_by_side(figures: list[tuple[str, float, float]], gap: float = 16.0) -> str:
    """Several (svg, width, height) figures of this module in one row, as one flat SVG.

    The parts become translated groups, not nested <svg> elements, which SVG Tiny
    renderers (Qt's among them) skip.
    """
    width = sum(w for _, w, _ in figures) + gap * (len(figures) - 1)
    height = max(h for _, _, h in figures)
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' height='{height:.0f}' viewBox='0 0 {width:.1f} {height:.1f}' {FONT} font-size='10'>", "<rect width='100%' height='100%' fill='white'/>"]
    x = 0.0
    for svg, w, _ in figures:
        lines = svg.split("\n")
        font_size = "11" if "font-size='11'" in lines[0] else "10"
        body = [line for line in lines[1:-1] if line != "<rect width='100%' height='100%' fill='white'/>"]
        out.append(f"<g transform='translate({x:.1f},0)' font-size='{font_size}'>")
        out += body
        out.append("</g>")
        x += w + gap
    out.append("</svg>")
    return "\n".join(out)
