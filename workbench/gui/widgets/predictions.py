"""The model's top next-token predictions, each with its probability as a bar.

One widget paints every row: the list is redrawn after every keystroke pause,
often while jobs compete for the GIL, and each Python paint callback costs a
GIL hand-over then (ten bar widgets made one repaint take 20 ms).
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QRect, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

from .style import ERROR_COLOUR, MUTED_COLOUR
from .token_strip import visible_token

_ROW_GAP = 4
_CHIP_FILL, _CHIP_BORDER = QColor("#eef2f8"), QColor("#b8c4d6")
_BAR_TRACK, _BAR = QColor("#eceff3"), QColor("#3b6fb6")


def format_probability(p: float) -> str:
    return f"{p:.1%}" if p >= 0.001 else f"{p:.1e}"


class PredictionList(QWidget):
    """Up to `rows` predictions: token chip, probability bar and percentage; or a message."""

    def __init__(self, rows: int = 10, parent=None):
        super().__init__(parent)
        self.rows = rows
        self.predictions: list[tuple[str, int, float]] = []
        self.message = ""
        self._message_colour = MUTED_COLOUR
        self._stale = False
        self.setFont(QFont("DejaVu Sans Mono"))
        self.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Fixed)
        self.setMouseTracking(True)
        self.show_message("Predictions appear once a model is loaded and a prompt typed.")

    # -- content ----------------------------------------------------------------------------------

    def set_predictions(self, top: list[tuple[str, int, float]], note: str = "") -> None:
        self.predictions = list(top)[: self.rows]
        self.message, self._message_colour = note, MUTED_COLOUR
        self._stale = False
        self.updateGeometry()
        self.update()

    def show_message(self, text: str, error: bool = False) -> None:
        self.predictions = []
        self.message, self._message_colour = text, ERROR_COLOUR if error else MUTED_COLOUR
        self.updateGeometry()
        self.update()

    def set_busy(self, text: str) -> None:
        """Say what is being computed above the (greyed) previous predictions."""
        self.message, self._message_colour = text, MUTED_COLOUR
        self._stale = True
        self.updateGeometry()
        self.update()

    def set_stale(self, stale: bool) -> None:
        """Grey the list while newer predictions are being computed."""
        if stale != self._stale:
            self._stale = stale
            self.update()

    # -- geometry -----------------------------------------------------------------------------------

    def _row_height(self) -> int:
        return QFontMetrics(self.font()).height() + 4

    def _message_height(self, width: int) -> int:
        if not self.message:
            return 0
        bounds = QFontMetrics(self.font()).boundingRect(QRect(0, 0, max(width, 50), 1000), Qt.TextWordWrap, self.message)
        return bounds.height() + 4

    def sizeHint(self) -> QSize:
        width = max(self.width(), 300)
        return QSize(300, self._message_height(width) + len(self.predictions) * (self._row_height() + _ROW_GAP))

    def minimumSizeHint(self) -> QSize:
        return QSize(200, self.sizeHint().height())

    def _row_rects(self) -> list[tuple[QRect, QRect, QRect]]:
        metrics = QFontMetrics(self.font())
        height = self._row_height()
        chip_width = max((metrics.horizontalAdvance(visible_token(t)) for t, _, _ in self.predictions), default=0) + 12
        percent_width = metrics.horizontalAdvance("100.0%") + 6
        top = self._message_height(self.width())
        rects = []
        for row in range(len(self.predictions)):
            y = top + row * (height + _ROW_GAP)
            chip = QRect(0, y, chip_width, height)
            percent = QRect(self.width() - percent_width, y, percent_width, height)
            bar = QRect(chip.right() + 8, y + 3, max(10, percent.left() - chip.right() - 14), height - 6)
            rects.append((chip, bar, percent))
        return rects

    # -- painting and hover ---------------------------------------------------------------------------

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        if self.message:
            painter.setPen(QColor(self._message_colour))
            painter.drawText(QRect(0, 0, self.width(), self._message_height(self.width())), Qt.TextWordWrap, self.message)
        ink = QColor("#9a9a9a") if self._stale else QColor("#111111")
        for (text, _, p), (chip, bar, percent) in zip(self.predictions, self._row_rects()):
            painter.setPen(QPen(_CHIP_BORDER))
            painter.setBrush(_CHIP_FILL)
            painter.drawRoundedRect(chip.adjusted(0, 0, -1, -1), 4, 4)
            painter.setPen(ink)
            painter.drawText(chip, Qt.AlignCenter, visible_token(text))
            painter.fillRect(bar, _BAR_TRACK)
            painter.fillRect(QRect(bar.left(), bar.top(), round(bar.width() * max(0.0, min(1.0, p))), bar.height()), _BAR)
            painter.drawText(percent, Qt.AlignRight | Qt.AlignVCenter, format_probability(p))
        painter.end()

    def event(self, event) -> bool:
        if event.type() == QEvent.ToolTip:
            for (text, token_id, p), (chip, _bar, percent) in zip(self.predictions, self._row_rects()):
                if chip.united(percent).contains(event.pos()):
                    QToolTip.showText(event.globalPos(), f"id {token_id}\ntext {text!r}\np = {p:.6f}", self)
                    return True
            QToolTip.hideText()
            return True
        return super().event(event)
