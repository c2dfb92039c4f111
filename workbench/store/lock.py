"""One writer at a time per store file, without relying on HDF5's file locking.

HDF5 locks files with flock, which is off wherever HDF5_USE_FILE_LOCKING=FALSE (common on
NFS and HPC clusters, where flock is unreliable) and does not exist across machines. Two
processes appending to one file then both write its metadata and damage it. So a writer
first creates `<file>.lock` with O_CREAT|O_EXCL, which is atomic on local file systems and
on NFS v3+, and removes it when done. A lock left by a killed writer on this machine is
recognised by its process id and taken over; one from another machine is named in the
error so the user can remove it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StoreError


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _holder(lock: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


class StoreLock:
    """Held from acquire() to release(); release is safe to call twice."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock = lock_path(self.path)
        self.held = False

    def acquire(self, wait_seconds: float = 0.0) -> StoreLock:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                descriptor = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._take_over_stale():
                    continue
                if time.monotonic() >= deadline:
                    raise self._busy() from None
                time.sleep(0.1)
                continue
            except OSError as exc:
                raise StoreError(f"{self.path} cannot be locked for writing: {self.lock} cannot be created ({exc.strerror}).", "write to a folder you can write to") from None
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, handle)
            self.held = True
            return self

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                self.lock.unlink()
            except FileNotFoundError:
                pass

    def _take_over_stale(self) -> bool:
        """Remove a lock whose writer, on this machine, no longer runs."""
        holder = _holder(self.lock)
        if holder is None:
            # Being written this instant, or garbage: garbage older than a minute is stale.
            try:
                stale = time.time() - self.lock.stat().st_mtime > 60
            except FileNotFoundError:
                return True
            if not stale:
                return False
        elif holder.get("host") != socket.gethostname() or _alive(int(holder.get("pid", 0))):
            return False
        try:
            self.lock.unlink()
        except FileNotFoundError:
            pass
        return True

    def _busy(self) -> StoreError:
        holder = _holder(self.lock) or {}
        who = f"process {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('since', '?')}"
        return StoreError(
            f"{self.path} is being written by {who}.",
            f"wait for it to finish; if no such process runs, delete {self.lock}",
        )


@contextmanager
def writing(path: Path, wait_seconds: float = 0.0) -> Iterator[StoreLock]:
    lock = StoreLock(path).acquire(wait_seconds)
    try:
        yield lock
    finally:
        lock.release()


def check_not_locked(path: Path) -> None:
    """Raise the busy error now if another writer holds path (a check before long work)."""
    lock = StoreLock(path)
    if lock.lock.exists() and not lock._take_over_stale():
        raise lock._busy()
