"""Raster images for report figures: a minimal PNG encoder and colour mapping, without Pillow or Qt.

Large attention maps (a 1,024-token pattern has a million cells, the overview of every
head hundreds of thousands) are far too big as one SVG rectangle per cell, so they are
drawn as one embedded PNG inside an SVG that keeps crisp, selectable labels.
"""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

from workbench.figures.colormaps import lookup_table

NAN_RGB = (236, 236, 236)  # cells with nothing to show (future tokens, a masked column)


def colourise(values: np.ndarray, lo: float, hi: float, colormap: str = "viridis") -> np.ndarray:
    """[...] values -> [..., 3] uint8 RGB; NaN cells get NAN_RGB."""
    data = np.asarray(values, dtype=np.float64)
    span = (hi - lo) or 1.0
    table = lookup_table(colormap)
    index = np.clip(np.round((np.nan_to_num(data, nan=lo) - lo) / span * 255), 0, 255).astype(np.intp)
    rgb = table[index]
    rgb[np.isnan(data)] = NAN_RGB
    return rgb


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode [h, w, 3] uint8 as a PNG (8-bit RGB, no interlace)."""
    image = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = image.shape[:2]
    raw = np.concatenate([np.zeros((height, 1), dtype=np.uint8), image.reshape(height, width * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def svg_image(rgb: np.ndarray, x: float, y: float, width: float, height: float) -> str:
    """An SVG <image> element holding rgb as an embedded PNG, scaled without smoothing."""
    encoded = base64.b64encode(png_bytes(rgb)).decode("ascii")
    return (
        f"<image x='{x:.1f}' y='{y:.1f}' width='{width:.1f}' height='{height:.1f}' preserveAspectRatio='none' "
        f"style='image-rendering:pixelated;image-rendering:crisp-edges' href='data:image/png;base64,{encoded}'/>"
    )
