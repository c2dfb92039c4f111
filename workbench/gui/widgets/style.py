"""Small styling helpers that use fonts and palettes instead of style sheets.

A style sheet on a widget routes it (and its children) through Qt's style-sheet
style, which recomputes on every change; labels that are restyled at progress
speed cost the GUI thread far more that way than a palette change does.
"""

from __future__ import annotations

from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import QLabel, QWidget

ERROR_COLOUR = "#b00020"
WARNING_COLOUR = "#8a6d00"
MUTED_COLOUR = "#6b6b6b"
TEXT_COLOUR = "#333333"


def set_text_colour(widget: QWidget, colour: str) -> None:
    palette = widget.palette()
    palette.setColor(widget.foregroundRole(), QColor(colour))
    widget.setPalette(palette)


def set_background(widget: QWidget, colour: str) -> None:
    palette = widget.palette()
    palette.setColor(widget.backgroundRole(), QColor(colour))
    widget.setPalette(palette)
    widget.setAutoFillBackground(True)


def label(text: str = "", *, bold: bool = False, size_delta: int = 0, colour: str | None = None, wrap: bool = False, italic: bool = False) -> QLabel:
    """A QLabel styled with a font and a palette."""
    widget = QLabel(text)
    if bold or size_delta or italic:
        font = QFont(widget.font())
        font.setBold(bold)
        font.setItalic(italic)
        if size_delta:
            font.setPointSizeF(font.pointSizeF() + size_delta)
        widget.setFont(font)
    if colour is not None:
        set_text_colour(widget, colour)
    widget.setWordWrap(wrap)
    return widget
