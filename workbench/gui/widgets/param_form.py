"""A parameter form built from an analysis' typed parameters (workbench.plugin_api.params).

Each kind of parameter gets its natural editor: Int a spin box, Float a decimal
spin box, Bool a check box, Choice a combo box, Text and IntList a line edit.
Values are validated by the parameter declarations themselves, so the form, the
CLI and workspaces accept exactly the same values; an invalid value is shown
inline under the form, naming the parameter and what it accepts.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ...errors import WorkbenchError
from ...plugin_api.params import Bool, Choice, Float, Int, IntList, Param
from .flow_layout import FlowLayout
from .style import ERROR_COLOUR, label

_INT_LIMIT = 2**31 - 1
_FLOAT_LIMIT = 1e12
_ERROR_STYLE = "border: 1px solid #b00020;"


def _editor_for(param: Param) -> QWidget:
    if isinstance(param, Bool):
        return QCheckBox()
    if isinstance(param, Int):
        box = QSpinBox()
        box.setRange(param.minimum if param.minimum is not None else -_INT_LIMIT, param.maximum if param.maximum is not None else _INT_LIMIT)
        return box
    if isinstance(param, Float):
        box = QDoubleSpinBox()
        low = param.minimum if param.minimum is not None else -_FLOAT_LIMIT
        high = param.maximum if param.maximum is not None else _FLOAT_LIMIT
        box.setDecimals(4)
        box.setRange(low, high)
        bounded = param.minimum is not None and param.maximum is not None
        box.setSingleStep((high - low) / 100 if bounded and high > low else 0.1)
        return box
    if isinstance(param, Choice):
        box = QComboBox()
        box.addItems([str(c) for c in param.choices])
        return box
    line = QLineEdit()
    if isinstance(param, IntList):
        line.setPlaceholderText("e.g. 0,3,5")
    return line


class ParameterForm(QWidget):
    """Editors for a list of Params, side by side, with inline validation errors below."""

    changed = Signal()

    def __init__(self, params: list[Param], parent=None):
        super().__init__(parent)
        self.params = list(params)
        self.editors: dict[str, QWidget] = {}
        fields = QWidget()
        flow = FlowLayout(fields, spacing=10)  # wraps, so a long form never widens the window
        for param in self.params:
            editor = _editor_for(param)
            editor.setObjectName(f"param-{param.name}")
            tip = f"{param.title}: {param.help}\nAccepts {param.accepts()}" if param.help else f"Accepts {param.accepts()}"
            editor.setToolTip(tip)
            caption = QLabel(param.title)
            caption.setToolTip(tip)
            caption.setBuddy(editor)
            field = QWidget()
            pair = QHBoxLayout(field)
            pair.setContentsMargins(0, 0, 0, 0)
            pair.setSpacing(4)
            pair.addWidget(caption)
            pair.addWidget(editor)
            flow.addWidget(field)
            self.editors[param.name] = editor
            self._set_editor(param, editor, param.default)
            self._connect(editor)
        self.error_label = label(colour=ERROR_COLOUR, wrap=True)
        self.error_label.hide()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(fields)
        layout.addWidget(self.error_label)

    def _connect(self, editor: QWidget) -> None:
        for signal_name in ("valueChanged", "toggled", "currentIndexChanged", "textChanged"):
            signal = getattr(editor, signal_name, None)
            if signal is not None:
                signal.connect(self._edited)
                return

    def _edited(self, *_args) -> None:
        if self.error_label.isVisible():
            self.validate()
        self.changed.emit()

    # -- reading and writing ------------------------------------------------------------------------

    def raw_values(self) -> dict[str, Any]:
        """What the editors hold, unvalidated: Python values for typed editors, text for line edits."""
        return {p.name: self._read_editor(p, self.editors[p.name]) for p in self.params}

    def values(self) -> dict[str, Any]:
        """Validated values; on an invalid one, shows it inline and raises the InputError."""
        values, errors = self._check()
        self._show_errors(errors)
        if errors:
            raise next(iter(errors.values()))
        return values

    def validate(self) -> bool:
        _, errors = self._check()
        self._show_errors(errors)
        return not errors

    def set_values(self, values: dict[str, Any]) -> None:
        """Set editors from values (Python values or their text forms); unknown names are ignored."""
        for param in self.params:
            if param.name in values:
                self._set_editor(param, self.editors[param.name], values[param.name])
        self.validate()

    def _check(self) -> tuple[dict[str, Any], dict[str, WorkbenchError]]:
        values, errors = {}, {}
        for param in self.params:
            raw = self._read_editor(param, self.editors[param.name])
            try:
                values[param.name] = param.parse(raw) if isinstance(raw, str) and not isinstance(param, Choice) else param.validate(raw)
            except WorkbenchError as exc:
                errors[param.name] = exc
        return values, errors

    def _show_errors(self, errors: dict[str, WorkbenchError]) -> None:
        for name, editor in self.editors.items():
            wanted = _ERROR_STYLE if name in errors else ""
            if editor.styleSheet() != wanted:
                editor.setStyleSheet(wanted)
        self.error_label.setText("\n".join(str(e) for e in errors.values()))
        self.error_label.setVisible(bool(errors))

    @staticmethod
    def _read_editor(param: Param, editor: QWidget) -> Any:
        if isinstance(editor, QCheckBox):
            return editor.isChecked()
        if isinstance(editor, (QSpinBox, QDoubleSpinBox)):
            return editor.value()
        if isinstance(editor, QComboBox):
            return editor.currentText()
        return editor.text()

    @staticmethod
    def _set_editor(param: Param, editor: QWidget, value: Any) -> None:
        if isinstance(editor, QCheckBox):
            editor.setChecked(value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on"))
        elif isinstance(editor, QSpinBox):
            try:
                editor.setValue(int(value))
            except (TypeError, ValueError):
                pass
        elif isinstance(editor, QDoubleSpinBox):
            try:
                editor.setValue(float(value))
            except (TypeError, ValueError):
                pass
        elif isinstance(editor, QComboBox):
            index = editor.findText(str(value))
            if index >= 0:
                editor.setCurrentIndex(index)
        else:
            editor.setText(value if isinstance(value, str) else param.to_text(value))
