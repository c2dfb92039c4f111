"""Choosing hook points: names, globs and presets, resolved through one alias map.

TransformerLens 4.x names each hook canonically (``blocks.0.hook_out``) and keeps
the HookedTransformer names (``blocks.0.hook_resid_post``) as aliases; a hook
callback always sees the canonical name. We key stored activations by the
legacy name where one exists, because those are the names users type and they
are the same across architectures, and record the canonical name beside it.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..engines import BridgeEngine, Engine
from ..errors import HookError

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

PRESETS: dict[str, tuple[str, list[str]]] = {
    "residual": ("residual stream: the input to block 0 and every block's output", ["blocks.0.hook_resid_pre", "blocks.*.hook_resid_post"]),
    "attention": ("attention patterns of every layer", ["blocks.*.attn.hook_pattern"]),
    "attn-scores": ("pre-softmax attention scores", ["blocks.*.attn.hook_attn_scores"]),
    "attn-out": ("attention block outputs", ["blocks.*.hook_attn_out"]),
    "mlp": ("MLP outputs", ["blocks.*.hook_mlp_out"]),
    "mlp-post": ("MLP hidden activations (the keys ROME edits)", ["blocks.*.mlp.hook_post"]),
    "heads": ("per-head attention outputs before W_O (hook_z)", ["blocks.*.attn.hook_z"]),
}
PRESET_ALIASES = {
    "residual stream": "residual",
    "resid": "residual",
    "attention patterns": "attention",
    "patterns": "attention",
    "mlp outputs": "mlp",
    "mlp out": "mlp",
}

_LAYER = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class HookSpec:
    name: str  # the key we store under: the legacy alias when there is one
    canonical: str  # the name TransformerLens reports in callbacks
    pos_dims: tuple[int, ...]  # axes (of the batched tensor) that run over token positions

    @property
    def layer(self) -> int | None:
        match = _LAYER.match(self.name)
        return int(match.group(1)) if match else None


def _position_axes(name: str, hook_point) -> tuple[int, ...]:
    declared = getattr(hook_point, "pos_dim", None)
    if declared is not None:
        return (declared,)
    if name.endswith(("hook_pattern", "hook_attn_scores")):
        return (2, 3)
    return (1,)


def _forward_rank(spec: HookSpec) -> int:
    # Embedding hooks first, then blocks by layer, then the final norm and unembedding.
    if spec.layer is not None:
        return spec.layer
    return -1 if "embed" in spec.name and "unembed" not in spec.name else 10**6


class HookCatalog:
    """All hook points of one model, with their aliases."""

    def __init__(self, bridge: TransformerBridge) -> None:
        hook_dict = bridge.hook_dict
        self._points = hook_dict
        names_by_point: dict[int, list[str]] = {}
        order: list[int] = []
        for key, point in hook_dict.items():
            ident = id(point)
            if ident not in names_by_point:
                names_by_point[ident] = []
                order.append(ident)
            names_by_point[ident].append(key)
        self.specs: list[HookSpec] = []
        self.by_name: dict[str, HookSpec] = {}
        for ident in order:
            names = names_by_point[ident]
            point = hook_dict[names[0]]
            canonical = getattr(point, "name", None) or names[0]
            aliases = sorted((n for n in names if n != canonical), key=lambda n: (len(n), n))
            preferred = aliases[0] if aliases else canonical
            spec = HookSpec(preferred, canonical, _position_axes(canonical, point))
            self.specs.append(spec)
            for n in names + [canonical]:
                self.by_name[n] = spec
        self.specs.sort(key=_forward_rank)

    @classmethod
    def from_names(cls, names: list[str]) -> HookCatalog:
        """A catalog of plain hook names (an engine's seam names): no aliases, no hook points."""
        catalog = cls.__new__(cls)
        catalog._points = {}
        catalog.specs = [HookSpec(name, name, _position_axes(name, None)) for name in names]
        catalog.by_name = {spec.name: spec for spec in catalog.specs}
        catalog.specs.sort(key=_forward_rank)
        return catalog

    def hook_point(self, spec: HookSpec):
        return self._points.get(spec.canonical) or self._points[spec.name]

    def resolve(self, patterns) -> list[HookSpec]:
        """Hook specs for a list (or comma-separated string) of names, globs and presets."""
        if isinstance(patterns, str):
            patterns = [patterns]
        items = [p.strip() for chunk in patterns for p in str(chunk).split(",") if p.strip()]
        if not items:
            raise HookError("No hooks given.", f"name hook points, globs such as 'blocks.*.attn.hook_pattern', or presets: {', '.join(PRESETS)}")
        chosen: dict[str, HookSpec] = {}
        for item in items:
            for spec in self._expand(item):
                chosen.setdefault(spec.canonical, spec)
        return sorted(chosen.values(), key=self.specs.index)

    def _expand(self, item: str) -> list[HookSpec]:
        preset = PRESET_ALIASES.get(item.lower(), item.lower())
        if preset in PRESETS:
            return [spec for pattern in PRESETS[preset][1] for spec in self._expand(pattern)]
        if any(ch in item for ch in "*?["):
            matched = [spec for name, spec in self.by_name.items() if fnmatch.fnmatchcase(name, item)]
            if not matched:
                raise HookError(f"Hook pattern {item!r} matches no hook point of this model.", self._suggestion(item))
            unique = {spec.canonical: spec for spec in matched}
            return list(unique.values())
        if item not in self.by_name:
            raise HookError(f"Unknown hook name {item!r}.", self._suggestion(item))
        return [self.by_name[item]]

    def _suggestion(self, item: str) -> str:
        close = difflib.get_close_matches(item, list(self.by_name), n=3, cutoff=0.6)
        if close:
            return "did you mean " + " or ".join(repr(c) for c in close) + "?"
        return f"use a TransformerLens hook name such as 'blocks.0.hook_resid_post', a glob, or a preset ({', '.join(PRESETS)})"


def catalog_for(engine: Engine) -> HookCatalog:
    """The hook names an analysis may ask an engine for: every hook point of a
    TransformerBridge, the seam's names (workbench.engines.SEAM_POINTS) on other engines."""
    if isinstance(engine, BridgeEngine):
        return HookCatalog(engine.bridge)
    return HookCatalog.from_names(engine.hook_names())


def describe_presets() -> list[tuple[str, str, list[str]]]:
    return [(name, text, patterns) for name, (text, patterns) in PRESETS.items()]
