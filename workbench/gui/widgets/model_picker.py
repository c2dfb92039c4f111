"""The model picker: a spec (typed, or chosen from the models available offline), where it
runs (a device, or a device map with memory budgets) and dtype."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QSizePolicy, QWidget

from ...models.loading import DEVICES, DTYPES
from ...models.placement import DEVICE_MAPS, MAX_MEMORY_HELP

MAP_PREFIX = "map: "  # device-combo entries that choose a device map, e.g. "map: auto"

SPEC_HELP = "A model spec: smollm2, lab:NAME, a Hugging Face id, a local folder or a .gguf file."


def available_devices() -> list[str]:
    """Devices torch can use here; CPU always."""
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return [d for d in DEVICES if d in found]


class ModelPicker(QWidget):
    load_requested = Signal(str, str, str, str, str)  # spec, device, dtype, device map ("" for none), max memory

    def __init__(self, parent=None):
        super().__init__(parent)
        self.spec = QComboBox()
        self.spec.setEditable(True)
        self.spec.setInsertPolicy(QComboBox.NoInsert)
        self.spec.setMinimumContentsLength(22)
        self.spec.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.spec.setToolTip(SPEC_HELP)
        self.spec.lineEdit().setPlaceholderText("model spec")
        self.spec.lineEdit().returnPressed.connect(self._request)
        self.device = QComboBox()
        self.device.addItems(available_devices() + [MAP_PREFIX + name for name in DEVICE_MAPS])
        self.device.setToolTip("Where the model runs: one device, or a device map that places the layers on the GPUs, then CPU, then disk")
        self.device.currentTextChanged.connect(self._device_changed)
        self.max_memory = QLineEdit()
        self.max_memory.setPlaceholderText("max memory")
        self.max_memory.setToolTip("With a device map: " + MAX_MEMORY_HELP + ". Empty: all free memory.")
        self.max_memory.setMaximumWidth(160)
        self.max_memory.returnPressed.connect(self._request)
        self.dtype = QComboBox()
        self.dtype.addItems(list(DTYPES))
        self.dtype.setToolTip("Precision of the weights and activations")
        self.load_button = QPushButton("Load")
        self.load_button.setToolTip("Load the model in the background (progress and Cancel in the task area)")
        self.load_button.clicked.connect(self._request)
        self.info = QLabel("No model loaded.")
        self.info.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.info.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        layout.addWidget(QLabel("Model"))
        layout.addWidget(self.spec)
        layout.addWidget(self.device)
        layout.addWidget(self.max_memory)
        layout.addWidget(self.dtype)
        layout.addWidget(self.load_button)
        layout.addSpacing(12)
        layout.addWidget(self.info, 1)
        self._device_changed(self.device.currentText())

    def set_choices(self, entries, recent: list[str]) -> None:
        """entries: workbench.models.available_models(); recent specs come first."""
        current = self.current_spec()
        self.spec.clear()
        seen = set()
        for spec in recent:
            if spec and spec not in seen:
                seen.add(spec)
                self.spec.addItem(spec)
                self.spec.setItemData(self.spec.count() - 1, "recently loaded", Qt.ToolTipRole)
        for entry in entries:
            if entry.spec in seen:
                continue
            seen.add(entry.spec)
            self.spec.addItem(entry.spec)
            self.spec.setItemData(self.spec.count() - 1, f"{entry.kind}: {entry.description}", Qt.ToolTipRole)
        self.spec.setEditText(current or (self.spec.itemText(0) if self.spec.count() else ""))

    def current_spec(self) -> str:
        return self.spec.currentText().strip()

    def selection(self) -> tuple[str, str, str, str, str]:
        """(spec, device, dtype, device map or "", max memory), as load_requested sends them."""
        chosen = self.device.currentText()
        device_map = chosen.removeprefix(MAP_PREFIX) if chosen.startswith(MAP_PREFIX) else ""
        return self.current_spec(), "cpu" if device_map else chosen, self.dtype.currentText(), device_map, self.max_memory.text().strip() if device_map else ""

    def set_selection(self, spec: str, device: str = "cpu", dtype: str = "float32", device_map: str = "", max_memory: str = "") -> None:
        self.spec.setEditText(spec)
        self.max_memory.setText(max_memory)
        for combo, value in ((self.device, MAP_PREFIX + device_map if device_map else device), (self.dtype, dtype)):
            index = combo.findText(value)
            if index < 0:
                combo.addItem(value)
                index = combo.count() - 1
            combo.setCurrentIndex(index)

    def set_loading(self, loading: bool) -> None:
        self.load_button.setText("Loading…" if loading else "Load")
        self.load_button.setEnabled(not loading)

    def _device_changed(self, text: str) -> None:
        self.max_memory.setVisible(text.startswith(MAP_PREFIX))

    def _request(self) -> None:
        self.load_requested.emit(*self.selection())
