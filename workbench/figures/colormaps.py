"""Colour maps shared by SVG figures and the GUI, so a report and a panel show the same colours.

Anchors are sampled from matplotlib's viridis and from a CET-D1-like blue-white-red
diverging map (for signed quantities, always with symmetric limits), plus
white-to-colour sequential maps.
"""

from __future__ import annotations

import functools

import numpy as np

_ANCHORS = {
    "viridis": [
        (0.267, 0.005, 0.329), (0.283, 0.141, 0.458), (0.254, 0.265, 0.530), (0.207, 0.372, 0.553),
        (0.164, 0.471, 0.558), (0.128, 0.567, 0.551), (0.135, 0.659, 0.518), (0.267, 0.749, 0.441),
        (0.478, 0.821, 0.318), (0.741, 0.873, 0.150), (0.993, 0.906, 0.144),
    ],
    "diverging": [
        (0.130, 0.250, 0.650), (0.300, 0.480, 0.830), (0.600, 0.720, 0.930), (0.880, 0.910, 0.970),
        (0.970, 0.970, 0.970),
        (0.970, 0.880, 0.860), (0.930, 0.620, 0.560), (0.820, 0.340, 0.280), (0.640, 0.100, 0.120),
    ],
    "greys": [(1.0, 1.0, 1.0), (0.0, 0.0, 0.0)],
    # Sequential white-to-colour maps (ColorBrewer's), as causal-tracing figures use per state kind.
    "purples": [(0.988, 0.984, 0.992), (0.737, 0.741, 0.863), (0.459, 0.420, 0.694), (0.247, 0.0, 0.490)],
    "greens": [(0.969, 0.988, 0.961), (0.631, 0.851, 0.608), (0.255, 0.671, 0.365), (0.0, 0.267, 0.106)],
    "reds": [(1.0, 0.961, 0.941), (0.988, 0.573, 0.447), (0.796, 0.094, 0.114), (0.404, 0.0, 0.051)],
}

NAMES = tuple(_ANCHORS)


@functools.lru_cache(maxsize=16)
def lookup_table(name: str = "viridis", n: int = 256) -> np.ndarray:
    """[n, 3] uint8 RGB colours running from the low to the high end of the map.

    Cached, because figures and panels ask for it on every draw; the array is
    read-only since every caller shares it.
    """
    anchors = np.asarray(_ANCHORS.get(name, _ANCHORS["viridis"]))
    positions = np.linspace(0, 1, len(anchors))
    samples = np.linspace(0, 1, n)
    rgb = np.stack([np.interp(samples, positions, anchors[:, channel]) for channel in range(3)], axis=1)
    table = np.round(rgb * 255).astype(np.uint8)
    table.flags.writeable = False
    return table


def colormap_hex(fractions: np.ndarray, name: str = "viridis") -> list[list[str]]:
    """Hex colours for a 2-D array of values in [0, 1]."""
    table = lookup_table(name)
    index = np.clip(np.round(np.asarray(fractions, dtype=np.float64) * 255), 0, 255).astype(int)
    hexes = np.array([f"#{r:02x}{g:02x}{b:02x}" for r, g, b in table])
    return hexes[index].tolist()
