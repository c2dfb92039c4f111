"""Hook names as the store and the catalog spell them, built in one place."""

from __future__ import annotations


def block_hook(layer: int, point: str) -> str:
    """blocks.{layer}.{point}, e.g. block_hook(3, "attn.hook_pattern")."""
    return f"blocks.{int(layer)}.{point}"


def per_layer(n_layers: int, point: str) -> list[str]:
    """The same hook point in every layer, in layer order."""
    return [block_hook(layer, point) for layer in range(n_layers)]


def pattern_hooks(n_layers: int) -> list[str]:
    return per_layer(n_layers, "attn.hook_pattern")


def resid_post_hooks(n_layers: int) -> list[str]:
    return per_layer(n_layers, "hook_resid_post")
