"""Hook points: selecting them by name, glob or preset."""

from .selection import PRESETS, HookCatalog, HookSpec, catalog_for, describe_presets

__all__ = ["PRESETS", "HookCatalog", "HookSpec", "catalog_for", "describe_presets"]
