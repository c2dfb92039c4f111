"""Model fingerprints: a short hash of a model's weights and config.

Stored with every activation run and result, so data computed on one model is
never served for another (a ROME-edited model has a different fingerprint).
"""

from __future__ import annotations

import hashlib
import json

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
    wrapper paths map back to the HF names, the copies are not HF weights.
    """
    weights: dict[str, torch.Tensor] = {}
    for name, tensor in hf_model.state_dict().items():
        weights.setdefault(name.replace(_BRIDGE_WRAPPER, ""), tensor)
    return weights


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
        key = (tensor.untyped_storage().data_ptr(), int(tensor.storage_offset()))
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        if key in seen:
            continue
        seen.add(key)
        flat = tensor.detach().contiguous().cpu().reshape(-1)
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy().data)
    return digest.hexdigest()
