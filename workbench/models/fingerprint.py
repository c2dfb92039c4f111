"""Model fingerprints: a short hash of a model's weights and config.

Stored with every activation run and result, so data computed on one model is
never served for another (a ROME-edited model has a different fingerprint).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

_VOLATILE_CONFIG_KEYS = {"transformers_version", "torch_dtype", "dtype", "name_or_path", "architectures", "use_cache"}


def config_digest_source(config_dict: dict) -> str:
    kept = {k: v for k, v in config_dict.items() if not k.startswith("_") and k not in _VOLATILE_CONFIG_KEYS}
    return json.dumps(kept, sort_keys=True, default=str)


_BRIDGE_WRAPPER = "._original_component"


def model_weights(hf_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict under its Hugging Face names.

    TransformerBridge wraps the HF modules in place, so after booting the state dict
    also lists each weight under wrapper paths and adds split q/k/v copies; the
    wrapper paths map back to the HF names, the copies are not HF weights. A weight a
    device map offloaded is an empty (meta) tensor here: `real_weight` fetches it.
    """
    weights: dict[str, torch.Tensor] = {}
    for name, tensor in hf_model.state_dict().items():
        weights.setdefault(name.replace(_BRIDGE_WRAPPER, ""), tensor)
    return weights


def real_weight(hf_model: torch.nn.Module, name: str, tensor: torch.Tensor) -> torch.Tensor:
    """The tensor itself, or, for a weight a device map offloaded (a meta tensor in its
    module), the real one accelerate keeps on CPU or disk for the module's forward calls.
    One at a time: a disk-offloaded model never has all its weights in memory at once."""
    if not tensor.is_meta:
        return tensor
    module_path, _, leaf = name.rpartition(".")
    for module in _modules_at(hf_model, module_path):
        weights_map = getattr(getattr(module, "_hf_hook", None), "weights_map", None)
        if weights_map is not None and leaf in weights_map:
            return weights_map[leaf]
    raise ValueError(f"weight {name} is an empty (meta) tensor with no offloaded copy")


def _modules_at(root: torch.nn.Module, hf_path: str):
    """The module at an HF path, and, once the bridge has wrapped it, the wrapped original
    (hooks stay on the HF module, which the bridge reaches as `_original_component`)."""
    module: Any = root
    for part in hf_path.split(".") if hf_path else []:
        child = getattr(module, part, None)
        while child is None and module is not None and hasattr(module, "_original_component"):
            module = module._original_component
            child = getattr(module, part, None)
        module = child
        if module is None:
            return
    while module is not None:
        yield module
        module = getattr(module, "_original_component", None)


@torch.no_grad()
def fingerprint_model(hf_model: torch.nn.Module, weight_names=None) -> str:
    """Hash of config and weights; weight_names (the HF names, from before booting
    the bridge) restricts it to the model's own weights once the bridge has wrapped it."""
    digest = hashlib.blake2b(digest_size=16)
    config = getattr(hf_model, "config", None)
    if config is not None:
        digest.update(config_digest_source(config.to_dict()).encode())
    weights = model_weights(hf_model)
    if weight_names is not None:
        missing = [n for n in weight_names if n not in weights]
        if missing:
            raise KeyError(f"weights {missing[:3]} are gone from the model")
        weights = {n: weights[n] for n in weight_names}
    seen: set[tuple[int, int]] = set()
    for name, tensor in sorted(weights.items()):
        # Tied weights share storage; hash each storage once so tying doesn't change the cost.
        # (An offloaded weight is an empty meta tensor: a tied pair is one tensor object.)
        key = (id(tensor), 0) if tensor.is_meta else (tensor.untyped_storage().data_ptr(), int(tensor.storage_offset()))
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        if key in seen:
            continue
        seen.add(key)
        flat = real_weight(hf_model, name, tensor).detach().contiguous().cpu().reshape(-1)
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy().data)
    return digest.hexdigest()
