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


@torch.no_grad()
def fingerprint_model(hf_model: torch.nn.Module) -> str:
    digest = hashlib.blake2b(digest_size=16)
    config = getattr(hf_model, "config", None)
    if config is not None:
        digest.update(config_digest_source(config.to_dict()).encode())
    seen: set[tuple[int, int]] = set()
    for name, tensor in sorted(hf_model.state_dict().items()):
        # Tied weights share storage; hash each storage once so tying doesn't change the cost.
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        if key in seen:
            continue
        seen.add(key)
        flat = tensor.detach().contiguous().cpu().reshape(-1)
        if flat.numel():
            digest.update(memoryview(flat.view(torch.uint8).numpy()))
    return digest.hexdigest()
