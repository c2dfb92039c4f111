"""Reading a prompts file (one prompt per line), for `workbench cache` and report specs."""

from __future__ import annotations

from pathlib import Path

from .errors import InputError


def read_prompts_file(path: str | Path) -> list[str]:
    """The file's non-blank lines; a missing, unreadable or non-UTF-8 file is an InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Prompts file not found: {path}.", "give a text file with one prompt per line")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise InputError(f"Prompts file {path} is not UTF-8 text (byte {exc.start + 1}, line {line}).", "save it as UTF-8") from None
    except OSError as exc:
        raise InputError(f"Prompts file {path} cannot be read ({exc.strerror}).", "check its permissions") from None
    return [line for line in text.splitlines() if line.strip()]
