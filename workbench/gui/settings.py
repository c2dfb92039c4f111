"""What the app remembers between sessions (QSettings, an INI file in the user's config folder).

Tests and screenshots point QSettings somewhere else with `QSettings.setPath`
(or XDG_CONFIG_HOME) so they never touch a user's settings.
"""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QSettings

ORGANIZATION = "interpretability-workbench"
APPLICATION = "workbench"
RECENT_LIMIT = 8


class AppSettings:
    def __init__(self):
        self._settings = QSettings(QSettings.IniFormat, QSettings.UserScope, ORGANIZATION, APPLICATION)

    @property
    def file_name(self) -> str:
        return self._settings.fileName()

    def _list(self, key: str) -> list[str]:
        value = self._settings.value(key, [])
        if isinstance(value, str):  # QSettings returns a one-item list as a plain string
            return [value] if value else []
        return [str(v) for v in (value or [])]

    def _push(self, key: str, item: str) -> None:
        items = [item] + [v for v in self._list(key) if v != item]
        self._settings.setValue(key, items[:RECENT_LIMIT])

    # -- models ----------------------------------------------------------------------------------------

    def recent_models(self) -> list[str]:
        return self._list("models/recent")

    def remember_model(self, spec: str, device: str, dtype: str, device_map: str = "", max_memory: str = "") -> None:
        self._push("models/recent", spec)
        for key, value in (("device", device), ("dtype", dtype), ("device_map", device_map), ("max_memory", max_memory)):
            self._settings.setValue(f"models/{key}", value)

    def last_model_options(self) -> tuple[str, str, str, str]:
        """(device, dtype, device map or "", max memory) of the last model loaded."""
        defaults = (("device", "cpu"), ("dtype", "float32"), ("device_map", ""), ("max_memory", ""))
        device, dtype, device_map, max_memory = (str(self._settings.value(f"models/{key}", default) or default) for key, default in defaults)
        return device, dtype, device_map, max_memory

    # -- workspaces -------------------------------------------------------------------------------------

    def recent_workspaces(self) -> list[str]:
        return self._list("workspaces/recent")

    def remember_workspace(self, path: str) -> None:
        self._push("workspaces/recent", path)
        self._settings.setValue("workspaces/last", path)

    @property
    def last_workspace(self) -> str:
        return str(self._settings.value("workspaces/last", ""))

    # -- NDIF ---------------------------------------------------------------------------------------------

    def ndif_api_key(self) -> str:
        return str(self._settings.value("ndif/api_key", "") or "")

    def set_ndif_api_key(self, key: str) -> None:
        """Kept in this settings file only (the user's own); never in workspaces, stores or reports."""
        if key:
            self._settings.setValue("ndif/api_key", key)
        else:
            self._settings.remove("ndif/api_key")

    # -- the window -------------------------------------------------------------------------------------

    def geometry(self) -> QByteArray | None:
        value = self._settings.value("window/geometry")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def save_geometry(self, geometry: QByteArray) -> None:
        self._settings.setValue("window/geometry", geometry)

    def sync(self) -> None:
        self._settings.sync()
