"""Hook points: selecting them by name, glob or preset."""

from .selection import PRESETS, HookCatalog, HookSpec, describe_presets

__all__ = ["PRESETS", "HookCatalog", "HookSpec", "describe_presets"]
