"""Will a model fit? Its weights' size at a dtype, from its config alone, against the memory
free on the device, checked before any weight is read.

Without the check, a model that does not fit swaps the machine to a crawl or is killed by
the kernel minutes into loading, with no word about why. The estimate builds the model on
PyTorch's meta device (shapes, no storage), so it costs milliseconds even for 70B.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..errors import ModelLoadError

GIB = 1024**3
# What a loaded model needs beyond its weights: the bridge's wrappers, the tokenizer, one
# forward pass's activations on a short prompt, Python and torch themselves.
WORKING_FRACTION = 0.15
WORKING_MINIMUM = int(0.75 * GIB)
SKIP_VARIABLE = "WORKBENCH_SKIP_MEMORY_CHECK"
_BYTES = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2, torch.float64: 8}


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    weight_bytes: int
    needed_bytes: int  # weights plus working memory
    available_bytes: int | None  # None: unknown on this platform
    where: str  # "memory" or "GPU memory on cuda:0"

    @property
    def fits(self) -> bool:
        return self.available_bytes is None or self.needed_bytes <= self.available_bytes


def parameter_count(config) -> int:
    """Parameters of the causal LM a config describes, counted on the meta device."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(parameter.numel() for parameter in model.parameters())  # a tied tensor is listed once


def available_bytes(device: str) -> tuple[int | None, str]:
    """Free memory where the weights will live: (bytes or None when unknown, its name)."""
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        free, _total = torch.cuda.mem_get_info(index)
        return int(free), f"GPU memory on cuda:{index}"
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "memory"
    except OSError:
        pass
    try:  # other Unix systems: free pages (an underestimate: caches count as used)
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "memory"
    except (ValueError, OSError, AttributeError):
        return None, "memory"


def estimate(config, dtype: torch.dtype, device: str = "cpu") -> MemoryEstimate:
    parameters = parameter_count(config)
    weights = parameters * _BYTES.get(dtype, 4)
    needed = weights + max(WORKING_MINIMUM, int(WORKING_FRACTION * weights))
    available, where = available_bytes(device)
    return MemoryEstimate(parameters, weights, needed, available, where)


def check_fits(name: str, config, dtype: torch.dtype, device: str = "cpu") -> MemoryEstimate:
    """Raise ModelLoadError, naming needed and available memory, when the model cannot fit."""
    found = estimate(config, dtype, device)
    if found.fits or os.environ.get(SKIP_VARIABLE, "") in ("1", "true", "yes"):
        return found
    dtype_name = str(dtype).removeprefix("torch.")
    hints = ["load it in bfloat16 (half the bytes of float32)"] if _BYTES.get(dtype, 4) > 2 else []
    hints += ["free memory", "use a GPU (--device cuda)" if not device.startswith("cuda") else "use a GPU with more memory", "or a smaller model"]
    available = found.available_bytes or 0
    raise ModelLoadError(
        f"{name} needs about {found.needed_bytes / GIB:.1f} GiB ({found.parameters / 1e9:.2f} B parameters, "
        f"{found.weight_bytes / GIB:.1f} GiB of weights in {dtype_name}, plus working memory), "
        f"but only {available / GIB:.1f} GiB of {found.where} is free.",
        ", ".join(hints) + f"; {SKIP_VARIABLE}=1 loads it anyway",
    )
