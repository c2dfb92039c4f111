"""The prompt editor: one prompt per line, and the BOS choice (auto / on / off)."""

from __future__ import annotations

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPlainTextEdit, QVBoxLayout, QWidget

BOS_CHOICES = ("auto", "on", "off")
# Typing pauses shorter than this do not trigger a new tokenization and prediction.
SETTLE_MS = 150


class PromptEditor(QWidget):
    """Emits `settled` once typing pauses (and when the BOS choice or the line changes)."""

    settled = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.text = QPlainTextEdit()
        self.text.setPlaceholderText("Type a prompt. One prompt per line; single-prompt panels analyse the first line.")
        self.text.setTabChangesFocus(True)
        line = QFontMetrics(self.text.font()).lineSpacing()
        self.text.setFixedHeight(line * 4 + 12)
        self.bos = QComboBox()
        self.bos.addItems(BOS_CHOICES)
        self.bos.setToolTip(
            "Prepend the BOS token?\nauto: follow the tokenizer's own convention (the default)\non / off: override it"
        )
        self._bos_default: bool | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(SETTLE_MS)
        self._timer.timeout.connect(self.settled)
        self.text.textChanged.connect(self._timer.start)
        self._line = 0
        self.text.cursorPositionChanged.connect(self._cursor_moved)
        self.bos.currentIndexChanged.connect(self._timer.start)
        bos_row = QHBoxLayout()
        bos_row.addWidget(QLabel("BOS"))
        bos_row.addWidget(self.bos)
        bos_row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.text)
        layout.addLayout(bos_row)

    # -- prompts ----------------------------------------------------------------------------------

    def prompts(self) -> list[str]:
        """The non-empty lines, in order."""
        return [line for line in self.text.toPlainText().split("\n") if line.strip()]

    def set_prompts(self, prompts: list[str]) -> None:
        self.text.setPlainText("\n".join(prompts))

    def current_prompt(self) -> tuple[str, int]:
        """The prompt under the cursor (or the first one) and its index among prompts()."""
        lines = self.text.toPlainText().split("\n")
        line = self.text.textCursor().blockNumber()
        if not (0 <= line < len(lines)) or not lines[line].strip():
            line = next((i for i, text in enumerate(lines) if text.strip()), 0)
        text = lines[line] if line < len(lines) else ""
        index = sum(1 for earlier in lines[:line] if earlier.strip())
        return text, index

    def _cursor_moved(self) -> None:
        line = self.text.textCursor().blockNumber()
        if line != self._line:
            self._line = line
            self._timer.start()

    # -- BOS --------------------------------------------------------------------------------------

    @property
    def bos_choice(self) -> str:
        return BOS_CHOICES[max(0, self.bos.currentIndex())]

    def set_bos_choice(self, choice: str) -> None:
        self.bos.setCurrentIndex(BOS_CHOICES.index(choice) if choice in BOS_CHOICES else 0)

    @property
    def prepend_bos(self) -> bool | None:
        """None follows the tokenizer's convention; True/False override it."""
        choice = self.bos_choice
        return None if choice == "auto" else choice == "on"

    def set_tokenizer_default(self, prepends_bos: bool | None) -> None:
        """Show what 'auto' means for the loaded model's tokenizer."""
        self._bos_default = prepends_bos
        label = "auto" if prepends_bos is None else f"auto ({'on' if prepends_bos else 'off'} for this tokenizer)"
        self.bos.setItemText(0, label)
