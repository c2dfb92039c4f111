"""The Plugins dialog: every discovered plugin with its version, source and status; errors in full."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor, QFontDatabase
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QPlainTextEdit,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from ..plugin_api import API_VERSION_TEXT, PATH_VARIABLE, PluginRegistry
from .widgets.style import TEXT_COLOUR, label

COLUMNS = ("id", "name", "version", "status", "source")


class PluginsDialog(QDialog):
    def __init__(self, registry: PluginRegistry, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Plugins")
        self.resize(900, 480)
        self.registry = registry
        self.records = list(registry)
        self.table = QTableWidget(len(self.records), len(COLUMNS))
        self.table.setHorizontalHeaderLabels([c.capitalize() for c in COLUMNS])
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        for row, record in enumerate(self.records):
            values = (record.id, record.name, record.version or "?", "ok" if record.ok else f"disabled: {record.error}", record.source)
            for column, value in enumerate(values):
                item = QTableWidgetItem(value)
                item.setToolTip(value)
                if not record.ok:
                    item.setForeground(QBrush(QColor("#b00020")))
                self.table.setItem(row, column, item)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.details.setPlaceholderText("Select a plugin to see what it contributes, or why it is disabled.")
        self.table.currentCellChanged.connect(lambda row, *_: self.show_details(row))
        splitter = QSplitter(Qt.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(self.details)
        splitter.setSizes([260, 200])
        hint = label(
            f"Plugin API {API_VERSION_TEXT}. More plugins: folders listed in {PATH_VARIABLE}, or packages with a "
            "'workbench.plugins' entry point. A plugin that fails is disabled for the session; the others keep working.",
            colour=TEXT_COLOUR,
            wrap=True,
        )
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(splitter, 1)
        layout.addWidget(hint)
        layout.addWidget(buttons)
        if self.records:
            self.table.selectRow(0)

    def show_details(self, row: int) -> None:
        if not 0 <= row < len(self.records):
            self.details.clear()
            return
        record = self.records[row]
        info = record.describe()
        lines = [f"{record.name} ({record.id}) {record.version}", f"source: {record.source}"]
        if info["api_version"]:
            lines.append(f"written for plugin API {info['api_version']}")
        parts = [name for name, present in (("analysis", info["analysis"]), ("panel", info["panel"])) if present]
        if info["result_types"]:
            parts.append("results " + ", ".join(info["result_types"]))
        lines.append("contributes: " + (", ".join(parts) or "nothing"))
        if record.plugin is not None and record.plugin.description:
            lines.append("")
            lines.append(record.plugin.description)
        if not record.ok:
            lines += ["", f"DISABLED: {record.error}"]
            if record.details:
                lines += ["", record.details]
        self.details.setPlainText("\n".join(lines))
