"""How a token is written wherever it is shown: SVG figures, pyqtgraph axes, panels, chips.

Whitespace is part of a token (" Paris" and "Paris" are different tokens), so it is made
visible; an empty token is ∅; a label longer than `limit` characters is cut with "…"
(hover texts and tables keep it whole). One rule, so a token reads the same in the
app, the report and the PDF.
"""

from __future__ import annotations

_VISIBLE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"})


def visible_token(text: object, limit: int | None = None) -> str:
    text = str(text).translate(_VISIBLE) if text != "" else "∅"
    if limit is not None and len(text) > limit:
        return text[: max(1, limit - 1)] + "…"
    return text
