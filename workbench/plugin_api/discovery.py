"""Finding plugins: Python entry points (group `workbench.plugins`) and WORKBENCH_PLUGIN_PATH folders.

The built-in plugins in the repository's `plugins/` folder are declared as entry
points of this package, so they are found exactly as a third-party plugin is.
A plugin that fails to import, targets another API version or clashes with
another plugin's id is recorded with its error and disabled; discovery itself
never raises.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from .plugin import Plugin, PluginError, check_compatibility

ENTRY_POINT_GROUP = "workbench.plugins"
PATH_VARIABLE = "WORKBENCH_PLUGIN_PATH"


@dataclass
class PluginRecord:
    """One discovered plugin, usable or not."""

    id: str
    name: str
    version: str
    source: str  # where it came from, in words
    plugin: Plugin | None = None
    error: str | None = None
    details: str = ""  # the traceback, for "details on demand"

    @property
    def ok(self) -> bool:
        return self.error is None and self.plugin is not None

    @property
    def status(self) -> str:
        return "ok" if self.ok else f"error: {self.error}"

    def describe(self) -> dict[str, Any]:
        plugin = self.plugin
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "status": "ok" if self.ok else "error",
            "error": self.error,
            "api_version": plugin.api_version if plugin else None,
            "analysis": bool(plugin and plugin.analysis),
            "panel": bool(plugin and plugin.panel),
            "result_types": [getattr(r, "kind", str(r)) for r in (plugin.result_types if plugin else [])],
            "queries": [q.name for q in plugin.queries] if plugin else [],
            "requires": list(plugin.requires) if plugin else [],
            "provides": sorted(plugin.provides) if plugin else [],
        }


def _as_plugin(obj: Any) -> Plugin:
    if isinstance(obj, Plugin):
        return obj
    if hasattr(obj, "plugin") and isinstance(obj.plugin, Plugin):
        return obj.plugin
    if callable(obj) and not isinstance(obj, type):
        made = obj()
        if isinstance(made, Plugin):
            return made
    raise PluginError(f"{obj!r} is not a workbench Plugin.", "export `plugin = Plugin(...)` from the module")


def _short(exc: BaseException) -> str:
    if isinstance(exc, PluginError):
        return exc.message + (f" ({exc.hint})" if exc.hint else "")
    return f"{type(exc).__name__}: {exc}"


class PluginRegistry:
    """Every discovered plugin, by id, with its status."""

    def __init__(self, records: list[PluginRecord]):
        self.records = records

    def __iter__(self) -> Iterator[PluginRecord]:
        return iter(self.records)

    def record(self, plugin_id: str) -> PluginRecord | None:
        return next((r for r in self.records if r.id == plugin_id), None)

    def enabled(self) -> list[Plugin]:
        return [r.plugin for r in self.records if r.ok and r.plugin is not None]

    def get(self, plugin_id: str) -> Plugin:
        record = self.record(plugin_id)
        if record is None:
            known = ", ".join(r.id for r in self.records if r.ok) or "none"
            raise PluginError(f"No plugin {plugin_id!r}.", f"available: {known} ('workbench plugins' lists them)")
        if not record.ok or record.plugin is None:
            raise PluginError(f"Plugin {plugin_id!r} is disabled: {record.error}", "fix or update the plugin; 'workbench plugins' shows its error")
        return record.plugin

    def disable(self, plugin_id: str, error: str, details: str = "") -> None:
        """Take a plugin out of service for this session (it raised at run time)."""
        record = self.record(plugin_id)
        if record is not None:
            record.error = error
            record.details = details

    def provided(self, plugin_id: str, name: str) -> Callable[..., Any]:
        """A public function another plugin provides (see Plugin.provides / requires)."""
        return self.get(plugin_id).provided(name)

    def result_class(self, kind: str) -> type | None:
        for plugin in self.enabled():
            for cls in plugin.result_classes():
                if getattr(cls, "kind", None) == kind:
                    return cls
        return None


def _check(plugin: Plugin) -> None:
    check_compatibility(plugin.api_version)


def _from_entry_points() -> list[PluginRecord]:
    records = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        source = f"entry point {ep.value}" + (f" in {dist.name} {dist.version}" if dist is not None else "")
        records.append(_load(ep.name, source, ep.load))
    return records


def _import_from_folder(folder: Path, name: str) -> ModuleType:
    folder_text = str(folder)
    if folder_text not in sys.path:
        sys.path.insert(0, folder_text)
    module = importlib.import_module(name)
    origin = Path(getattr(module, "__file__", "") or "").resolve()
    if folder.resolve() not in origin.parents:
        raise PluginError(f"module name {name!r} is already taken by {origin}", "rename the plugin's package")
    return module


def _from_folders(folders: list[Path]) -> list[PluginRecord]:
    records = []
    for folder in folders:
        if not folder.is_dir():
            records.append(PluginRecord(folder.name, folder.name, "", f"{PATH_VARIABLE} entry {folder}", error="folder not found"))
            continue
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith((".", "_")):
                continue
            if entry.is_dir() and (entry / "__init__.py").is_file():
                name = entry.name
            elif entry.is_file() and entry.suffix == ".py":
                name = entry.stem
            else:
                continue
            records.append(_load(name, f"folder {entry}", functools.partial(_import_from_folder, folder, name)))
    return records


def _load(fallback_id: str, source: str, loader: Callable[[], object]) -> PluginRecord:
    try:
        plugin = _as_plugin(loader())
    except BaseException as exc:  # a plugin's import may raise anything; it must not stop the app
        if isinstance(exc, KeyboardInterrupt):
            raise
        return PluginRecord(fallback_id, fallback_id, "", source, error=f"failed to load: {_short(exc)}", details=traceback.format_exc())
    record = PluginRecord(plugin.id, plugin.name, plugin.version, source, plugin=plugin)
    try:
        _check(plugin)
    except PluginError as exc:
        record.error, record.plugin = _short(exc), plugin
    return record


def plugin_path_folders() -> list[Path]:
    raw = os.environ.get(PATH_VARIABLE, "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def discover_plugins(extra_folders: list[Path] | None = None) -> PluginRegistry:
    """All plugins from entry points, WORKBENCH_PLUGIN_PATH and extra_folders."""
    records = _from_entry_points() + _from_folders(plugin_path_folders() + list(extra_folders or []))
    seen: dict[str, PluginRecord] = {}
    for record in records:
        first = seen.get(record.id)
        if first is not None and record.ok:
            record.error = f"id {record.id!r} is already used by the plugin from {first.source}"
            continue
        seen.setdefault(record.id, record)
    _check_requirements(records)
    registry = PluginRegistry(records)
    global _last_registry
    _last_registry = registry
    return registry


def _check_requirements(records: list[PluginRecord]) -> None:
    """A plugin whose required plugins are missing or broken is disabled, saying which
    (repeated until nothing changes: a chain of requirements fails as a whole)."""
    changed = True
    while changed:
        changed = False
        usable = {r.id: r for r in records if r.ok}
        for record in records:
            if not record.ok or record.plugin is None:
                continue
            for needed in record.plugin.requires:
                if needed in usable:
                    continue
                other = next((r for r in records if r.id == needed), None)
                why = "which is not installed" if other is None else f"which is disabled ({other.error})"
                record.error = f"needs plugin {needed!r}, {why}"
                changed = True
                break


_last_registry: PluginRegistry | None = None


def current_registry() -> PluginRegistry:
    """The plugins this process discovered last (discovering them on first use)."""
    return _last_registry if _last_registry is not None else discover_plugins()
