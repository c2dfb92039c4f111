"""The token strip: a prompt's tokens as the model splits them, one chip per token.

The chips are painted by one widget rather than being one widget each: a strip
is rebuilt at typing speed, often while a job keeps the GIL busy, and creating
and styling dozens of child widgets each time cost the GUI thread tens of
milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QEvent, QPoint, QRect, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPen
from PySide6.QtWidgets import QFrame, QLabel, QScrollArea, QSizePolicy, QToolTip, QVBoxLayout, QWidget

from ...figures.tokens import visible_token

CHIP_STYLE = "QLabel { background: #eef2f8; border: 1px solid #b8c4d6; border-radius: 4px; padding: 1px 4px; font-family: 'DejaVu Sans Mono', monospace; }"
MAX_HEIGHT = 170
_PAD_X, _PAD_Y, _GAP = 5, 2, 4
_FILL, _BORDER = QColor("#eef2f8"), QColor("#b8c4d6")
_BOS_FILL, _BOS_BORDER, _BOS_INK = QColor("#e8e8e8"), QColor("#999999"), QColor("#555555")


@dataclass(frozen=True)
class TokenInfo:
    position: int
    token_id: int
    text: str
    is_bos: bool = False


@dataclass
class TokenChip:
    """One painted chip: the token and where it is drawn."""

    info: TokenInfo
    rect: QRect

    @property
    def label(self) -> str:
        return visible_token(self.info.text)

    def toolTip(self) -> str:  # named like QWidget.toolTip, which it stands in for
        kind = "BOS token" if self.info.is_bos else "token"
        return f"{kind} at position {self.info.position}\nid {self.info.token_id}\ntext {self.info.text!r}"


class _ChipCanvas(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.chips: list[TokenChip] = []
        self.setFont(QFont("DejaVu Sans Mono"))
        self.setMouseTracking(True)
        self.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Preferred)

    def set_tokens(self, infos: list[TokenInfo]) -> None:
        self.chips = [TokenChip(info, QRect()) for info in infos]
        self._layout(self.width())
        self.updateGeometry()
        self.update()

    def _layout(self, width: int) -> int:
        metrics = QFontMetrics(self.font())
        height = metrics.height() + 2 * _PAD_Y
        x = y = 0
        for chip in self.chips:
            chip_width = metrics.horizontalAdvance(chip.label) + 2 * _PAD_X
            if x > 0 and x + chip_width > width:
                x, y = 0, y + height + _GAP
            chip.rect = QRect(x, y, chip_width, height)
            x += chip_width + _GAP
        return (y + height) if self.chips else 0

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        return self._layout(width)

    def sizeHint(self) -> QSize:
        return QSize(300, self._layout(max(self.width(), 300)))

    def resizeEvent(self, event) -> None:
        self._layout(event.size().width())
        super().resizeEvent(event)

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        for chip in self.chips:
            bos = chip.info.is_bos
            pen = QPen(_BOS_BORDER if bos else _BORDER)
            if bos:
                pen.setStyle(Qt.DashLine)
            painter.setPen(pen)
            painter.setBrush(_BOS_FILL if bos else _FILL)
            painter.drawRoundedRect(chip.rect.adjusted(0, 0, -1, -1), 4, 4)
            painter.setPen(_BOS_INK if bos else QColor("#111111"))
            painter.drawText(chip.rect, Qt.AlignCenter, chip.label)
        painter.end()

    def chip_at(self, point: QPoint) -> TokenChip | None:
        return next((chip for chip in self.chips if chip.rect.contains(point)), None)

    def event(self, event) -> bool:
        if event.type() == QEvent.ToolTip:
            chip = self.chip_at(event.pos())
            if chip is not None:
                QToolTip.showText(event.globalPos(), chip.toolTip(), self, chip.rect)
            else:
                QToolTip.hideText()
                event.ignore()
            return True
        return super().event(event)


class TokenStrip(QWidget):
    """Shows tokens as chips (wrapping onto several lines, scrolling when long), or a message."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._canvas = _ChipCanvas()
        self._message = QLabel()
        self._message.setWordWrap(True)
        self._scroll = QScrollArea()
        self._scroll.setWidgetResizable(True)
        self._scroll.setFrameShape(QFrame.NoFrame)
        self._scroll.setWidget(self._canvas)
        self._scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._message)
        layout.addWidget(self._scroll)
        self.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Fixed)
        self.show_message("Load a model to see how it splits the prompt into tokens.")

    def chips(self) -> list[TokenChip]:
        return list(self._canvas.chips)

    def tokens(self) -> list[TokenInfo]:
        return [chip.info for chip in self._canvas.chips]

    def chip_at(self, point: QPoint) -> TokenChip | None:
        """The chip under a point in the strip's own coordinates (for hover and tests)."""
        return self._canvas.chip_at(self._canvas.mapFrom(self, point))

    def set_tokens(self, ids: list[int], texts: list[str], bos_used: bool) -> None:
        infos = [TokenInfo(i, int(token_id), text, is_bos=bos_used and i == 0) for i, (token_id, text) in enumerate(zip(ids, texts))]
        self._canvas.set_tokens(infos)
        self._set_message(f"{len(ids)} tokens" + (" (first is BOS)" if bos_used else ""), error=False)
        self._fit_height()

    def show_message(self, text: str, error: bool = False) -> None:
        self._canvas.set_tokens([])
        self._set_message(text, error)
        self._fit_height()

    def message(self) -> str:
        return self._message.text()

    def _set_message(self, text: str, error: bool) -> None:
        self._message.setText(text)
        palette = self._message.palette()
        palette.setColor(self._message.foregroundRole(), QColor("#b00020") if error else QColor("gray"))
        self._message.setPalette(palette)

    def _fit_height(self, width: int | None = None) -> None:
        # As tall as the wrapped chips need, up to MAX_HEIGHT; longer prompts scroll. The
        # strip's own width, not the scroll viewport's: while the strip is being resized the
        # viewport still has its old width, and chips wrapped onto a new row were cut off.
        width = max(width if width is not None else self.width(), 50)
        needed = self._canvas.heightForWidth(width)
        if needed + 2 > MAX_HEIGHT:  # a scroll bar takes part of the width
            needed = self._canvas.heightForWidth(max(width - self._scroll.verticalScrollBar().sizeHint().width(), 50))
        self._scroll.setFixedHeight(min(MAX_HEIGHT, needed + 2))
        self._scroll.setVisible(bool(self._canvas.chips))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit_height(event.size().width())
