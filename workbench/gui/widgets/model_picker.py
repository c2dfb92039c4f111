"""The model picker: a spec (typed, or chosen from the models available offline), device and dtype."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QWidget

from ...models.loading import DEVICES, DTYPES

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
    load_requested = Signal(str, str, str)  # spec, device, dtype

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
        self.device.addItems(available_devices())
        self.device.setToolTip("Where the model runs")
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
        layout.addWidget(self.dtype)
        layout.addWidget(self.load_button)
        layout.addSpacing(12)
        layout.addWidget(self.info, 1)

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

    def set_selection(self, spec: str, device: str = "cpu", dtype: str = "float32") -> None:
        self.spec.setEditText(spec)
        for combo, value in ((self.device, device), (self.dtype, dtype)):
            index = combo.findText(value)
            if index < 0:
                combo.addItem(value)
                index = combo.count() - 1
            combo.setCurrentIndex(index)

    def set_loading(self, loading: bool) -> None:
        self.load_button.setText("Loading…" if loading else "Load")
        self.load_button.setEnabled(not loading)

    def _request(self) -> None:
        self.load_requested.emit(self.current_spec(), self.device.currentText(), self.dtype.currentText())
