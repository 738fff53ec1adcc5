"""A bar plot of one pixel's activation across channels, drawn with QPainter."""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QRectF, Qt, Signal
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QWidget

__all__ = ["ProbePlot"]


class ProbePlot(QWidget):
    """Bar plot of one pixel's activation across channels; the strongest are labelled.

    Click a bar to emit :attr:`channel_clicked`.
    """

    channel_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.values = np.zeros(0, dtype=np.float32)
        self.labelled: list[int] = []
        self.setMinimumHeight(130)
        self.setToolTip(
            "Activation of every channel at the probed pixel; click a bar to show that channel."
        )

    def set_values(self, values: np.ndarray, labelled: list[int]) -> None:
        self.values = np.asarray(values, dtype=np.float32)
        self.labelled = list(labelled)
        self.update()

    def _bar_width(self) -> float:
        return self.width() / max(len(self.values), 1)

    def channel_at(self, x: float) -> int | None:
        if not len(self.values):
            return None
        c = int(x // self._bar_width())
        return c if 0 <= c < len(self.values) else None

    def mousePressEvent(self, event: Any) -> None:
        c = self.channel_at(event.position().x())
        if c is not None:
            self.channel_clicked.emit(c)

    def paintEvent(self, event: Any) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(38, 41, 48))
        v = self.values
        if len(v):
            top, bottom = 14.0, self.height() - 2.0
            hi, lo = max(float(v.max()), 0.0), min(float(v.min()), 0.0)
            span = (hi - lo) or 1.0
            zero = top + (bottom - top) * hi / span
            bw = self._bar_width()
            painter.setPen(Qt.PenStyle.NoPen)
            for c, value in enumerate(v):
                y = top + (bottom - top) * (hi - float(value)) / span
                colour = QColor(230, 120, 60) if c in self.labelled else QColor(140, 150, 170)
                painter.fillRect(
                    QRectF(c * bw, min(y, zero), max(bw - 1, 1), abs(zero - y)), colour
                )
            painter.setPen(QPen(QColor(200, 200, 200)))
            painter.drawLine(0, int(zero), self.width(), int(zero))
            for c in self.labelled:
                y = top + (bottom - top) * (hi - float(v[c])) / span
                text = str(c)
                tw = painter.fontMetrics().horizontalAdvance(text)
                left = min(max((c + 0.5) * bw - tw / 2, 0.0), self.width() - tw)  # stay inside
                painter.drawText(
                    QRectF(left, max(y - 14, 0), tw, 12), Qt.AlignmentFlag.AlignCenter, text
                )
        painter.end()
