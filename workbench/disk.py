"""Sizes on disk, for what the commands print: one rule for units and for sparse files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def disk_bytes(path: Path) -> int:
    """The blocks a file actually uses: runs allocate their space up front and an interrupted
    one leaves it sparse, so the apparent size would overstate the file."""
    stat = Path(path).stat()
    return min(stat.st_size, getattr(stat, "st_blocks", 0) * 512 or stat.st_size)


@contextmanager
def replacing(path: Path, suffix: str = ".partial") -> Iterator[Path]:
    """A temporary path beside `path` to write the new file to; when the block ends without
    an error it is renamed over `path` in one step (readers see the old file or the new one,
    never half of one), else it is removed and `path` is left as it was."""
    path = Path(path)
    partial = path.with_name(f"{path.name}.{os.getpid()}{suffix}")
    partial.unlink(missing_ok=True)
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
