"""Qt-free figures (SVG) for reports, exports and the default panel view."""

from .colormaps import lookup_table
from .svg import bar_chart, heatmap, line_chart

__all__ = ["bar_chart", "heatmap", "line_chart", "lookup_table"]
