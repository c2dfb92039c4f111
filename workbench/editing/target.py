"""The weight ROME edits: the MLP's output projection of one layer, found through the bridge.

The bridge's `blocks[l].mlp.out` wraps exactly the HF module whose input is the
`mlp.hook_post` activation (the keys) and whose output is `hook_mlp_out` (the values),
so finding it there works for any architecture the bridge maps, without naming one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch

from ..errors import InputError
from ..hooks.keeping import keeping
from ..models.shape import expert_count


@dataclass
class MlpOutput:
    layer: int
    module: torch.nn.Module  # the HF module (nn.Linear or GPT-2 Conv1D)
    name: str  # its HF parameter name, e.g. model.layers.5.mlp.down_proj.weight
    layout: str  # "out_in" (nn.Linear) or "in_out" (Conv1D)

    @property
    def weight(self) -> torch.Tensor:
        # nn.Module's attribute lookup is typed Tensor | Module; a Linear's or Conv1D's weight is a Parameter.
        return cast(torch.Tensor, self.module.weight)

    @property
    def key_hook(self) -> str:
        return f"blocks.{self.layer}.mlp.hook_post"

    @property
    def value_hook(self) -> str:
        return f"blocks.{self.layer}.hook_mlp_out"

    def as_out_in(self, delta: torch.Tensor) -> torch.Tensor:
        """delta given as [d_out, d_in], in this weight's own layout."""
        return delta if self.layout == "out_in" else delta.T

    def keys_of(self, bridge, ids: torch.Tensor) -> torch.Tensor:
        """The keys [batch, pos, d_mlp] of a batch of token ids. The pass stops after this
        block: later blocks cannot change its keys, and a pass through all of them and the
        unembedding costs several times as much at an early layer."""
        grabbed: dict[str, torch.Tensor] = {}
        with torch.inference_mode():
            try:
                bridge.run_with_hooks(ids, fwd_hooks=[(self.key_hook, keeping(grabbed, "k"))], stop_at_layer=self.layer + 1, return_type=None)
            except Exception:  # a bridge that cannot stop early runs the whole model
                bridge.run_with_hooks(ids, fwd_hooks=[(self.key_hook, keeping(grabbed, "k"))], return_type=None)
        return grabbed["k"]

    @torch.no_grad()
    def output(self, keys: torch.Tensor) -> torch.Tensor:
        """The projection applied to keys [..., d_mlp] with the current weights (bias included)."""
        return self.module(keys.to(self.weight.dtype)).float()


def _hf_name(model, module: torch.nn.Module) -> str:
    from ..models.fingerprint import _BRIDGE_WRAPPER

    for name, candidate in model.bridge.original_model.named_modules():
        if candidate is module:
            return name.replace(_BRIDGE_WRAPPER, "") + ".weight"
    raise InputError("The MLP output projection is not part of the model's own modules.", "ROME cannot edit this model")


def check_layer(model, layer: int) -> int:
    n = model.n_layers
    if not isinstance(layer, int) or not 0 <= layer < n:
        raise InputError(f"Layer {layer} is out of range: {model.name} has layers 0 to {n - 1}.", f"choose a layer from 0 to {n - 1} (or -1 to pick it from a causal trace)")
    return layer


def mlp_output(model, layer: int) -> MlpOutput:
    """The output projection of layer's MLP, or InputError for architectures ROME cannot edit."""
    check_layer(model, layer)
    experts = expert_count(model.bridge)
    if experts:
        raise InputError(
            f"{model.name}'s MLPs are a mixture of {experts} experts chosen by a router per token: there is no single MLP output matrix for a rank-one edit.",
            "edit a model with dense MLPs (GPT-2, Pythia, Llama, Gemma, Qwen, ...); editing one expert is not supported",
        )
    try:
        wrapper = model.bridge.blocks[layer].mlp.out
        module = wrapper.original_component
    except (AttributeError, IndexError, TypeError):
        raise InputError(f"{model.name} has no MLP output projection the bridge exposes (blocks.{layer}.mlp.out).", "ROME edits models with a dense MLP (GPT-2, Llama, ...)") from None
    kind = type(module).__name__
    weight = getattr(module, "weight", None)
    if weight is None or weight.dim() != 2:
        raise InputError(f"{model.name}'s MLP output is a {kind}, not a dense projection.", "ROME edits models with a dense MLP (GPT-2, Llama, ...)")
    d_mlp, d_model = int(model.cfg.d_mlp), int(model.cfg.d_model)
    if isinstance(module, torch.nn.Linear):
        layout = "out_in"
    elif kind == "Conv1D":  # GPT-2 style: y = x @ W + b with W [in, out]
        layout = "in_out"
    else:
        raise InputError(f"{model.name}'s MLP output projection is a {kind}; ROME here supports nn.Linear and GPT-2 Conv1D.", "use a GPT-2- or Llama-style model")
    expected = (d_model, d_mlp) if layout == "out_in" else (d_mlp, d_model)
    if tuple(weight.shape) != expected:
        raise InputError(f"{model.name}'s MLP output weight has shape {tuple(weight.shape)}, not {expected}.", "this architecture is not supported by ROME here")
    return MlpOutput(layer=layer, module=module, name=_hf_name(model, module), layout=layout)
