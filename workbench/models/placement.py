"""Where a model's weights live: one device, or a device map across GPUs, CPU and disk.

A device map (Hugging Face's `device_map`, dispatched by accelerate) lets a model larger
than one device run at all: "auto" fills the GPUs in order, then main memory, then disk,
each up to its `max_memory` budget. Weights placed on CPU or disk while another device
computes are *offloaded*: their modules hold empty (meta) tensors and accelerate copies
the real ones in for each call. A forward pass sees real weights; code that reads or
writes a weight matrix directly (QK/OV circuits, ROME's edit) sees an empty tensor, which
is why `offloaded_weights` exists.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelLoadError
from ..paths import cache_dir

if TYPE_CHECKING:
    import torch

# accelerate's strategies: fill devices in order, balance them, or balance sparing GPU 0.
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
_BUDGET_KEY = re.compile(r"^(\d+|cpu|mps)$")
MAX_MEMORY_HELP = "comma-separated DEVICE=SIZE pairs, e.g. 0=20GiB,1=20GiB,cpu=30GiB (GPU index, cpu or mps; sizes in GiB, GB, MiB or MB)"


@dataclass(frozen=True)
class Placement:
    """How to place a model: `device` alone, or `device_map` with optional `max_memory`."""

    device: str = "cpu"
    device_map: str | None = None
    max_memory: str = ""  # as the user typed it; parsed by budgets()

    def __post_init__(self) -> None:
        if self.device_map is not None and self.device_map not in DEVICE_MAPS:
            raise ModelLoadError(f"Unknown device map {self.device_map!r}.", f"choose one of {', '.join(DEVICE_MAPS)}")
        if self.max_memory and self.device_map is None:
            raise ModelLoadError("A memory budget (max_memory) was given without a device map.", "add --device-map auto, or drop --max-memory")
        if self.device_map is not None and self.device not in ("", "cpu"):
            raise ModelLoadError(
                f"Both a device ({self.device}) and a device map ({self.device_map}) were given.",
                "choose one: a device map places every layer itself (limit devices with --max-memory)",
            )
        self.budgets()  # a malformed budget fails here, before any loading

    @property
    def mapped(self) -> bool:
        return self.device_map is not None

    def budgets(self) -> dict[int | str, int] | None:
        return parse_max_memory(self.max_memory) if self.max_memory else None

    def describe(self) -> str:
        if self.device_map is None:
            return self.device
        return f"device map {self.device_map}" + (f" ({self.max_memory})" if self.max_memory else "")


def parse_max_memory(text: str) -> dict[int | str, int]:
    """'0=20GiB,cpu=30GiB' -> {0: bytes, 'cpu': bytes}, accelerate's max_memory form."""
    import torch
    from accelerate.utils import convert_file_size_to_int

    budgets: dict[int | str, int] = {}
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        key, sep, size = (s.strip() for s in part.partition("="))
        key = key.lower()
        if not sep or not _BUDGET_KEY.match(key):
            raise ModelLoadError(f"Cannot read the memory budget {part!r}.", MAX_MEMORY_HELP)
        try:
            value = int(convert_file_size_to_int(size.replace(" ", "")))
        except ValueError:
            raise ModelLoadError(f"Cannot read the size {size!r} in the memory budget {part!r}.", MAX_MEMORY_HELP) from None
        if value <= 0:
            raise ModelLoadError(f"The memory budget {part!r} is not positive.", MAX_MEMORY_HELP)
        budgets[int(key) if key.isdigit() else key] = value
    if not budgets:
        raise ModelLoadError(f"The memory budget {text!r} names no device.", MAX_MEMORY_HELP)
    if any(isinstance(k, int) for k in budgets) and not torch.cuda.is_available():
        raise ModelLoadError(f"The memory budget {text!r} names a GPU, but torch sees no CUDA GPU.", "budget cpu only (cpu=SIZE), or install a CUDA build of torch")
    return budgets


def offload_folder(location: str) -> Path:
    """Where accelerate keeps the weights a device map sends to disk, one folder per model.
    (Weights read from safetensors are offloaded in place; others are copied here.)"""
    key = hashlib.blake2b(location.encode(), digest_size=8).hexdigest()
    return cache_dir() / "offload" / key


def offloaded_weights(module: torch.nn.Module) -> list[str]:
    """Names of the parameters a device map offloaded: empty (meta) tensors in the module,
    the real ones on CPU or disk, copied in by accelerate only for a forward call."""
    return [name for name, parameter in module.named_parameters() if parameter.is_meta]


def device_summary(hf_device_map: dict | None) -> str:
    """'cuda:0 ×12, cuda:1 ×12, disk ×6': how many of the map's modules each device holds."""
    if not hf_device_map:
        return ""
    counts: dict[str, int] = {}
    for target in hf_device_map.values():
        name = f"cuda:{target}" if isinstance(target, int) else str(target)
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{name} ×{count}" for name, count in counts.items())
