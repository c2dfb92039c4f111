"""What `workbench doctor` reports about the installation: versions, the lock, devices,
the cache folder. Nothing here loads a model or imports Qt."""

from __future__ import annotations

import os
import platform
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from ..paths import REPO_ROOT

LOCK_FILE = REPO_ROOT / "requirements" / "lock.txt"

# (label, distribution) of what a bug report needs first; Qt's version is PySide6's.
KEY_PACKAGES = (
    ("torch", "torch"),
    ("transformers", "transformers"),
    ("TransformerLens", "transformer-lens"),
    ("nnsight", "nnsight"),
    ("Qt (PySide6)", "pyside6-essentials"),
    ("h5py", "h5py"),
    ("numpy", "numpy"),
)

# Pinned so that installing from the lock is reproducible, but not what the workbench runs
# on: a different pip in an environment of one's own is no difference worth reporting.
INSTALL_TOOLS = {"pip", "setuptools", "wheel"}

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def read_lock(path: Path = LOCK_FILE) -> dict[str, str] | None:
    """{normalised name: pinned version} of a pip-compile lock; None when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    pins = {}
    for line in text.splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[normalise(match.group(1))] = match.group(2)
    return pins


@dataclass
class LockComparison:
    path: Path
    pinned: int = 0
    differ: list[tuple[str, str | None, str]] = field(default_factory=list)  # (name, installed, locked)

    @property
    def matches(self) -> bool:
        return not self.differ


def compare_with_lock(path: Path = LOCK_FILE) -> LockComparison | None:
    pins = read_lock(path)
    if pins is None:
        return None
    pins = {name: version for name, version in pins.items() if name not in INSTALL_TOOLS}
    comparison = LockComparison(path, pinned=len(pins))
    for name, locked in sorted(pins.items()):
        installed = installed_version(name)
        if installed != locked:
            comparison.differ.append((name, installed, locked))
    return comparison


def python_line() -> str:
    return f"{platform.python_version()} ({platform.python_implementation()}, {platform.system()} {platform.machine()}) at {sys.executable}"


def devices() -> list[str]:
    import torch

    seen = [f"cpu ({os.cpu_count()} cores, torch uses {torch.get_num_threads()} threads)"]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            seen.append(f"cuda:{index} {props.name} ({props.total_memory / 2**30:.1f} GiB)")
    elif torch.version.cuda:
        seen.append(f"cuda: none visible (torch built for CUDA {torch.version.cuda})")
    else:
        seen.append("cuda: none (a CPU build of torch)")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        seen.append("mps (Apple GPU)")
    return seen


def folder_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except OSError:
                pass
    return total


def hdf5_version() -> str:
    try:
        import h5py

        return h5py.version.hdf5_version
    except ImportError:
        return "?"
