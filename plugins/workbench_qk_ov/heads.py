"""Writing a head as text ("1.1" or "L1H1"): parsing, and the typed parameter the CLI and the GUI form use.

Kept free of torch so the plugin declaration stays cheap to import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from workbench.errors import InputError
from workbench.plugin_api import Text

_HEAD = re.compile(r"^\s*(?:L\s*(\d+)\s*H\s*(\d+)|(\d+)\s*[.:]\s*(\d+))\s*$", re.IGNORECASE)


def parse_head(text: str | None) -> tuple[int, int] | None:
    """(layer, head) from "1.1" or "L1H1"; None for empty text (the analysis then picks the most copying head)."""
    if text is None or not str(text).strip():
        return None
    match = _HEAD.match(str(text))
    if not match:
        raise InputError(f"Head {text!r} is not LAYER.HEAD.", "write the head as layer.head, such as 1.1 (or L1H1)")
    layer, head = (match.group(1), match.group(2)) if match.group(1) is not None else (match.group(3), match.group(4))
    return int(layer), int(head)


@dataclass(frozen=True)
class HeadParam(Text):
    """A head written LAYER.HEAD; the format is checked before the model loads, the range once it has."""

    kind: ClassVar[str] = "text"

    def accepts(self) -> str:
        return "a head written LAYER.HEAD, such as 1.1 (or L1H1), or nothing for the most copying head"

    def validate(self, value: Any) -> Any:
        value = super().validate(value)
        try:
            parsed = parse_head(value)
        except InputError:
            raise self.fail(value) from None
        return "" if parsed is None else f"{parsed[0]}.{parsed[1]}"
