"""`workbench doctor`: what is installed, whether it is what the workbench was tested with,
and a self-check of the machinery on the lab model. Users paste its output into bug reports."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..disk import human_bytes
from ..paths import cache_dir_location
from . import environment
from .selfcheck import SelfCheck, StepOutcome

__all__ = ["diagnose", "SelfCheck", "StepOutcome"]


def environment_report() -> dict:
    """Versions, lock agreement, devices and the cache folder, as plain data."""
    packages = {}
    for label, name in environment.KEY_PACKAGES:
        packages[label] = environment.installed_version(name)
    h5py_version = packages.get("h5py")
    if h5py_version:
        packages["h5py"] = f"{h5py_version} (HDF5 {environment.hdf5_version()})"
    lock = environment.compare_with_lock()
    folder = cache_dir_location()
    return {
        "python": environment.python_line(),
        "packages": packages,
        "lock": None
        if lock is None
        else {
            "file": str(lock.path),
            "pinned": lock.pinned,
            "differ": [{"package": name, "installed": installed, "locked": locked} for name, installed, locked in lock.differ],
        },
        "devices": environment.devices(),
        "cache_folder": {
            "path": str(folder),
            "exists": folder.is_dir(),
            "not_a_folder": folder.exists() and not folder.is_dir(),
            "bytes": environment.folder_size(folder) if folder.is_dir() else 0,
        },
    }


def format_environment(report: dict) -> list[str]:
    lines = [f"python           {report['python']}"]
    lock = report["lock"]
    locked = {item["package"]: item["locked"] for item in lock["differ"]} if lock else {}
    names = dict((label, name) for label, name in environment.KEY_PACKAGES)
    for label, version in report["packages"].items():
        key = environment.normalise(names[label])
        note = f"   (lock: {locked[key]})" if key in locked else ""
        lines.append(f"{label:<17}{version or 'not installed'}{note}")
    if lock is None:
        lines.append("lock             none beside this installation (installed from pyproject's ranges)")
    elif not lock["differ"]:
        lines.append(f"lock             all {lock['pinned']} pinned packages match {lock['file']}")
    else:
        shown = ", ".join(f"{d['package']} {d['installed'] or 'missing'} (lock {d['locked']})" for d in lock["differ"][:8])
        more = f" and {len(lock['differ']) - 8} more" if len(lock["differ"]) > 8 else ""
        lines.append(f"lock             {len(lock['differ'])} of {lock['pinned']} pinned packages differ: {shown}{more}")
        lines.append("                 (the suite passed on the lock: `make setup` installs it)")
    for index, device in enumerate(report["devices"]):
        lines.append(f"{'devices' if index == 0 else '':<17}{device}")
    cache = report["cache_folder"]
    size = human_bytes(cache["bytes"]) if cache["exists"] else "not a folder" if cache["not_a_folder"] else "does not exist yet"
    lines.append(f"cache folder     {cache['path']} ({size})")
    return lines


def format_outcome(outcome: StepOutcome) -> str:
    label = {"ok": "ok     ", "failed": "FAILED ", "skipped": "skipped"}[outcome.status]
    return f"  {label} {outcome.name:<46} {outcome.seconds:6.2f} s  {outcome.detail}"


def diagnose(print_line: Callable[[str], None] | None = None, self_check: bool = True) -> dict:
    """The whole diagnosis as plain data (`ok` is False when a step failed); with
    print_line, each part is printed as soon as it is known."""
    emit = print_line or (lambda line: None)
    report = environment_report()
    for line in format_environment(report):
        emit(line)
    outcomes: list[StepOutcome] = []
    if self_check:
        emit("\nself-check on the lab model:")
        started = time.perf_counter()
        outcomes = SelfCheck(report=lambda outcome: emit(format_outcome(outcome))).run()
        failed = [o.name for o in outcomes if o.status == "failed"]
        total = time.perf_counter() - started
        emit(f"\n{'all checks passed' if not failed else 'FAILED: ' + '; '.join(failed)} ({total:.1f} s)")
    report["self_check"] = [o.to_dict() for o in outcomes]
    report["ok"] = all(o.status == "ok" for o in outcomes)
    return report
