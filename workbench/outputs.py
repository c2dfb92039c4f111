"""Where results will be written, checked before any work starts.

An analysis can run for an hour; finding out afterwards that `--out` is a folder, a
foreign file or read-only loses that hour. So every command checks its output targets
before the model loads, with a message that says what is true (a folder, a missing
folder that cannot be made, no permission, locked, not a store, damaged), and a result
whose target fails anyway after the work is saved under the cache folder instead.
"""

from __future__ import annotations

import errno
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .errors import StoreError, WorkbenchError

_PERMISSION = (errno.EACCES, errno.EPERM, errno.EROFS)


class OutputError(WorkbenchError):
    pass


def describe_os_error(exc: OSError) -> str:
    """What an OSError means for a file someone wants to write, in words."""
    if exc.errno in _PERMISSION:
        return "read-only file system" if exc.errno == errno.EROFS else "permission denied"
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno == errno.ENOENT:
        return "no such folder"
    if exc.errno == errno.ENOTDIR:
        return "a part of the path is a file, not a folder"
    if exc.errno == errno.EISDIR:
        return "it is a folder"
    return exc.strerror or str(exc)


def check_output_file(path: str | Path, option: str) -> Path:
    """A file `option` (e.g. "--json") will create or replace: not a folder, its folder
    exists (made when missing) and can be written. Touches nothing that exists."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder, not a file.", "give a file name inside it")
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{option} {path}: its folder {folder} cannot be created ({describe_os_error(exc)}).", "write to a folder that exists, or create it first") from None
    if not folder.is_dir():
        raise OutputError(f"{option} {path}: {folder} is a file, not a folder.", "give a path inside a folder")
    try:
        if path.exists():
            # Opening for appending writes nothing; it fails as writing would.
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        else:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".check"):
                pass
    except OSError as exc:
        what = path if path.exists() else folder
        raise OutputError(f"{option} {path} cannot be written: {what} — {describe_os_error(exc)}.", "write somewhere else, or fix the permissions") from None
    return path


def check_store_output(path: str | Path, option: str) -> Path:
    """An HDF5 file `option` will append runs or results to: what check_output_file checks,
    and, when it exists, that it is a healthy workbench store no other process holds."""
    from .store.layout import open_store_file
    from .store.lock import check_not_locked
    from .store.reader import refuse_if_damaged

    path = check_output_file(path, option)
    try:
        check_not_locked(path)
        if not path.exists() or path.stat().st_size == 0:
            return path
        refuse_if_damaged(path)
        open_store_file(path, "a").close()  # locked or unwritable fails here, before any work
    except StoreError as exc:
        raise OutputError(f"{option}: {exc.message}", exc.hint) from None
    return path


def unsaved_folder() -> Path:
    from .paths import cache_dir

    folder = cache_dir() / "unsaved"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_or_rescue(write: Callable[[Path], object], target: Path, option: str) -> tuple[Path, object, str | None]:
    """write(target); when that fails, write(a new file under the cache folder), so the
    work is never lost. Returns (where it went, what write returned, the problem in one
    line or None); raises OutputError only when neither could be written."""
    try:
        return target, write(target), None
    except (OSError, WorkbenchError) as exc:
        reason = exc.message if isinstance(exc, WorkbenchError) else describe_os_error(exc)
        rescue = unsaved_folder() / f"{time.strftime('%Y%m%d-%H%M%S')}-{target.name}"
        try:
            value = write(rescue)
        except (OSError, WorkbenchError) as second:
            detail = second.message if isinstance(second, WorkbenchError) else describe_os_error(second)
            raise OutputError(f"{option} {target} could not be written ({reason}), nor {rescue} ({detail}).", "free some space or fix the permissions, then run again") from None
        return rescue, value, f"{option} {target} could not be written ({reason}); saved to {rescue} instead (move it where you want it)"
